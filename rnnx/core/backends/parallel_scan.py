"""The parallel scan: all steps of a linear recurrence at once, for cells with a parallel form.

``rnnx.min_gru``, ``rnnx.min_lstm``, ``rnnx.lru`` and ``rnnx.rg_lru`` step as ``h_t = a_t * h_{t-1} + b_t``
(``Cell.coefficients``), which :func:`rnnx.linear_scan` (``jax.lax.associative_scan``) computes in ``log t``
depth; the LRU's outputs are then read out of every state (``Cell.readout``). ``rnnx.mlstm``'s recurrence is
linear in its matrix memory but not elementwise: it brings its own chunkwise form (``Cell.parallel_form``).
Same arguments and semantics as :mod:`rnnx.core.backends.scan`.
"""

import jax
import jax.numpy as jnp

from rnnx.core.backends.call import Call, Options
from rnnx.core.cells import Cell
from rnnx.core.parallel import linear_scan, masked_coefficients
from rnnx.core.typing import Params


def output_dtype(carry_dtype):
    """The outputs' dtype: the carry's, or its real counterpart for a complex carry (the LRU's)."""
    return jnp.finfo(carry_dtype).dtype


NAME = "parallel"


def unsupported(call: Call) -> str | None:
    if not call.cell.parallel:
        return f"the parallel scan needs a cell whose step is a linear recurrence, received {call.cell.name}"
    return None


def run(cell: Cell, params: Params, xs, carry, valid, reset, fresh, *, reverse: bool, options: Options):
    """Gives exactly the sequential semantics: a masked step is ``a = 1, b = 0`` (the carry passes through)
    with a zero output; a reset step starts from ``fresh``. The scan runs in at least float32; outputs take
    the carry's dtype (the params' real dtype for a complex carry). ``options.remat`` rematerialises the whole
    scan in the backward pass."""

    def scan(params, xs, carry, valid, reset, fresh):
        if cell.parallel_form is not None:
            return cell.parallel_form(params, xs, carry, valid, reset, fresh, reverse)
        a, b = masked_coefficients(cell, params, xs, valid, reset, fresh)
        acc = a.dtype
        hs = linear_scan(a, b, carry.astype(acc), reverse=reverse)
        ys = hs if cell.readout is None else cell.readout(params, hs, cell.project(params, xs))
        ys = ys if valid is None else jnp.where(valid[..., None], ys, jnp.zeros((), ys.dtype))
        return hs[0 if reverse else -1].astype(carry.dtype), ys.astype(output_dtype(carry.dtype))

    scan = jax.checkpoint(scan) if options.remat else scan
    return scan(params, xs, carry, valid, reset, fresh)


__all__ = ["NAME", "output_dtype", "run", "unsupported"]
