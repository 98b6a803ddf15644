"""Fused recurrent kernels in Pallas: ``backend="pallas"`` for ``rnnx.simple_rnn``, ``rnnx.lstm`` and ``rnnx.gru``.

On a GPU a ``lax.scan`` step launches several kernels, each far too small to fill the device, so the time
per step, not the arithmetic, bounds a small recurrent network. These kernels loop over time on chip, as
cuDNN's persistent algorithm does.

Forward. One kernel instance per tile of ``Tuning.block`` batch rows (the grid) runs ``lax.fori_loop`` over
all ``t`` steps with the carry in registers. Each step reads the recurrent weights block by block (from L2
after the first step: they are never re-launched), one ``(block, h) x (h, h)`` matmul per gate, and applies
:func:`rnnx.core.backends.scan.masked_step` around the cell's own ``update`` (:mod:`rnnx.core.cells`): the
equations and the semantics of lengths, masks, resets and reverse exist once. The input projection stays
one large XLA matmul before the kernel.

Backward (``jax.custom_vjp``: ``pallas_call`` has no autodiff rule). The forward kernel also stores the
carry entering every step. A reverse-time kernel carries ``dL/dcarry`` from step to step through
``jax.vjp`` of the same masked step and stores the cotangent of the carry leaving each step. The weight and
input gradients (``dW_hh = sum_t h_{t-1}^T dgates_t``, the biases, ``dxp``) and the gradient of the reset
state are then one ``jax.vjp`` of the masked step over all ``(t, n)`` rows at once: large XLA matmuls, as
in cuDNN's backward-weights pass.

Store or recompute. The backward kernel recomputes each step's gates from the stored carry (one more
matmul per step on the sequential path) rather than storing them in the forward: it keeps ``(t, n, h)``
per carry leaf instead of ``(t, n, g*h)`` of gates (4x less for the LSTM), and the backward pass is the
derivative of the forward by construction. The choice is not yet measured on a GPU against storing.

Which Pallas GPU backend: Pallas-Triton. It runs on the image's jax 0.11.2 on A100 and H100 alike, lowers
these kernels (loads, ``jnp.dot``, elementwise maths, ``fori_loop``) without hand-placed memory moves, and
its kernels run unchanged in Pallas's interpreter, where CI tests them. Mosaic GPU is the supported path
from jax 0.11 and has clusters and semaphores (the way to split the gates over several blocks that
exchange ``h`` on chip), but it is Hopper-first and asks for explicit shared-memory staging and warpgroup
matmuls: the next step once a GPU is there to measure it.

Tiles. Triton tiles are powers of two with every matmul dimension at least 16: batch rows are padded to
whole tiles (padded rows are masked steps) and ``h`` to the next power of two (at least 16) with zero
weights, so padded units stay exactly zero and change nothing. One ``(h, h)`` gate block of ``w_hh`` must
fit :data:`MAX_BLOCK_BYTES` (``h <= 128`` in float32, ``<= 256`` in bfloat16); larger cells are refused
with the reason (tiling the hidden axis needs the cross-block exchange above).

Off a GPU the kernels run in Pallas's interpreter (``interpret=True``): exact, slow, for tests; ``"auto"``
never picks them there.
"""

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnnx.core.backends.call import Call, Options, platform_of
from rnnx.core.backends.scan import masked_step
from rnnx.core.cells import Cell, as_step, recurrent
from rnnx.core.typing import Params

pallas_triton: Any
try:  # deprecated from jax 0.11 in favour of Mosaic GPU, and still there in 0.11.2
    from jax.experimental.pallas import triton as pallas_triton
except ImportError:  # pragma: no cover - a jax without Pallas-Triton
    pallas_triton = None

NAME = "pallas"
CELLS = ("simple_rnn", "lstm", "gru")
DTYPES = ("float32", "bfloat16")
MAX_BLOCK_BYTES = 128 * 1024
"""The most one ``(h, h)`` gate block of ``w_hh`` may take: half of an H100 SM's 227 KB of shared memory."""
_GPU = ("gpu", "cuda")


