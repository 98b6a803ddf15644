"""Run a cell over a sequence: ``rnnx.unroll``.

Shapes (axis letters as in :mod:`rnnx.core.typing`): ``xs (*b, t, d)`` (or ``(t, *b, d)`` with
``time_major=True``) where ``*b`` is any number of batch axes, including none; outputs ``ys (*b, t, h)`` in
the same layout; the carry has shape ``(*b, h)``.

``unroll`` checks its arguments, lays the arrays out time-major with one flat batch axis, and asks the
resolver (:mod:`rnnx.core.backends.resolver`) once which backend runs the call: the ``lax.scan`` of
``cell.step`` (whose masking semantics every backend shares), the parallel scan, the sequence-parallel
scan, cuDNN or the fused Pallas kernels.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rnnx.core._common import check_params, layout_hint
from rnnx.core.backends import resolver
from rnnx.core.backends.call import Call, Options
from rnnx.core.backends.scan import default_hoist
from rnnx.core.cells import Cell
from rnnx.core.deprecation import MESH_RENAME, renamed_argument
from rnnx.core.typing import Carry, Inputs, Lengths, Mask, Outputs, Params

SEQ_AXIS = "seq"  # the axis of seq_mesh that splits time (rnnx.core.backends.sharded's default)


def unroll(
    cell: Cell,
    params: Params,
    xs: Inputs,
    *,
    lengths: Lengths | None = None,
    mask: Mask | None = None,
    reset: Mask | None = None,
    initial_carry: Carry | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int = 1,
    remat: bool = False,
    hoist: bool | None = None,
    parallel: bool | None = None,
    seq_mesh: Mesh | None = None,
    backend: str = "auto",
    mesh: Mesh | None = None,
) -> tuple[Carry, Outputs]:
    """Scan ``cell`` over the time axis of ``xs``.

    Args:
      cell: a :class:`rnnx.Cell`.
      params: ``cell.init(key, d)``.
      xs: floating ``(*b, t, d)``, or ``(t, *b, d)`` if ``time_major``.
      lengths: integer ``(*b,)``: right-padded sequences. Steps ``>= length`` are skipped: the final carry
        is the one after each sequence's last valid step and padded outputs are exactly zero. With
        ``reverse=True`` each sequence's valid part runs backwards, as PyTorch does with packed sequences.
      mask: boolean ``(*b, t)`` (``(t, *b)`` if ``time_major``), gaps allowed: the carry passes through
        masked steps unchanged and their outputs are zero. Combines with ``lengths`` by logical and.
      reset: boolean, shaped like ``mask``: True where a new sequence starts. The carry is set back to
        ``cell.default_carry(params)`` before that step (after it, in reverse order, so each segment runs
        fresh in either direction); also at a masked step, whose reset carries to the next step. Resets at
        steps ``>= length`` are ignored: they lie outside the sequence.
      initial_carry: the carry before the first step, shaped like ``cell.default_carry(params, b)``.
        Default ``cell.default_carry(params, b)``.
      reverse: run from the last step to the first; outputs stay aligned with their inputs.
      time_major: the layout of ``xs``, ``ys`` and ``mask``.
      unroll: steps per scan iteration (``jax.lax.scan``'s ``unroll``).
      remat: rematerialise in the backward pass (``jax.checkpoint`` over chunks of about sqrt(t) steps), so
        the memory kept for it grows as sqrt(t) rather than t, for one extra forward pass.
      hoist: compute the input projection for all steps before the scan. ``None``: :func:`default_hoist`.
      parallel: run all steps at once with a parallel scan (``jax.lax.associative_scan``) instead of the
        sequential ``lax.scan`` of ``cell.step``; only for cells with a parallel form (``rnnx.min_gru``,
        ``rnnx.min_lstm``, ``rnnx.lru``, ``rnnx.rg_lru``; ``rnnx.mlstm``'s chunkwise form). ``None``: parallel
        where the cell supports it. ``unroll`` and ``hoist`` do not
        apply to the parallel mode; ``remat`` rematerialises the whole parallel scan. The parallel mode is
        for accelerators, where ``t`` sequential steps cost ``t`` kernel launches and the scan's ``log t``
        depth pays; on a CPU, which runs one step cheaply, the sequential mode can be as fast or faster
        (``python -m benchmarks.parallel``; results in ``benchmarks/results/`` and docs/parallel-scan.md).

      seq_mesh: a ``jax.sharding.Mesh`` with an axis named ``seq``: split the time axis over its devices
        (sequence parallelism, :mod:`rnnx.core.backends.sharded`), each device scanning its chunk and one collective
        carrying the state between chunks. Only for the parallel mode; ``t`` must divide by the number of
        devices along ``seq`` (pad with masked steps, which change nothing). (Not ``fit``'s ``data_mesh``,
        which splits the batch.)

      backend: ``"scan"``: ``lax.scan`` (or the parallel scan); ``"cudnn"``: cuDNN's fused LSTM
        (:mod:`rnnx.core.backends.cudnn`), for ``rnnx.lstm`` on a GPU with float32 compute, forward
        direction, no ``mask`` or ``reset``; ``"pallas"``: fused kernels that loop over time on chip
        (:mod:`rnnx.core.backends.pallas`), for ``rnnx.simple_rnn``, ``rnnx.lstm`` and ``rnnx.gru`` in float32
        or bfloat16 on a GPU, and in Pallas's interpreter (slow, for tests) on a CPU. Both raise a ValueError
        naming the reason where they cannot run the call. ``"auto"`` (default): the backend measured fastest
        for this device kind, cell, dtype and shape (:mod:`rnnx.core.backends.table`), the scan where nothing
        was measured. ``unroll``, ``remat`` and ``hoist`` apply to the scan only.

      mesh: deprecated alias of ``seq_mesh``, removed in rnnx 0.3.

    ``unroll``, ``remat``, ``hoist``, ``parallel``, ``seq_mesh`` and ``backend`` never change the results
    (beyond float rounding).

    Returns:
      ``(carry, ys)``: the final carry and the outputs ``(*b, t, h)``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.gru(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rnnx.unroll(cell, params, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))
    >>> ys.shape, carry.shape, float(jnp.abs(ys[1, 2:]).max())
    ((2, 5, 8), (2, 8), 0.0)
    """
    mesh = _check_seq_mesh(renamed_argument("rnnx.unroll", "mesh", mesh, "seq_mesh", seq_mesh, MESH_RENAME))
    input_size = check_params(cell, params)
    parallel = _check_parallel(cell, parallel, mesh)
    xs = _check_xs(xs, input_size)
    steps = xs.shape[0 if time_major else -2]
    batch_shape = xs.shape[1:-1] if time_major else xs.shape[:-2]
    valid, in_sequence = _valid_steps(lengths, mask, xs.shape, time_major)
    reset = _check_bool("reset", reset, batch_shape, steps, time_major)
    if reset is not None and in_sequence is not None:  # a step past the length is no sequence's start
        reset = reset & in_sequence
    init = cell.default_carry(params, batch_shape)
    carry = init if initial_carry is None else _check_carry(initial_carry, init, xs.shape, time_major)
    call = Call(cell, [[params]], xs, time_major, reverse=reverse, mask=mask is not None, reset=reset is not None,
                initial_carry=initial_carry, parallel=parallel, mesh=mesh)  # fmt: skip
    name = resolver.choose(call, backend)  # cuDNN runs one cell as a one-layer stack

    # Internally time-major with one flat batch axis: (t, n, ...).
    n, t_axis = math.prod(batch_shape), 0 if time_major else len(batch_shape)

    def to_tm(a):
        a = jnp.moveaxis(a, t_axis, 0)
        return a.reshape(steps, n, *a.shape[1 + len(batch_shape) :])

    def flat(c):
        return c.reshape(n, *c.shape[len(batch_shape) :])

    x_tm = to_tm(xs)
    valid_tm = None if valid is None else to_tm(valid)
    if valid_tm is not None:
        # Padded and masked steps are skipped, but their inputs still flow through the step (or the hoisted
        # projection) before the select; zero them first so that NaN or inf there never reaches a gradient.
        x_tm = jnp.where(valid_tm[..., None], x_tm, jnp.zeros((), x_tm.dtype))
    reset_tm = None if reset is None else to_tm(reset)
    if reset_tm is not None and reverse:
        reset_tm = jnp.concatenate([reset_tm[1:], jnp.zeros_like(reset_tm[:1])])
    fresh = jax.tree.map(flat, cell.default_carry(params, batch_shape)) if reset is not None else None

    options = Options(unroll=unroll, remat=remat, hoist=hoist, mesh=mesh)
    run = resolver.MODULES[name].run
    carry, ys = run(cell, params, x_tm, jax.tree.map(flat, carry), valid_tm, reset_tm, fresh, reverse=reverse,
                    options=options)  # fmt: skip
    carry = jax.tree.map(lambda c: c.reshape(*batch_shape, *c.shape[1:]), carry)
    ys = ys.reshape(steps, *batch_shape, ys.shape[-1])
    return carry, (ys if time_major else jnp.moveaxis(ys, 0, -2))


def _check_seq_mesh(mesh: Mesh | None) -> Mesh | None:
    if mesh is not None and SEQ_AXIS not in mesh.axis_names:
        raise ValueError(
            f"seq_mesh must have an axis named {SEQ_AXIS!r} (time is split over it), received axes "
            f"{tuple(mesh.axis_names)}"
        )
    return mesh


def _check_parallel(cell, parallel, mesh):
    if parallel not in (None, True, False):
        raise ValueError(f"parallel must be None, True or False, received {parallel!r}")
    if mesh is not None and (cell.coefficients is None or parallel is False):
        raise ValueError(
            f"seq_mesh= splits time over devices, which needs the parallel mode of a cell whose step is an "
            f"elementwise linear recurrence (rnnx.min_gru, rnnx.min_lstm, rnnx.lru, rnnx.rg_lru); received a "
            f"{cell.name} cell with parallel={parallel!r}"
        )
    if parallel and not cell.parallel:
        raise ValueError(
            f"parallel=True needs a cell with a parallel form (Cell.coefficients or Cell.parallel_form), but "
            f"{cell.name} has none; use parallel=None or False, or a parallel cell such as rnnx.min_gru"
        )
    return cell.parallel if parallel is None else parallel


def _check_xs(xs, input_size) -> jax.Array:
    xs = jnp.asarray(xs)
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs must have a floating dtype, received {xs.dtype}; cast it, e.g. xs.astype(jnp.float32)")
    if xs.ndim < 2:
        raise ValueError(f"xs must have shape (*batch, time, features), received shape {xs.shape}")
    if xs.shape[-1] != input_size:
        raise ValueError(
            f"xs has feature size {xs.shape[-1]}, but the cell was initialised for input_size={input_size}"
        )
    return xs


def _valid_steps(lengths, mask, xs_shape, time_major):
    """``(valid, in_sequence)``: boolean (*b, t) (or (t, *b)) arrays of the steps to run and of the steps
    before each length; each None when it holds everywhere."""
    steps = xs_shape[0 if time_major else -2]
    batch_shape = xs_shape[1:-1] if time_major else xs_shape[:-2]
    if steps == 0:
        raise ValueError("xs has 0 time steps; expected at least 1")
    mask = _check_bool("mask", mask, batch_shape, steps, time_major)
    if lengths is None:
        return mask, None
    lengths = jnp.asarray(lengths)
    if lengths.shape != tuple(batch_shape):
        raise ValueError(
            f"lengths must have the batch shape {tuple(batch_shape)}, received shape {lengths.shape}"
            + layout_hint(xs_shape, time_major)
        )
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must have an integer dtype, received {lengths.dtype}")
    if not isinstance(lengths, jax.core.Tracer) and lengths.size:
        # np.asarray first: np.min would call the jax method, which is staged (not concrete) under jit.
        low, high = int(np.min(np.asarray(lengths))), int(np.max(np.asarray(lengths)))
        if low < 0 or high > steps:
            raise ValueError(
                f"lengths must lie in [0, {steps}] (the number of time steps), received min {low}, max {high}"
            )
    by_length = jnp.arange(steps) < lengths[..., None]
    if time_major:
        by_length = jnp.moveaxis(by_length, -1, 0)
    return (by_length if mask is None else by_length & mask), by_length


def _check_bool(name, value, batch_shape, steps, time_major):
    if value is None:
        return None
    value = jnp.asarray(value)
    expected = (steps, *batch_shape) if time_major else (*batch_shape, steps)
    if value.shape != expected:
        layout = "(time, *batch)" if time_major else "(*batch, time)"
        raise ValueError(f"{name} must have shape {layout} = {expected}, received shape {value.shape}")
    if value.dtype != jnp.bool_:
        raise TypeError(f"{name} must have dtype bool, received {value.dtype}")
    return value


def _check_carry(carry, expected, xs_shape, time_major):
    got = jax.tree.map(lambda a: tuple(jnp.shape(a)), carry)
    want = jax.tree.map(lambda a: tuple(a.shape), expected)
    if jax.tree.structure(carry) != jax.tree.structure(expected) or got != want:
        raise ValueError(f"initial_carry must have shapes {want}, received {got}" + layout_hint(xs_shape, time_major))
    return jax.tree.map(lambda a, e: jnp.asarray(a, e.dtype), carry, expected)


__all__ = ["default_hoist", "unroll"]
