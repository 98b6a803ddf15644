"""Stateful sequences and truncated backpropagation through time (TBPTT).

A long sequence ``xs (*b, T, d)`` runs in windows of ``k`` steps; each window starts from the previous
window's final carry with its gradient stopped, so memory grows with ``k``, not ``T``, while the state
still flows forward through the whole sequence. Forward values are exactly those of one long run.

Two ways to use it:

* :func:`scan_windows` runs every window inside one ``jax.lax.scan`` (one compilation of the window);
  ``jax.grad`` through it gives the TBPTT gradient (the sum over windows of each window's gradient with
  its incoming carry held constant), for one update per sequence.
* :func:`windows` slices the sequence for a Python loop that updates after every window, feeding each
  window's final carry, detached with ``jax.lax.stop_gradient`` (which maps over a pytree carry), into the
  next.
"""

from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp

from rnnx.core.typing import Inputs


def _time_axis(xs, time_major: bool) -> int:
    if jnp.ndim(xs) < 2:
        raise ValueError(f"xs must have shape (*batch, time, features), received shape {jnp.shape(xs)}")
    return 0 if time_major else jnp.ndim(xs) - 2


def _check_window(window) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be a positive integer number of steps, received {window!r}")


def _check_aligned(xs, rest, axis: int) -> None:
    lead = jnp.shape(xs)[: axis + 1]
    for k, a in enumerate(rest):
        if jnp.shape(a)[: axis + 1] != lead:
            raise ValueError(
                f"per-step array {k} must start with xs's batch and time axes {lead}, received shape {jnp.shape(a)}"
            )


def windows(xs: Inputs, window: int, *per_step, time_major: bool = False) -> Iterator[tuple]:
    """Yield ``(xs_w, *per_step_w)`` over consecutive windows of ``window`` steps (the last may be shorter).

    Args:
      xs: ``(*b, t, d)``, or ``(t, *b, d)`` if ``time_major``.
      window: ``k``, steps per window.
      *per_step: arrays aligned with ``xs`` on their leading ``(*b, t)`` (or ``(t, *b)``) axes, such as
        ``mask``, ``reset`` or targets; sliced the same way.

    A shorter last window has another shape, so a jitted step compiles once more for it.

    >>> import jax.numpy as jnp, rnnx
    >>> [w[0].shape for w in rnnx.core.tbptt.windows(jnp.zeros((2, 10, 3)), 4)]
    [(2, 4, 3), (2, 4, 3), (2, 2, 3)]
    """
    axis = _time_axis(xs, time_major)
    steps = jnp.shape(xs)[axis]
    _check_window(window)
    _check_aligned(xs, per_step, axis)
    for start in range(0, steps, window):
        index = (slice(None),) * axis + (slice(start, start + window),)
        yield tuple(a[index] for a in (xs, *per_step))


def scan_windows(
    fn: Callable, carry, xs: Inputs, window: int, *per_step, time_major: bool = False
) -> tuple[object, jax.Array]:
    """Run ``fn`` over windows of ``window`` steps, carrying the detached final carry into the next.

    Args:
      fn: ``(carry, xs_w, *per_step_w) -> (carry, ys_w)``, e.g.
        ``lambda c, x: net.apply(params, x, initial_carry=c)``. ``ys_w`` has ``xs``'s layout
        (``(*b, k, ...)``), so the windows' outputs concatenate along time.
      carry: the carry before the first window (e.g. ``net.default_carry(params, b)``).
      xs: ``(*b, t, d)`` (``(t, *b, d)`` if ``time_major``); ``t`` must be a multiple of ``window``.
      *per_step: arrays aligned with ``xs`` on ``(*b, t)``, sliced into the same windows.

    Returns:
      ``(carry, ys)``: the final carry (detached, ready for the next batch of a stateful run) and ``ys`` for
      all ``t`` steps. Forward values equal one run over the whole sequence; gradients stop at every window
      boundary.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> net = rnnx.stacked(rnnx.lstm(4))
    >>> params = net.init(jax.random.key(0), 3)
    >>> xs = jax.random.normal(jax.random.key(1), (2, 12, 3))
    >>> run = lambda c, x: net.apply(params, x, initial_carry=c)
    >>> carry, ys = rnnx.core.tbptt.scan_windows(run, net.default_carry(params, (2,)), xs, 4)
    >>> bool(jnp.allclose(ys, net.apply(params, xs)[1], atol=1e-6))
    True
    """
    axis = _time_axis(xs, time_major)
    steps = jnp.shape(xs)[axis]
    _check_window(window)
    if steps % window:
        raise ValueError(
            f"xs has {steps} time steps, which is not a multiple of window={window}; pad it and pass a mask, "
            f"or use rnnx.core.tbptt.windows, whose last window may be shorter"
        )
    _check_aligned(xs, per_step, axis)
    n = steps // window

    def split(a):  # (*b, n*k, ...) -> (n, *b, k, ...)
        a = jnp.reshape(a, (*a.shape[:axis], n, window, *a.shape[axis + 1 :]))
        return jnp.moveaxis(a, axis, 0)

    def body(c, inputs):
        # Detach on the way out, not in: the first window keeps the gradient to the initial carry
        # (a learned initial state trains).
        c, ys = fn(c, *inputs)
        return jax.lax.stop_gradient(c), ys

    carry, ys = jax.lax.scan(body, carry, tuple(split(jnp.asarray(a)) for a in (xs, *per_step)))

    def merge(y):  # (n, *b, k, ...) -> (*b, n*k, ...)
        y = jnp.moveaxis(y, 0, axis)
        return jnp.reshape(y, (*y.shape[:axis], n * window, *y.shape[axis + 2 :]))

    return carry, jax.tree.map(merge, ys)


__all__ = ["scan_windows", "windows"]
