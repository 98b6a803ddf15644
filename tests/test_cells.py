"""Cells against NumPy references written from the equations; counts, initialisation, dtypes, gradients;
the registry; cells as static, hashable configuration."""

import functools
import json

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
    carry = cell.default_carry(params, (2, 5))
    np.testing.assert_array_equal(carry.h[1, 3], jnp.arange(4.0))
    grads = jax.grad(lambda p: rnnx.unroll(cell, p, jnp.ones((2, 3, 3)))[1].sum())(params)
    assert float(jnp.abs(grads["h0"]).sum()) > 0 and float(jnp.abs(grads["c0"]).sum()) > 0


@pytest.mark.parametrize("cell_name", sorted(CELLS))  # every cell in both tiers
def test_cell_matches_numpy_reference_per_step(cell_name, cell, params, xs):
    step = CELLS[cell_name][1]
    carry = cell.default_carry(params, (xs.shape[0],))
    carry = jax.tree.map(lambda c: c + 0.3, carry)  # a non-zero state exercises the recurrent weights
    new_carry, y = cell.apply(params, carry, xs[:, 0])
    np_params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    np_carry = tuple(np.asarray(c) for c in carry) if isinstance(carry, tuple) else np.asarray(carry)
    expected, expected_y = reference.split(step(np_params, np_carry, np.asarray(xs[:, 0], np.float64)))
    chex.assert_trees_all_close(
        tuple(new_carry) if isinstance(new_carry, tuple) else new_carry, expected, atol=1e-5, rtol=1e-5
    )
    np.testing.assert_allclose(y, expected_y, atol=1e-5)


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
    reference_ys = rnnx.unroll(
        rnnx.lstm(H), jax.tree.map(lambda p: p.astype(jnp.float32), params), jnp.ones((2, T, D))
    )[1]
    np.testing.assert_allclose(ys.astype(jnp.float32), reference_ys, atol=0.05 if compute == jnp.bfloat16 else 1e-5)


def test_gradients_match_finite_differences_in_float64(cell_name):
    with jax.enable_x64(True):
        cell = CELLS[cell_name][0](3)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), cell.init(jax.random.key(0), 2))
        xs = jax.random.normal(jax.random.key(1), (2, 4, 2), jnp.float64)
        lengths = jnp.array([4, 2])

        @jax.jit  # one compilation of the loss and one of its VJP, rather than every op eagerly
        def loss(params, xs):
            carry, ys = rnnx.unroll(cell, params, xs, lengths=lengths)
            # real and imaginary parts: the LRU's carry is complex
            return jnp.sum(ys**2) + sum(
                jnp.sum(jnp.sin(jnp.real(c)) + jnp.imag(c) ** 2) for c in jax.tree.leaves(carry)
            )

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


# ------------------------------------------------------------------------------------ the registry


def test_registry_names_are_the_factories_names_and_the_test_registry_covers_them():
    for name, factory in rnnx.CELLS.items():
        assert factory(4).name == name
        assert rnnx.make_cell(name, 4) == factory(4)
        assert name in CELLS  # every registered cell gets every test parametrised over tests/conftest.py
    with pytest.raises(ValueError, match=r"cell must be one of \['gru', 'lru', .*received 'rnn'"):
        rnnx.make_cell("rnn", 4)


# --------------------------------------------------------------------- static, hashable configuration


def test_cells_compare_and_hash_by_configuration():
    assert rnnx.lstm(8) == rnnx.lstm(8) and hash(rnnx.lstm(8)) == hash(rnnx.lstm(8))
    assert rnnx.min_gru(8) == rnnx.min_gru(8) and hash(rnnx.min_gru(8)) == hash(rnnx.min_gru(8))
    assert len({rnnx.lstm(8), rnnx.lstm(8), rnnx.gru(8), rnnx.gru(8)}) == 2
    different = [
        rnnx.lstm(9),
        rnnx.gru(8),
        rnnx.lstm(8, forget_bias=0.0),
        rnnx.lstm(8, use_bias=False),
        rnnx.lstm(8, learn_initial_carry=True),
        rnnx.lstm(8, dtype=jnp.bfloat16),
        rnnx.lstm(8, param_dtype=jnp.bfloat16),
        rnnx.lstm(8, kernel_init=rnnx.torch_init(8)),
        rnnx.lstm(8, recurrent_init=rnnx.torch_init(8)),
        rnnx.lstm(8, bias_init=rnnx.torch_init(8)),
    ]
    assert len(set(different + [rnnx.lstm(8)])) == len(different) + 1
    assert rnnx.min_gru(8) != rnnx.min_lstm(8) and rnnx.min_gru(8) != rnnx.min_gru(8, bias_init=rnnx.torch_init(8))
    assert rnnx.simple_rnn(8) != rnnx.simple_rnn(8, activation="relu")
    assert rnnx.gru(8) != rnnx.gru(8, reset_after=False)


