"""The parallel scan: all steps of a linear recurrence at once, for cells with ``Cell.coefficients``.

``rnnx.min_gru`` and ``rnnx.min_lstm`` step as ``h_t = a_t * h_{t-1} + b_t``, which
:func:`rnnx.linear_scan` (``jax.lax.associative_scan``) computes in ``log t`` depth. Same arguments and
semantics as :mod:`rnnx.core.backends.scan`.
"""

import jax
import jax.numpy as jnp

from rnnx.core.backends.call import Call, Options
from rnnx.core.cells import Cell
from rnnx.core.parallel import linear_scan, masked_coefficients
from rnnx.core.typing import Params

NAME = "parallel"


def unsupported(call: Call) -> str | None:
    if call.cell.coefficients is None:
        return f"the parallel scan needs a cell whose step is a linear recurrence, received {call.cell.name}"
    return None


def run(cell: Cell, params: Params, xs, carry, valid, reset, fresh, *, reverse: bool, options: Options):
    """Gives exactly the sequential semantics: a masked step is ``a = 1, b = 0`` (the carry passes through)
    with a zero output; a reset step starts from ``fresh``. The scan runs in at least float32; outputs take
    the carry's dtype. ``options.remat`` rematerialises the whole scan in the backward pass."""

    def scan(params, xs, carry, valid, reset, fresh):
        a, b = masked_coefficients(cell, params, xs, valid, reset, fresh)
        acc = a.dtype
        hs = linear_scan(a, b, carry.astype(acc), reverse=reverse)
        ys = hs if valid is None else jnp.where(valid[..., None], hs, jnp.zeros((), acc))
        return hs[0 if reverse else -1].astype(carry.dtype), ys.astype(carry.dtype)

    scan = jax.checkpoint(scan) if options.remat else scan
    return scan(params, xs, carry, valid, reset, fresh)


__all__ = ["NAME", "run", "unsupported"]
