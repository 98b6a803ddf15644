"""Cells against NumPy references written from the equations; counts, initialisation, dtypes, gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnx
from tests import reference
from tests.conftest import CELLS, D, H, T

SEED_COUNTS = {  # input 300, hidden 128: the seed's numbers, and the reset-after GRU with b_hn
    "simple_rnn": (rnnx.simple_rnn(128), 54_912),
    "lstm": (rnnx.lstm(128), 219_648),
    "gru_reset_before": (rnnx.gru(128, reset_after=False), 164_736),
    "gru_reset_after": (rnnx.gru(128, reset_after=True), 164_864),
}


@pytest.mark.parametrize("name", sorted(SEED_COUNTS))
def test_count_params_matches_the_seed(name):
    cell, expected = SEED_COUNTS[name]
    assert rnnx.count_params(cell.init(jax.random.key(0), 300)) == expected


def test_learned_initial_carry_adds_one_vector_per_state_and_receives_gradient():
    cell = rnnx.lstm(4, learn_initial_carry=True)
    params = cell.init(jax.random.key(0), 3)
    assert rnnx.count_params(params) == 4 * 4 * (3 + 4 + 1) + 2 * 4
    params = params | {"h0": jnp.arange(4.0), "c0": -jnp.arange(4.0)}
    carry = cell.initial_carry(params, (2, 5))
    np.testing.assert_array_equal(carry.h[1, 3], jnp.arange(4.0))
    grads = jax.grad(lambda p: rnnx.unroll(cell, p, jnp.ones((2, 3, 3)))[1].sum())(params)
    assert float(jnp.abs(grads["h0"]).sum()) > 0 and float(jnp.abs(grads["c0"]).sum()) > 0


def test_cell_matches_numpy_reference_per_step(cell_name, cell, params, xs):
    step = CELLS[cell_name][1]
    carry = cell.initial_carry(params, (xs.shape[0],))
    carry = jax.tree.map(lambda c: c + 0.3, carry)  # a non-zero state exercises the recurrent weights
    new_carry, y = cell.apply(params, carry, xs[:, 0])
    np_params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    np_carry = tuple(np.asarray(c, np.float64) for c in carry) if isinstance(carry, tuple) else np.asarray(carry)
    expected = step(np_params, np_carry, np.asarray(xs[:, 0], np.float64))
    chex.assert_trees_all_close(tuple(new_carry) if isinstance(new_carry, tuple) else new_carry, expected,
                                atol=1e-5, rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(y, expected[0] if isinstance(expected, tuple) else expected, atol=1e-5)


def test_lstm_init_defaults_forget_bias_and_orthogonal_blocks():
    params = rnnx.lstm(H, forget_bias=1.0).init(jax.random.key(3), D)
    np.testing.assert_array_equal(params["b"][H : 2 * H], 1.0)
    np.testing.assert_array_equal(params["b"][:H], 0.0)
    for k in range(4):
        block = params["w_hh"][:, k * H : (k + 1) * H]
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-5)
    assert rnnx.lstm(H, forget_bias=0.0).init(jax.random.key(3), D)["b"].max() == 0.0


def test_torch_init_draws_within_one_over_sqrt_h():
    init = rnnx.torch_init(16)
    cell = rnnx.gru(16, kernel_init=init, recurrent_init=init, bias_init=init)
    params = cell.init(jax.random.key(0), 10)
    for leaf in jax.tree.leaves(params):
        assert float(jnp.abs(leaf).max()) <= 0.25 and float(jnp.abs(leaf).max()) > 0.2


@pytest.mark.parametrize(
    "dtype, param_dtype", [(jnp.bfloat16, jnp.float32), (None, jnp.bfloat16), (jnp.float32, jnp.bfloat16)]
)
def test_compute_and_storage_dtypes_are_separate(dtype, param_dtype):
    cell = rnnx.lstm(H, dtype=dtype, param_dtype=param_dtype)
    params = cell.init(jax.random.key(0), D)
    assert all(leaf.dtype == param_dtype for leaf in jax.tree.leaves(params))
    carry, ys = rnnx.unroll(cell, params, jnp.ones((2, T, D), jnp.float32))
    compute = dtype or param_dtype
    assert ys.dtype == compute and carry.c.dtype == compute
    reference_ys = rnnx.unroll(rnnx.lstm(H), jax.tree.map(lambda p: p.astype(jnp.float32), params),
                               jnp.ones((2, T, D)))[1]  # fmt: skip
    np.testing.assert_allclose(ys.astype(jnp.float32), reference_ys, atol=0.05 if compute == jnp.bfloat16 else 1e-5)


def test_gradients_match_finite_differences_in_float64(cell_name):
    with jax.enable_x64(True):
        cell = CELLS[cell_name][0](3)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), cell.init(jax.random.key(0), 2))
        xs = jax.random.normal(jax.random.key(1), (2, 4, 2), jnp.float64)
        lengths = jnp.array([4, 2])

        def loss(params, xs):
            carry, ys = rnnx.unroll(cell, params, xs, lengths=lengths)
            return jnp.sum(ys**2) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(carry))

        check_grads(loss, (params, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6, eps=1e-6)


def test_reference_runner_is_truncation_not_masking():
    """Guard the oracle itself: a length-2 run of the reference must ignore later inputs."""
    p = {k: np.asarray(v) for k, v in rnnx.simple_rnn(2).init(jax.random.key(0), 1).items()}
    xs = np.ones((1, 4, 1))
    xs2 = xs.copy()
    xs2[0, 2:] = 100.0
    a = reference.run(reference.simple_rnn_step, p, xs, lambda n: np.zeros(2), lengths=[2])
    b = reference.run(reference.simple_rnn_step, p, xs2, lambda n: np.zeros(2), lengths=[2])
    np.testing.assert_array_equal(a[1], b[1])
