"""Parallel-scan recurrent cells: minGRU and minLSTM (Feng et al. 2024, arXiv 2410.01201).

Axis letters as in :mod:`rnnx.core.typing`: ``b`` batch, ``t`` time, ``d`` input features, ``h`` hidden units.

Neither cell has a recurrent matrix: every gate depends on ``x_t`` alone, so each step is an elementwise
*linear* recurrence

.. math::  h_t = a_t \\odot h_{t-1} + b_t, \\qquad a_t, b_t \\text{ functions of } x_t \\text{ only},

and a whole sequence can be computed by a parallel prefix scan in ``O(log t)`` depth instead of ``t``
sequential steps. A cell exposes this through ``Cell.coefficients(params, xp) -> (a, b)``; ``rnnx.unroll``
then runs either the ordinary ``lax.scan`` of ``cell.step`` or :func:`linear_scan` over all steps at once.

Why the scan is linear, not log space. The paper computes the scan as
``h_t = exp(a*_t + logcumsumexp_s(log b_s - a*_s))`` with ``a*_t = sum_{s<=t} log a_s``: a cumulative
sum formulation that divides by the running product ``exp(a*_s)`` and therefore needs logs to avoid
overflow. ``jax.lax.associative_scan`` over pairs ``(a, b)`` with the combine
``(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)`` never divides: it only multiplies numbers in ``[0, 1]``
(products underflow gracefully to 0) and forms convex combinations of bounded values, so it is stable
in float32 without logs, costs no ``exp``/``log`` per combine, and accepts an initial state of either
sign. (The log form needs ``log h_0``, which is NaN for a negative initial state: one way for the parallel
and sequential results of a port to differ with a non-zero initial state.)
``python -m benchmarks.parallel`` compares the forms side by side (results in ``benchmarks/results/`` and
docs/parallel-scan.md): the paper's form is slower, since every combine pays an ``exp`` and a ``log``, and less
accurate over long sequences, since it divides by running products. The log space is kept where it pays: in
the minLSTM normalisation ``f/(f + i)``, computed from log-sigmoids so that it stays finite when both gates
underflow.
"""

import functools

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from rnnx.core._common import check_hidden_size, check_input_size, draw, gate_blocks, input_projection
from rnnx.core.cells import Cell
from rnnx.core.typing import BatchShape, Coefficients, Hidden, Initializer


