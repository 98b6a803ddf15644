"""Diagonal linear recurrences: the LRU (Orvieto et al. 2023) and Griffin's RG-LRU (De et al. 2024).

Axis letters as in :mod:`rnnx.core.typing`: ``b`` batch, ``t`` time, ``d`` input features, ``h`` hidden units;
``N`` the LRU's (complex) state size.

Both recurrences are elementwise and linear in the state, ``h_t = a_t * h_{t-1} + b_t`` with ``a_t, b_t``
functions of ``x_t`` only, so they run through the same parallel scan as minGRU (:func:`rnnx.linear_scan`,
:mod:`rnnx.core.backends.parallel_scan`) and the sequence-parallel scan (``seq_mesh=``). The LRU's state is
complex (``jax.lax.associative_scan`` multiplies complex numbers as any others) and its output is read out
of the state, ``y_t = Re(C h_t) + D x_t`` (``Cell.readout``).

Both are the recurrent *layer* of their papers' blocks, not the whole block: the LRU block's MLP/GLU and
normalisation, Griffin's gated branch, temporal convolution and residuals are left to the model around the
cell, as for the other cells.
"""

import math

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from rnnx.core._common import check_hidden_size, check_input_size, draw, input_projection
from rnnx.core.cells import Cell
from rnnx.core.parallel import linear_cell
from rnnx.core.typing import BatchShape, Initializer


def _real(xp):
    """The recurrence's real dtype: the projection's, but at least float32."""
    return jnp.promote_types(xp.dtype, jnp.float32)


_MAX_SQRT_GRADIENT = 1000.0


@jax.custom_jvp
def sqrt_bounded(x):
    """``sqrt(x)`` whose derivative is capped at 1000 (recurrentgemma's ``sqrt_bound_derivative``): the RG-LRU's
    ``sqrt(1 - a_t^2)`` has an infinite derivative where ``a_t = 1``, which a closed recurrence gate reaches."""
    return jnp.sqrt(x)


@sqrt_bounded.defjvp
def _sqrt_bounded_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jnp.sqrt(x), dx * 0.5 / jnp.maximum(jnp.sqrt(x), 0.5 / _MAX_SQRT_GRADIENT)