@dataclasses.dataclass(frozen=True)
class Tuning:
    """How the kernels are laid out on a GPU: batch rows per kernel instance (a power of two, >= 16) and
    Triton's warps and pipeline stages. The interpreter ignores all but ``block``. ``interpret``: run in
    Pallas's interpreter (None: wherever the call does not run on a GPU); False off a GPU only lowers, e.g.
    ``jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))`` to check that the kernels lower to Triton."""

    block: int = 16
    num_warps: int = 4
    num_stages: int = 1
    interpret: bool | None = None

    def __post_init__(self):
        for name, low in (("block", 16), ("num_warps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or value & (value - 1):
                raise ValueError(f"Tuning.{name} must be a power of two >= {low}, received {value!r}")
        if isinstance(self.num_stages, bool) or not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"Tuning.num_stages must be an int >= 1, received {self.num_stages!r}")


_TUNING: contextvars.ContextVar[Tuning | None] = contextvars.ContextVar("rnnx_pallas_tuning", default=None)


@contextlib.contextmanager
def tuned(tuning: Tuning):
    """The :class:`Tuning` of every kernel traced inside this block (``benchmarks.pallas_tuning`` searches them).

    It applies when a function is traced: a function that ``jax.jit`` compiled outside the block keeps its
    layout, so jit a fresh function per tuning.
    """
    if not isinstance(tuning, Tuning):
        raise TypeError(f"tuned() takes a pallas.Tuning, received {type(tuning).__name__}")
    token = _TUNING.set(tuning)
    try:
        yield tuning
    finally:
        _TUNING.reset(token)


def unsupported(call: Call) -> str | None:
    """Why the fused kernels cannot run ``call``, or None."""
    cell = call.cell
    if cell.name not in CELLS or cell.update is None:
        return f"the fused kernels compute rnnx.simple_rnn, rnnx.lstm and rnnx.gru cells, received {cell.name}"
    platform = call.where
    if platform not in (*_GPU, "cpu"):
        return (
            f"the fused kernels are written for NVIDIA GPUs (Pallas-Triton) and run in Pallas's interpreter on "
            f"a CPU, but this call runs on {platform!r}; use backend='scan'"
        )
    if platform in _GPU and pallas_triton is None:
        return f"this jax ({jax.__version__}) has no Pallas-Triton (jax.experimental.pallas.triton)"
    if call.dtype.name not in DTYPES:
        return f"the fused kernels compute in float32 or bfloat16, but the cell computes in {call.dtype}"
    hp = _padded(cell.hidden_size)
    if hp * hp * call.dtype.itemsize > MAX_BLOCK_BYTES:
        largest = _largest_hidden(call.dtype.itemsize)
        return (
            f"hidden_size={cell.hidden_size} (padded to {hp}) needs {hp * hp * call.dtype.itemsize // 1024} KiB per "
            f"(h, h) gate block of w_hh in {call.dtype}, over the {MAX_BLOCK_BYTES // 1024} KiB one kernel instance "
            f"keeps on chip; hidden_size <= {largest} fits, or use backend='scan'"
        )
    if call.mesh is not None:
        return "seq_mesh= splits time over devices, which is the sequence-parallel scan's; the fused kernels run on one"
    return None


def run(cell: Cell, params: Params, x_tm, carry, valid, reset, fresh, *, reverse: bool, options: Options):
    """The backend entry: ``unroll``'s time-major, flat-batch arrays (see :mod:`rnnx.core.backends.scan`)
    through the fused kernels; returns ``(final_carry, ys (t, n, h))``. ``options.kernel``: a :class:`Tuning`
    (None: the one of the enclosing :func:`tuned` block, else the defaults); the scan's options do not apply."""
    tuning = options.kernel or _TUNING.get() or Tuning()
    leaves, tree = jax.tree.flatten(carry)
    dtype = leaves[0].dtype  # the compute dtype: cells keep their carry in it
    steps, n = x_tm.shape[:2]
    g, h = cell.gates, cell.hidden_size
    hp, rows = _padded(h), max(1, -(-n // tuning.block)) * tuning.block  # an empty batch still runs one tile

    def pad_gates(a):  # (..., g*h) -> (..., g*hp), each gate block padded with zeros
        a = a.reshape(*a.shape[:-1], g, h)
        return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, hp - h)]).reshape(*a.shape[:-2], g * hp)

    def pad(a, shape):
        return jnp.pad(a, [(0, want - have) for have, want in zip(a.shape, shape)])

    xp = pad(pad_gates(cell.project(params, x_tm).astype(dtype)), (steps, rows, g * hp))
    w = pad(pad_gates(params["w_hh"].astype(dtype)), (hp, g * hp))
    extras = {k: pad(params[k].astype(dtype), (hp,)) for k in ("b_hn",) if k in params}
    valid = jnp.ones((steps, n), bool) if valid is None else valid
    reset = jnp.zeros((steps, n), bool) if reset is None else reset
    valid, reset = (pad(a.astype(jnp.int32), (steps, rows)) for a in (valid, reset))
    state = [pad(a, (rows, hp)) for a in leaves]
    fresh = state if fresh is None else [pad(a, (rows, hp)) for a in jax.tree.leaves(fresh)]  # no reset: unused
    interpret = platform_of(x_tm) not in _GPU if tuning.interpret is None else tuning.interpret
    config = _Config(cell, tree, tuple(extras), reverse, tuning, interpret)
    last, ys = _fused(config, w, extras, xp, state, fresh, valid, reset)
    return jax.tree.unflatten(tree, [a[:n, :h] for a in last]), ys[:, :n, :h]


