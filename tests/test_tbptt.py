"""Stateful runs and truncated BPTT: windows equal one long run, gradients stop at window boundaries,
and per-example resets equal separate runs in the stack, composed with lengths, masks and reverse."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnx

B, T, D, H, K = 2, 12, 3, 4, 4


@pytest.fixture(scope="module")
def net():
    return rnnx.stacked(rnnx.lstm(H), num_layers=2)


@pytest.fixture(scope="module")
def params(net):
    p = net.init(jax.random.key(0), D)
    return jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(7), v.shape), p)


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.key(1), (B, T, D))


def test_windowed_forward_equals_one_long_run(net, params, xs):
    long_carry, long_ys = jax.jit(net.apply)(params, xs)
    run = lambda c, x: net.apply(params, x, initial_carry=c)  # noqa: E731
    carry, ys = jax.jit(lambda x: rnnx.core.tbptt.scan_windows(run, net.default_carry(params, (B,)), x, K))(xs)
    np.testing.assert_allclose(ys, long_ys, atol=1e-6)
    chex.assert_trees_all_close(carry, long_carry, atol=1e-6)
    # The Python-loop form, with a shorter last window (12 = 5 + 5 + 2).
    step = jax.jit(run)
    carry, outputs = net.default_carry(params, (B,)), []
    for (x,) in rnnx.core.tbptt.windows(xs, 5):
        carry, y = step(jax.lax.stop_gradient(carry), x)
        outputs.append(y)
    assert [y.shape[1] for y in outputs] == [5, 5, 2]
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), long_ys, atol=1e-6)
    chex.assert_trees_all_close(carry, long_carry, atol=1e-6)


def test_gradients_stop_at_window_boundaries(net, params, xs):
    start = net.default_carry(params, (B,))
    run = lambda p, c, x: net.apply(p, x, initial_carry=c)  # noqa: E731

    def windowed(p, x):
        return rnnx.core.tbptt.scan_windows(lambda c, w: run(p, c, w), start, x, K)[1]

    def late_loss(f):  # a loss on the last window only
        return lambda p, x: jnp.sum(f(p, x)[:, -K:] ** 2)

    g_x = jax.jit(jax.grad(late_loss(windowed), argnums=1))(params, xs)
    assert float(jnp.abs(g_x[:, : T - K]).max()) == 0.0, "gradient crossed a stopped window boundary"
    assert float(jnp.abs(g_x[:, T - K :]).max()) > 0.0
    # Control: without truncation the same loss does reach the earlier steps, so the check above can fail.
    g_full = jax.jit(jax.grad(late_loss(lambda p, x: run(p, start, x)[1]), argnums=1))(params, xs)
    assert float(jnp.abs(g_full[:, : T - K]).max()) > 1e-4

    # The TBPTT parameter gradient is the sum over windows of each window's gradient with its incoming
    # carry held constant (an oracle computed window by window).
    def loss(p, x):
        return jnp.sum(windowed(p, x) ** 2)

    grads = jax.jit(jax.grad(loss))(params, xs)
    expected, carry = jax.tree.map(jnp.zeros_like, params), start
    window_grad = jax.jit(jax.grad(lambda p, c, x: jnp.sum(run(p, c, x)[1] ** 2)))
    for (x,) in rnnx.core.tbptt.windows(xs, K):
        expected = jax.tree.map(jnp.add, expected, window_grad(params, carry, x))
        carry = run(params, carry, x)[0]
    chex.assert_trees_all_close(grads, expected, atol=1e-5)


def test_first_window_keeps_the_gradient_to_a_learned_initial_carry(xs):
    net = rnnx.stacked(rnnx.gru(H, learn_initial_carry=True))
    params = net.init(jax.random.key(2), D)

    def loss(p):
        run = lambda c, x: net.apply(p, x, initial_carry=c)  # noqa: E731
        return jnp.sum(rnnx.core.tbptt.scan_windows(run, net.default_carry(p, (B,)), xs, K)[1] ** 2)

    assert float(jnp.abs(jax.jit(jax.grad(loss))(params)[0][0]["h0"]).max()) > 0.0


def test_window_errors_name_the_argument(xs):
    run = lambda c, x: (c, x)  # noqa: E731
    with pytest.raises(ValueError, match="xs has 12 time steps, which is not a multiple of window=5"):
        rnnx.core.tbptt.scan_windows(run, None, xs, 5)
    with pytest.raises(ValueError, match="window must be a positive integer number of steps, received 0"):
        next(rnnx.core.tbptt.windows(xs, 0))
    with pytest.raises(ValueError, match=r"per-step array 0 must start with xs's batch and time axes \(2, 12\)"):
        next(rnnx.core.tbptt.windows(xs, 4, jnp.zeros((B, T - 1))))


# ------------------------------------------------------------------------------------ resets in the stack


def test_stack_reset_equals_separate_runs_with_lengths_mask_and_reverse():
    """Per-example resets in a bidirectional two-layer stack, composed with lengths and a gap mask."""
    net = rnnx.stacked(rnnx.gru(H), num_layers=2, bidirectional=True)
    params = net.init(jax.random.key(3), D)
    xs = jax.random.normal(jax.random.key(4), (3, 8, D))
    starts, lengths = [3, 5, 1], jnp.array([8, 7, 4])
    reset = jnp.zeros((3, 8), bool).at[jnp.arange(3), jnp.array(starts)].set(True)
    mask = jnp.ones((3, 8), bool).at[:, 2].set(False).at[1, 6].set(False)
    carry, ys = jax.jit(lambda x: net.apply(params, x, lengths=lengths, mask=mask, reset=reset))(xs)
    apply = jax.jit(net.apply)
    for b, (start, length) in enumerate(zip(starts, lengths.tolist())):
        c1, y1 = apply(params, xs[b, :start], mask=mask[b, :start])
        c2, y2 = apply(params, xs[b, start:length], mask=mask[b, start:length])
        np.testing.assert_allclose(ys[b, :start], y1, atol=1e-6)
        np.testing.assert_allclose(ys[b, start:length], y2, atol=1e-6)
        assert float(jnp.abs(ys[b, length:]).max(initial=0.0)) == 0.0
        for layer in range(2):  # forward ends in the second segment; backward (reverse) in the first
            chex.assert_trees_all_close(carry[2 * layer][b], c2[2 * layer], atol=1e-6)
            chex.assert_trees_all_close(carry[2 * layer + 1][b], c1[2 * layer + 1], atol=1e-6)
    # Control: without the reset the outputs after it differ, so the comparisons above can fail.
    _, ys_no_reset = jax.jit(lambda x: net.apply(params, x, lengths=lengths, mask=mask))(xs)
    assert not np.allclose(ys_no_reset[0, 3:], ys[0, 3:], atol=1e-3)


def test_stateful_windows_with_resets_equal_one_long_run_with_resets(net, params, xs):
    """A reset inside the second window, carried through scan_windows as a per-step array."""
    reset = jnp.zeros((B, T), bool).at[0, 6].set(True).at[1, 9].set(True)
    _, long_ys = jax.jit(lambda x: net.apply(params, x, reset=reset))(xs)
    run = lambda c, x, r: net.apply(params, x, initial_carry=c, reset=r)  # noqa: E731
    _, ys = jax.jit(lambda x: rnnx.core.tbptt.scan_windows(run, net.default_carry(params, (B,)), x, K, reset))(xs)
    np.testing.assert_allclose(ys, long_ys, atol=1e-6)
