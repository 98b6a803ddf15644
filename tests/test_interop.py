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


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_torch_lstm_swaps_for_rnnx_nn_lstm_with_its_weights_and_mode(mode):
    """The docs' path: a trained torch.nn.LSTM becomes an rnnx.nn.LSTM computing the same function, in the same
    mode: a torch module in eval mode gives a deterministic one (no dropout), whatever rngs it is given."""
    torch = require_torch()
    import rnnx.nn

    torch.manual_seed(0)
    torch_lstm = getattr(torch.nn.LSTM(D, H, num_layers=2, batch_first=True, dropout=0.5), mode)()
    model = rnnx.nn.LSTM.from_torch(torch_lstm, rngs=0)
    assert isinstance(model, rnnx.nn.LSTM) and model.net.dropout == pytest.approx(0.5)
    assert model.deterministic == (mode == "eval")
    assert model.to_torch().training == (mode == "train")
    xs = _xs(2)
    ys, carry = model(xs)
    with torch.no_grad():
        out, (h_n, c_n) = torch_lstm.eval()(torch.from_numpy(xs))
    if mode == "train":  # dropout on between the layers: not torch's eval outputs until model.eval()
        assert np.abs(np.asarray(ys) - out.numpy()).max() > 1e-3
        model.eval()
        ys, carry = model(xs)
    np.testing.assert_allclose(ys, out.numpy(), atol=ATOL)
    np.testing.assert_allclose(np.stack([c.c for c in carry]), c_n.numpy(), atol=ATOL)
    # and back to torch, exactly in outputs
    with torch.no_grad():
        back = model.to_torch()(torch.from_numpy(xs))[0]
    np.testing.assert_allclose(back.numpy(), out.numpy(), atol=ATOL)


def test_from_torch_keeps_torchs_time_major_layout_and_the_shape_error_says_so():
    """torch's default batch_first=False gives a time-major stack; batch-major arrays with a state (or lengths)
    are refused with an error naming time_major and batch_first."""
    torch = require_torch()
    net, params = rnnx.interop.from_torch(torch.nn.LSTM(D, H))
    assert net.time_major
    xs = _xs()  # (B, T, D): batch-major
    carry = net.default_carry(params, (B,))
    fix = r"read as \(time, \*batch, features\) since time_major=True\. If xs is \(\*batch, time, features\), "
    fix += r"pass time_major=False \(a torch module's batch_first=True\)"
    with pytest.raises(ValueError, match="initial_carry must have shapes .*" + fix):
        net.apply(params, xs, initial_carry=carry)
    with pytest.raises(ValueError, match="lengths must have the batch shape .*" + fix):
        net.apply(params, xs, lengths=np.full(B, T))
    time_major_xs = np.swapaxes(xs, 0, 1)  # what the stack reads
    assert net.apply(params, time_major_xs, initial_carry=carry)[1].shape == (T, B, H)


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
    layer = keras.layers.GRU(H, go_backwards=True, return_sequences=True)
    layer.build((None, T, D))
    with pytest.raises(ValueError, match="go_backwards=True reads the sequence backwards.*Bidirectional"):
        rnnx.interop.from_keras(layer)
    # What the message says to do instead: the weights, run in reverse, give Keras's outputs flipped along time.
    cell, params = rnnx.interop.from_keras_weights("GRU", layer.get_weights())
    xs = _xs()
    ys = rnnx.unroll(cell, params, xs, reverse=True)[1]
    np.testing.assert_allclose(np.asarray(layer(xs))[:, ::-1], ys, atol=ATOL)
    with pytest.raises(ValueError, match="merge_mode must be 'concat'.*received 'sum'"):
        rnnx.interop.from_keras(_built(keras.layers.Bidirectional(keras.layers.GRU(H), merge_mode="sum")))
    mixed = keras.layers.Bidirectional(
        keras.layers.LSTM(H), backward_layer=keras.layers.LSTM(H, use_bias=False, go_backwards=True)
    )
    with pytest.raises(ValueError, match="forward and backward layers must compute the same cell"):
        rnnx.interop.from_keras(_built(mixed))


def _built(layer):
    layer.build((None, T, D))
    return layer


