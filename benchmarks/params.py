"""Parameter count, output shape and one jitted forward time of every cell in ``rnnx.CELLS``.

    python -m benchmarks.params [--input 300 --hidden 128 --batch 64 --steps 100]

Every name in the registry gets a row, so a new cell appears here with no edit; the reset-before GRU
(``rnnx.gru(h, reset_after=False)``, the textbook count) is listed beside the default reset-after one.
The time is one call after compilation, a rough figure: ``python -m benchmarks`` measures properly.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp

import rnnx
from rnnx.apps.cli import param_rows


def main(argv=()) -> None:  # () not None: main() called from Python (a test) ignores sys.argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"rnnx {rnnx.__version__} on {jax.default_backend()}: input {args.input}, hidden {args.hidden}")
    print(f"| cell | parameters | output shape | forward ms (B={args.batch}, T={args.steps}, jitted) |")
    print("|---|---|---|---|")
    xs = jax.random.normal(jax.random.key(0), (args.batch, args.steps, args.input))
    for label, (name, kwargs) in param_rows().items():
        cell = rnnx.make_cell(name, args.hidden, **kwargs)
        params = cell.init(jax.random.key(1), args.input)
        run = jax.jit(lambda p, x, cell=cell: rnnx.unroll(cell, p, x))
        jax.block_until_ready(run(params, xs))
        start = time.perf_counter()
        _, ys = jax.block_until_ready(run(params, xs))
        ms = 1e3 * (time.perf_counter() - start)
        if not bool(jnp.isfinite(ys).all()):
            raise FloatingPointError(f"{label}: non-finite outputs")
        print(f"| {label} | {rnnx.count_params(params):,} | {tuple(ys.shape)} | {ms:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
