"""minGRU / minLSTM: parallel scan equals sequential scan, the paper's equations, counts, long-sequence stability.

The generic invariants (NumPy reference with lengths and reverse, masks, resets, batch axes, float64
gradients) run for these cells through the ``CELLS`` registry in ``conftest.py``; they use the default,
parallel mode. This file checks what is particular to the parallel form.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnx
from tests import reference
from tests.conftest import CELLS, tiered

# The minGRU family. The LRU, RG-LRU and mLSTM have their parallel-form tests in tests/test_modern.py (the
# fuzzed parallel = sequential of tests/test_properties.py runs for every parallel cell).
MIN_CELLS = {name: CELLS[name] for name in ("min_gru", "min_lstm")}
B, T, D, H = 3, 9, 4, 5


def _setup(name, hidden=H, input_size=D):
    cell = MIN_CELLS[name][0](hidden)
    params = cell.init(jax.random.key(0), input_size)
    params = {k: v + 0.3 * jax.random.normal(jax.random.key(7), v.shape) for k, v in params.items()}
    return cell, params


def _inputs():
    keys = jax.random.split(jax.random.key(1), 4)
    xs = jax.random.normal(keys[0], (B, T, D))
    mask = jax.random.bernoulli(keys[1], 0.7, (B, T))  # gaps
    reset = jnp.zeros((B, T), bool).at[0, 3].set(True).at[2, 6].set(True).at[1, 4].set(True)
    h0 = jax.random.normal(keys[3], (B, H))  # both signs: the paper's log(h_0) would be NaN here
    return xs, mask, reset, h0


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", tiered(MIN_CELLS))
def test_parallel_equals_sequential_with_everything_at_once(name, reverse):
    cell, params = _setup(name)
    xs, mask, reset, h0 = _inputs()
    lengths = jnp.array([T, 6, 2])

    def loss(params, xs, h0, parallel):
        carry, ys = rnnx.unroll(
            cell,
            params,
            xs,
            lengths=lengths,
            mask=mask,
            reset=reset,
            initial_carry=h0,
            reverse=reverse,
            parallel=parallel,
        )
        return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.abs(carry) ** 2), (carry, ys)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
    (_, par), par_grads = grad(params, xs, h0, True)
    (_, seq), seq_grads = grad(params, xs, h0, False)
    chex.assert_trees_all_close(par, seq, atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(par_grads, seq_grads, atol=1e-5, rtol=1e-5)
    assert float(jnp.abs(par[1][2, 2:]).max()) == 0.0  # padding is exactly zero in the parallel mode too


@pytest.mark.parametrize("name", tiered(MIN_CELLS))
def test_parallel_matches_numpy_reference_with_a_negative_initial_state(name):
    cell, params = _setup(name)
    xs, _, _, h0 = _inputs()
    h0 = -jnp.abs(h0) - 0.5
    lengths = jnp.array([T, 4, 1])
    for reverse in (False, True):
        carry, ys = rnnx.unroll(cell, params, xs, lengths=lengths, initial_carry=h0, reverse=reverse)
        start = lambda n: np.asarray(h0[n], np.float64)  # noqa: E731
        finals, expected = reference.run(
            MIN_CELLS[name][1], params, np.asarray(xs), start, lengths=lengths, reverse=reverse
        )
        np.testing.assert_allclose(ys, expected, atol=1e-5)
        np.testing.assert_allclose(carry, np.stack(finals), atol=1e-5)


def _paper_log_space_scan(log_coeffs, log_values):
    """The paper's parallel_scan_log (Heinsen 2023) in NumPy: time on axis 0, log_values has t + 1 rows."""
    a_star = np.concatenate([np.zeros_like(log_coeffs[:1]), np.cumsum(log_coeffs, axis=0)])
    return np.exp(a_star + np.logaddexp.accumulate(log_values - a_star, axis=0))[1:]


def test_min_gru_equals_the_papers_log_space_parallel_form_for_a_positive_initial_state():
    cell, params = _setup("min_gru")
    xs, _, _, h0 = _inputs()
    h0 = jnp.abs(h0) + 0.1
    _, ys = rnnx.unroll(cell, params, xs, initial_carry=h0)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    pre = np.asarray(xs, np.float64) @ p["w_ih"] + p["b"]
    k, candidate = pre[..., :H], pre[..., H:]
    softplus = lambda v: np.logaddexp(0.0, v)  # noqa: E731
    log_g = np.where(candidate >= 0, np.log(np.maximum(candidate, 0.0) + 0.5), -softplus(-candidate))
    log_values = np.concatenate([np.log(np.asarray(h0, np.float64))[:, None], -softplus(-k) + log_g], axis=1)
    expected = _paper_log_space_scan(np.moveaxis(-softplus(k), 1, 0), np.moveaxis(log_values, 1, 0))
    np.testing.assert_allclose(ys, np.moveaxis(expected, 0, 1), atol=1e-5)


@pytest.mark.parametrize("name, expected", [("min_gru", 77_056), ("min_lstm", 115_584)])
def test_count_params_matches_the_papers_formulas(name, expected):
    params = MIN_CELLS[name][0](128).init(jax.random.key(0), 300)
    assert rnnx.count_params(params) == expected
    assert expected == (2 if name == "min_gru" else 3) * 128 * (300 + 1)


