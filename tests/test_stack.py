"""rnnx.stacked: layers compose, bidirectional equals its halves, dropout needs a key; a Stack is static."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

import rnnx
from tests.conftest import B, D, T

LENGTHS = jnp.array([T, 3, 1])


def test_bidirectional_stack_equals_its_two_directions_layer_by_layer():
    cell = rnnx.lstm(4)
    net = rnnx.stacked(cell, num_layers=2, bidirectional=True)
    params = net.init(jax.random.key(0), D)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    carry, ys = net.apply(params, xs, lengths=LENGTHS)
    assert ys.shape == (B, T, 8) and len(carry) == 4
    inputs, expected_carry = xs, []
    for layer in params:
        fwd_c, fwd = rnnx.unroll(cell, layer[0], inputs, lengths=LENGTHS)
        bwd_c, bwd = rnnx.unroll(cell, layer[1], inputs, lengths=LENGTHS, reverse=True)
        inputs = jnp.concatenate([fwd, bwd], -1)
        expected_carry += [fwd_c, bwd_c]
    np.testing.assert_array_equal(ys, inputs)
    chex.assert_trees_all_equal(carry, tuple(expected_carry))
    assert float(jnp.abs(ys[2, 1:]).max()) == 0.0  # padding stays exactly zero through both layers


def test_dropout_applies_only_between_layers_and_only_with_a_key():
    net = rnnx.stacked(rnnx.gru(16), num_layers=2, dropout=0.5)
    plain = rnnx.stacked(rnnx.gru(16), num_layers=2)
    params = net.init(jax.random.key(0), D)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    no_key = net.apply(params, xs)
    chex.assert_trees_all_equal(no_key, plain.apply(params, xs))
    _, a = net.apply(params, xs, key=jax.random.key(2))
    _, a_again = net.apply(params, xs, key=jax.random.key(2))
    _, b = net.apply(params, xs, key=jax.random.key(3))
    np.testing.assert_array_equal(a, a_again)  # deterministic per key
    assert float(jnp.abs(a - b).max()) > 1e-3 and float(jnp.abs(a - no_key[1]).max()) > 1e-3
    # A one-layer stack has no "between": the key changes nothing.
    one = rnnx.stacked(rnnx.gru(16), num_layers=1, dropout=0.5)
    p1 = one.init(jax.random.key(0), D)
    chex.assert_trees_all_equal(one.apply(p1, xs, key=jax.random.key(2)), one.apply(p1, xs))


def test_dropout_keeps_expected_scale_on_the_second_layer_input():
    from rnnx.core.stack import dropout

    x = jnp.ones((200, 100))
    y = dropout(jax.random.key(0), x, 0.3)
    kept = float((y > 0).mean())
    assert abs(kept - 0.7) < 0.01 and float(y.max()) == np.float32(1 / 0.7)


def test_stack_initial_carry_and_time_major():
    net = rnnx.stacked(rnnx.simple_rnn(4), num_layers=2, bidirectional=True, time_major=True)
    params = net.init(jax.random.key(0), D)
    xs = jax.random.normal(jax.random.key(1), (T, B, D))
    init = tuple(jax.random.normal(jax.random.key(k), (B, 4)) for k in range(4))
    carry, ys = net.apply(params, xs, initial_carry=init)
    batch_major = rnnx.stacked(rnnx.simple_rnn(4), num_layers=2, bidirectional=True)
    carry_bm, ys_bm = batch_major.apply(params, jnp.swapaxes(xs, 0, 1), initial_carry=init)
    np.testing.assert_allclose(jnp.swapaxes(ys, 0, 1), ys_bm, atol=1e-6)
    chex.assert_trees_all_close(carry, carry_bm, atol=1e-6)
    assert float(jnp.abs(net.apply(params, xs)[1] - ys).max()) > 1e-3  # the initial carry mattered


def test_stacks_compare_and_hash_by_configuration():
    net = rnnx.stacked(rnnx.lstm(4), num_layers=2, bidirectional=True, dropout=0.1)
    same = rnnx.stacked(rnnx.lstm(4), num_layers=2, bidirectional=True, dropout=0.1)
    assert net == same and hash(net) == hash(same) and jax.tree.leaves(net) == []
    others = [
        dataclasses.replace(net, cell=rnnx.lstm(5)),
        dataclasses.replace(net, cell=rnnx.lstm(4, dtype=jnp.bfloat16)),
        dataclasses.replace(net, num_layers=3),
        dataclasses.replace(net, bidirectional=False),
        dataclasses.replace(net, dropout=0.2),
        dataclasses.replace(net, time_major=True),
    ]
    assert len({net, same, *others}) == 1 + len(others)


def test_jit_with_the_stack_static_compiles_once_for_equal_stacks_and_again_for_different_ones():
    make = lambda **kw: rnnx.stacked(rnnx.gru(4, **kw), num_layers=2, bidirectional=True)  # noqa: E731
    params = make().init(jax.random.key(0), D)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))

    @functools.partial(jax.jit, static_argnums=0)
    @chex.assert_max_traces(n=1)
    def run(net, params, xs):
        return net.apply(params, xs)[1]

    np.testing.assert_array_equal(run(make(), params, xs), run(make(), params, xs))

    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def count(net, params, xs):
        traces.append(net)
        return net.apply(params, xs)[1]

    count(make(), params, xs)
    count(make(), params, xs)
    assert len(traces) == 1
    count(make(reset_after=False), make(reset_after=False).init(jax.random.key(0), D), xs)
    assert len(traces) == 2
