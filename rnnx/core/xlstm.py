"""xLSTM's memory cells (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"): sLSTM and mLSTM.

Axis letters as in :mod:`rnnx.core.typing`; ``k`` heads of ``e = h / k`` units each.

Both cells gate their input exponentially, ``i_t = exp(i~_t)``, and keep a stabiliser state ``m_t`` so that
the exponentials never overflow: the states are stored divided by ``exp(m_t)``, which cancels in the output
(the paper's Section 2.2 and Appendix A). Reset and default carries are zeros, ``m = 0`` included.

* sLSTM: scalar memory and a normaliser, a recurrent matrix that is block-diagonal over heads; sequential
  only, as in the paper (the recurrence is not linear).
* mLSTM: a matrix memory per head updated by the covariance rule ``C_t = f_t C_{t-1} + i_t v_t k_t^T``;
  no recurrent matrix, so all steps can run at once: the chunkwise parallel form in :mod:`rnnx.core.matrix_memory`.

Both are the cells of the paper's blocks, not the blocks (up-projections, convolution, group norm, skip
connections are left to the model around the cell, as for the other cells). The forget gate is
``sigmoid`` (``forget_gate="sigmoid"``, the paper's language-model choice) or ``exp``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from rnnx.core import matrix_memory as mlstm_form
from rnnx.core._common import check_hidden_size, check_input_size, draw, gate_blocks, input_projection
from rnnx.core.cells import Cell
from rnnx.core.gates import FORGET_GATES, log_forget, stabilised
from rnnx.core.typing import BatchShape, Initializer


class SLSTMCarry(NamedTuple):
    """The sLSTM state, each ``(*b, h)``: hidden ``h``, cell ``c`` and normaliser ``n`` (both divided by
    ``exp(m)``), stabiliser ``m``."""

    h: jax.Array
    c: jax.Array
    n: jax.Array
    m: jax.Array


def _check(hidden_size, num_heads, forget_gate):
    check_hidden_size(hidden_size)
    if not isinstance(num_heads, int) or num_heads < 1 or hidden_size % num_heads:
        raise ValueError(f"num_heads must be a positive divisor of hidden_size={hidden_size}, received {num_heads!r}")
    if forget_gate not in FORGET_GATES:
        raise ValueError(f"forget_gate must be one of {FORGET_GATES}, received {forget_gate!r}")


def _heads_spec(hidden_size, num_heads, forget_gate, lo, hi):
    """The architecture arguments both xLSTM cells share, in ``Cell.spec``'s order."""
    return (("hidden_size", hidden_size), ("num_heads", num_heads), ("forget_gate", forget_gate),
            ("forget_bias", (lo, hi)))  # fmt: skip


def _setup(dtype, param_dtype):
    return (None if dtype is None else jnp.dtype(dtype)), jnp.dtype(param_dtype)


