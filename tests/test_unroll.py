"""rnnx.unroll against the NumPy reference and against itself: the invariants of a sequence runner."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnx
from tests import reference
from tests.conftest import CELLS, B, D, T, tiered

# The LRU, RG-LRU, sLSTM and mLSTM meet lengths, masks with gaps, resets, reverse and batch axes in the fuzzed
# reference tests of tests/test_properties.py; the tests here that only repeat those run for the older cells, to
# keep the suite within its 10 minutes. The gradient, jit, vmap and remat tests run for every cell.
FUZZED_ONLY = ("lru", "rg_lru", "slstm", "mlstm")
OLDER_CELLS = sorted(name for name in CELLS if name not in FUZZED_ONLY)

LENGTHS = jnp.array([T, 2, 0])


def _np_carry(carry, n):
    c = jax.tree.map(lambda a: reference._float64(a[n]), carry)  # complex for the LRU
    return tuple(c) if isinstance(c, tuple) else c


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell_name", tiered(OLDER_CELLS))
def test_unroll_matches_numpy_reference_with_lengths(cell_name, cell, params, xs, reverse):
    carry0 = jax.tree.map(lambda c: c + 0.2, cell.default_carry(params, (B,)))
    carry, ys = rnnx.unroll(cell, params, xs, lengths=LENGTHS, initial_carry=carry0, reverse=reverse)
    finals, expected = reference.run(
        CELLS[cell_name][1], params, np.asarray(xs), lambda n: _np_carry(carry0, n), lengths=LENGTHS, reverse=reverse
    )
    np.testing.assert_allclose(ys, expected, atol=1e-5)
    assert float(jnp.abs(ys[2]).max()) == 0.0 and float(jnp.abs(ys[1, 2:]).max()) == 0.0  # exactly zero
    for n in range(B):
        chex.assert_trees_all_close(_np_carry(carry, n), finals[n], atol=1e-5)


def test_scan_equals_python_loop(cell, params, xs):
    carry = cell.default_carry(params, (B,))
    ys = []
    for t in range(T):
        carry, y = cell.apply(params, carry, xs[:, t])
        ys.append(y)
    scan_carry, scan_ys = rnnx.unroll(cell, params, xs)
    np.testing.assert_allclose(scan_ys, jnp.stack(ys, 1), atol=1e-6)
    chex.assert_trees_all_close(scan_carry, carry, atol=1e-6)


@pytest.mark.parametrize("cell_name", tiered(OLDER_CELLS))
def test_mask_with_gaps_equals_the_compacted_sequence(cell, params, xs):
    mask = jnp.array([[1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]], bool)
    carry, ys = rnnx.unroll(cell, params, xs, mask=mask)
    for n in range(B):
        idx = np.flatnonzero(mask[n])
        c, y = rnnx.unroll(cell, params, xs[n, idx])
        np.testing.assert_allclose(ys[n, idx], y, atol=1e-6)
        assert float(jnp.abs(ys[n][~mask[n]]).max(initial=0.0)) == 0.0
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[n], carry), c, atol=1e-6)


@pytest.mark.parametrize("cell_name", tiered(OLDER_CELLS))
def test_lengths_equal_truncated_runs_and_the_matching_mask(cell, params, xs):
    carry, ys = rnnx.unroll(cell, params, xs, lengths=LENGTHS)
    mask_carry, mask_ys = rnnx.unroll(cell, params, xs, mask=jnp.arange(T) < LENGTHS[:, None])
    chex.assert_trees_all_equal((carry, ys), (mask_carry, mask_ys))
    c, y = rnnx.unroll(cell, params, xs[1, :2])
    np.testing.assert_allclose(ys[1, :2], y, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], carry), c, atol=1e-6)
    chex.assert_trees_all_equal(jax.tree.map(lambda a: a[2], carry), cell.default_carry(params))  # length 0


@pytest.mark.parametrize("cell_name", tiered(OLDER_CELLS))
def test_reverse_equals_flip(cell, params, xs):
    carry, ys = rnnx.unroll(cell, params, xs, reverse=True)
    flip_carry, flip_ys = rnnx.unroll(cell, params, xs[:, ::-1])
    np.testing.assert_allclose(ys, flip_ys[:, ::-1], atol=1e-6)
    chex.assert_trees_all_close(carry, flip_carry, atol=1e-6)


@pytest.mark.parametrize("cell_name", tiered(OLDER_CELLS))
def test_reverse_with_lengths_equals_flipping_each_valid_part(cell, params, xs):
    carry, ys = rnnx.unroll(cell, params, xs, lengths=LENGTHS, reverse=True)
    for n, length in enumerate(LENGTHS.tolist()):
        if length == 0:
            continue
        c, y = rnnx.unroll(cell, params, xs[n, :length][::-1])
        np.testing.assert_allclose(ys[n, :length], y[::-1], atol=1e-6)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[n], carry), c, atol=1e-6)


@functools.cache
def _loss_and_grad(cell, options=()):
    """A jitted value-and-grad of a loss over every output and carry part, one compilation per cell and options,
    shared by the parametrisations that differ only in data."""

    def loss(p, x, lengths, mask):
        carry, ys = rnnx.unroll(cell, p, x, lengths=lengths, mask=mask, **dict(options))
        return jnp.sum(ys**2) + sum(jnp.sum(jnp.abs(c) ** 2) for c in jax.tree.leaves(carry)), ys

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


@pytest.mark.parametrize("options", [dict(unroll=3), dict(remat=True), dict(hoist=True), dict(hoist=False)])
def test_unroll_remat_and_hoist_change_nothing(cell, params, xs, options):
    if cell.parallel and "remat" not in options:
        pytest.skip("unroll and hoist do not apply to the parallel mode")
    (_, base_ys), base_grads = _loss_and_grad(cell)(params, xs, LENGTHS, None)
    (_, ys), grads = _loss_and_grad(cell, tuple(options.items()))(params, xs, LENGTHS, None)
    np.testing.assert_allclose(ys, base_ys, atol=1e-6)
    chex.assert_trees_all_close(grads, base_grads, atol=1e-5, rtol=1e-5)


def test_jit_equals_eager(cell, params, xs):
    eager = rnnx.unroll(cell, params, xs, lengths=LENGTHS, reverse=True)
    jitted = jax.jit(lambda p, x, n: rnnx.unroll(cell, p, x, lengths=n, reverse=True))(params, xs, LENGTHS)
    chex.assert_trees_all_close(eager, jitted, atol=1e-6)


def test_vmap_over_unbatched_runs_equals_batched_run(cell, params, xs):
    batched = rnnx.unroll(cell, params, xs, lengths=LENGTHS)
    vmapped = jax.vmap(lambda x, n: rnnx.unroll(cell, params, x, lengths=n))(xs, LENGTHS)
    chex.assert_trees_all_close(batched, vmapped, atol=1e-6)


@pytest.mark.parametrize("cell_name", tiered(OLDER_CELLS))
def test_any_number_of_batch_axes_and_time_major(cell, params):
    xs = jax.random.normal(jax.random.key(2), (2, 3, T, D))
    lengths = jnp.array([[T, 1, 3], [0, 2, T]])
    carry, ys = rnnx.unroll(cell, params, xs, lengths=lengths)
    flat_carry, flat_ys = rnnx.unroll(cell, params, xs.reshape(6, T, D), lengths=lengths.reshape(6))
    np.testing.assert_array_equal(ys, flat_ys.reshape(ys.shape))
    chex.assert_trees_all_equal(carry, jax.tree.map(lambda c: c.reshape(2, 3, -1), flat_carry))
    tm_carry, tm_ys = rnnx.unroll(cell, params, jnp.moveaxis(xs, 2, 0), lengths=lengths, time_major=True)
    np.testing.assert_allclose(jnp.moveaxis(tm_ys, 0, 2), ys, atol=1e-6)
    chex.assert_trees_all_close(tm_carry, carry, atol=1e-6)
    one_carry, one_ys = rnnx.unroll(cell, params, xs[1, 2])  # no batch axes at all
    np.testing.assert_allclose(one_ys, ys[1, 2], atol=1e-6)


@pytest.mark.parametrize("cell_name", tiered(OLDER_CELLS))
def test_reset_inside_a_sequence_equals_two_separate_runs(cell, params, xs):
    reset = jnp.zeros((B, T), bool).at[0, 2].set(True).at[1, 4].set(True)
    for reverse in (False, True):
        _, ys = rnnx.unroll(cell, params, xs, reset=reset, reverse=reverse)
        _, first = rnnx.unroll(cell, params, xs[0, :2], reverse=reverse)
        _, second = rnnx.unroll(cell, params, xs[0, 2:], reverse=reverse)
        np.testing.assert_allclose(ys[0], jnp.concatenate([first, second]), atol=1e-6)
        _, whole = rnnx.unroll(cell, params, xs[2], reverse=reverse)
        np.testing.assert_allclose(ys[2], whole, atol=1e-6)  # no reset: untouched


@pytest.mark.parametrize("mode", ["default", "other"])
@pytest.mark.parametrize("poison", [jnp.nan, jnp.inf, 1e30])
def test_padding_never_reaches_the_gradient(cell, params, xs, mode, poison):
    """NaN, inf or huge values at padded (beyond ``lengths``) or masked steps give the gradients of zeros there.

    ``mode`` flips ``hoist`` for sequential cells and ``parallel`` for parallel-scan cells, so every path that
    projects inputs is covered.
    """
    lengths = jnp.array([T, 3, 1])
    mask = jnp.ones((B, T), bool).at[0, 2].set(False)
    skipped = ~(mask & (jnp.arange(T) < lengths[:, None]))
    option = {"parallel": False} if cell.parallel else {"hoist": not rnnx.default_hoist(cell)}
    grad = _loss_and_grad(cell, tuple(option.items()) if mode == "other" else ())
    clean = jnp.where(skipped[..., None], 0.0, xs)
    dirty = jnp.where(skipped[..., None], poison, xs)
    _, grads = grad(params, dirty, lengths, mask)
    chex.assert_tree_all_finite(grads)
    chex.assert_trees_all_close(grads, grad(params, clean, lengths, mask)[1], rtol=1e-6, atol=1e-6)
