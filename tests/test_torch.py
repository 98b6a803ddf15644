"""PyTorch as an external oracle: from_torch converts exactly, for every layout torch offers."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import rnnx
from tests.conftest import require_torch

torch = require_torch()

MODULES = {"RNN": "simple_rnn", "LSTM": "lstm", "GRU": "gru"}  # torch.nn class -> rnnx.CELLS name
CASES = list(itertools.product(MODULES, [1, 2], [False, True]))  # module, num_layers, bidirectional
B, T, D, H = 4, 7, 5, 6
LENGTHS = [7, 5, 2, 1]


def _torch_module(kind, num_layers, bidirectional, **kw):
    torch.manual_seed(0)
    return getattr(torch.nn, kind)(D, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, **kw)


def _run_torch(module, xs, lengths=None):
    x = torch.from_numpy(np.asarray(xs))
    with torch.no_grad():
        if lengths is None:
            out, state = module(x)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, torch.tensor(lengths), batch_first=True, enforce_sorted=False
            )
            out, state = module(packed)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    return out.numpy(), h_n.numpy(), None if c_n is None else c_n.numpy()


def _check(net, params, module, xs, lengths):
    carry, ys = net.apply(params, xs, lengths=None if lengths is None else jnp.array(lengths))
    out, h_n, c_n = _run_torch(module, xs, lengths)
    errors = [np.abs(ys - out).max()]
    for k, c in enumerate(carry):
        h = c.h if isinstance(c, rnnx.LSTMCarry) else c
        errors.append(np.abs(h - h_n[k]).max())
        if c_n is not None:
            errors.append(np.abs(c.c - c_n[k]).max())
    return max(errors)


@pytest.mark.parametrize("kind, num_layers, bidirectional", CASES)
@pytest.mark.parametrize("packed", [False, True])
def test_from_torch_matches_torch_outputs_and_final_states(kind, num_layers, bidirectional, packed):
    module = _torch_module(kind, num_layers, bidirectional)
    net, params = rnnx.interop.from_torch(module)
    assert net.cell.name == MODULES[kind]
    xs = np.random.default_rng(0).normal(size=(B, T, D)).astype(np.float32)
    error = _check(net, params, module, xs, LENGTHS if packed else None)
    assert error < 1e-5, f"max abs error {error:.2e}"


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("RNN", dict(nonlinearity="relu")),
        ("LSTM", dict(bias=False)),
        ("GRU", dict(bias=False)),
        ("RNN", dict(bias=False)),
    ],
)
def test_from_torch_relu_and_no_bias(kind, kw):
    module = _torch_module(kind, 2, True, **kw)
    net, params = rnnx.interop.from_torch(module)
    if not kw.get("bias", True):  # no bias means no bias parameters, not zeros
        assert rnnx.count_params(params) == sum(p.numel() for p in module.parameters())
    xs = np.random.default_rng(1).normal(size=(B, T, D)).astype(np.float32)
    assert _check(net, params, module, xs, LENGTHS) < 1e-5


def test_from_torch_time_major_when_not_batch_first():
    torch.manual_seed(0)
    module = torch.nn.LSTM(D, H, num_layers=2)
    net, params = rnnx.interop.from_torch(module)
    xs = np.random.default_rng(2).normal(size=(T, B, D)).astype(np.float32)
    with torch.no_grad():
        out, _ = module(torch.from_numpy(xs))
    np.testing.assert_allclose(net.apply(params, xs)[1], out.numpy(), atol=1e-5)


def test_folded_biases_count_matches_the_two_conventions():
    """torch keeps two biases: h(i+h+2) per gate block; rnnx folds them to h(i+h+1) (+h for b_hn)."""
    for kind, gates, extra in [("RNN", 1, 0), ("LSTM", 4, 0), ("GRU", 3, 128)]:
        module = getattr(torch.nn, kind)(300, 128)
        assert sum(p.numel() for p in module.parameters()) == gates * 128 * (300 + 128 + 2)
        _, params = rnnx.interop.from_torch(module)
        assert rnnx.count_params(params) == gates * 128 * (300 + 128 + 1) + extra


def test_from_torch_rejects_what_it_cannot_convert():
    with pytest.raises(ValueError, match="proj_size"):
        rnnx.interop.from_torch(torch.nn.LSTM(D, H, proj_size=3))
    with pytest.raises(TypeError, match="torch.nn.RNN, LSTM or GRU.*Linear"):
        rnnx.interop.from_torch(torch.nn.Linear(3, 4))


def test_cell_gradients_match_torch():
    """Backpropagation through time agrees with torch's autograd, for all parameters."""
    module = _torch_module("GRU", 1, False)
    net, params = rnnx.interop.from_torch(module)
    xs = np.random.default_rng(3).normal(size=(B, T, D)).astype(np.float32)
    import jax

    grads = jax.grad(lambda p: jnp.sum(net.apply(p, xs)[1] ** 2))(params)[0][0]
    out, _ = module(torch.from_numpy(xs))
    (out**2).sum().backward()
    np.testing.assert_allclose(grads["w_ih"], module.weight_ih_l0.grad.numpy().T, atol=1e-4)
    np.testing.assert_allclose(grads["w_hh"], module.weight_hh_l0.grad.numpy().T, atol=1e-4)
    np.testing.assert_allclose(grads["b_hn"], module.bias_hh_l0.grad.numpy()[2 * H :], atol=1e-4)
    # The folded bias b = b_ih + b_hh (r, z) receives the gradient of either.
    np.testing.assert_allclose(grads["b"], module.bias_ih_l0.grad.numpy(), atol=1e-4)
