"""Property tests: ``rnnx.unroll`` against the NumPy reference of its sequence semantics, over random cases.

Each example draws a cell of the test registry, a batch shape (zero to three axes of sizes 0 to 3), a length
``t`` from 1 to 40, random lengths, masks with gaps, resets, an initial carry, and every option that must not
change the results (``reverse``, ``time_major``, ``unroll``, ``remat``, ``hoist``, ``parallel``), and compares
outputs and final carry with :func:`tests.reference.run_sequence`. Every example is a new shape or static
argument, so a new compilation: the example counts are bounded (5 per cell, 10 per parallel-scan cell in the
parallel-versus-sequential test) and the seeds fixed (the same examples in every run, no example database),
which keeps the file to seconds and CI deterministic.
"""

import functools
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

import rnnx
from tests import reference
from tests.conftest import CELLS, tiered

# The registry, plus cells whose reset state is learned (non-zero), so that "reset restores
# cell.default_carry(params)" is told apart from "reset restores zeros" and from "reset restores initial_carry".
FUZZ_CELLS = CELLS | {
    f"{name}_learned_carry": (functools.partial(CELLS[name][0], learn_initial_carry=True), CELLS[name][1])
    for name in ("lstm", "gru")
}
# Heads and the exponential forget gate of the xLSTM cells; the mLSTM's chunkwise form in chunks of 8 steps, so
# that examples up to 40 steps cross chunk boundaries (the default chunk holds all of them).
FUZZ_CELLS |= {
    "slstm_heads_exp": (
        functools.partial(rnnx.slstm, num_heads=2, forget_gate="exp"),
        functools.partial(reference.slstm_step, forget_gate="exp"),
    ),
    "mlstm_heads_exp_chunks": (
        functools.partial(rnnx.mlstm, num_heads=2, forget_gate="exp", chunk_size=8),
        functools.partial(reference.mlstm_step, heads=2, forget_gate="exp"),
    ),
}
# The parallel cells, the mLSTM through its chunked variant (chunk boundaries, heads, exp forget gate).
MIN_CELLS = sorted(name for name, entry in FUZZ_CELLS.items() if entry[0](2).parallel and name != "mlstm")
H, D = 4, 3
SIZES = (1, 2, 3) * 3 + (0,)  # batch axis sizes: a size-0 axis (no sequences at all) in about one of ten
FUZZ = settings(deadline=None, database=None)

# One jitted unroll for every example (jit's cache is keyed by shapes and static arguments, so an example that
# repeats an earlier one costs no compilation). Nearly every example is a new compilation, and XLA's CPU
# backend spends most of that in LLVM's optimisations: at level 0 the examples compiled 40% faster here.
# The optimisation level changes how fast the program runs, not what it computes.
UNROLL = jax.jit(
    rnnx.unroll,
    static_argnames=("reverse", "time_major", "unroll", "remat", "hoist", "parallel", "backend"),
    compiler_options={"xla_backend_optimization_level": 0},
)


