"""``rnnx params``: print the parameter table and run each cell on random data."""

import time

import jax
import jax.numpy as jnp

import rnnx

CELLS = {
    "simple_rnn": rnnx.simple_rnn,
    "lstm": rnnx.lstm,
    "gru (reset_after=False)": lambda h: rnnx.gru(h, reset_after=False),
    "gru (reset_after=True)": rnnx.gru,
}


def main(input_size: int = 300, hidden_size: int = 128, batch: int = 64, steps: int = 100) -> None:
    print(f"rnnx {rnnx.__version__} on {jax.default_backend()}: input {input_size}, hidden {hidden_size}")
    print(f"| cell | parameters | output shape | forward ms (B={batch}, T={steps}, jitted) |")
    print("|---|---|---|---|")
    xs = jax.random.normal(jax.random.key(0), (batch, steps, input_size))
    for name, make in CELLS.items():
        cell = make(hidden_size)
        params = cell.init(jax.random.key(1), input_size)
        run = jax.jit(lambda p, x, cell=cell: rnnx.unroll(cell, p, x))
        jax.block_until_ready(run(params, xs))
        start = time.perf_counter()
        _, ys = jax.block_until_ready(run(params, xs))
        ms = 1e3 * (time.perf_counter() - start)
        assert bool(jnp.isfinite(ys).all())
        print(f"| {name} | {rnnx.count_params(params):,} | {tuple(ys.shape)} | {ms:.1f} |")


if __name__ == "__main__":
    main()
