"""Largest output differences of every rnnx.interop conversion against the other library, both directions.

    python -m benchmarks.interop [--batch 8 --steps 50 --input 300 --hidden 128]

float32, random weights and biases from U(-1/sqrt(h), 1/sqrt(h)). For each pair and direction the converted weights run in
the target library on the same inputs; the table gives the largest absolute output difference and whether
the round trip rnnx -> other -> rnnx returns the params bit for bit. PyTorch and Keras rows appear only
where they are installed (Keras with ``KERAS_BACKEND=jax``).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

import rnnx


def _randomise(params, seed, hidden):
    """Every weight and bias from U(-1/sqrt(h), 1/sqrt(h)), PyTorch's default: non-zero biases, and a
    scale at which float32 rounding is not amplified by chaotic dynamics."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    init = rnnx.torch_init(hidden)
    return jax.tree.unflatten(tree, [init(k, v.shape, v.dtype) for k, v in zip(keys, leaves)])


def _bit_equal(a, b) -> bool:
    return jax.tree.map(lambda x: np.asarray(x).tobytes(), a) == jax.tree.map(lambda x: np.asarray(x).tobytes(), b)


def _error(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def torch_rows(xs, hidden):
    import torch

    rows = []
    for name, cell in [("RNN", rnnx.simple_rnn(hidden)), ("LSTM", rnnx.lstm(hidden)), ("GRU", rnnx.gru(hidden))]:
        net = rnnx.stacked(cell, num_layers=2, bidirectional=True)
        params = _randomise(net.init(jax.random.key(0), xs.shape[-1]), 1, hidden)
        module = rnnx.interop.to_torch(net, params)
        with torch.no_grad():
            out = module(torch.from_numpy(xs))[0].numpy()
        ys = jax.jit(net.apply)(params, xs)[1]
        label = f"{name} (2 layers, bidirectional)"
        exact = _bit_equal(rnnx.interop.from_torch(module)[1], params)
        rows.append(("PyTorch", label, "rnnx -> torch", _error(ys, out), exact))
        torch.manual_seed(0)  # a module with PyTorch's own initialisation, into rnnx
        source = getattr(torch.nn, name)(xs.shape[-1], hidden, 2, bidirectional=True, batch_first=True)
        with torch.no_grad():
            out = source(torch.from_numpy(xs))[0].numpy()
        net2, params2 = rnnx.interop.from_torch(source)
        rows.append(("PyTorch", label, "torch -> rnnx", _error(jax.jit(net2.apply)(params2, xs)[1], out), ""))
    return rows


def keras_rows(xs, hidden):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    rows = []
    cases = [
        ("SimpleRNN", rnnx.simple_rnn(hidden), {}),
        ("LSTM", rnnx.lstm(hidden), {}),
        ("GRU", rnnx.gru(hidden), {}),
        ("GRU", rnnx.gru(hidden, reset_after=False), {"reset_after": False}),
    ]
    for kind, cell, config in cases:
        label = f"GRU reset_after={config.get('reset_after', True)}" if kind == "GRU" else kind
        params = _randomise(cell.init(jax.random.key(0), xs.shape[-1]), 2, hidden)
        layer = rnnx.interop.to_keras(cell, params, return_sequences=True)
        ys = jax.jit(lambda p, x: rnnx.unroll(cell, p, x)[1])(params, xs)
        rows.append(
            (
                "Keras 3",
                label,
                "rnnx -> Keras",
                _error(ys, layer(xs)),
                _bit_equal(rnnx.interop.from_keras(layer)[1], params),
            )
        )
        source = getattr(keras.layers, kind)(hidden, return_sequences=True, **config)
        source.build((None, None, xs.shape[-1]))
        source.set_weights([np.asarray(w) for w in _randomise(source.get_weights(), 3, hidden)])
        cell2, params2 = rnnx.interop.from_keras(source)
        ys2 = jax.jit(lambda p, x: rnnx.unroll(cell2, p, x)[1])(params2, xs)
        rows.append(("Keras 3", label, "Keras -> rnnx", _error(ys2, source(xs)), ""))
    return rows


def linen_rows(xs, hidden):
    from flax import linen as nn

    def run_linen(linen_cell, variables):
        carry = linen_cell.initialize_carry(jax.random.key(0), xs[:, 0].shape)
        step = lambda c, x: linen_cell.apply(variables, c, x)  # noqa: E731
        return jnp.swapaxes(jax.lax.scan(step, carry, jnp.swapaxes(xs, 0, 1))[1], 0, 1)

    rows = []
    cases = [
        ("SimpleCell", nn.SimpleCell(hidden), rnnx.simple_rnn(hidden)),
        ("LSTMCell", nn.LSTMCell(hidden), rnnx.lstm(hidden)),
        ("OptimizedLSTMCell", nn.OptimizedLSTMCell(hidden), rnnx.lstm(hidden)),
        ("GRUCell", nn.GRUCell(hidden), rnnx.gru(hidden)),
    ]
    for name, linen_cell, cell in cases:
        params = _randomise(cell.init(jax.random.key(0), xs.shape[-1]), 4, hidden)
        target, variables = rnnx.interop.to_linen(cell, params, optimized=name == "OptimizedLSTMCell")
        ys = jax.jit(lambda p, x: rnnx.unroll(cell, p, x)[1])(params, xs)
        rows.append(
            (
                "Flax linen",
                name,
                "rnnx -> linen",
                _error(ys, jax.jit(run_linen, static_argnums=0)(target, variables)),
                _bit_equal(rnnx.interop.from_linen(target, variables)[1], params),
            )
        )
        carry = linen_cell.initialize_carry(jax.random.key(0), xs[:, 0].shape)
        source = _randomise(linen_cell.init(jax.random.key(5), carry, xs[:, 0]), 6, hidden)
        cell2, params2 = rnnx.interop.from_linen(linen_cell, source)
        ys2 = jax.jit(lambda p, x: rnnx.unroll(cell2, p, x)[1])(params2, xs)
        rows.append(
            (
                "Flax linen",
                name,
                "linen -> rnnx",
                _error(ys2, jax.jit(run_linen, static_argnums=0)(linen_cell, source)),
                "",
            )
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--input", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)
    xs = np.array(jax.random.normal(jax.random.key(0), (args.batch, args.steps, args.input)))
    print(f"B={args.batch}, T={args.steps}, I={args.input}, H={args.hidden}, float32\n")
    print("| library | layer | direction | max abs output difference | rnnx -> other -> rnnx bit-exact |")
    print("|---|---|---|---|---|")
    for source in (torch_rows, keras_rows, linen_rows):
        try:
            rows = source(xs, args.hidden)
        except ImportError as error:
            print(f"| {source.__name__[:-5]} | not installed: {error} | | | |")
            continue
        for library, layer, direction, error, exact in rows:
            exact = {True: "yes", False: "**no**", "": ""}[exact]
            print(f"| {library} | {layer} | {direction} | {error:.1e} | {exact} |")


if __name__ == "__main__":
    main()
