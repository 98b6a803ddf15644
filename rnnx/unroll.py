"""Run a cell over a sequence: ``rnnx.unroll``.

Shapes: ``xs (*b, t, d)`` (or ``(t, *b, d)`` with ``time_major=True``) where ``*b`` is any number of
batch axes, including none; outputs ``ys (*b, t, h)`` in the same layout; the carry has shape ``(*b, h)``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from rnnx.cells import Cell, check_params


def default_hoist(cell: Cell) -> bool:
    """Whether ``unroll`` computes the input projection for all steps before the scan.

    Measured with ``python -m benchmarks.hoist`` (B=64, T=100, I=300, H=128; table in the README): on
    XLA:CPU hoisting made the simple RNN about 20% faster, but made LSTM and GRU training steps about 8%
    slower (GRU forward 30% slower): their time goes to per-step gate arithmetic, and hoisting adds a
    ``(t, b, g*h)`` buffer. On GPU and TPU one large matmul over all steps uses the device far better
    than ``t`` small ones, so there we always hoist.
    """
    return jax.default_backend() != "cpu" or cell.gates == 1


def unroll(
    cell: Cell,
    params,
    xs,
    *,
    lengths=None,
    mask=None,
    reset=None,
    initial_carry=None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int = 1,
    remat: bool = False,
    hoist: bool | None = None,
):
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
        ``cell.initial_carry(params)`` before that step (after it, in reverse order, so each segment runs
        fresh in either direction).
      initial_carry: the carry before the first step, shaped like ``cell.initial_carry(params, b)``.
        Default ``cell.initial_carry(params, b)``.
      reverse: run from the last step to the first; outputs stay aligned with their inputs.
      time_major: the layout of ``xs``, ``ys`` and ``mask``.
      unroll: steps per scan iteration (``jax.lax.scan``'s ``unroll``).
      remat: rematerialise each step in the backward pass (``jax.checkpoint``), trading compute for memory.
      hoist: compute the input projection for all steps before the scan. ``None``: :func:`default_hoist`.

    ``unroll``, ``remat`` and ``hoist`` never change the results.

    Returns:
      ``(carry, ys)``: the final carry and the outputs ``(*b, t, h)``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.gru(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rnnx.unroll(cell, params, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))
    >>> ys.shape, carry.shape, float(jnp.abs(ys[1, 2:]).max())
    ((2, 5, 8), (2, 8), 0.0)
    """
    input_size = check_params(cell, params)
    xs = _check_xs(xs, input_size)
    steps = xs.shape[0 if time_major else -2]
    batch_shape = xs.shape[1:-1] if time_major else xs.shape[:-2]
    valid = _valid_steps(lengths, mask, batch_shape, steps, time_major)
    reset = _check_bool("reset", reset, batch_shape, steps, time_major)
    init = cell.initial_carry(params, batch_shape)
    carry = init if initial_carry is None else _check_carry(initial_carry, init)

    # Internally time-major with one flat batch axis: (t, n, ...).
    n, t_axis = math.prod(batch_shape), 0 if time_major else len(batch_shape)

    def to_tm(a):
        a = jnp.moveaxis(a, t_axis, 0)
        return a.reshape(steps, n, *a.shape[1 + len(batch_shape) :])

    def flat(c):
        return c.reshape(n, *c.shape[len(batch_shape) :])

    x_tm = to_tm(xs)
    valid_tm = None if valid is None else to_tm(valid)
    reset_tm = None if reset is None else to_tm(reset)
    if reset_tm is not None and reverse:
        reset_tm = jnp.concatenate([reset_tm[1:], jnp.zeros_like(reset_tm[:1])])
    fresh = jax.tree.map(flat, cell.initial_carry(params, batch_shape)) if reset is not None else None

    if default_hoist(cell) if hoist is None else hoist:
        x_tm, step = cell.project(params, x_tm), cell.step
    else:
        step = cell.apply

    def body(carry, inputs):
        x, ok, new_seq = inputs
        if new_seq is not None:
            carry = _where(new_seq, fresh, carry)
        new_carry, y = step(params, carry, x)
        if ok is not None:
            new_carry = _where(ok, new_carry, carry)
            y = jnp.where(ok[:, None], y, jnp.zeros((), y.dtype))
        return new_carry, y

    if remat:
        body = jax.checkpoint(body)
    carry, ys = jax.lax.scan(
        body, jax.tree.map(flat, carry), (x_tm, valid_tm, reset_tm), reverse=reverse, unroll=unroll
    )
    carry = jax.tree.map(lambda c: c.reshape(*batch_shape, *c.shape[1:]), carry)
    ys = ys.reshape(steps, *batch_shape, ys.shape[-1])
    return carry, (ys if time_major else jnp.moveaxis(ys, 0, -2))


def _where(cond, new, old):
    return jax.tree.map(lambda a, b: jnp.where(cond[:, None], a, b), new, old)


def _check_xs(xs, input_size):
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


def _valid_steps(lengths, mask, batch_shape, steps, time_major):
    """The boolean (*b, t) (or (t, *b)) array of steps to run, or None when all run."""
    if steps == 0:
        raise ValueError("xs has 0 time steps; expected at least 1")
    mask = _check_bool("mask", mask, batch_shape, steps, time_major)
    if lengths is None:
        return mask
    lengths = jnp.asarray(lengths)
    if lengths.shape != tuple(batch_shape):
        raise ValueError(f"lengths must have the batch shape {tuple(batch_shape)}, received shape {lengths.shape}")
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must have an integer dtype, received {lengths.dtype}")
    if not isinstance(lengths, jax.core.Tracer) and lengths.size:
        low, high = int(np.min(lengths)), int(np.max(lengths))
        if low < 0 or high > steps:
            raise ValueError(
                f"lengths must lie in [0, {steps}] (the number of time steps), received min {low}, max {high}"
            )
    by_length = jnp.arange(steps) < lengths[..., None]
    if time_major:
        by_length = jnp.moveaxis(by_length, -1, 0)
    return by_length if mask is None else by_length & mask


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


def _check_carry(carry, expected):
    got = jax.tree.map(lambda a: tuple(jnp.shape(a)), carry)
    want = jax.tree.map(lambda a: tuple(a.shape), expected)
    if jax.tree.structure(carry) != jax.tree.structure(expected) or got != want:
        raise ValueError(f"initial_carry must have shapes {want}, received {got}")
    return jax.tree.map(lambda a, e: jnp.asarray(a, e.dtype), carry, expected)