@pytest.mark.parametrize("name", tiered(MIN_CELLS))
def test_batch_axes_time_major_and_stacks_agree_across_modes(name):
    cell, params = _setup(name)
    xs = jax.random.normal(jax.random.key(2), (T, 2, 3, D))
    lengths = jnp.array([[T, 1, 3], [0, 2, T]])
    modes = [rnnx.unroll(cell, params, xs, lengths=lengths, time_major=True, parallel=p) for p in (True, False)]
    chex.assert_trees_all_close(*modes, atol=1e-5)
    net = rnnx.stacked(cell, num_layers=2, bidirectional=True)
    net_params = net.init(jax.random.key(3), D)
    xs = jax.random.normal(jax.random.key(4), (B, T, D))
    modes = [net.apply(net_params, xs, lengths=jnp.array([T, 5, 1]), parallel=p) for p in (True, False)]
    chex.assert_trees_all_close(*modes, atol=1e-5)


LONG = 10_000


@pytest.mark.parametrize("name", tiered(MIN_CELLS))
def test_ten_thousand_steps_stay_finite_and_agree_in_float32(name):
    cell, params = _setup(name, hidden=3, input_size=2)
    xs = 3.0 * jax.random.normal(jax.random.key(5), (2, LONG, 2))
    h0 = jnp.array([[-2.0, 0.0, 5.0], [1.0, -1.0, 0.3]])

    def loss(params, parallel):
        carry, ys = rnnx.unroll(cell, params, xs, initial_carry=h0, parallel=parallel)
        return jnp.mean(ys**2) + jnp.mean(carry), ys

    (value, ys), grads = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(params, True)
    chex.assert_tree_all_finite((value, ys, grads))
    (_, seq_ys), seq_grads = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)(params, False)
    np.testing.assert_allclose(ys, seq_ys, atol=1e-5)
    chex.assert_trees_all_close(grads, seq_grads, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", tiered(MIN_CELLS))
def test_ten_thousand_steps_in_bfloat16_accumulate_in_float32(name):
    cell = MIN_CELLS[name][0](3, dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0), 2)
    xs = 3.0 * jax.random.normal(jax.random.key(5), (2, LONG, 2))

    def loss(params):
        carry, ys = rnnx.unroll(cell, params, xs)
        return jnp.mean(ys.astype(jnp.float32) ** 2), (carry, ys)

    (value, (carry, ys)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert ys.dtype == carry.dtype == jnp.bfloat16 and all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    chex.assert_tree_all_finite((value, ys.astype(jnp.float32), grads))
    _, f32_ys = jax.jit(lambda p: rnnx.unroll(MIN_CELLS[name][0](3), p, xs))(params)  # float32 throughout
    np.testing.assert_allclose(ys.astype(jnp.float32), f32_ys, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("name", tiered(MIN_CELLS))
def test_saturated_gates_stay_finite(name):
    """Pre-activations of +-1e4: sigmoid underflows to 0, so a linear-space f/(f+i) would be 0/0."""
    cell, params = _setup(name, hidden=3, input_size=2)
    xs = 1e4 * jnp.sign(jax.random.normal(jax.random.key(6), (2, 50, 2)))

    def loss(params, parallel):
        _, ys = rnnx.unroll(cell, params, xs, parallel=parallel)
        return jnp.sum(ys), ys

    for parallel in (True, False):
        chex.assert_tree_all_finite(jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)(params, parallel))


def test_parallel_errors_name_the_argument():
    params = rnnx.lstm(4).init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"parallel=True needs a cell with a parallel form .*, but lstm has none"):
        rnnx.unroll(rnnx.lstm(4), params, jnp.ones((2, 5, 3)), parallel=True)
    with pytest.raises(ValueError, match=r"parallel must be None, True or False, received 'yes'"):
        rnnx.unroll(rnnx.min_gru(4), rnnx.min_gru(4).init(jax.random.key(0), 3), jnp.ones((2, 5, 3)), parallel="yes")
    with pytest.raises(ValueError, match=r"params do not fit the cell min_lstm\(hidden_size=4\): .*'w_ih': \(3, 8\)"):
        rnnx.unroll(rnnx.min_lstm(4), rnnx.min_gru(4).init(jax.random.key(0), 3), jnp.ones((2, 5, 3)))
    with pytest.raises(ValueError, match=r"xs has feature size 2, but the cell was initialised for input_size=3"):
        rnnx.unroll(rnnx.min_gru(4), rnnx.min_gru(4).init(jax.random.key(0), 3), jnp.ones((2, 5, 2)))
    with pytest.raises(ValueError, match=r"hidden_size must be a positive integer, received 0"):
        rnnx.min_lstm(0)
    with pytest.raises(ValueError, match=r"input_size must be a positive integer, received 0"):
        rnnx.min_gru(4).init(jax.random.key(0), 0)


def test_nnx_module_runs_the_parallel_cells_in_both_modes():
    from flax import nnx

    import rnnx.nn

    module = rnnx.nn.Recurrent(rnnx.min_lstm(H), D, num_layers=2, rngs=nnx.Rngs(0))
    xs, lengths = jax.random.normal(jax.random.key(8), (B, T, D)), jnp.array([T, 3, 1])
    ys, carry = module(xs, lengths=lengths)
    chex.assert_trees_all_close((ys, carry), module(xs, lengths=lengths, parallel=False), atol=1e-5)
    net, params = module.functional()
    chex.assert_trees_all_close(net.apply(params, xs, lengths=lengths), (carry, ys), atol=1e-6)