@functools.cache
def _setup(name):
    """The cell and params drawn in NumPy: eager ``cell.init`` would compile its random draws for every cell."""
    cell = FUZZ_CELLS[name][0](H)
    rng = np.random.default_rng(sorted(FUZZ_CELLS).index(name))
    params = {}
    for key, shape in cell.param_shapes(D).items():
        if (
            key == "w_hh" and len(shape) == 2
        ):  # orthogonal blocks (as rnnx initialises them) keep a relu RNN bounded over 40 steps
            blocks = [np.linalg.qr(rng.normal(size=(H, H)))[0] for _ in range(shape[1] // H)]
            params[key] = np.concatenate(blocks, axis=1)
        else:  # non-zero biases and learned initial states, so that a dropped term would show
            params[key] = rng.normal(size=shape) / np.sqrt(shape[0] if key == "w_ih" else 2)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    return cell, params, jax.tree.map(np.asarray, cell.default_carry(params))


@st.composite
def cases(draw, names):
    """The arguments of one ``rnnx.unroll`` call: structure from hypothesis, array contents from a drawn seed."""
    name = draw(st.sampled_from(names))
    cell, _, unbatched = _setup(name)
    batch = tuple(draw(st.lists(st.sampled_from(SIZES), max_size=3)))
    steps = draw(st.sampled_from(range(1, 41)))  # sampled_from: spread over 1..40, where integers favours 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    case = dict(
        name=name,
        xs=rng.normal(size=(*batch, steps, D)).astype(np.float32),
        reverse=draw(st.booleans()),
        time_major=draw(st.booleans()),
        unroll=draw(st.sampled_from((1, 2, 5))),
        remat=draw(st.booleans()),
        hoist=draw(st.sampled_from((None, True, False))),
        parallel=draw(st.sampled_from((None, True, False) if cell.parallel else (None, False))),
    )
    if draw(st.booleans()):  # lengths: a mix of empty, full and anything between
        pick = rng.integers(0, 3, batch)
        case["lengths"] = np.where(pick == 0, 0, np.where(pick == 1, steps, rng.integers(0, steps + 1, batch)))
    if draw(st.booleans()):  # mask with gaps
        case["mask"] = rng.random((*batch, steps)) < draw(st.sampled_from((0.3, 0.7, 0.9)))
    if draw(st.booleans()):  # anywhere, the padding included, where it must change nothing
        case["reset"] = rng.random((*batch, steps)) < draw(st.sampled_from((0.05, 0.2, 0.5)))
    if draw(st.booleans()):

        def state(c):  # complex for the LRU's state
            part = lambda: rng.normal(size=(*batch, *c.shape))  # noqa: E731
            return (part() + 1j * part() if np.iscomplexobj(c) else part()).astype(c.dtype)

        case["initial_carry"] = jax.tree.map(state, unbatched)
    return case


def _flat(a, batch, steps, time_major):
    """``(*b, t, ...)`` or ``(t, *b, ...)`` -> ``(n, t, ...)`` in NumPy, independent of rnnx's own reshapes."""
    a = np.asarray(a)
    if time_major:
        a = np.moveaxis(a, 0, len(batch))
    return a.reshape(int(np.prod(batch)), steps, *a.shape[len(batch) + 1 :])


def _check(case, **override):
    """Run ``rnnx.unroll`` on ``case`` and compare with the NumPy reference; return ``(carry, ys)``."""
    case = case | override
    name, xs, time_major = case["name"], case["xs"], case["time_major"]
    cell, params, unbatched = _setup(name)
    *batch, steps, _ = xs.shape
    tm = (lambda a: np.moveaxis(a, -1, 0)) if time_major else (lambda a: a)
    kwargs = {
        k: case[k]
        for k in ("lengths", "initial_carry", "reverse", "unroll", "remat", "hoist", "parallel", "backend")
        if k in case
    }
    kwargs |= {k: tm(case[k]) for k in ("mask", "reset") if k in case}
    carry, ys = UNROLL(cell, params, np.moveaxis(xs, -2, 0) if time_major else xs, time_major=time_major, **kwargs)

    assert ys.shape == ((steps, *batch, H) if time_major else (*batch, steps, H)) and ys.dtype == jnp.float32
    fresh = jax.tree.map(lambda c: np.broadcast_to(c, (*batch, *c.shape)), unbatched)  # cell.default_carry(params)
    n = int(np.prod(batch))
    flat_carry = lambda c: jax.tree.map(lambda a: np.asarray(a).reshape(n, *np.shape(a)[len(batch) :]), c)  # noqa: E731
    as_parts = lambda c: tuple(c) if isinstance(c, tuple) else c  # noqa: E731
    finals, expected = reference.run_sequence(
        FUZZ_CELLS[name][1],
        params,
        xs.reshape(-1, steps, D),
        as_parts(flat_carry(case.get("initial_carry", fresh))),
        as_parts(flat_carry(fresh)),
        lengths=case.get("lengths"),
        mask=case.get("mask"),
        reset=case.get("reset"),
        reverse=case["reverse"],
        hidden=H,
    )
    got = _flat(ys, batch, steps, time_major)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    valid = np.ones(got.shape[:2], bool)
    if "lengths" in case:
        valid &= np.arange(steps) < case["lengths"].reshape(-1, 1)
    if "mask" in case:
        valid &= case["mask"].reshape(-1, steps)
    assert not np.any(got[~valid]), "padded and masked outputs must be exactly zero"
    got_parts = jax.tree.leaves(flat_carry(carry))
    for k, part in enumerate(got_parts):
        want = [f[k] if isinstance(f, tuple) else f for f in finals]
        np.testing.assert_allclose(part, np.stack(want) if want else np.zeros(part.shape), atol=1e-5, rtol=1e-5)
    assert jax.tree.map(np.shape, carry) == jax.tree.map(lambda c: (*batch, *c.shape), unbatched)
    return carry, ys


def _fuzz(name, max_examples, test):
    """Run ``test(case)`` on ``max_examples`` cases of cell ``name``, from a fixed seed of the cell's own.

    A seed per cell, not ``derandomize``: that seeds from the test function, the same for every parametrisation,
    so every cell would see the same options.
    """
    run = given(cases([name]))(test)
    seed(zlib.crc32(name.encode()))(settings(FUZZ, max_examples=max_examples)(run))()


@pytest.mark.parametrize("name", tiered(FUZZ_CELLS))
def test_unroll_matches_the_numpy_reference_of_the_sequence_semantics(name):
    def one(case):
        _check(case)

    _fuzz(name, 5, one)


@pytest.mark.parametrize("name", tiered(MIN_CELLS))
def test_parallel_and_sequential_both_match_the_reference(name):
    def both(case):
        parallel = _check(case, parallel=True)
        sequential = _check(case, parallel=False)
        for a, b in zip(jax.tree.leaves(parallel), jax.tree.leaves(sequential)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)

    _fuzz(name, 10 if name.startswith("min_") else 4, both)  # the newer cells compile slower: fewer examples


KERNEL_CELLS = sorted(name for name, entry in FUZZ_CELLS.items() if entry[0](2).update is not None)


@pytest.mark.parametrize("name", tiered(KERNEL_CELLS))
def test_the_fused_kernels_match_the_numpy_reference(name):
    """``backend="pallas"`` (Pallas's interpreter here) on fuzzed sequence semantics, against the NumPy
    reference; few examples, since each one compiles a kernel."""

    def one(case):
        _check(case, backend="pallas")

    _fuzz(name, 4, one)


# A reset in the padding (at or after a sequence's length) lies outside the sequence and must change nothing:
# forwards it once replaced the final carry with cell.default_carry(params), and backwards a reset at step
# `length` threw away initial_carry, because unroll combined `lengths` with `mask` but not with `reset`. The
# fuzz tests above meet this case by chance; these two meet it every run, in both modes.
PADDING_CASES = [("lstm", None), ("min_gru", True)]  # the sequential and the parallel mode


@pytest.mark.parametrize("name, parallel", PADDING_CASES)
def test_a_reset_in_the_padding_leaves_the_final_carry_alone(name, parallel):
    xs = np.random.default_rng(0).normal(size=(1, 4, D)).astype(np.float32)
    reset = np.array([[False, False, True, False]])  # step 2: padding, since the length is 2
    _check(
        dict(name=name, xs=xs, lengths=np.array([2]), reset=reset, reverse=False), parallel=parallel, time_major=False
    )


@pytest.mark.parametrize("name, parallel", PADDING_CASES)
def test_a_reset_in_the_padding_leaves_the_reverse_start_alone(name, parallel):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(1, 4, D)).astype(np.float32)
    h0 = jax.tree.map(lambda c: rng.normal(size=(1, *c.shape)).astype(np.float32), _setup(name)[2])
    reset = np.array([[False, False, True, False]])
    case = dict(name=name, xs=xs, lengths=np.array([2]), reset=reset, initial_carry=h0, reverse=True)
    _check(case, parallel=parallel, time_major=False)


