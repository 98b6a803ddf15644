"""Lossless weight exchange: PyTorch (to_torch), Keras 3 and Flax linen, each direction against the real
library where installed, plus a Keras-layout check that needs no Keras.

Bit-exactness is checked on raw bytes, so a -0.0 turning into +0.0 would fail."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import rnnx
from tests.conftest import require_torch

B, T, D, H = 3, 6, 5, 4
ATOL = 1e-5
# Keras 3.15 itself calls np.array(variable) in a way NumPy 2 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _bits(tree):
    return jax.tree.map(lambda a: np.asarray(a).tobytes(), tree)


def _random_params(cell, seed=0):
    """Params with every entry non-zero, biases included, and one -0.0 to catch sign-of-zero losses."""
    p = cell.init(jax.random.key(seed), D)
    p = {k: 0.5 * jax.random.normal(jax.random.key(seed + 1 + i), v.shape) for i, (k, v) in enumerate(p.items())}
    return {k: v.at[0].set(-0.0) if k in ("b", "b_hn") else v for k, v in p.items()}


def _xs(seed=1):
    return np.array(jax.random.normal(jax.random.key(seed), (B, T, D)))


def _run(cell, params, xs):
    return jax.jit(lambda p, x: rnnx.unroll(cell, p, x))(params, xs)


# ------------------------------------------------------------------------------------------------- PyTorch

TORCH_CASES = {
    "rnn_relu": lambda: rnnx.simple_rnn(H, activation="relu"),
    "lstm": lambda: rnnx.lstm(H),
    "gru": lambda: rnnx.gru(H),
    "lstm_no_bias": lambda: rnnx.lstm(H, use_bias=False),
}


def _stack_params(net, seed):
    params = net.init(jax.random.key(seed), D)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, v.shape) for k, v in zip(keys, leaves)])


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_to_torch_matches_and_round_trips_bit_exactly(name):
    torch = require_torch()
    net = rnnx.stacked(TORCH_CASES[name](), num_layers=2 if name == "gru" else 1, bidirectional=True)
    params = _stack_params(net, 3)
    if net.cell.config["use_bias"]:
        params[-1][1]["b"] = params[-1][1]["b"].at[1].set(-0.0)
    module = rnnx.interop.to_torch(net, params)
    assert module.batch_first and module.num_layers == net.num_layers and module.bidirectional
    xs = _xs()
    with torch.no_grad():
        out, state = module(torch.from_numpy(xs))
    carry, ys = jax.jit(net.apply)(params, xs)
    np.testing.assert_allclose(ys, out.numpy(), atol=ATOL)
    h_n = state[0] if isinstance(state, tuple) else state
    for k, c in enumerate(carry):
        np.testing.assert_allclose(c.h if isinstance(c, rnnx.LSTMCarry) else c, h_n[k].numpy(), atol=ATOL)
    # rnnx -> torch -> rnnx: bit for bit.
    net2, params2 = rnnx.interop.from_torch(module)
    assert net2 == net  # the same stack: cells and stacks compare by configuration
    assert _bits(params2) == _bits(params)
    # torch -> rnnx -> torch: weights bit for bit, biases summed exactly, so outputs equal up to the order
    # in which torch adds the two biases.
    back = rnnx.interop.to_torch(*rnnx.interop.from_torch(module))
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(xs))[0].numpy(), out.numpy(), atol=1e-6)
    assert [n for n, _ in module.named_parameters()] == [n for n, _ in back.named_parameters()]
    for (name, p1), p2 in zip(module.named_parameters(), back.parameters()):
        if name.startswith("weight"):
            assert torch.equal(p1, p2), name


def test_torch_lstm_swaps_for_rnnx_nn_lstm_with_its_weights():
    """The README's path: a trained torch.nn.LSTM becomes an rnnx.nn.LSTM computing the same function."""
    torch = require_torch()
    from flax import nnx

    import rnnx.nn

    torch.manual_seed(0)
    torch_lstm = torch.nn.LSTM(D, H, num_layers=2, batch_first=True, dropout=0.1)
    model = rnnx.nn.LSTM.from_functional(*rnnx.interop.from_torch(torch_lstm), rngs=nnx.Rngs(0))
    assert isinstance(model, rnnx.nn.LSTM) and model.net.dropout == pytest.approx(0.1)
    model.eval()
    torch_lstm.eval()
    xs = _xs(2)
    ys, carry = model(xs)
    with torch.no_grad():
        out, (h_n, c_n) = torch_lstm(torch.from_numpy(xs))
    np.testing.assert_allclose(ys, out.numpy(), atol=ATOL)
    np.testing.assert_allclose(np.stack([c.c for c in carry]), c_n.numpy(), atol=ATOL)
    # and back to torch, exactly in outputs
    with torch.no_grad():
        back = rnnx.interop.to_torch(*model.functional()).eval()(torch.from_numpy(xs))[0]
    np.testing.assert_allclose(back.numpy(), out.numpy(), atol=ATOL)


