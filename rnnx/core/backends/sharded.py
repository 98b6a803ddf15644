"""A sequence-parallel linear scan: the time axis of ``h_t = a_t * h_{t-1} + b_t`` split over devices.

Axis letters as in :mod:`rnnx.core.typing`: ``t`` time, ``n`` the flat batch, ``h`` hidden units; ``k`` is
the number of devices along the mesh axis that splits time (``seq`` by default), ``c = t / k`` a chunk.

A linear recurrence composes: a chunk of steps maps its entering state ``h`` to ``A h + B`` with
``A = prod a`` over the chunk and ``B`` the chunk's last state from a zero start. So with ``jax.shard_map``
each device

1. scans its own chunk from zero: the running products ``P_t`` and states ``L_t`` (one associative scan);
2. exchanges its composite ``(A, B) = (P, L)`` at the chunk's end with one ``all_gather``: ``(k, 2, n, h)``;
3. scans the ``k`` composites (cheap, the same on every device) for the state entering its chunk, ``h_in``;
4. corrects its chunk: ``h_t = L_t + P_t h_in``.

Each device holds ``c = t / k`` steps of every ``(t, n, h)`` array, so memory per device falls as ``1/k``
(plus the chunk's running products ``P``, which the one-device scan does not keep); only ``2 n h`` numbers
per device cross the interconnect, in one ``all_gather`` each way. ``reverse`` runs the same from the right.

The gradient is the same decomposition backwards, one more sharded scan in the other direction (a custom
VJP, as for :func:`rnnx.core.parallel.linear_scan`): with ``v_t = a_t g_t`` where ``g_t = dL/dh_t``
through all later steps, ``v_t = a_t (v_{t+1} + dh_t)`` is a linear recurrence with the *unshifted*
``a`` (no neighbour's coefficient is needed), and ``g_t = dh_t + v_{t+1}``, ``da_t = g_t h_{t-1}``,
``db_t = g_t``, ``dh_0 = v_0``. Each chunk knows the ``v`` and ``h`` entering it from step 3, so the
shifted terms need no further collective.

Time only: other mesh axes replicate the work (a batch sharded over a ``data`` axis as well is not yet
supported here).

``python -m benchmarks.sequence_parallel`` gives the per-device memory against ``k``.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rnnx.core.backends.call import Call, Options
from rnnx.core.backends.parallel_scan import output_dtype
from rnnx.core.cells import Cell
from rnnx.core.parallel import _combine, masked_coefficients
from rnnx.core.typing import Params

NAME = "sharded"

# jax.shard_map is public from jax 0.6; jax.experimental.shard_map (deprecated from 0.8) before that.
if hasattr(jax, "shard_map"):
    _shard_map = jax.shard_map
else:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map  # type: ignore[assignment]


def unsupported(call: Call) -> str | None:
    if call.mesh is None:
        return "the sequence-parallel scan splits time over the devices of seq_mesh=, and none was given"
    if call.cell.coefficients is None:
        name = call.cell.name
        return (
            "the sequence-parallel scan needs a cell whose step is an elementwise linear recurrence (rnnx.min_gru, "
            f"rnnx.min_lstm, rnnx.lru, rnnx.rg_lru), received {name}"
        )
    return None


def run(cell: Cell, params: Params, xs, carry, valid, reset, fresh, *, reverse: bool, options: Options):
    """The backend entry: :func:`unroll_parallel_sharded` over ``options.mesh``, rematerialised whole with
    ``options.remat``."""
    if options.mesh is None:
        raise ValueError("the sequence-parallel scan needs seq_mesh=, a jax.sharding.Mesh with an axis named 'seq'")
    scan = functools.partial(unroll_parallel_sharded, cell, reverse=reverse, mesh=options.mesh)
    return (jax.checkpoint(scan) if options.remat else scan)(params, xs, carry, valid, reset, fresh)


def sharded_linear_scan(a, b, h0, *, mesh: Mesh, axis: str = "seq", reverse: bool = False):
    """:func:`rnnx.core.parallel.linear_scan` with the time axis split over the mesh axis ``axis``.

    ``h_t = a_t * h_{t-1} + b_t`` (``h_t = a_t * h_{t+1} + b_t`` when ``reverse``), computed chunk by
    chunk on ``k = mesh.shape[axis]`` devices with one ``all_gather`` of the chunks' composites (see the
    module docstring). Other mesh axes, if any, replicate the computation. ``t`` must divide by ``k``.

    Args:
      a, b: ``(t, n, h)`` coefficients, time first.
      h0: ``(n, h)``: the state before the first step (before step ``t - 1`` when ``reverse``).
      mesh: a ``jax.sharding.Mesh`` with an axis named ``axis``.
      axis: the mesh axis that splits time.
      reverse: run from the last step to the first.

    Returns:
      ``h (t, n, h)``, the state after each step, sharded over time on ``mesh``.

    >>> import jax, jax.numpy as jnp
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ("seq",))
    >>> a, b = jnp.full((3, 1, 1), 0.5), jnp.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    >>> sharded_linear_scan(a, b, jnp.zeros((1, 1)), mesh=mesh)[:, 0, 0]
    Array([1.  , 2.5 , 4.25], dtype=float32)
    """
    return _sharded_scan(a, b, h0, mesh=mesh, axis=axis, reverse=reverse)[0]


def unroll_parallel_sharded(
    cell: Cell, params: Params, xs, carry, valid, reset, fresh, *, reverse: bool, mesh: Mesh, axis: str = "seq"
):
    """``rnnx.unroll``'s parallel mode with time split over ``mesh``'s axis ``axis``.

    The same contract and semantics (``xs (t, n, d)``, ``carry, fresh (n, h)``, ``valid, reset (t, n)``
    or None, ``reset`` aligned with the scan order; returns ``(final_carry, ys)``). ``xs``, ``valid`` and
    ``reset`` are laid out over time on ``mesh``, so the input projection and the coefficients are
    computed chunk by chunk where the chunk lives, and the scan is :func:`sharded_linear_scan`. ``t`` must
    divide by the device count: pad ``xs`` with masked steps (``lengths`` or ``mask``), which change nothing.
    """
    _check_steps(xs.shape[0], mesh, axis)
    xs, valid, reset = jax.tree.map(lambda v: _lay_out(v, mesh, P(axis)), (xs, valid, reset))
    # Inside shard_map, so that each device projects only its chunk and the params' gradient is summed over
    # devices by shard_map's transpose: outside it, explicit mesh axes refuse the time-contracting matmul.
    coefficients = functools.partial(masked_coefficients, cell)
    specs = (P(), P(axis), P(axis), P(axis), P())
    a, b = _shard_map(coefficients, mesh=mesh, in_specs=specs, out_specs=P(axis))(params, xs, valid, reset, fresh)
    hs, last = _sharded_scan(a, b, carry, mesh=mesh, axis=axis, reverse=reverse)
    ys = hs
    if cell.readout is not None:  # the LRU's y = Re(C h) + D x, chunk by chunk where the chunk lives
        read = lambda p, h, x: cell.readout(p, h, cell.project(p, x))  # noqa: E731
        ys = _shard_map(read, mesh=mesh, in_specs=(P(), P(axis), P(axis)), out_specs=P(axis))(params, hs, xs)
    ys = ys if valid is None else jnp.where(valid[..., None], ys, jnp.zeros((), ys.dtype))
    return last.astype(carry.dtype), ys.astype(output_dtype(carry.dtype))


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "reverse"))  # eager shard_map runs op by op
def _sharded_scan(a, b, h0, *, mesh, axis, reverse):
    """:func:`sharded_linear_scan` and the last state, replicated: on a mesh with explicit axes (``jax.make_mesh``'s
    default) ``hs[-1]`` would be a slice of a sharded axis, which jax refuses."""
    a, b, h0 = jnp.asarray(a), jnp.asarray(b), jnp.asarray(h0)
    _check(a, b, h0, mesh, axis)
    a, b = _lay_out(a, mesh, P(axis)), _lay_out(b, mesh, P(axis))
    return _scan(a, b, _lay_out(h0.astype(a.dtype), mesh, P()), mesh, axis, reverse)


def _lay_out(x, mesh, spec):
    """``x`` laid out as ``spec`` on ``mesh``: resharded on explicit mesh axes, a constraint on automatic ones."""
    sharding = NamedSharding(mesh, spec)
    explicit = getattr(getattr(jax.sharding, "AxisType", None), "Explicit", None)
    if explicit is not None and explicit in getattr(mesh, "axis_types", ()):
        return jax.reshard(x, sharding)  # jax.make_mesh's default from jax 0.7 or so
    return jax.lax.with_sharding_constraint(x, sharding)


def _axis_size(mesh, axis):
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, received {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has no axis named {axis!r} to split time over; its axes are {mesh.axis_names}")
    return mesh.shape[axis]


def _check_steps(steps, mesh, axis):
    """Refuse a time axis that does not split evenly: an uneven one could not stay sharded afterwards."""
    devices = _axis_size(mesh, axis)
    if steps % devices:
        raise ValueError(
            f"the {steps} time steps do not divide over the {devices} devices of mesh axis {axis!r}; pad the "
            f"sequence to {steps + -steps % devices} steps with masked steps (lengths= or mask=), which change nothing"
        )


def _check(a, b, h0, mesh, axis):
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (t, n, h), received {a.shape} and {b.shape}")
    if h0.shape != a.shape[1:]:
        raise ValueError(f"h0 must have shape (n, h) = {a.shape[1:]}, received {h0.shape}")
    _check_steps(a.shape[0], mesh, axis)


# The scan proper. Inside shard_map every function sees one chunk, ``(c, n, h)``; the state entering a chunk
# travels as ``(1, n, h)`` per device (``(k, n, h)`` outside), and the state after the last step, which every
# device computes alike from the gathered composites, as one replicated ``(n, h)``.


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _scan(a, b, h0, mesh, axis, reverse):
    """``(h, last)``: the states ``(t, n, h)`` sharded over time, and the last state ``(n, h)`` replicated."""
    return _scan_fwd(a, b, h0, mesh, axis, reverse)[0]


def _scan_fwd(a, b, h0, mesh, axis, reverse):
    body = functools.partial(_chunk_scan, axis=axis, reverse=reverse)
    h, h_in, last = _shard_map(body, mesh=mesh, in_specs=(P(axis), P(axis), P()), out_specs=(P(axis), P(axis), P()))(
        a, b, h0
    )
    return (h, last), (a, h, h_in)


def _scan_bwd(mesh, axis, reverse, residuals, cotangents):
    a, h, h_in = residuals
    dh, d_last = cotangents
    body = functools.partial(_chunk_grad, axis=axis, reverse=reverse)
    specs = (P(axis), P(axis), P(axis), P(axis), P())
    return _shard_map(body, mesh=mesh, in_specs=specs, out_specs=(P(axis), P(axis), P()))(a, h, h_in, dh, d_last)


_scan.defvjp(_scan_fwd, _scan_bwd)


def _chunk_scan(a, b, h0, *, axis, reverse):
    """One chunk of the scan: ``(h, h_in, last)``, its states, the state entering it, the last state of all."""
    end = 0 if reverse else -1  # the chunk's last step in scan order
    # As in rnnx.core.parallel: materialise a and b once rather than fuse their producers into every slice.
    a, b = jax.lax.optimization_barrier((a, b))
    prod, local = jax.lax.associative_scan(_combine, (a, b), reverse=reverse, axis=0)
    composites = _all_gather(jnp.stack([prod[end], local[end]]), axis)  # (k, 2, n, h): the one collective
    h_in, last = _entering(composites[:, 0], composites[:, 1], h0, jax.lax.axis_index(axis), reverse)
    return local + prod * h_in, h_in[None], last


def _entering(prods, offsets, h0, index, reverse):
    """From the ``k`` chunks' composites: the state entering chunk ``index``, and the state after all."""
    first = -1 if reverse else 0
    offsets = offsets.at[first].add(prods[first] * h0)
    after = jax.lax.associative_scan(_combine, (prods, offsets), reverse=reverse, axis=0)[1]  # (k, n, h)
    return _shift(after, h0[None], reverse)[index], after[-1 - first]


