"""rnnx.diagnostics against independent oracles: rnnx.unroll restarted mid-sequence, jax.jacrev, and the
closed form of a linear RNN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import rnnx
from rnnx import diagnostics
from tests.conftest import CELLS, B, H, T, tiered

# The cells whose output is their hidden state; the others are refused (the last test).
REFUSED = ("lru", "slstm", "mlstm")


@pytest.fixture(params=tiered(set(CELLS) - set(REFUSED)))
def cell_name(request):
    return request.param


def _hidden(carry):
    return carry.h if isinstance(carry, rnnx.LSTMCarry) else carry


def _loss(ys):
    # Depends on every output, nonlinearly, so each state's gradient has a past-independent part and a future part.
    weights = jnp.linspace(-1.0, 1.0, ys.shape[-1])
    return jnp.mean(jnp.sin(ys @ weights) ** 2) + jnp.mean(ys[..., -1, :] ** 2)


def _probes(cell, params, batch_shape, value=0.0):
    return jax.tree.map(lambda c: jnp.full_like(c, value), cell.default_carry(params, batch_shape))


def test_zero_probes_compute_what_unroll_computes(cell, params, xs):
    carry, ys = rnnx.unroll(cell, params, xs)
    probed_carry, probed_ys = diagnostics.unroll_with_probes(cell, params, xs, _probes(cell, params, (B, T)))
    np.testing.assert_allclose(probed_ys, ys, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), probed_carry, carry)


def test_a_probe_shifts_the_state_it_is_added_to(cell, params, xs):
    # A probe at the last step changes only the last output, by exactly the probe's hidden part.
    probes = jax.tree.map(lambda p: p.at[:, -1].set(0.5), _probes(cell, params, (B, T)))
    _, ys = diagnostics.unroll_with_probes(cell, params, xs, probes)
    _, plain = rnnx.unroll(cell, params, xs)
    np.testing.assert_allclose(ys[:, :-1], plain[:, :-1], atol=1e-6)
    np.testing.assert_allclose(ys[:, -1], plain[:, -1] + 0.5, atol=1e-6)


def test_hidden_grad_norms_equal_gradients_of_a_restarted_unroll(cell, params, xs):
    loss, norms = diagnostics.hidden_grad_norms(cell, params, xs, _loss)
    np.testing.assert_allclose(loss, _loss(rnnx.unroll(cell, params, xs)[1]), rtol=1e-6)
    for t in (2, T):  # the state after reading x_t: index t - 1
        state, ys_before = rnnx.unroll(cell, params, xs[:, :t])

        def loss_from(state):
            later = [rnnx.unroll(cell, params, xs[:, t:], initial_carry=state)[1]] if t < T else []
            return _loss(jnp.concatenate([ys_before[:, :-1], _hidden(state)[:, None], *later], axis=1))

        grads = jax.grad(loss_from)(state)
        expected = jax.tree.map(lambda g: jnp.sqrt(jnp.sum(g**2)), grads)
        jax.tree.map(lambda n, e: np.testing.assert_allclose(n[t - 1], e, rtol=2e-5, atol=1e-8), norms, expected)


def test_jacobian_norms_equal_jacrev(cell, params, xs):
    carry0 = jax.tree.map(lambda c: 0.3 * jnp.cos(jnp.arange(c.size, dtype=c.dtype)), cell.default_carry(params))
    batch_carry0 = jax.tree.map(lambda c: jnp.broadcast_to(c, (B, H)), carry0)
    ords = {"spectral": 2, "frobenius": "fro"}
    norms = {n: diagnostics.jacobian_norms(cell, params, xs, norm=n, initial_carry=batch_carry0) for n in ords}
    assert {k: v.shape for k, v in norms["spectral"].items()} == {k: (B, T) for k in norms["spectral"]}
    flat0, unravel = ravel_pytree(carry0)
    for t in (2, T):
        jac = jax.jacrev(lambda s: ravel_pytree(rnnx.unroll(cell, params, xs[1, :t], initial_carry=unravel(s))[0])[0])(
            flat0
        )
        h, c = slice(0, H), slice(H, 2 * H)
        blocks = {"state": jac, "dh_dh0": jac[h, h]}
        if isinstance(carry0, rnnx.LSTMCarry):
            blocks |= {"dc_dc0": jac[c, c], "dh_dc0": jac[h, c], "dc_dh0": jac[c, h]}
        for norm, ord_ in ords.items():
            assert set(norms[norm]) == set(blocks)
            for k, block in blocks.items():
                expected = np.linalg.norm(block, ord_)
                np.testing.assert_allclose(norms[norm][k][1, t - 1], expected, rtol=2e-5, err_msg=f"{norm} {k}")


@pytest.mark.parametrize("kind", ["permutation", "positive"])
def test_linear_rnn_jacobian_is_a_matrix_power(kind):
    # relu with every pre-activation positive is the identity, so h_t = h_{t-1} W + x_t U + b and
    # dh_T/dh_0 = (W^T)^T exactly. A scaled permutation is g times an orthogonal matrix (norm g^T); a random
    # positive matrix is far from normal, so its power's norm is not the T-th power of its norm.
    h, steps = 5, 40
    w = (
        1.1 * np.eye(h)[np.roll(np.arange(h), 1)]
        if kind == "permutation"
        else np.random.default_rng(0).uniform(0, 0.4, (h, h))
    )
    cell = rnnx.simple_rnn(h, activation="relu")
    params = {"w_ih": jnp.ones((1, h)), "w_hh": jnp.asarray(w, jnp.float32), "b": jnp.full((h,), 0.1)}
    xs = jax.random.uniform(jax.random.key(0), (steps, 1))
    for norm, ord_ in (("spectral", 2), ("frobenius", "fro")):
        logs = diagnostics.jacobian_norms(cell, params, xs, norm=norm, log=True)["dh_dh0"]
        powers = [np.linalg.norm(np.linalg.matrix_power(w.T, t), ord_) for t in range(1, steps + 1)]
        np.testing.assert_allclose(logs, np.log10(powers), atol=1e-4)
    if kind == "permutation":
        np.testing.assert_allclose(logs, 0.5 * np.log10(h) + np.arange(1, steps + 1) * np.log10(1.1), atol=1e-4)


def _tanh_rnn(gain, steps=60):
    scaled = lambda k, s, d: gain * jax.nn.initializers.orthogonal()(k, s, d)  # noqa: E731
    cell = rnnx.simple_rnn(16, recurrent_init=scaled)
    params = cell.init(jax.random.key(0), 2)
    return cell, params, jax.random.normal(jax.random.key(1), (4, steps, 2))


def test_tanh_rnn_with_small_weights_vanishes_geometrically():
    cell, params, xs = _tanh_rnn(0.5)
    # Each step back multiplies the gradient by diag(tanh') W^T, whose norm is at most 0.5.
    _, norms = diagnostics.hidden_grad_norms(cell, params, xs, lambda ys: jnp.mean(ys[:, -1] ** 2))
    assert np.all(norms[:-1] <= 0.5 * norms[1:] * (1 + 1e-5))
    logs = diagnostics.jacobian_norms(cell, params, xs, log=True)["dh_dh0"]
    assert np.all(logs <= np.arange(1, 61) * np.log10(0.5) + 1e-5)
    assert np.all(np.diff(logs, axis=-1) < 0)


def test_tanh_rnn_with_large_weights_grows():
    cell, params, xs = _tanh_rnn(3.0)
    _, norms = diagnostics.hidden_grad_norms(cell, params, xs, lambda ys: jnp.mean(ys[:, -1] ** 2))
    assert norms[0] > 1e3 * norms[-1]
    logs = diagnostics.jacobian_norms(cell, params, xs, log=True)["dh_dh0"]
    slope = np.polyfit(np.arange(60), logs.mean(0), 1)[0]
    assert slope > 0.02, slope  # log10 gain per step: the norm grows geometrically despite tanh saturation


def test_lstm_cell_state_carries_gradient_where_the_tanh_rnn_vanishes():
    # Forget gates held open (sigma(10) = 0.99995) keep dc_T/dc_0 near 1 over 60 steps; the RNN at gain 0.5
    # is below 0.5^60 ~ 1e-18.
    cell = rnnx.lstm(16, forget_bias=10.0)
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (4, 60, 2))
    logs = diagnostics.jacobian_norms(cell, params, xs, log=True)
    assert np.all(logs["dc_dc0"] > -0.1)
    assert np.all(logs["dc_dc0"] > logs["dh_dh0"])


def test_bad_arguments_raise():
    cell = rnnx.gru(4)
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="norm must be one of"):
        diagnostics.jacobian_norms(cell, params, jnp.zeros((5, 3)), norm="nuclear")
    with pytest.raises(ValueError, match=r"xs must have shape \(\*batch, time, 3\).*received shape \(5, 2\)"):
        diagnostics.hidden_grad_norms(cell, params, jnp.zeros((5, 2)), jnp.sum)


@pytest.mark.parametrize("name", REFUSED)
def test_cells_whose_output_is_not_their_state_are_refused_with_the_reason(name):
    cell = rnnx.make_cell(name, 4)
    params = cell.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=f"measure cells whose output is their hidden state.*received a {name} cell"):
        diagnostics.hidden_grad_norms(cell, params, jnp.ones((1, 3, 2)), jnp.sum)
