"""Gradient-flow diagnostics: how much gradient reaches each time step of a recurrent cell.

Axis letters as in :mod:`rnnx.core.typing`: ``b`` batch (any number of axes), ``t`` time, ``d`` input features,
``h`` hidden units. Two measurements, for any :class:`rnnx.Cell` whose output is its hidden state (the classic
cells, minGRU, minLSTM and the RG-LRU; the LRU, sLSTM and mLSTM are refused with the reason):

* :func:`hidden_grad_norms`: ``||dL/dh_t||`` for every step ``t`` of one loss, the gradient that
  backpropagation through time delivers to each step's state.
* :func:`jacobian_norms`: ``||dh_T/dh_0||`` for ``T = 1 .. t``, how strongly the initial state still
  moves the state ``T`` steps later; geometric decay is a vanishing gradient, geometric growth an
  exploding one. For the LSTM it reports the hidden path and the cell-state path separately.

Both are pure functions of a cell and arrays. A cell is static configuration, so they jit as they are,
the cell part of the cache key: ``jax.jit(jacobian_norms, static_argnames=("norm", "log"))(cell, params, xs)``.
The cell's equations stay in :mod:`rnnx.core.cells`; :func:`unroll_with_probes` runs ``cell.apply`` in a
plain ``lax.scan`` (no masks, no reverse), so use :func:`rnnx.unroll` for everything else.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from rnnx.core._common import check_params
from rnnx.core.cells import Cell, LSTMCarry
from rnnx.core.typing import Carry, Inputs, Outputs, Params

_NORMS = {"spectral": 2, "frobenius": "fro"}


def unroll_with_probes(
    cell: Cell, params: Params, xs: Inputs, probes: Carry, *, initial_carry: Carry | None = None
) -> tuple[Carry, Outputs]:
    """:func:`rnnx.unroll` with an additive probe on the state after every step.

    .. math::  s_t = \\mathrm{cell}(s_{t-1}, x_t) + \\delta_t, \\quad y_t = h_t

    where ``s`` is the whole carry (``h``, and ``c`` for the LSTM) and ``h`` its hidden part. With
    ``probes = 0`` this computes what ``rnnx.unroll(cell, params, xs)`` computes (up to float rounding), and
    ``dL/d(delta_t)`` at ``delta = 0`` is ``dL/ds_t``, the total derivative of the loss with respect to the
    state after step ``t`` (through every later step and output).

    Args:
      cell: an :class:`rnnx.Cell` whose output ``y_t`` is its hidden state ``h_t``.
      params: from ``cell.init``.
      xs: ``(*b, t, d)``.
      probes: shaped like ``cell.default_carry(params, (*b, t))``: a carry whose every leaf is ``(*b, t, h)``.
      initial_carry: as in :func:`rnnx.unroll`; default ``cell.default_carry(params, b)``.

    Returns:
      ``(carry, ys)``: the final carry ``(*b, h)`` and the outputs ``(*b, t, h)``.
    """
    xs = _check_xs(cell, params, xs)
    batch_shape, steps = xs.shape[:-2], xs.shape[-2]
    carry = cell.default_carry(params, batch_shape) if initial_carry is None else initial_carry
    # Time axis first so that lax.scan walks over it; batch axes may be any number, including none.
    time_first = lambda a: jnp.moveaxis(a, len(batch_shape), 0)  # noqa: E731

    def body(carry, inputs):
        x, probe = inputs
        carry, y = cell.apply(params, carry, x)
        return jax.tree.map(jnp.add, carry, probe), y + _hidden(probe)

    carry, ys = jax.lax.scan(body, carry, (time_first(xs), jax.tree.map(time_first, probes)), length=steps)
    return carry, jnp.moveaxis(ys, 0, len(batch_shape))


def hidden_grad_norms(
    cell: Cell,
    params: Params,
    xs: Inputs,
    loss_fn: Callable[[Outputs], jax.Array],
    *,
    initial_carry: Carry | None = None,
) -> tuple[jax.Array, Carry]:
    """``||dL/ds_t||`` for every step: the gradient backpropagation through time delivers to each state.

    .. math::  g_t = \\Big\\| \\frac{\\partial L}{\\partial s_t} \\Big\\|_2
               = \\Big\\| \\sum_{u \\ge t} \\frac{\\partial L}{\\partial y_u}
                 \\frac{\\partial y_u}{\\partial s_t} \\Big\\|_2

    with ``s_t`` the state after reading ``x_t`` (``t = 1 .. T``, index ``t - 1`` of the result) and the
    norm taken jointly over the batch and hidden axes: the Euclidean norm of the whole ``(*b, h)`` gradient
    at step ``t``. Computed as the gradient with respect to zero probes added to the state
    (:func:`unroll_with_probes`): one backward pass for all steps.

    For the LSTM the state has two parts, ``h_t`` and ``c_t``, taken as independent variables (the carry the
    recurrence passes on): ``||dL/dc_t||`` is the gradient reaching ``c_t`` from later steps through
    ``c_{t+1}`` and ``h_{t+1}``, while the path through this step's own output ``h_t = o_t tanh(c_t)`` is
    already in ``||dL/dh_t||``. So ``||dL/dc_T|| = 0`` at the last step.

    Args:
      cell, params, xs, initial_carry: as in :func:`unroll_with_probes`; ``xs (*b, t, d)``.
      loss_fn: ``ys (*b, t, h) -> scalar``; close over targets and readout weights.

    Returns:
      ``(loss, norms)``: the loss and a carry-shaped pytree of ``(t,)`` norms, e.g. ``LSTMCarry(h, c)`` for
      the LSTM (``c`` gives ``||dL/dc_t||``), a single ``(t,)`` array for the other cells.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.lstm(8)
    >>> params = cell.init(jax.random.key(0), 2)
    >>> xs = jax.random.normal(jax.random.key(1), (4, 30, 2))
    >>> loss, norms = rnnx.diagnostics.hidden_grad_norms(cell, params, xs, lambda ys: jnp.mean(ys[:, -1] ** 2))
    >>> norms.h.shape, norms.c.shape, bool(norms.h[0] < norms.h[-1])   # gradient shrinks going back in time
    ((30,), (30,), True)
    """
    xs = _check_xs(cell, params, xs)
    batch_shape, steps = xs.shape[:-2], xs.shape[-2]
    probes = jax.tree.map(jnp.zeros_like, cell.default_carry(params, (*batch_shape, steps)))

    def loss_of_probes(probes):
        return loss_fn(unroll_with_probes(cell, params, xs, probes, initial_carry=initial_carry)[1])

    loss, grads = jax.value_and_grad(loss_of_probes)(probes)
    per_step = lambda g: jnp.sqrt(jnp.sum(jnp.moveaxis(g, len(batch_shape), 0) ** 2, axis=tuple(range(1, g.ndim))))  # noqa: E731
    return loss, jax.tree.map(per_step, grads)


def jacobian_norms(
    cell: Cell,
    params: Params,
    xs: Inputs,
    *,
    norm: str = "spectral",
    log: bool = False,
    initial_carry: Carry | None = None,
) -> dict[str, jax.Array]:
    """``||ds_T/ds_0||`` for ``T = 1 .. t``: the state Jacobian over ``T`` steps, for each sequence.

    .. math::  J_T = \\frac{\\partial s_T}{\\partial s_0} = D_T D_{T-1} \\cdots D_1, \\quad
               D_u = \\frac{\\partial s_u}{\\partial s_{u-1}}

    A forward-mode pass (``jax.linearize`` of one ``cell.apply``, applied to every column) carries ``J_T``
    along the sequence, rescaled at every step with the scale kept as a logarithm, so a norm far beyond
    float range stays finite with ``log=True``. The spectral norm (largest singular value, the default) is
    the largest factor by which any perturbation of ``s_0`` is amplified after ``T`` steps, and the factor
    by which the gradient ``dL/ds_0`` can exceed ``dL/ds_T``: for a linear RNN ``h_t = h_{t-1} W + x_t U``
    it is exactly ``||(W^T)^T||_2``, ``g^T`` for ``W`` ``g`` times an orthogonal matrix. The Frobenius norm
    (``norm="frobenius"``) is the root-mean-square gain over all directions times ``sqrt(h)``.

    Args:
      cell, params, xs, initial_carry: as in :func:`unroll_with_probes`; ``xs (*b, t, d)``. The Jacobian is
        taken at the trajectory these inputs drive.
      norm: ``"spectral"`` or ``"frobenius"``.
      log: return ``log10`` of the norms.

    Returns:
      A dict of ``(*b, t)`` arrays, entry ``T - 1`` for ``T`` steps: ``"dh_dh0"`` (``||dh_T/dh_0||``) and
      ``"state"`` (the whole carry's Jacobian, equal to ``dh_dh0`` for cells whose carry is ``h``). For the
      LSTM also ``"dc_dc0"`` (the cell-state path), ``"dh_dc0"`` and ``"dc_dh0"``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.simple_rnn(16, recurrent_init=lambda k, s, d: 0.5 * jax.nn.initializers.orthogonal()(k, s, d))
    >>> params = cell.init(jax.random.key(0), 1)
    >>> norms = rnnx.diagnostics.jacobian_norms(cell, params, jnp.zeros((20, 1)), log=True)
    >>> [round(float(norms["dh_dh0"][t - 1]), 3) for t in (1, 10, 20)]   # log10(0.5^T): tanh'(0) = 1, W = 0.5 Q
    [-0.301, -3.01, -6.021]
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {sorted(_NORMS)}, received {norm!r}")
    xs = _check_xs(cell, params, xs)
    batch_shape = xs.shape[:-2]
    carry = cell.default_carry(params, batch_shape) if initial_carry is None else initial_carry
    flat_xs = xs.reshape(-1, *xs.shape[-2:])
    flat_carry = jax.tree.map(lambda c: c.reshape(-1, c.shape[-1]), carry)
    one = lambda x, c: _log_jacobian_norms(cell, params, x, c, _NORMS[norm])  # noqa: E731
    logs = jax.vmap(one)(flat_xs, flat_carry)
    return {k: (v if log else 10.0**v).reshape(*batch_shape, -1) for k, v in logs.items()}


def _log_jacobian_norms(cell, params, xs, carry, ord_):
    """log10 norms of the blocks of ``ds_T/ds_0`` for one sequence ``xs (t, d)``, carry ``(h,)`` leaves."""
    flat, unravel = ravel_pytree(carry)
    size, h = flat.shape[0], cell.hidden_size
    blocks = {"state": (slice(None), slice(None)), "dh_dh0": (slice(0, h), slice(0, h))}
    if isinstance(carry, LSTMCarry):  # ravel order is (h, c)
        c = slice(h, 2 * h)
        blocks |= {"dc_dc0": (c, c), "dh_dc0": (slice(0, h), c), "dc_dh0": (c, slice(0, h))}

    def body(state, x):
        flat, jac, log_scale = state
        flat, step = jax.linearize(lambda s: ravel_pytree(cell.apply(params, unravel(s), x)[0])[0], flat)
        jac = jax.vmap(step, in_axes=1, out_axes=1)(jac)
        # Rescale so that J = jac * 10**log_scale never overflows or underflows float32.
        scale = jnp.max(jnp.abs(jac))
        scale = jnp.where(scale > 0, scale, 1.0)
        jac, log_scale = jac / scale, log_scale + jnp.log10(scale)
        norms = {k: jnp.log10(jnp.linalg.norm(jac[rows, cols], ord_)) + log_scale for k, (rows, cols) in blocks.items()}
        return (flat, jac, log_scale), norms

    init = (flat, jnp.eye(size, dtype=flat.dtype), jnp.zeros((), flat.dtype))
    return jax.lax.scan(body, init, xs)[1]


def _hidden(carry):
    return carry.h if isinstance(carry, LSTMCarry) else carry


def _check_xs(cell, params, xs) -> jax.Array:
    input_size = check_params(cell, params)
    carry = cell.default_carry(params)
    if cell.readout is not None or not (isinstance(carry, LSTMCarry) or isinstance(carry, jax.Array)):
        raise ValueError(
            "the diagnostics measure cells whose output is their hidden state, carried as an array or an LSTMCarry "
            f"(simple_rnn, lstm, gru, min_gru, min_lstm, rg_lru); received a {cell.name} cell, whose output is "
            f"{'a readout of its state' if cell.readout is not None else 'part of a ' + type(carry).__name__}"
        )
    xs = jnp.asarray(xs)
    if xs.ndim < 2 or xs.shape[-1] != input_size:
        raise ValueError(
            f"xs must have shape (*batch, time, {input_size}) for a cell initialised with input_size={input_size}, "
            f"received shape {xs.shape}"
        )
    return xs


__all__ = ["hidden_grad_norms", "jacobian_norms", "unroll_with_probes"]