def _g(x):
    """The paper's positive activation for candidate states: ``x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` below.

    Continuous with slope 1 at 0 and always positive, so that the paper's log-space scan is defined.
    """
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def min_gru(
    hidden_size: int,
    *,
    kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """minGRU (Feng et al. 2024): a GRU whose gates see only the input.

    With ``[k_t, \\tilde h_t] = x_t W_{ih} + b`` (gate order z, h):

    .. math::
        z_t = \\sigma(k_t), \\qquad h_t = (1 - z_t) \\odot h_{t-1} + z_t \\odot g(\\tilde h_t), \\quad y_t = h_t

    so ``a_t = 1 - z_t = sigma(-k_t)`` and ``b_t = z_t g(h~_t)``. The paper's log-space parallel form is
    ``log h_t = a*_t + logcumsumexp_s(log b_s - a*_s)`` with ``log a_t = -softplus(k_t)``,
    ``log z_t = -softplus(-k_t)``; rnnx runs the same recurrence with :func:`linear_scan` (see the module
    docstring). Parameters ``2h (d + 1)``: 77,056 for d=300, h=128.

    Args:
      hidden_size: ``h``, a positive integer.
      kernel_init, bias_init: ``jax.nn.initializers``-style functions (default glorot-uniform, zeros),
        applied per gate block.
      dtype: compute dtype of the input projection (``None``: the params' dtype); the recurrence itself
        always accumulates in at least float32. ``param_dtype``: storage dtype.

    Returns:
      A :class:`Cell` whose carry is ``h (*b, h)`` and that supports ``rnnx.unroll(..., parallel=True)``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> rnnx.count_params(rnnx.min_gru(128).init(jax.random.key(0), 300))
    77056
    >>> cell = rnnx.min_gru(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> xs, h0 = jax.random.normal(jax.random.key(1), (2, 20, 3)), -jnp.ones((2, 8))
    >>> parallel = rnnx.unroll(cell, params, xs, initial_carry=h0)
    >>> sequential = rnnx.unroll(cell, params, xs, initial_carry=h0, parallel=False)
    >>> bool(jnp.allclose(parallel[1], sequential[1], atol=1e-5))
    True
    """

    def coefficients(p, xp):
        k, candidate = jnp.split(_accumulate(xp), 2, axis=-1)
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * _g(candidate)

    return _make_min_cell("min_gru", hidden_size, 2, coefficients, kernel_init, bias_init, dtype, param_dtype)


def min_lstm(
    hidden_size: int,
    *,
    kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """minLSTM (Feng et al. 2024): an LSTM whose gates see only the input, normalised, without ``c`` or ``o``.

    With ``[k^f_t, k^i_t, \\tilde h_t] = x_t W_{ih} + b`` (gate order f, i, h):

    .. math::
        f_t = \\sigma(k^f_t), \\quad i_t = \\sigma(k^i_t), \\quad
        f'_t = \\frac{f_t}{f_t + i_t}, \\quad i'_t = \\frac{i_t}{f_t + i_t}

        h_t = f'_t \\odot h_{t-1} + i'_t \\odot g(\\tilde h_t), \\quad y_t = h_t

    The normalisation is computed in log space, as in the paper: with
    ``delta = softplus(-k^f) - softplus(-k^i) = log i - log f``, ``f' = sigma(-delta)`` and
    ``i' = sigma(delta)``, finite even where ``f`` and ``i`` both underflow. ``a_t = f'_t``,
    ``b_t = i'_t g(h~_t)``. Parameters ``3h (d + 1)``: 115,584 for d=300, h=128.

    The arguments are as in :func:`min_gru`.

    Returns:
      A :class:`Cell` whose carry is ``h (*b, h)`` and that supports ``rnnx.unroll(..., parallel=True)``.

    >>> import jax, rnnx
    >>> rnnx.count_params(rnnx.min_lstm(128).init(jax.random.key(0), 300))
    115584
    """

    def coefficients(p, xp):
        kf, ki, candidate = jnp.split(_accumulate(xp), 3, axis=-1)
        delta = jax.nn.softplus(-kf) - jax.nn.softplus(-ki)
        return jax.nn.sigmoid(-delta), jax.nn.sigmoid(delta) * _g(candidate)

    return _make_min_cell("min_lstm", hidden_size, 3, coefficients, kernel_init, bias_init, dtype, param_dtype)


def linear_scan(a: Coefficients, b: Coefficients, h0: Hidden, *, reverse: bool = False) -> Coefficients:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` by ``jax.lax.associative_scan``.

    Args:
      a, b: ``(t, *b, h)`` coefficients, time first.
      h0: ``(*b, h)``: the state before the first step (before step ``t - 1`` when ``reverse``).
      reverse: run from the last step to the first.

    Returns:
      ``h (t, *b, h)``, the state after each step.

    The gradient is the same recurrence run the other way (``g_t = dh_t + a_{t+1} g_{t+1}``, then
    ``db_t = g_t``, ``da_t = g_t h_{t-1}``), one more associative scan: a custom VJP, because autodiff
    through ``associative_scan`` differentiates every strided slice and concatenation of the scan, and a
    minGRU training step measured slower that way. Forward-mode differentiation (``jax.jvp``) is therefore
    not supported; ``rnnx.unroll(..., parallel=False)`` supports it.

    >>> import jax.numpy as jnp
    >>> linear_scan(jnp.full((3, 1), 0.5), jnp.array([[1.0], [2.0], [3.0]]), jnp.zeros(1))[:, 0]
    Array([1.  , 2.5 , 4.25], dtype=float32)
    """
    return _linear_scan(a, b, h0, reverse)


def _associative(a, b, h0, reverse):
    first = -1 if reverse else 0
    # A barrier, so that XLA materialises a and b once instead of fusing (recomputing) their producers
    # into every strided slice of the scan; a minGRU training step measured faster with it.
    a, b = jax.lax.optimization_barrier((a, b))
    b = b.at[first].add(a[first] * h0)  # fold the initial state into the first step's offset
    return jax.lax.associative_scan(_combine, (a, b), reverse=reverse, axis=0)[1]


def _combine(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _linear_scan(a, b, h0, reverse):
    return _associative(a, b, h0, reverse)


def _linear_scan_fwd(a, b, h0, reverse):
    h = _associative(a, b, h0, reverse)
    return h, (a, h, h0)


def _linear_scan_bwd(reverse, residuals, dh):
    a, h, h0 = residuals
    none = jnp.zeros_like(a[:1])
    if reverse:  # h_t = a_t h_{t+1} + b_t: gradients flow forwards in time
        a_next, h_prev, first = jnp.concatenate([none, a[:-1]]), jnp.concatenate([h[1:], h0[None]]), -1
    else:
        a_next, h_prev, first = jnp.concatenate([a[1:], none]), jnp.concatenate([h0[None], h[:-1]]), 0
    grad = _associative(a_next, dh, jnp.zeros_like(h0), not reverse)  # dL/dh_t through all later steps
    return grad * h_prev, grad, a[first] * grad[first]


_linear_scan.defvjp(_linear_scan_fwd, _linear_scan_bwd)


def _accumulate(xp):
    """The recurrence's dtype: the projection's, but at least float32 (bfloat16 accumulates in float32)."""
    return xp.astype(jnp.promote_types(xp.dtype, jnp.float32))


def _make_min_cell(name, hidden_size, gates, coefficients, kernel_init, bias_init, dtype, param_dtype):
    """A Cell with ``w_ih (d, g*h)``, ``b (g*h,)`` whose step is ``h = a * h + b`` from ``coefficients``."""
    check_hidden_size(hidden_size)
    dtype = None if dtype is None else jnp.dtype(dtype)
    param_dtype = jnp.dtype(param_dtype)
    spec = (
        ("hidden_size", hidden_size),
        ("kernel_init", kernel_init),
        ("bias_init", bias_init),
        ("dtype", dtype),
        ("param_dtype", param_dtype),
    )
    h, gh = hidden_size, gates * hidden_size
    kernel_init = kernel_init or jax.nn.initializers.glorot_uniform()
    bias_init = bias_init or jax.nn.initializers.zeros

    def param_shapes(input_size):
        return {"w_ih": (input_size, gh), "b": (gh,)}

    def init(key, input_size):
        check_input_size(input_size)
        k_ih, k_b = jax.random.split(key)
        return {
            "w_ih": gate_blocks(kernel_init, k_ih, input_size, h, gates, param_dtype),
            "b": draw(bias_init, k_b, (gh,), param_dtype),
        }

    def default_carry(params, batch_shape: BatchShape = ()):
        return jnp.zeros((*tuple(batch_shape), h), params["w_ih"].dtype if dtype is None else dtype)

    def project(params, x):
        return input_projection(params, x, dtype)

    return linear_cell(name, spec, gates, init=init, param_shapes=param_shapes, default_carry=default_carry,
                       project=project, coefficients=coefficients)  # fmt: skip


def linear_cell(name, spec, gates, *, init, param_shapes, default_carry, project, coefficients, readout=None):
    """A Cell whose step is ``h = a h + b`` from ``coefficients``, with output ``readout(params, h, xp)`` (or
    ``h``). The step and the parallel scan share ``coefficients`` and ``readout``: one copy of each equation."""

    def step(params, carry, xp):
        a, b = coefficients(params, xp)
        new = a * carry.astype(a.dtype) + b
        y = new if readout is None else readout(params, new, xp)
        return new.astype(carry.dtype), y.astype(jnp.finfo(carry.dtype).dtype)

    return Cell(
        name=name,
        spec=spec,
        gates=gates,
        init=init,
        default_carry=default_carry,
        project=project,
        step=step,
        param_shapes=param_shapes,
        coefficients=coefficients,
        readout=readout,
    )


def masked_coefficients(cell, params, xs, valid, reset, fresh):
    """The coefficients ``(a, b)`` of ``cell`` over time-major ``xs (t, n, d)``, with masks and resets folded in.

    A masked step is ``a = 1, b = 0`` (the carry passes through); a reset step starts from ``fresh``:
    ``a = 0, b = a_t fresh + b_t`` (``fresh`` if the step is also masked). ``valid`` and ``reset`` are boolean
    ``(t, n)`` or None, ``reset`` already aligned with the scan order. Shared by the one-device parallel mode
    and the sequence-parallel one (:mod:`rnnx.core.backends.sharded`).
    """
    a, b = cell.coefficients(params, cell.project(params, xs))
    acc = a.dtype
    if valid is not None:
        a = jnp.where(valid[..., None], a, jnp.ones((), acc))
        b = jnp.where(valid[..., None], b, jnp.zeros((), acc))
    if reset is not None:
        b = jnp.where(reset[..., None], a * fresh.astype(acc) + b, b)
        a = jnp.where(reset[..., None], jnp.zeros((), acc), a)
    return a, b


__all__ = ["linear_cell", "masked_coefficients", "linear_scan", "min_gru", "min_lstm"]
