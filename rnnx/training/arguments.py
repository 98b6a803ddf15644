"""What :func:`rnnx.training.fit` accepts: its arguments, and what its loss and evaluation functions return,
checked before they can go silently wrong (a negative ``clip_norm`` is gradient ascent, ``steps=True`` is one
step), each refused in one line naming the argument, what was expected and what was received; and its
batches, either form, as one stream."""

import itertools
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

import jax
import jax.numpy as jnp

from rnnx.training.hooks import NONFINITE_POLICIES, Evaluation

if TYPE_CHECKING:
    from rnnx.training.loop import Batches


def check_fit_arguments(
    *,
    params: object,
    steps: object,
    clip_norm: object,
    log_every: object,
    evaluation: Evaluation | None,
    on_nonfinite: object,
) -> None:
    """Raise ``ValueError`` (``TypeError`` for a non-callable ``evaluate``) for an argument of ``fit`` no run
    could use."""
    if not jax.tree.leaves(params):
        raise ValueError(f"params must hold at least one array to train, received {str(params)[:60]}")
    _positive_integer("steps", steps)
    _positive_integer("log_every", log_every)
    if clip_norm is not None and not (_real(clip_norm) and math.isfinite(clip_norm) and clip_norm >= 0):
        raise ValueError(f"clip_norm must be a finite number >= 0, or None for no clipping; received {clip_norm!r}")
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, received {on_nonfinite!r}")
    if evaluation is None:
        return
    if not callable(evaluation.evaluate):
        raise TypeError(f"Evaluation.evaluate must be callable, received {type(evaluation.evaluate).__name__}")
    _positive_integer("Evaluation.every", evaluation.every)
    if evaluation.patience is not None:
        _positive_integer("Evaluation.patience", evaluation.patience)
    if evaluation.mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', received {evaluation.mode!r}")


def evaluation_result(result: object, monitor: str) -> dict[str, float]:
    """``evaluate``'s return value as ``{name: float}``, or an error saying what was expected."""
    if not isinstance(result, Mapping):
        raise TypeError(
            f"Evaluation.evaluate must return a dict of scalars such as {{{monitor!r}: 0.5}}, received "
            f"{type(result).__name__} {str(result)[:40]}"
        )
    if monitor not in result:
        raise ValueError(f"Evaluation.monitor is {monitor!r}, but evaluate returned only {sorted(map(str, result))}")
    values = {}
    for name, value in result.items():
        try:
            values[str(name)] = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"Evaluation.evaluate must return scalars, but {name!r} is {type(value).__name__} {str(value)[:40]}"
            ) from None
    return values


def checked_loss_output(output: Any, stateful: bool) -> Any:
    """``loss_fn``'s return value, after checking its form at trace time: ``(loss, metrics)`` with a scalar
    loss, or ``(loss, (metrics, carry))`` for a stateful loss."""
    form = "(loss, (metrics, carry))" if stateful else "(loss, metrics)"
    if not isinstance(output, tuple) or len(output) != 2:
        kind = f"a tuple of {len(output)}" if isinstance(output, tuple) else type(output).__name__
        kind = f"an array of shape {jnp.shape(output)}" if hasattr(output, "shape") else kind
        raise TypeError(f"loss_fn must return {form}, received {kind}")
    if jnp.shape(output[0]) != ():
        raise TypeError(f"loss_fn must return a scalar loss in {form}, received shape {jnp.shape(output[0])}")
    if stateful and not (isinstance(output[1], tuple) and len(output[1]) == 2):
        raise TypeError(f"a stateful loss_fn (fit with initial_carry) must return {form}, received {output[1]!r:.60}")
    return output


def batch_stream(batches: "Batches", start: int) -> Iterator[tuple[int | None, int | None, Any]]:
    """``(epoch, index in the epoch, batch)`` from step ``start`` on; epoch and index are None for an iterable."""
    if not callable(batches):
        yield from ((None, None, batch) for batch in itertools.islice(batches, start, None))
        return
    first = batches(0)
    per_epoch = len(first)
    if per_epoch == 0:
        raise ValueError("batches(0) returned no batches; expected at least one")
    epoch, index = divmod(start, per_epoch)
    while True:
        current = first if epoch == 0 else batches(epoch)
        yield from ((epoch, i, current[i]) for i in range(index, per_epoch))
        epoch, index = epoch + 1, 0


def check_first_batch(item: Any, step: int, steps: int) -> None:
    """Raise when a run that has not started (``step`` 0) finds no batch at all (``item`` None)."""
    if item is None and step == 0:
        raise ValueError(f"batches yielded no batch; expected at least one (steps={steps})")


def batches_ran_out(warn: Callable[[str], None], step: int, steps: int) -> str:
    """Note (to ``warn``, a ``"batches_ran_out"`` warner) that an iterable of batches ended after ``step`` of
    ``steps`` steps; returns the stop reason, for ``fit`` and ``fit_population`` alike."""
    reason = f"the batches ran out after {step} of {steps} steps"
    warn(f"training ended early: {reason}")
    return reason


def _real(value: object) -> TypeGuard[float]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_integer(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, received {value!r}")


__all__ = ["batch_stream", "batches_ran_out", "check_fit_arguments", "checked_loss_output", "evaluation_result"]