def lru(
    hidden_size: int,
    *,
    state_size: int | None = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences").

    A complex diagonal recurrence in the exponential parametrisation, with the normalisation ``gamma``:

    .. math::
        \\lambda = \\exp(-\\exp(\\nu^{\\log}) + i \\exp(\\theta^{\\log})), \\qquad
        \\gamma = \\exp(\\gamma^{\\log})

        h_t = \\lambda \\odot h_{t-1} + \\gamma \\odot (B x_t), \\qquad
        y_t = \\mathrm{Re}(C h_t) + D x_t

    with ``h_t`` in ``C^N``, ``B`` complex ``(N, d)``, ``C`` complex ``(h, N)``. ``|lambda| = exp(-exp(nu))``
    lies in ``(0, 1)`` for every finite ``nu_log``: the parametrisation keeps the recurrence stable.

    Initialisation (the paper's Section 3 and its appendix listing): ``|lambda|`` uniform on the ring
    ``[r_min, r_max]`` by area (``|lambda|^2`` uniform in ``[r_min^2, r_max^2]``), phase uniform in
    ``[0, max_phase]``; ``gamma_log = log sqrt(1 - |lambda|^2)``; ``B ~ N(0, 1/(2d))`` (real and imaginary
    parts), ``C ~ N(0, 1/N)``. The paper's ``D`` is diagonal because its input and output widths are equal;
    a registry cell maps ``d`` features to ``h``, so ``D`` here is a ``(d, h)`` matrix, ``N(0, 1/d)``.

    Parameters ``w_ih (d, 2N + h) = [Re B^T | Im B^T | D]``, ``nu_log, theta_log, gamma_log (N,)``,
    ``c_re, c_im (N, h)``: ``d (2N + h) + 3N + 2Nh`` in all.

    Args:
      hidden_size: ``h``, the output size.
      state_size: ``N``, the complex state size (default ``h``).
      r_min, r_max: the ring of initial ``|lambda|``, ``0 <= r_min < r_max <= 1`` (the paper's defaults 0, 1;
        it uses e.g. 0.9, 0.999 on long-range tasks).
      max_phase: initial phases lie in ``[0, max_phase]`` (the paper's default ``2 pi``; ``pi / 10`` on
        long-range tasks).
      dtype: compute dtype of the input projection (None: the params'); the recurrence runs in at least
        complex64. ``param_dtype``: storage dtype.

    Returns:
      A :class:`Cell` whose carry is the complex state ``h (*b, N)``; outputs ``y (*b, h)`` are real.

    >>> import jax, rnnx
    >>> rnnx.count_params(rnnx.lru(128, state_size=256).init(jax.random.key(0), 128))
    148224
    """
    check_hidden_size(hidden_size)
    n = hidden_size if state_size is None else state_size
    check_hidden_size(n)
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"r_min and r_max must satisfy 0 <= r_min < r_max <= 1, received {r_min!r}, {r_max!r}")
    if not max_phase > 0:
        raise ValueError(f"max_phase must be positive, received {max_phase!r}")
    h = hidden_size
    dtype = None if dtype is None else jnp.dtype(dtype)
    param_dtype = jnp.dtype(param_dtype)
    spec = (
        ("hidden_size", hidden_size),
        ("state_size", n),
        ("r_min", float(r_min)),
        ("r_max", float(r_max)),
        ("max_phase", float(max_phase)),
        ("dtype", dtype),
        ("param_dtype", param_dtype),
    )

    def param_shapes(input_size):
        vec = (n,)
        return {"w_ih": (input_size, 2 * n + h), "nu_log": vec, "theta_log": vec, "gamma_log": vec,
                "c_re": (n, h), "c_im": (n, h)}  # fmt: skip

    def init(key, input_size):
        check_input_size(input_size)
        k_u1, k_u2, k_b, k_d, k_c = jax.random.split(key, 5)
        u1 = jax.random.uniform(k_u1, (n,))
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * jax.random.uniform(k_u2, (n,)))
        gamma_log = 0.5 * jnp.log1p(-jnp.exp(-2.0 * jnp.exp(nu_log)))  # log sqrt(1 - |lambda|^2)
        b = jax.random.normal(k_b, (input_size, 2 * n)) / math.sqrt(2 * input_size)
        skip = jax.random.normal(k_d, (input_size, h)) / math.sqrt(input_size)
        c = jax.random.normal(k_c, (2, n, h)) / math.sqrt(n)
        params = {"w_ih": jnp.concatenate([b, skip], axis=1), "nu_log": nu_log, "theta_log": theta_log,
                  "gamma_log": gamma_log, "c_re": c[0], "c_im": c[1]}  # fmt: skip
        return {k: v.astype(param_dtype) for k, v in params.items()}

    def default_carry(params, batch_shape: BatchShape = ()):
        real = params["nu_log"].dtype if dtype is None else dtype
        return jnp.zeros((*tuple(batch_shape), n), jnp.result_type(real, jnp.complex64))

    def project(params, x):
        return input_projection(params, x, dtype, use_bias=False)

    def coefficients(params, xp):
        real = _real(xp)
        nu, theta, gamma = (params[k].astype(real) for k in ("nu_log", "theta_log", "gamma_log"))
        modulus, phase = jnp.exp(-jnp.exp(nu)), jnp.exp(theta)
        lam = jax.lax.complex(modulus * jnp.cos(phase), modulus * jnp.sin(phase))
        xp = xp.astype(real)
        bx = jax.lax.complex(xp[..., :n], xp[..., n : 2 * n]) * jnp.exp(gamma)
        return jnp.broadcast_to(lam, bx.shape), bx

    def readout(params, state, xp):
        real = jnp.finfo(state.dtype).dtype
        c_re, c_im = params["c_re"].astype(real), params["c_im"].astype(real)
        return jnp.real(state) @ c_re - jnp.imag(state) @ c_im + xp[..., 2 * n :].astype(real)

    return linear_cell("lru", spec, 3, init=init, param_shapes=param_shapes, default_carry=default_carry,
                       project=project, coefficients=coefficients, readout=readout)  # fmt: skip


def rg_lru(
    hidden_size: int,
    *,
    num_heads: int = 1,
    c: float = 8.0,
    min_rad: float = 0.9,
    max_rad: float = 0.999,
    kernel_init: Initializer | None = None,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """Real-Gated Linear Recurrent Unit, Griffin's recurrence (De et al. 2024; recurrentgemma).

    With ``u_t = x_t W + b`` (Griffin's linear layer before the recurrence, from ``d`` to the recurrence
    width ``h``) and block-diagonal ``W_a, W_x`` (``num_heads`` blocks, as in Griffin):

    .. math::
        r_t = \\sigma(W_a u_t + b_a), \\qquad i_t = \\sigma(W_x u_t + b_x)

        a_t = a^{c r_t}, \\quad a = \\sigma(\\Lambda), \\qquad
        h_t = a_t \\odot h_{t-1} + \\sqrt{1 - a_t^2} \\odot (i_t \\odot u_t), \\quad y_t = h_t

    computed as ``log a_t = -c r_t softplus(-Lambda)`` and ``sqrt(1 - a_t^2) = sqrt(-expm1(2 log a_t))``,
    stable where ``a_t`` is close to 1; the square root's derivative is capped at 1000 there, as recurrentgemma
    does, since it is infinite where the gate closes (``a_t = 1``). ``c = 8``. Initialisation as the paper
    states it: ``a^c`` uniform in ``[min_rad, max_rad] = [0.9, 0.999]`` (Lambda = logit of its c-th root);
    ``W`` glorot-uniform, ``W_a, W_x``
    ``N(0, 1/block)`` per block, biases zero. Griffin's temporal convolution before the recurrence is part of
    its block, not of this cell.

    Parameters ``w_ih (d, h)``, ``b (h,)``, ``w_a, w_x (num_heads, h/num_heads, h/num_heads)``,
    ``b_a, b_x, lam (h,)``: ``h (d + 1) + 2 h^2 / num_heads + 3 h``.

    Args:
      hidden_size: ``h``, the recurrence width; divisible by ``num_heads``.
      num_heads: blocks of the gate matrices ``W_a``, ``W_x``.
      c: the fixed scale of the recurrence gate's exponent (8 in the paper).
      min_rad, max_rad: the initial range of ``a^c``.
      kernel_init: initialiser of ``W`` (default glorot-uniform).
      dtype: compute dtype of the projections (None: the params'); the recurrence runs in at least float32.
        ``param_dtype``: storage dtype.

    Returns:
      A :class:`Cell` whose carry is ``h (*b, h)``.

    >>> import jax, rnnx
    >>> cell = rnnx.rg_lru(2560, num_heads=10)
    >>> rnnx.count_params(cell.init(jax.random.key(0), 1)) - (2560 * (1 + 1))  # without the input layer
    1318400
    """
    check_hidden_size(hidden_size)
    if not isinstance(num_heads, int) or num_heads < 1 or hidden_size % num_heads:
        raise ValueError(f"num_heads must be a positive divisor of hidden_size={hidden_size}, received {num_heads!r}")
    if not c > 0:
        raise ValueError(f"c must be positive, received {c!r}")
    if not 0.0 < min_rad < max_rad < 1.0:
        raise ValueError(
            f"min_rad and max_rad must satisfy 0 < min_rad < max_rad < 1, received {min_rad!r}, {max_rad!r}"
        )
    h, heads = hidden_size, num_heads
    block = h // heads
    dtype = None if dtype is None else jnp.dtype(dtype)
    param_dtype = jnp.dtype(param_dtype)
    spec = (
        ("hidden_size", hidden_size),
        ("num_heads", num_heads),
        ("c", float(c)),
        ("min_rad", float(min_rad)),
        ("max_rad", float(max_rad)),
        ("kernel_init", kernel_init),
        ("dtype", dtype),
        ("param_dtype", param_dtype),
    )
    kernel = kernel_init or jax.nn.initializers.glorot_uniform()

    def param_shapes(input_size):
        gate = (heads, block, block)
        return {"w_ih": (input_size, h), "b": (h,), "w_a": gate, "b_a": (h,), "w_x": gate, "b_x": (h,), "lam": (h,)}

    def init(key, input_size):
        check_input_size(input_size)
        k_w, k_a, k_x, k_lam = jax.random.split(key, 4)
        a_c = jax.random.uniform(k_lam, (h,), minval=min_rad, maxval=max_rad)
        log_a = jnp.log(a_c) / c
        params = {
            "w_ih": draw(kernel, k_w, (input_size, h), jnp.float32),
            "b": jnp.zeros((h,)),
            "w_a": jax.random.normal(k_a, (heads, block, block)) / math.sqrt(block),
            "b_a": jnp.zeros((h,)),
            "w_x": jax.random.normal(k_x, (heads, block, block)) / math.sqrt(block),
            "b_x": jnp.zeros((h,)),
            "lam": log_a - jnp.log(-jnp.expm1(log_a)),  # logit(a) for a = exp(log_a)
        }
        return {k: v.astype(param_dtype) for k, v in params.items()}

    def default_carry(params, batch_shape: BatchShape = ()):
        return jnp.zeros((*tuple(batch_shape), h), params["lam"].dtype if dtype is None else dtype)

    def blockwise(u, w, bias):
        w, bias = (w, bias) if dtype is None else (w.astype(dtype), bias.astype(dtype))
        out = jnp.einsum("...ki,kij->...kj", u.reshape(*u.shape[:-1], heads, block), w)
        return out.reshape(u.shape) + bias

    def project(params, x):
        u = input_projection(params, x, dtype)
        return jnp.concatenate(
            [u, blockwise(u, params["w_a"], params["b_a"]), blockwise(u, params["w_x"], params["b_x"])], -1
        )

    def coefficients(params, xp):
        xp = xp.astype(_real(xp))
        u, gate_a, gate_x = jnp.split(xp, 3, axis=-1)
        log_a = -c * jax.nn.sigmoid(gate_a) * jax.nn.softplus(-params["lam"].astype(xp.dtype))
        return jnp.exp(log_a), sqrt_bounded(-jnp.expm1(2.0 * log_a)) * jax.nn.sigmoid(gate_x) * u

    return linear_cell("rg_lru", spec, 3, init=init, param_shapes=param_shapes, default_carry=default_carry,
                       project=project, coefficients=coefficients)  # fmt: skip


__all__ = ["lru", "rg_lru", "sqrt_bounded"]
