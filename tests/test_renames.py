"""The renames of CHANGELOG.md: each new name computes what the old one did, the old spelling still works for
one release with a DeprecationWarning naming the new one, and a mesh without its axis is refused naming it."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rnnx
import rnnx.nn
from rnnx.apps import experiments
from rnnx.apps.config import LanguageModelConfig


def _mesh(axis: str):
    return jax.sharding.Mesh(np.array(jax.devices()[:1]), (axis,))


def test_cell_and_stack_default_carry_and_the_old_method_name():
    cell = rnnx.lstm(4, learn_initial_carry=True)
    params = cell.init(jax.random.key(0), 3)
    params = {**params, "h0": jnp.arange(4.0), "c0": -jnp.arange(4.0)}  # learned: not zeros
    carry = cell.default_carry(params, (2,))
    chex.assert_trees_all_equal(
        carry, rnnx.LSTMCarry(jnp.tile(jnp.arange(4.0), (2, 1)), -jnp.tile(jnp.arange(4.0), (2, 1)))
    )
    with pytest.warns(
        DeprecationWarning, match=r"Cell.initial_carry\(params, batch_shape\) is deprecated .*use Cell.default_carry"
    ):
        chex.assert_trees_all_equal(cell.initial_carry(params, (2,)), carry)
    net = rnnx.stacked(rnnx.gru(4), 2)
    stack_params = net.init(jax.random.key(1), 3)
    with pytest.warns(DeprecationWarning, match="use Stack.default_carry"):
        chex.assert_trees_all_equal(net.initial_carry(stack_params, (5,)), net.default_carry(stack_params, (5,)))


def test_nnx_modules_default_carry_and_the_old_method_name():
    model = rnnx.nn.GRU(3, 4, num_layers=2, rngs=nnx.Rngs(0))
    with pytest.warns(DeprecationWarning, match=r"rnnx.nn.GRU.initial_carry is deprecated .*use default_carry"):
        chex.assert_trees_all_equal(model.initial_carry((2,)), model.default_carry((2,)))
    cell = rnnx.nn.LSTMCell(3, 4, rngs=0)
    with pytest.warns(DeprecationWarning, match=r"rnnx.nn.LSTMCell.initial_carry is deprecated"):
        chex.assert_trees_all_equal(cell.initial_carry((2,)), cell.default_carry((2,)))


def test_unroll_seq_mesh_and_its_old_name():
    cell = rnnx.min_gru(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (2, 6, 3))
    want = rnnx.unroll(cell, params, xs, seq_mesh=_mesh("seq"))
    chex.assert_trees_all_close(want, rnnx.unroll(cell, params, xs), atol=1e-6)
    with pytest.warns(DeprecationWarning, match=r"rnnx.unroll\(mesh=\) is deprecated .*use seq_mesh="):
        chex.assert_trees_all_equal(rnnx.unroll(cell, params, xs, mesh=_mesh("seq")), want)
    with pytest.raises(
        ValueError, match=r"seq_mesh must have an axis named 'seq' \(time is split over it\), received axes \('data',\)"
    ):
        rnnx.unroll(cell, params, xs, seq_mesh=_mesh("data"))
    with pytest.raises(TypeError, match="received both seq_mesh= and its deprecated alias mesh="):
        rnnx.unroll(cell, params, xs, seq_mesh=_mesh("seq"), mesh=_mesh("seq"))


def test_fit_data_mesh_and_its_old_name():
    def loss_fn(params, batch, key):
        return jnp.mean((batch @ params["w"]) ** 2), {}

    params, batches = {"w": jnp.ones(3)}, [jnp.ones((2, 3))] * 2
    fit = lambda **mesh: rnnx.training.fit(loss_fn, params, batches, steps=2, optimizer=optax.sgd(0.1), **mesh)  # noqa: E731
    want = fit(data_mesh=_mesh("data"))
    with pytest.warns(DeprecationWarning, match=r"rnnx.training.fit\(mesh=\) is deprecated .*use data_mesh="):
        chex.assert_trees_all_equal(fit(mesh=_mesh("data")).last_params, want.last_params)
    with pytest.raises(ValueError, match=r"data_mesh must have an axis named 'data', received axes \('seq',\)"):
        fit(data_mesh=_mesh("seq"))
    with pytest.raises(TypeError, match="received both data_mesh= and its deprecated alias mesh="):
        experiments.train_language_model(LanguageModelConfig(), data_mesh=_mesh("data"), mesh=_mesh("data"))