@dataclasses.dataclass(frozen=True)
class _Config:
    """The static arguments of the kernels: hashable, so that equal calls share one compilation."""

    cell: Cell
    tree: Any  # the carry's treedef: h, or LSTMCarry(h, c)
    extras: tuple[str, ...]  # params the cell's update reads besides w_hh: ("b_hn",) for the reset-after GRU
    reverse: bool
    tuning: Tuning
    interpret: bool

    @property
    def update(self) -> Callable:
        """The cell's ``update`` (``unsupported`` refuses cells without one before a kernel is built)."""
        if self.cell.update is None:
            raise ValueError(f"the fused kernels need a classic cell with update equations, received {self.cell.name}")
        return self.cell.update

    def step(self, extras: dict, weights: list):
        """``(carry, x) -> (carry, y)``: the cell's update with ``rec`` over the loaded gate blocks."""
        precision = _matmul_precision()

        def rec(v, wanted):
            dot = functools.partial(jnp.dot, precision=precision, preferred_element_type=jnp.float32)
            return [dot(v, weights[j]).astype(v.dtype) for j in wanted]

        return as_step(self.update, extras, rec)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(config, w, extras, xp, carry, fresh, valid, reset):
    last, ys, _ = _forward(config, w, extras, xp, carry, fresh, valid, reset, store=False)
    return last, ys


def _fused_fwd(config, w, extras, xp, carry, fresh, valid, reset):
    last, ys, entering = _forward(config, w, extras, xp, carry, fresh, valid, reset, store=True)
    return (last, ys), (w, extras, xp, fresh, valid, reset, entering)


def _fused_bwd(config, residuals, cotangents):
    w, extras, xp, fresh, valid, reset, entering = residuals
    d_last, d_ys = cotangents
    d_leaving, d_carry = _backward(config, w, extras, xp, fresh, valid, reset, entering, d_ys, d_last)
    g, tree = config.cell.gates, config.tree

    def all_steps(w, extras, xp, fresh):  # every step at once, from the stored carries: large matmuls
        step = as_step(config.update, extras, recurrent(w, g))
        x = jnp.split(xp, g, axis=-1)
        carry, fresh = jax.tree.unflatten(tree, entering), jax.tree.unflatten(tree, fresh)
        return masked_step(step, carry, x, valid != 0, reset != 0, fresh)

    _, vjp = jax.vjp(all_steps, w, extras, xp, fresh)
    dw, dextras, dxp, dfresh = vjp((jax.tree.unflatten(tree, d_leaving), d_ys))
    return dw, dextras, dxp, d_carry, jax.tree.leaves(dfresh), None, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def _forward(config, w, extras, xp, carry, fresh, valid, reset, *, store):
    """The forward kernel: ``(last carry leaves, ys (t, rows, hp), entering carry leaves or [])``."""
    steps, rows, _ = xp.shape
    k, seq = len(carry), jax.ShapeDtypeStruct((steps, *carry[0].shape), carry[0].dtype)
    out_shape = (seq, *[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in carry], *[seq] * (k if store else 0))
    kernel = functools.partial(_forward_kernel, config, store)
    outs = _call(config, kernel, out_shape, rows)(w, *extras.values(), xp, *carry, *fresh, valid, reset)
    return list(outs[1 : 1 + k]), outs[0], list(outs[1 + k :])


def _forward_kernel(config, store, *refs):
    k, g = config.tree.num_leaves, config.cell.gates
    refs = iter(refs)
    w_ref, extra_refs, xp_ref = next(refs), _take(refs, len(config.extras)), next(refs)
    carry_refs, fresh_refs, valid_ref, reset_ref = _take(refs, k), _take(refs, k), next(refs), next(refs)
    ys_ref, last_refs, entering_refs = next(refs), _take(refs, k), _take(refs, k if store else 0)
    rows, hp, steps = _rows(config), w_ref.shape[0], xp_ref.shape[0]
    extras = {name: ref[...] for name, ref in zip(config.extras, extra_refs)}
    fresh = jax.tree.unflatten(config.tree, [ref[rows, :] for ref in fresh_refs])

    def body(s, carry):
        t = steps - 1 - s if config.reverse else s
        for ref, leaf in zip(entering_refs, jax.tree.leaves(carry)):
            ref[t, rows, :] = leaf
        weights = [w_ref[:, pl.ds(j * hp, hp)] for j in range(g)]
        x = [xp_ref[t, rows, pl.ds(j * hp, hp)] for j in range(g)]
        ok, new_seq = valid_ref[t, rows] != 0, reset_ref[t, rows] != 0
        carry, y = masked_step(config.step(extras, weights), carry, x, ok, new_seq, fresh)
        ys_ref[t, rows, :] = y
        return carry

    carry = jax.lax.fori_loop(0, steps, body, jax.tree.unflatten(config.tree, [ref[rows, :] for ref in carry_refs]))
    for ref, leaf in zip(last_refs, jax.tree.leaves(carry)):
        ref[rows, :] = leaf