def test_to_torch_refuses_what_torch_cannot_compute():
    require_torch()
    net = rnnx.stacked(rnnx.gru(H, reset_after=False))
    with pytest.raises(ValueError, match=r"PyTorch has only the reset-after GRU.*no exact conversion"):
        rnnx.interop.to_torch(net, net.init(jax.random.key(0), D))
    net = rnnx.stacked(rnnx.lstm(H, learn_initial_carry=True))
    with pytest.raises(ValueError, match="learned initial carry"):
        rnnx.interop.to_torch(net, net.init(jax.random.key(0), D))


# ----------------------------------------------------------------------------------- Keras, without Keras


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _keras_reference(kind, weights, xs, *, activation="tanh", reset_after=True):
    """Keras 3's documented cell equations over Keras-layout arrays (float64), gate orders i,f,c,o / z,r,h."""
    kernel, recurrent = (np.asarray(w, np.float64) for w in weights[:2])
    units = recurrent.shape[0]
    bias = np.asarray(weights[2], np.float64) if len(weights) == 3 else None
    act = np.tanh if activation == "tanh" else (lambda v: np.maximum(v, 0.0))
    h = np.zeros((xs.shape[0], units))
    c = np.zeros_like(h)
    ys = []
    for t in range(xs.shape[1]):
        x = xs[:, t].astype(np.float64)
        if kind == "SimpleRNN":
            h = act(x @ kernel + (0 if bias is None else bias) + h @ recurrent)
        elif kind == "LSTM":
            z = x @ kernel + h @ recurrent + (0 if bias is None else bias)
            i, f, g, o = np.split(z, 4, axis=-1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        else:
            b_in, b_rec = (bias[0], bias[1]) if bias is not None and reset_after else (bias, None)
            xz, xr, xh = np.split(x @ kernel + (0 if b_in is None else b_in), 3, axis=-1)
            if reset_after:
                inner = h @ recurrent + (0 if b_rec is None else b_rec)
                rz, rr, rh = np.split(inner, 3, axis=-1)
                z, r = _sigmoid(xz + rz), _sigmoid(xr + rr)
                hh = np.tanh(xh + r * rh)
            else:
                rz, rr = np.split(h @ recurrent[:, : 2 * units], 2, axis=-1)
                z, r = _sigmoid(xz + rz), _sigmoid(xr + rr)
                hh = np.tanh(xh + (r * h) @ recurrent[:, 2 * units :])
            h = z * h + (1 - z) * hh
        ys.append(h)
    return np.stack(ys, axis=1)


KERAS_CASES = {  # name: (Keras layer, rnnx cell, extra Keras config)
    "SimpleRNN_tanh": ("SimpleRNN", lambda: rnnx.simple_rnn(H), {}),
    "SimpleRNN_relu": ("SimpleRNN", lambda: rnnx.simple_rnn(H, activation="relu"), {"activation": "relu"}),
    "LSTM": ("LSTM", lambda: rnnx.lstm(H), {}),
    "LSTM_no_bias": ("LSTM", lambda: rnnx.lstm(H, use_bias=False), {"use_bias": False}),
    "GRU_reset_after": ("GRU", lambda: rnnx.gru(H), {}),
    "GRU_reset_before": ("GRU", lambda: rnnx.gru(H, reset_after=False), {"reset_after": False}),
    "GRU_no_bias": ("GRU", lambda: rnnx.gru(H, use_bias=False), {"use_bias": False}),
}


def _keras_layout_weights(kind, config, seed):
    rng = np.random.default_rng(seed)
    gates = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
    weights = [rng.normal(0, 0.5, (D, gates * H)), rng.normal(0, 0.5, (H, gates * H))]
    if config.get("use_bias", True):
        two_rows = kind == "GRU" and config.get("reset_after", True)
        weights.append(rng.normal(0, 0.5, (2, gates * H) if two_rows else (gates * H,)))
    return [w.astype(np.float32) for w in weights]


@pytest.mark.parametrize("name", sorted(KERAS_CASES))
def test_keras_layout_both_directions_against_keras_equations(name):
    kind, make_cell, config = KERAS_CASES[name]
    xs = _xs()
    ref = dict(activation=config.get("activation", "tanh"), reset_after=config.get("reset_after", True))
    # Keras -> rnnx
    weights = _keras_layout_weights(kind, config, seed=4)
    cell, params = rnnx.interop.from_keras_weights(kind, weights, **ref)
    assert cell.config == make_cell().config
    np.testing.assert_allclose(_run(cell, params, xs)[1], _keras_reference(kind, weights, xs, **ref), atol=ATOL)
    # rnnx -> Keras, and back bit for bit
    cell = make_cell()
    params = _random_params(cell)
    exported = rnnx.interop.to_keras_weights(cell, params)
    np.testing.assert_allclose(_keras_reference(kind, exported, xs, **ref), _run(cell, params, xs)[1], atol=ATOL)
    _, back = rnnx.interop.from_keras_weights(kind, exported, **ref)
    assert _bits(back) == _bits(params)


def test_keras_layout_errors():
    with pytest.raises(ValueError, match=r"bias must have shape \(2, 12\) for Keras GRU\(reset_after=True\)"):
        rnnx.interop.from_keras_weights("GRU", [np.zeros((D, 12)), np.zeros((H, 12)), np.zeros(12)])
    with pytest.raises(ValueError, match="kind must be one of"):
        rnnx.interop.from_keras_weights("ConvLSTM", [])
    net = rnnx.stacked(rnnx.lstm(H), num_layers=2)
    with pytest.raises(ValueError, match="converts one layer in one direction"):
        rnnx.interop.to_keras_weights(net, net.init(jax.random.key(0), D))


# ------------------------------------------------------------------------------------------- real Keras 3


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras", reason="Keras 3 oracle tests need keras (optional): pip install keras")


@pytest.mark.parametrize("name", sorted(KERAS_CASES))
def test_real_keras_layers_both_directions(name):
    keras = _keras()
    kind, make_cell, config = KERAS_CASES[name]
    xs = _xs()
    layer = getattr(keras.layers, kind)(H, return_sequences=True, **config)
    layer.build((None, T, D))
    layer.set_weights(_keras_layout_weights(kind, config, seed=5))  # non-zero biases, unlike Keras's init
    cell, params = rnnx.interop.from_keras(layer)
    assert cell.config == make_cell().config
    np.testing.assert_allclose(_run(cell, params, xs)[1], np.asarray(layer(xs)), atol=ATOL)
    # rnnx -> Keras layer
    cell = make_cell()
    params = _random_params(cell)
    exported = rnnx.interop.to_keras(cell, params, return_sequences=True)
    np.testing.assert_allclose(np.asarray(exported(xs)), _run(cell, params, xs)[1], atol=ATOL)
    assert _bits(rnnx.interop.from_keras(exported)[1]) == _bits(params)


def test_real_keras_refuses_settings_that_change_the_function():
    keras = _keras()
    layer = keras.layers.LSTM(H, recurrent_activation="hard_sigmoid")
    layer.build((None, T, D))
    with pytest.raises(ValueError, match="recurrent_activation must be 'sigmoid'.*received 'hard_sigmoid'"):
        rnnx.interop.from_keras(layer)
    layer = keras.layers.GRU(H, go_backwards=True)
    layer.build((None, T, D))
    with pytest.raises(ValueError, match="go_backwards"):
        rnnx.interop.from_keras(layer)


# ------------------------------------------------------------------------------------------- Flax linen

LINEN_CASES = {  # name: (linen cell, rnnx cell)
    "SimpleCell_tanh": (lambda: nn.SimpleCell(H), lambda: rnnx.simple_rnn(H)),
    "SimpleCell_relu": (lambda: nn.SimpleCell(H, activation_fn=nn.relu), lambda: rnnx.simple_rnn(H, activation="relu")),
    "LSTMCell": (lambda: nn.LSTMCell(H), lambda: rnnx.lstm(H)),
    "OptimizedLSTMCell": (lambda: nn.OptimizedLSTMCell(H), lambda: rnnx.lstm(H)),
    "GRUCell": (lambda: nn.GRUCell(H), lambda: rnnx.gru(H)),
}


def _linen_run(linen_cell, variables, xs):
    """The real linen cell scanned over time, its carry converted to rnnx's at the end."""
    carry = linen_cell.initialize_carry(jax.random.key(0), xs[:, 0].shape)
    step = lambda c, x: linen_cell.apply(variables, c, x)  # noqa: E731
    carry, ys = jax.lax.scan(step, carry, jnp.swapaxes(xs, 0, 1))
    return carry, jnp.swapaxes(ys, 0, 1)


@pytest.mark.parametrize("name", sorted(LINEN_CASES))
def test_linen_cells_both_directions(name):
    make_linen, make_cell = LINEN_CASES[name]
    xs = _xs()
    # linen -> rnnx, with non-zero biases (linen initialises them to zero)
    linen_cell = make_linen()
    variables = linen_cell.init(jax.random.key(6), linen_cell.initialize_carry(jax.random.key(0), (B, D)), xs[:, 0])
    variables = jax.tree.map(lambda v: v + 0.3 * jax.random.normal(jax.random.key(8), v.shape), variables)
    cell, params = rnnx.interop.from_linen(linen_cell, variables)
    assert cell.config == make_cell().config
    linen_carry, linen_ys = jax.jit(lambda v, x: _linen_run(linen_cell, v, x))(variables, xs)
    carry, ys = _run(cell, params, xs)
    np.testing.assert_allclose(ys, linen_ys, atol=ATOL)
    if isinstance(carry, rnnx.LSTMCarry):  # linen's LSTM carry is (c, h)
        np.testing.assert_allclose(carry.c, linen_carry[0], atol=ATOL)
    # rnnx -> linen, and both round trips bit for bit (linen keeps the same biases as rnnx)
    cell = make_cell()
    params = _random_params(cell)
    linen_cell2, variables2 = rnnx.interop.to_linen(cell, params, optimized=name == "OptimizedLSTMCell")
    assert type(linen_cell2) is type(linen_cell)
    np.testing.assert_allclose(
        jax.jit(lambda v, x: _linen_run(linen_cell2, v, x))(variables2, xs)[1], _run(cell, params, xs)[1], atol=ATOL
    )
    assert _bits(rnnx.interop.from_linen(linen_cell2, variables2)[1]) == _bits(params)
    assert _bits(rnnx.interop.to_linen(*rnnx.interop.from_linen(linen_cell, variables))[1]) == _bits(variables)


def test_linen_refuses_what_it_cannot_convert():
    cell = rnnx.gru(H, reset_after=False)
    with pytest.raises(ValueError, match=r"Flax linen has only the reset-after GRU.*no exact conversion"):
        rnnx.interop.to_linen(cell, cell.init(jax.random.key(0), D))
    with pytest.raises(ValueError, match="residual=True"):
        rnnx.interop.from_linen(nn.SimpleCell(H, residual=True), {})
    with pytest.raises(ValueError, match="gate_fn must be sigmoid"):
        rnnx.interop.from_linen(nn.GRUCell(H, gate_fn=nn.hard_sigmoid), {})
    with pytest.raises(TypeError, match="linen_cell must be a flax.linen SimpleCell.*received MGUCell"):
        rnnx.interop.from_linen(nn.MGUCell(H), {})
    # A cell without bias exports exactly, as zero linen biases.
    cell = rnnx.lstm(H, use_bias=False)
    params = cell.init(jax.random.key(0), D)
    linen_cell, variables = rnnx.interop.to_linen(cell, params)
    xs = _xs()
    np.testing.assert_allclose(_linen_run(linen_cell, variables, xs)[1], _run(cell, params, xs)[1], atol=ATOL)
