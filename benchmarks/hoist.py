"""Does computing the input projection before the scan ("hoisting") pay? Measures both, per cell.

    python -m benchmarks.hoist [--batch 64 --steps 100 --input 300 --hidden 128 --repeats 15]

Prints a Markdown table of median forward and training-step times (forward + grad of a mean-square loss)
and the ratio hoisted / in-scan; below 1 means hoisting is faster on this backend.
"""

import argparse
import sys

import jax
import jax.numpy as jnp

import rnnx
from benchmarks.timing import time_interleaved

# Hoisting is a choice of the sequential scan: the parallel-scan cells always project every step at once.
CELLS = [name for name in rnnx.CELLS if rnnx.make_cell(name, 1).coefficients is None]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    xs = jax.random.normal(jax.random.key(0), (args.batch, args.steps, args.input))
    print(
        f"backend {jax.default_backend()}, {jax.devices()[0].device_kind}; B={args.batch} T={args.steps} "
        f"I={args.input} H={args.hidden}; medians of {args.repeats}"
    )
    print("| cell | mode | in-scan ms | hoisted ms | hoisted / in-scan |")
    print("|---|---|---|---|---|")
    for name in CELLS:
        cell = rnnx.make_cell(name, args.hidden)
        params = cell.init(jax.random.key(1), args.input)
        for mode in ("forward", "train"):
            fns = {}
            for hoist in (False, True):

                def forward(p, x, hoist=hoist):
                    return rnnx.unroll(cell, p, x, hoist=hoist)[1]

                if mode == "forward":
                    fn = jax.jit(forward)
                else:
                    fn = jax.jit(jax.grad(lambda p, x, f=forward: jnp.mean(f(p, x) ** 2)))
                fns[hoist] = lambda fn=fn: fn(params, xs)
            print(f"timing {name} {mode} ...", file=sys.stderr, flush=True)
            t = time_interleaved(fns, repeats=args.repeats)
            a, b = t[False]["median_ms"], t[True]["median_ms"]
            print(f"| {name} | {mode} | {a:.2f} | {b:.2f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
