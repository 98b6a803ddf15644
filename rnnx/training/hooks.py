"""What :func:`rnnx.training.fit` takes besides the loss and the data, and what it gives back: its evaluation
and checkpoint hooks, its result, its error for non-finite values, and a writer for its records.
"""

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

NONFINITE_POLICIES = ("raise", "skip_update")
MAX_CONSECUTIVE_SKIPS = 25  # with on_nonfinite="skip_update": a run that cannot take a finite step stops


class Evaluation(NamedTuple):
    """:func:`rnnx.training.fit`'s evaluation hook: ``evaluate(params) -> dict of floats`` every ``every``
    steps and at the end; the best params by ``monitor`` (``mode`` ``"min"`` or ``"max"``) are kept, and
    training stops after ``patience`` evaluations without improvement (None: never)."""

    evaluate: Callable[[Any], Mapping[str, float | jax.Array]]
    every: int = 200
    monitor: str = "loss"
    mode: str = "min"
    patience: int | None = None


class Checkpoints(NamedTuple):
    """:func:`rnnx.training.fit`'s checkpoint hook: ``directory/step_<n>`` every ``every`` steps, before
    every evaluation and at the end (``every`` None: only those), keeping the newest ``max_to_keep`` plus the
    one taken at the best evaluation (None: all); ``net``, the :class:`rnnx.Stack` inside the params, is
    recorded and checked on resume."""

    directory: str | os.PathLike[str]
    every: int | None = 500
    max_to_keep: int | None = 3
    net: object = None  # an rnnx.Stack or an rnnx.nn module


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss, gradient norm or evaluation. The message is one line: the step, the
    quantity, the last good checkpoint and a hint. Attributes: ``step``, ``quantity``, ``value`` and
    ``checkpoint`` (the path of the last good checkpoint, or None)."""

    def __init__(
        self, message: str, *, step: int, quantity: str, value: float, checkpoint: pathlib.Path | None
    ) -> None:
        super().__init__(message)
        self.step, self.quantity, self.value, self.checkpoint = step, quantity, value, checkpoint


@dataclasses.dataclass
class FitResult:
    params: Any  # the best evaluated params (the last ones without evaluation)
    last_params: Any
    opt_state: Any
    step: int
    history: list[dict[str, Any]]  # one dict per evaluation, of the whole run (a resumed run's too)
    stopped_early: bool  # before ``steps``: by patience, by on_log, or the batches ran out
    skipped: int = 0  # updates dropped for a non-finite loss or gradient (on_nonfinite="skip_update")
    stop_reason: str | None = None  # why it stopped early, in words (None: it did not)


class Interrupted(KeyboardInterrupt):
    """:func:`rnnx.training.fit` stopped after a step because its ``interrupt`` asked it to (a first Ctrl-C),
    with that step checkpointed when it has checkpoints. Attributes: ``step`` and ``checkpoint`` (the path
    written, or None). A ``KeyboardInterrupt``, so that code which does not catch it stops as on Ctrl-C."""

    def __init__(self, step: int, checkpoint: pathlib.Path | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint = step, checkpoint


def jsonl_log(path: str | os.PathLike[str]) -> Callable[[dict[str, Any]], None]:
    """An ``on_log`` for :func:`rnnx.training.fit` that appends each record to ``path`` as one line of JSON."""

    def write(record: dict[str, Any]) -> None:
        with open(path, "a") as log:
            log.write(json.dumps(record) + "\n")

    return write


__all__ = [
    "MAX_CONSECUTIVE_SKIPS",
    "NONFINITE_POLICIES",
    "Checkpoints",
    "Evaluation",
    "FitResult",
    "Interrupted",
    "NonFiniteError",
    "jsonl_log",
]
