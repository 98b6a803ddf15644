"""The sequential scan: ``jax.lax.scan`` of ``cell.step``, the reference semantics of every backend.

Arrays arrive time-major with one flat batch axis, as ``rnnx.unroll`` prepares them: ``x_tm (t, n, d)``,
``carry, fresh (n, h)`` (pytrees for the LSTM), ``valid, reset (t, n)`` boolean or None, ``reset`` already
aligned with the scan order. :func:`masked_step` is one step of ``unroll``'s masking semantics; the fused
kernels (:mod:`rnnx.core.backends.pallas`) run and differentiate the same function.
"""

import math

import jax
import jax.numpy as jnp

from rnnx.core.backends.call import Call, Options
from rnnx.core.cells import Cell
from rnnx.core.typing import Carry, Params

NAME = "scan"


def unsupported(call: Call) -> str | None:
    """The sequential scan runs every cell and every call."""
    del call
    return None


def default_hoist(cell: Cell) -> bool:
    """Whether ``unroll`` computes the input projection for all steps before the scan.

    Hoisting turns ``t`` small matmuls into one large one, but adds a ``(t, b, g*h)`` buffer that every
    step reads back. On GPU and TPU the large matmul uses the device far better, so there we always hoist.
    On CPU it pays only for the simple RNN, whose step is little more than its matmuls; gated cells spend
    their step time on gate arithmetic, and the buffer made their training steps slower. Measured with
    ``python -m benchmarks.hoist``: ``benchmarks/results/hoist-cpu-2core.md`` and docs/benchmarks.md.
    """
    return jax.default_backend() != "cpu" or cell.gates == 1


def masked_step(step, carry: Carry, x, ok, new_seq, fresh: Carry):
    """One step of ``unroll``'s semantics around ``step(carry, x) -> (carry, y)``.

    A reset (``new_seq``) sets the carry to ``fresh`` first; a step that is not ``ok`` (masked or past the
    length) leaves the carry as it was and outputs exact zeros. ``ok`` and ``new_seq`` are boolean with
    the carry's leading axes (``(n,)``, or ``(t, n)`` for all steps at once), or None where they hold
    nowhere / everywhere.
    """
    if new_seq is not None:
        carry = _where(new_seq, fresh, carry)
    new_carry, y = step(carry, x)
    if ok is not None:
        new_carry = _where(ok, new_carry, carry)
        y = jnp.where(ok[..., None], y, jnp.zeros((), y.dtype))
    return new_carry, y


def run(cell: Cell, params: Params, x_tm, carry, valid, reset, fresh, *, reverse: bool, options: Options):
    """``lax.scan`` of ``cell.step`` over time-major, flat-batch arrays; returns ``(final_carry, ys (t, n, h))``."""
    if default_hoist(cell) if options.hoist is None else options.hoist:
        x_tm, step = cell.project(params, x_tm), cell.step
    else:
        step = cell.apply

    def body(carry, inputs):
        x, ok, new_seq = inputs
        return masked_step(lambda c, x: step(params, c, x), carry, x, ok, new_seq, fresh)

    inputs = (x_tm, valid, reset)
    if options.remat:
        return _chunked_scan(body, carry, inputs, reverse=reverse, unroll=options.unroll)
    return jax.lax.scan(body, carry, inputs, reverse=reverse, unroll=options.unroll)


def _chunked_scan(body, carry, inputs, *, reverse, unroll):
    """``lax.scan`` in about sqrt(t) checkpointed chunks of about sqrt(t) steps.

    The backward pass keeps one carry per chunk and recomputes each chunk's steps when it reaches it, so the
    saved state grows as sqrt(t) rather than t, for one extra forward pass. (Checkpointing every step
    instead still keeps t carries: measured in ``python -m benchmarks.anatomy``.) The time axis is padded
    to whole chunks with masked steps, which pass the carry through, and the padding is cut off the outputs.
    """
    x, ok, new_seq = inputs
    steps, n = x.shape[:2]
    size = math.isqrt(steps - 1) + 1  # ceil(sqrt(steps))
    chunks = -(-steps // size)
    pad = chunks * size - steps
    if pad:
        ok = jnp.ones((steps, n), bool) if ok is None else ok
        grow = lambda a: jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])  # noqa: E731
        x, ok, new_seq = grow(x), grow(ok), None if new_seq is None else grow(new_seq)
    split = lambda a: a.reshape(chunks, size, *a.shape[1:])  # noqa: E731

    @jax.checkpoint
    def run_chunk(carry, chunk):
        return jax.lax.scan(body, carry, chunk, reverse=reverse, unroll=unroll)

    carry, ys = jax.lax.scan(run_chunk, carry, jax.tree.map(split, (x, ok, new_seq)), reverse=reverse)
    return carry, ys.reshape(chunks * size, *ys.shape[2:])[:steps]


def _where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond[..., None], a, b), new, old)


__all__ = ["NAME", "default_hoist", "masked_step", "run", "unsupported"]