def _backward(config, w, extras, xp, fresh, valid, reset, entering, d_ys, d_last):
    """The reverse-time kernel: ``(cotangents of the carry leaving each step (t, rows, hp) per leaf,
    cotangent of the initial carry per leaf)``."""
    steps, rows, _ = xp.shape
    k = len(entering)
    d_last = [d.astype(a.dtype) for d, a in zip(d_last, fresh)]
    out_shape = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in [*entering, *fresh])
    kernel = functools.partial(_backward_kernel, config)
    args = (w, *extras.values(), xp, *fresh, valid, reset, *entering, d_ys.astype(xp.dtype), *d_last)
    outs = _call(config, kernel, out_shape, rows)(*args)
    return list(outs[:k]), list(outs[k:])


def _backward_kernel(config, *refs):
    k, g = config.tree.num_leaves, config.cell.gates
    refs = iter(refs)
    w_ref, extra_refs, xp_ref = next(refs), _take(refs, len(config.extras)), next(refs)
    fresh_refs, valid_ref, reset_ref, entering_refs = _take(refs, k), next(refs), next(refs), _take(refs, k)
    d_ys_ref, d_last_refs = next(refs), _take(refs, k)
    d_leaving_refs, d_carry_refs = _take(refs, k), _take(refs, k)
    rows, hp, steps = _rows(config), w_ref.shape[0], xp_ref.shape[0]
    extras = {name: ref[...] for name, ref in zip(config.extras, extra_refs)}
    fresh = jax.tree.unflatten(config.tree, [ref[rows, :] for ref in fresh_refs])

    def body(s, d_carry):
        t = s if config.reverse else steps - 1 - s
        for ref, leaf in zip(d_leaving_refs, jax.tree.leaves(d_carry)):
            ref[t, rows, :] = leaf
        weights = [w_ref[:, pl.ds(j * hp, hp)] for j in range(g)]
        x = [xp_ref[t, rows, pl.ds(j * hp, hp)] for j in range(g)]
        ok, new_seq = valid_ref[t, rows] != 0, reset_ref[t, rows] != 0
        entering = jax.tree.unflatten(config.tree, [ref[t, rows, :] for ref in entering_refs])
        step = config.step(extras, weights)
        _, vjp = jax.vjp(lambda c: masked_step(step, c, x, ok, new_seq, fresh), entering)
        (d_entering,) = vjp((d_carry, d_ys_ref[t, rows, :]))
        return d_entering

    d_carry = jax.lax.fori_loop(0, steps, body, jax.tree.unflatten(config.tree, [ref[rows, :] for ref in d_last_refs]))
    for ref, leaf in zip(d_carry_refs, jax.tree.leaves(d_carry)):
        ref[rows, :] = leaf


def _call(config, kernel, out_shape, rows):
    tuning = config.tuning
    compiler_params = None
    if not config.interpret:
        compiler_params = pallas_triton.CompilerParams(num_warps=tuning.num_warps, num_stages=tuning.num_stages)
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(rows // tuning.block,),
        interpret=config.interpret,
        compiler_params=compiler_params,
        name=f"rnnx_{config.cell.name}_{kernel.func.__name__.strip('_')}",
    )


def _matmul_precision():
    """The kernels' matmul precision: what ``jax.default_matmul_precision`` asks of XLA's matmuls in the scan.

    Pallas-Triton reads only a dot's own ``precision`` (None is TF32 for float32 inputs, as XLA's default on
    GPUs with TF32), not the global setting, so the setting in force while tracing is passed on.
    """
    setting = jax.config.jax_default_matmul_precision
    if setting in ("float32", "highest"):
        return jax.lax.Precision.HIGHEST
    if setting in ("tensorfloat32", "high"):
        return jax.lax.Precision.HIGH
    return None


def _rows(config):
    block = config.tuning.block
    return pl.ds(pl.program_id(0) * block, block)


def _take(refs, count):
    return [next(refs) for _ in range(count)]


def _padded(hidden: int) -> int:
    return max(16, 1 << (hidden - 1).bit_length())


def _largest_hidden(itemsize: int) -> int:
    hidden = 16
    while (2 * hidden) ** 2 * itemsize <= MAX_BLOCK_BYTES:
        hidden *= 2
    return hidden


__all__ = ["CELLS", "DTYPES", "MAX_BLOCK_BYTES", "NAME", "Tuning", "run", "tuned", "unsupported"]