def slstm(
    hidden_size: int,
    *,
    num_heads: int = 1,
    forget_gate: str = "sigmoid",
    forget_bias: tuple[float, float] = (3.0, 6.0),
    kernel_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """sLSTM (Beck et al. 2024): exponential gating, a normaliser and a stabiliser; head-wise recurrence.

    Gate order i, f, z, o. With ``[i~, f~, z~, o~] = x_t W + h_{t-1} R + b``, ``R`` block-diagonal over
    ``num_heads`` heads (each head's units see only that head's previous ``h``):

    .. math::
        m_t = \\max(\\log f_t + m_{t-1}, \\tilde i_t), \\quad
        i'_t = \\exp(\\tilde i_t - m_t), \\quad f'_t = \\exp(\\log f_t + m_{t-1} - m_t)

        c_t = f'_t \\odot c_{t-1} + i'_t \\odot \\tanh(\\tilde z_t), \\qquad n_t = f'_t \\odot n_{t-1} + i'_t

        h_t = \\sigma(\\tilde o_t) \\odot c_t / n_t, \\quad y_t = h_t

    with ``log f_t = log sigmoid(f~_t)`` (or ``f~_t`` for ``forget_gate="exp"``). Without the stabiliser
    (``m = 0``) this is the paper's Equations 8-14; the stabiliser divides ``c`` and ``n`` by ``exp(m_t)`` and
    leaves ``h`` unchanged (its Equations 15-17).

    Initialisation: input weights glorot-uniform, recurrent blocks orthogonal (per gate and head), biases
    zero except the forget gate's, spread linearly over ``forget_bias = (3, 6)`` across the units (so that
    the cell starts remembering, as the paper's code does for the mLSTM's forget gate).

    Parameters ``w_ih (d, 4h)``, ``w_hh (k, e, 4e)`` (per head, gate blocks i, f, z, o), ``b (4h,)``:
    ``4 h d + 4 h^2 / k + 4 h``.

    Args:
      hidden_size: ``h``, divisible by ``num_heads``.
      num_heads: ``k``, the blocks of the recurrent matrix.
      forget_gate: ``"sigmoid"`` or ``"exp"``.
      forget_bias: ``(first, last)`` of the forget-gate biases at initialisation.
      kernel_init, recurrent_init: ``jax.nn.initializers``-style functions.
      dtype: compute dtype of the matmuls (None: the params'); the gates and states run in at least float32.
        ``param_dtype``: storage dtype.

    Returns:
      A :class:`Cell` whose carry is ``SLSTMCarry(h, c, n, m)``.

    >>> import jax, rnnx
    >>> rnnx.count_params(rnnx.slstm(768, num_heads=4).init(jax.random.key(0), 768))
    2952192
    """
    _check(hidden_size, num_heads, forget_gate)
    dtype, param_dtype = _setup(dtype, param_dtype)
    h, heads = hidden_size, num_heads
    e = h // heads
    lo, hi = (float(v) for v in forget_bias)
    spec: tuple[tuple[str, Any], ...] = (
        *_heads_spec(hidden_size, num_heads, forget_gate, lo, hi),
        ("kernel_init", kernel_init),
        ("recurrent_init", recurrent_init),
        ("dtype", dtype),
        ("param_dtype", param_dtype),
    )
    kernel = kernel_init or jax.nn.initializers.glorot_uniform()
    recurrent = recurrent_init or jax.nn.initializers.orthogonal()

    def param_shapes(input_size):
        return {"w_ih": (input_size, 4 * h), "w_hh": (heads, e, 4 * e), "b": (4 * h,)}

    def init(key, input_size):
        check_input_size(input_size)
        k_ih, k_hh = jax.random.split(key)
        keys = jax.random.split(k_hh, heads)
        w_hh = jnp.stack([gate_blocks(recurrent, k, e, e, 4, param_dtype) for k in keys])
        bias = np.zeros(4 * h, np.float32)
        bias[h : 2 * h] = np.linspace(lo, hi, h)
        return {
            "w_ih": gate_blocks(kernel, k_ih, input_size, h, 4, param_dtype),
            "w_hh": w_hh,
            "b": jnp.asarray(bias, param_dtype),
        }

    def default_carry(params, batch_shape: BatchShape = ()):
        state = jnp.zeros((*tuple(batch_shape), h), params["w_hh"].dtype if dtype is None else dtype)
        return SLSTMCarry(state, state, state, state)

    def project(params, x):
        return input_projection(params, x, dtype)

    def recurrence(w_hh, prev):
        """``h_{t-1} R`` for block-diagonal ``R``, laid out as the gate blocks i, f, z, o of ``h`` units each."""
        out = jnp.einsum("...ke,keg->...kg", prev.reshape(*prev.shape[:-1], heads, e), w_hh)
        out = out.reshape(*out.shape[:-1], 4, e)  # (..., k, 4, e) -> (..., 4, k, e)
        return jnp.swapaxes(out, -2, -3).reshape(*prev.shape[:-1], 4 * h)

    def step(params, carry, xp):
        w_hh = params["w_hh"] if dtype is None else params["w_hh"].astype(dtype)
        pre = xp + recurrence(w_hh, carry.h.astype(w_hh.dtype))
        acc = jnp.promote_types(pre.dtype, jnp.float32)
        i_pre, f_pre, z_pre, o_pre = jnp.split(pre.astype(acc), 4, axis=-1)
        f, i, m = stabilised(log_forget(f_pre, forget_gate), i_pre, carry.m.astype(acc))
        c = f * carry.c.astype(acc) + i * jnp.tanh(z_pre)
        n = f * carry.n.astype(acc) + i
        new = SLSTMCarry(jax.nn.sigmoid(o_pre) * c / n, c, n, m)
        new = SLSTMCarry(*(s.astype(carry.h.dtype) for s in new))
        return new, new.h

    return Cell(
        name="slstm",
        spec=spec,
        gates=4,
        init=init,
        default_carry=default_carry,
        project=project,
        step=step,
        param_shapes=param_shapes,
    )


def mlstm(
    hidden_size: int,
    *,
    num_heads: int = 1,
    forget_gate: str = "sigmoid",
    forget_bias: tuple[float, float] = (3.0, 6.0),
    chunk_size: int = 64,
    kernel_init: Initializer | None = None,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """mLSTM (Beck et al. 2024): a matrix memory per head with the covariance update and a normaliser.

    Per head (``e`` units), with ``q_t, k_t, v_t`` the head's slices of ``x_t W_q + b_q``, ``(x_t W_k + b_k)
    / sqrt(e)``, ``x_t W_v + b_v``, scalar gate pre-activations ``i~_t, f~_t`` per head and ``o~_t = x_t W_o +
    b_o``:

    .. math::
        m_t = \\max(\\log f_t + m_{t-1}, \\tilde i_t), \\quad
        i'_t = \\exp(\\tilde i_t - m_t), \\quad f'_t = \\exp(\\log f_t + m_{t-1} - m_t)

        C_t = f'_t C_{t-1} + i'_t \\, v_t k_t^\\top, \\qquad n_t = f'_t n_{t-1} + i'_t k_t

        \\tilde h_t = \\frac{C_t q_t}{\\max(|n_t^\\top q_t|, \\exp(-m_t))}, \\qquad
        y_t = \\sigma(\\tilde o_t) \\odot \\tilde h_t

    the paper's Equations 19-27 with the stabiliser of its Appendix A (``C`` and ``n`` divided by
    ``exp(m_t)``, which turns the normaliser's lower bound 1 into ``exp(-m_t)``), and ``epsilon = 1e-6`` as in
    the authors' code (``rnnx.core.matrix_memory.EPS``: it keeps the gradient finite where ``exp(-m_t)``
    underflows). The gates depend on
    ``x_t`` only, so the whole sequence also has a parallel form; ``rnnx.unroll`` runs the chunkwise one
    (:mod:`rnnx.core.matrix_memory`: the quadratic parallel form within chunks of ``chunk_size`` steps, the
    recurrence between them) unless ``parallel=False``.

    Initialisation: weights glorot-uniform per block, biases zero except the forget gate's, spread linearly
    over ``forget_bias = (3, 6)`` across the heads (the paper's code).

    Parameters ``w_ih (d, 4h + 2k)`` and ``b (4h + 2k,)`` in the order ``q, k, v, o`` (``h`` each), ``i~, f~``
    (``k`` each): ``(d + 1)(4h + 2k)``.

    Args:
      hidden_size: ``h``, divisible by ``num_heads``.
      num_heads: ``k``.
      forget_gate, forget_bias: as in :func:`slstm`.
      chunk_size: steps per chunk of the chunkwise parallel form.
      kernel_init: initialiser of the weights (default glorot-uniform).
      dtype: compute dtype of the input projection (None: the params'); the memory runs in at least float32.
        ``param_dtype``: storage dtype.

    Returns:
      A :class:`Cell` whose carry is ``MLSTMCarry(c (*b, k e e), n (*b, h), m (*b, k))``: the matrix memory
      is flattened so that every carry part has one feature axis, as the other cells' do.

    >>> import jax, rnnx
    >>> rnnx.count_params(rnnx.mlstm(768, num_heads=4).init(jax.random.key(0), 768))
    2368520
    """
    _check(hidden_size, num_heads, forget_gate)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, received {chunk_size!r}")
    dtype, param_dtype = _setup(dtype, param_dtype)
    h, heads = hidden_size, num_heads
    lo, hi = (float(v) for v in forget_bias)
    width = 4 * h + 2 * heads
    spec: tuple[tuple[str, Any], ...] = (
        *_heads_spec(hidden_size, num_heads, forget_gate, lo, hi),
        ("chunk_size", chunk_size),
        ("kernel_init", kernel_init),
        ("dtype", dtype),
        ("param_dtype", param_dtype),
    )
    kernel = kernel_init or jax.nn.initializers.glorot_uniform()
    form = mlstm_form.Form(heads, h // heads, forget_gate, chunk_size)

    def param_shapes(input_size):
        return {"w_ih": (input_size, width), "b": (width,)}

    def init(key, input_size):
        check_input_size(input_size)
        k_qkvo, k_gates = jax.random.split(key)
        gates = draw(kernel, k_gates, (input_size, 2 * heads), param_dtype)
        bias = np.zeros(width, np.float32)
        bias[4 * h + heads :] = np.linspace(lo, hi, heads)
        return {
            "w_ih": jnp.concatenate([gate_blocks(kernel, k_qkvo, input_size, h, 4, param_dtype), gates], axis=1),
            "b": jnp.asarray(bias, param_dtype),
        }

    def default_carry(params, batch_shape: BatchShape = ()):
        return form.zeros(tuple(batch_shape), params["w_ih"].dtype if dtype is None else dtype)

    def project(params, x):
        return input_projection(params, x, dtype)

    def step(params, carry, xp):
        return form.step(carry, xp)

    def parallel_form(params, xs, carry, valid, reset, fresh, reverse):
        return form.sequence(project(params, xs), carry, valid, reset, fresh, reverse)

    return Cell(
        name="mlstm",
        spec=spec,
        gates=4,
        init=init,
        default_carry=default_carry,
        project=project,
        step=step,
        param_shapes=param_shapes,
        parallel_form=parallel_form,
    )


__all__ = ["SLSTMCarry", "mlstm", "slstm"]
