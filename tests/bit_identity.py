"""Bit-identity snapshot of params and outputs for every cell, stack, NNX module, model and a short fit.

Run on two commits and compare (copy this file to the older one):
    python tests/bit_identity.py save before.npz    # on the older commit
    python tests/bit_identity.py compare before.npz # on this one; exit status 1 if any array differs
Imports through public names that exist before and after the layout change.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import rnnx


def _mod(*names):
    import importlib

    for n in names:
        try:
            return importlib.import_module(n)
        except ImportError:
            pass
    raise ImportError(names)


def snapshot():
    out = {}
    cells = {
        "simple_rnn": rnnx.simple_rnn(8),
        "simple_rnn_relu": rnnx.simple_rnn(8, activation="relu"),
        "lstm": rnnx.lstm(8),
        "gru": rnnx.gru(8),
        "gru_before": rnnx.gru(8, reset_after=False),
        "min_gru": rnnx.min_gru(8),
        "min_lstm": rnnx.min_lstm(8),
        "lstm_bf16": rnnx.lstm(8, dtype=jnp.bfloat16),
    }
    xs = jax.random.normal(jax.random.key(1), (3, 7, 5))
    lengths = jnp.array([7, 4, 1])
    for name, cell in cells.items():
        p = cell.init(jax.random.key(0), 5)
        for k, v in p.items():
            out[f"{name}/params/{k}"] = v
        carry, ys = rnnx.unroll(cell, p, xs, lengths=lengths)
        out[f"{name}/ys"] = ys
        for i, c in enumerate(jax.tree.leaves(carry)):
            out[f"{name}/carry{i}"] = c
        g = jax.grad(lambda p: jnp.sum(rnnx.unroll(cell, p, xs, lengths=lengths)[1] ** 2))(p)
        for k, v in g.items():
            out[f"{name}/grad/{k}"] = v
        net = rnnx.stacked(cell, 2, bidirectional=True, dropout=0.2)
        sp = net.init(jax.random.key(2), 5)
        for i, leaf in enumerate(jax.tree.leaves(sp)):
            out[f"{name}/stack/param{i}"] = leaf
        carry, ys = net.apply(sp, xs, lengths=lengths, key=jax.random.key(3))
        out[f"{name}/stack/ys"] = ys
    from flax import nnx

    for cls in ("SimpleRNN", "LSTM", "GRU"):
        m = getattr(rnnx.nn, cls)(5, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
        for i, leaf in enumerate(jax.tree.leaves(nnx.state(m, nnx.Param))):
            out[f"nn/{cls}/param{i}"] = leaf
        ys, _ = m(xs)
        out[f"nn/{cls}/ys"] = ys
    models = _mod("rnnx.apps.models", "rnnx.models")
    clf = models.classifier(rnnx.stacked(rnnx.lstm(8)), 20, 6, 3, dropout_rate=0.1)
    cp = clf.init(jax.random.key(4))
    for i, leaf in enumerate(jax.tree.leaves(cp)):
        out[f"clf/param{i}"] = leaf
    lm = models.language_model(rnnx.stacked(rnnx.gru(8), 2), 20, 6)
    lp = lm.init(jax.random.key(5))
    for i, leaf in enumerate(jax.tree.leaves(lp)):
        out[f"lm/param{i}"] = leaf
    # A short fit: optimiser, clipping, step keys.
    train = _mod("rnnx.training", "rnnx.train")
    losses = _mod("rnnx.training.losses", "rnnx.losses")
    tokens = jax.random.randint(jax.random.key(6), (4, 4, 11), 0, 20)

    def lm_loss(params, batch, key, carry):
        logits, carry = lm.apply(params, batch[:, :-1], carry, key=key)
        return losses.masked_cross_entropy(logits, batch[:, 1:]), ({}, carry)

    default_carry = getattr(lm.net, "default_carry", None) or lm.net.initial_carry  # renamed after rnnx 0.1
    kwargs = dict(steps=6, seed=0, initial_carry=default_carry(lp["rnn"], (4,)))
    optimizer = train.default_optimizer(3e-2)
    try:  # the loop before the layout change took progress=
        res = train.fit(lm_loss, lp, lambda e: list(tokens), progress=False, optimizer=optimizer, **kwargs)
    except TypeError:
        res = train.fit(lm_loss, lp, lambda e: list(tokens), optimizer=optimizer, **kwargs)
    for i, leaf in enumerate(jax.tree.leaves(res.last_params)):
        out[f"fit/param{i}"] = leaf
    return {k: np.asarray(v.astype(jnp.float32) if v.dtype == jnp.bfloat16 else v) for k, v in out.items()}


if __name__ == "__main__":
    verb, path = sys.argv[1], sys.argv[2]
    snap = snapshot()
    if verb == "save":
        np.savez(path, **snap)
        print(f"saved {len(snap)} arrays to {path}")
    else:
        ref = dict(np.load(path))
        assert set(ref) == set(snap), set(ref) ^ set(snap)
        bad = [k for k in ref if not (ref[k].shape == snap[k].shape and ref[k].tobytes() == snap[k].tobytes())]
        print(f"compared {len(ref)} arrays: {len(bad)} differ {bad[:10]}")
        sys.exit(1 if bad else 0)
