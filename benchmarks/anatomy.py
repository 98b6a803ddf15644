"""Where an rnnx training step's time goes, and what rematerialisation costs (evidence for the speed notes).

    python -m benchmarks.anatomy [--cell lstm --batch 64 --steps 100 --input 300 --hidden 128]

Times, interleaved in one process, the training step (forward + grad, no optimiser) of:
- ``rnnx``: the cell as shipped;
- ``matmuls only``: the same scan with the same two matmuls per step but no gate nonlinearities
  (``h_t = (x_t W_ih + b + h_{t-1} W_hh)[:, :h]``), a floor for any scan of this cell on this backend;
- ``projection only``: the input projection for all steps as one matmul, no recurrence at all;
and, at ``--long-steps`` (default 1000), the LSTM step with and without ``remat`` with XLA's temp memory.
"""

import argparse
import sys

import jax
import jax.numpy as jnp

import rnnx
from benchmarks.timing import time_interleaved

# The cells with a recurrent matrix (the parallel-scan cells have none, so "matmuls only" has no meaning there).
CELLS = [name for name in rnnx.CELLS if rnnx.make_cell(name, 1).coefficients is None]


def grad_step(loss, params, xs):
    compiled = jax.jit(jax.grad(loss)).lower(params, xs).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
    return (lambda: compiled(params, xs)), temp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--long-steps", type=int, default=1000)
    parser.add_argument("--input", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    cell = rnnx.make_cell(args.cell, args.hidden)
    params = cell.init(jax.random.key(1), args.input)
    xs = jax.random.normal(jax.random.key(0), (args.batch, args.steps, args.input))
    h = args.hidden

    def shipped(p, x):
        return jnp.mean(rnnx.unroll(cell, p, x)[1] ** 2)

    def matmuls_only(p, x):
        def body(hprev, xt):
            hnew = (xt @ p["w_ih"] + p["b"] + hprev @ p["w_hh"])[:, :h]
            return hnew, hnew

        return jnp.mean(jax.lax.scan(body, jnp.zeros((x.shape[0], h)), jnp.swapaxes(x, 0, 1))[1] ** 2)

    def projection_only(p, x):
        return jnp.mean((x @ p["w_ih"] + p["b"]) ** 2)

    fns, temps = {}, {}
    for name, loss in (("rnnx", shipped), ("matmuls only", matmuls_only), ("projection only", projection_only)):
        print(f"compiling {name}", file=sys.stderr, flush=True)
        fns[name], temps[name] = grad_step(loss, params, xs)
    times = time_interleaved(fns, repeats=args.repeats)
    print(f"{args.cell}, B={args.batch} T={args.steps} I={args.input} H={h}, forward+grad, medians of {args.repeats}")
    print("| variant | median ms | share of rnnx | XLA temp MiB |\n|---|---|---|---|")
    for name, t in times.items():
        share = t["median_ms"] / times["rnnx"]["median_ms"]
        print(f"| {name} | {t['median_ms']:.2f} | {share:.2f} | {temps[name]:.1f} |")

    long_xs = jax.random.normal(jax.random.key(0), (args.batch, args.long_steps, args.input))
    fns, temps = {}, {}
    for remat in (False, True):
        print(f"compiling T={args.long_steps} remat={remat}", file=sys.stderr, flush=True)
        loss = lambda p, x, remat=remat: jnp.mean(rnnx.unroll(cell, p, x, remat=remat)[1] ** 2)  # noqa: E731
        fns[remat], temps[remat] = grad_step(loss, params, long_xs)
    times = time_interleaved(fns, repeats=max(3, args.repeats // 2))
    print(f"\nT={args.long_steps}: | remat | median ms | XLA temp MiB |\n|---|---|---|")
    for remat, t in times.items():
        print(f"| {remat} | {t['median_ms']:.1f} | {temps[remat]:.1f} |")
    print(f"remat / plain time: {times[True]['median_ms'] / times[False]['median_ms']:.2f}")


if __name__ == "__main__":
    main()