def test_dtypes_and_torch_init_compare_by_value():
    bf16 = [rnnx.lstm(8, dtype=d) for d in (jnp.bfloat16, "bfloat16", jnp.dtype(jnp.bfloat16))]
    assert bf16[0] == bf16[1] == bf16[2] and len({*bf16}) == 1
    assert rnnx.lstm(8, param_dtype="float32") == rnnx.lstm(8, param_dtype=np.float32) == rnnx.lstm(8)
    assert rnnx.lstm(8, dtype=jnp.float32) != rnnx.lstm(8)  # None means "follow the params", not float32
    assert rnnx.torch_init(8) == rnnx.torch_init(8) and hash(rnnx.torch_init(8)) == hash(rnnx.torch_init(8))
    assert rnnx.torch_init(8) != rnnx.torch_init(9)
    torch_like = [rnnx.gru(8, kernel_init=rnnx.torch_init(8), bias_init=rnnx.torch_init(8)) for _ in range(2)]
    assert torch_like[0] == torch_like[1] and hash(torch_like[0]) == hash(torch_like[1])
    # Any other initialiser compares by identity: the same function object, the same cell.
    scaled = lambda k, s, d: 0.5 * jax.nn.initializers.orthogonal()(k, s, d)  # noqa: E731
    assert rnnx.lstm(8, recurrent_init=scaled) == rnnx.lstm(8, recurrent_init=scaled)
    assert rnnx.lstm(8, recurrent_init=scaled) != rnnx.lstm(8, recurrent_init=lambda k, s, d: scaled(k, s, d))


def test_config_is_the_unchanged_architecture_record():
    cell = rnnx.lstm(8, dtype=jnp.bfloat16, kernel_init=rnnx.torch_init(8))
    assert json.dumps(cell.config) == (
        '{"hidden_size": 8, "forget_bias": 1.0, "use_bias": true, "learn_initial_carry": false}'
    )
    assert rnnx.gru(4, reset_after=False).config == dict(
        hidden_size=4, reset_after=False, use_bias=True, learn_initial_carry=False
    )
    assert rnnx.simple_rnn(4).config == dict(hidden_size=4, activation="tanh", use_bias=True, learn_initial_carry=False)
    assert rnnx.min_lstm(4).config == {"hidden_size": 4} and rnnx.min_lstm(4).hidden_size == 4
    cell.config["hidden_size"] = 99  # a fresh dict each time: the cell cannot be changed through it
    assert cell.hidden_size == 8 and cell.config["hidden_size"] == 8


def test_a_cell_is_a_pytree_without_leaves_and_immutable():
    cell = rnnx.gru(4)
    assert jax.tree.leaves(cell) == [] and jax.tree.leaves({"cell": cell, "x": 1.0}) == [1.0]
    with pytest.raises(AttributeError):
        cell.name = "lstm"
    # Passed to jit as an ordinary argument, a cell is static too: no tracer ever reaches its functions.
    params = cell.init(jax.random.key(0), D)
    xs = jnp.ones((2, T, D))
    chex.assert_trees_all_equal(jax.jit(rnnx.unroll)(cell, params, xs), rnnx.unroll(cell, params, xs))


def test_jit_with_the_cell_static_compiles_once_for_equal_cells_and_again_for_different_ones(cell_name):
    factory = CELLS[cell_name][0]
    params = factory(H).init(jax.random.key(0), D)
    chex.clear_trace_counter()  # chex counts per function code, across parametrised runs
    xs = jax.random.normal(jax.random.key(1), (2, T, D))

    @functools.partial(jax.jit, static_argnums=0)
    @chex.assert_max_traces(n=1)
    def run(cell, params, xs):
        return rnnx.unroll(cell, params, xs)[1]

    first = run(factory(H), params, xs)
    second = run(factory(H), params, xs)  # a new object, equal by configuration: the cached compilation
    np.testing.assert_array_equal(first, second)

    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def count(cell, params, xs):
        traces.append(cell)
        return rnnx.unroll(cell, params, xs)[1]

    count(factory(H), params, xs)
    count(factory(H), params, xs)
    assert len(traces) == 1
    count(factory(H, dtype=jnp.bfloat16), params, xs)  # another configuration: another compilation
    assert len(traces) == 2 and traces[0] != traces[1]