def test_real_keras_unbuilt_layer_says_to_build_it():
    keras = _keras()
    for layer in (keras.layers.GRU(H, name="gru_0"), keras.layers.Bidirectional(keras.layers.LSTM(H), name="bi_0")):
        kind = type(layer).__name__
        with pytest.raises(ValueError, match=rf"the Keras {kind} layer '\w+' has no weights yet: build it first"):
            rnnx.interop.from_keras(layer)


@pytest.mark.parametrize("name", sorted(KERAS_CASES))
def test_real_keras_bidirectional_both_directions(name):
    """keras.layers.Bidirectional <-> a one-layer bidirectional stack, exactly; the backward half is the
    layer Keras builds with go_backwards=True."""
    keras = _keras()
    kind, make_cell, config = KERAS_CASES[name]
    xs = _xs()
    layer = _built(keras.layers.Bidirectional(getattr(keras.layers, kind)(H, return_sequences=True, **config)))
    layer.forward_layer.set_weights(_keras_layout_weights(kind, config, seed=5))
    layer.backward_layer.set_weights(_keras_layout_weights(kind, config, seed=6))
    net, params = rnnx.interop.from_keras(layer)
    assert net == rnnx.stacked(make_cell(), bidirectional=True)
    np.testing.assert_allclose(jax.jit(net.apply)(params, xs)[1], np.asarray(layer(xs)), atol=ATOL)
    # rnnx -> Keras Bidirectional, and back bit for bit
    params = [[_random_params(make_cell(), seed=0), _random_params(make_cell(), seed=7)]]
    exported = rnnx.interop.to_keras(net, params, return_sequences=True)
    assert type(exported).__name__ == "Bidirectional" and exported.backward_layer.go_backwards
    np.testing.assert_allclose(np.asarray(exported(xs)), jax.jit(net.apply)(params, xs)[1], atol=ATOL)
    assert _bits(rnnx.interop.from_keras(exported)[1]) == _bits(params)


def test_real_keras_bidirectional_with_its_own_backward_layer_and_a_mask():
    """A backward_layer= of one's own, padded batches: Keras's mask is rnnx's lengths (Bidirectional writes zeros
    at masked steps, zero_output_for_mask, as rnnx does)."""
    keras = _keras()
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True),
        backward_layer=keras.layers.LSTM(H, return_sequences=True, go_backwards=True),
    )
    layer = _built(layer)
    layer.forward_layer.set_weights(_keras_layout_weights("LSTM", {}, seed=8))
    layer.backward_layer.set_weights(_keras_layout_weights("LSTM", {}, seed=9))
    net, params = rnnx.interop.from_keras(layer)
    xs, lengths = _xs(), np.array([T, 3, 1])
    mask = np.arange(T) < lengths[:, None]
    _, ys = net.apply(params, xs, lengths=lengths)
    np.testing.assert_allclose(ys, np.asarray(layer(xs, mask=mask)), atol=ATOL)
    assert not np.asarray(ys)[~mask].any()


def test_real_keras_masked_steps_repeat_the_last_output_unless_zero_output_for_mask():
    """Keras repeats the last output at masked steps; rnnx writes zeros, as Keras's zero_output_for_mask=True."""
    keras = _keras()
    xs, lengths = _xs(), np.array([T, 3, 1])
    mask = np.arange(T) < lengths[:, None]
    outputs = {}
    for zero in (False, True):
        layer = _built(keras.layers.GRU(H, return_sequences=True, zero_output_for_mask=zero))
        layer.set_weights(_keras_layout_weights("GRU", {}, seed=10))
        outputs[zero] = np.asarray(layer(xs, mask=mask))
    cell, params = rnnx.interop.from_keras(layer)
    ys = np.asarray(rnnx.unroll(cell, params, xs, lengths=lengths)[1])
    np.testing.assert_allclose(ys, outputs[True], atol=ATOL)
    np.testing.assert_allclose(ys[mask], outputs[False][mask], atol=ATOL)
    last = ys[np.arange(B), lengths - 1]
    np.testing.assert_allclose(outputs[False][1, 3:], np.broadcast_to(last[1], (T - 3, H)), atol=ATOL)


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