CELL = rnnx.gru(4)
PARAMS = CELL.init(jax.random.key(0), 3)
XS = np.asarray(jax.random.normal(jax.random.key(1), (3, 6, 3)))
RUN = jax.jit(
    lambda xs, lengths, mask, reverse: rnnx.unroll(CELL, PARAMS, xs, lengths=lengths, mask=mask, reverse=reverse),
    static_argnums=3,
)
RUN_ONE = jax.jit(lambda xs, reverse: rnnx.unroll(CELL, PARAMS, xs, reverse=reverse), static_argnums=1)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=3, max_size=3),
    mask_bits=st.lists(st.booleans(), min_size=18, max_size=18),
    reverse=st.booleans(),
)
def test_lengths_and_mask_equal_running_only_the_selected_steps(lengths, mask_bits, reverse):
    # Checks in NumPy: an eager jnp op on each new shape (the selected steps) would be a compilation each.
    lengths, mask = np.array(lengths), np.array(mask_bits).reshape(3, 6)
    carry, ys = map(np.asarray, RUN(XS, lengths, mask, reverse))
    selected = mask & (np.arange(6) < lengths[:, None])
    for n in range(3):
        idx = np.flatnonzero(selected[n])
        assert not np.any(ys[n][~selected[n]])
        if idx.size == 0:
            np.testing.assert_array_equal(carry[n], 0.0)
            continue
        c, y = RUN_ONE(XS[n, idx], reverse)
        np.testing.assert_allclose(ys[n, idx], y, atol=1e-6)
        np.testing.assert_allclose(carry[n], c, atol=1e-6)


@pytest.mark.slow  # a fresh interpreter
def test_import_rnnx_does_not_need_torch():
    code = "import sys; sys.modules['torch'] = None; import rnnx, rnnx.interop; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