def _chunk_grad(a, h, h_in, dh, d_last, *, axis, reverse):
    """One chunk of the gradient: ``(da, db, dh0)``, from the scan of ``v_t = a_t g_t`` the other way."""
    end = 0 if reverse else -1
    holds_last = jax.lax.axis_index(axis) == (0 if reverse else jax.lax.axis_size(axis) - 1)
    dh = dh.at[end].add(jnp.where(holds_last, d_last, jnp.zeros((), dh.dtype)))
    zero = jnp.zeros(dh.shape[1:], dh.dtype)  # a constant, so the same on every device, as dh0 must be
    v, v_in, dh0 = _chunk_scan(a, a * dh, zero, axis=axis, reverse=not reverse)
    g = dh + _shift(v, v_in, not reverse)  # g_t = dh_t + v of the step after t (in scan order)
    return g * _shift(h, h_in, reverse), g, dh0


def _shift(states, entering, reverse):
    """Each step's *entering* state, in scan order: ``states`` moved one step, ``entering`` (1, ...) first."""
    if reverse:
        return jnp.concatenate([states[1:], entering])
    return jnp.concatenate([entering, states[:-1]])


def _all_gather(x, axis):
    """``all_gather`` typed as the same on every device, so that what is computed from it can leave replicated.

    jax >= 0.10 tracks which values vary over a shard_map axis and spells this ``to="invarying"``; earlier
    versions had no such argument and treated all_gather's result as replicated already.
    """
    try:
        return jax.lax.all_gather(x, axis, to="invarying")
    except TypeError:  # pragma: no cover - older jax
        return jax.lax.all_gather(x, axis)


__all__ = ["NAME", "run", "sharded_linear_scan", "unroll_parallel_sharded", "unsupported"]
