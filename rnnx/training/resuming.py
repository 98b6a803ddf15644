"""A resumable run's checkpoint directory, shared by :func:`rnnx.training.fit` and
:func:`rnnx.training.fit_population`: the lock, the newest checkpoint that verifies (damaged newer ones set
aside), the note that the run resumes or had finished, and the save that prunes behind it.
"""

import contextlib
import pathlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from rnnx.training import checkpoint, distributed
from rnnx.training.hooks import Checkpoints
from rnnx.training.loop import OnLog, emit

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

_R = TypeVar("_R")

Warn = Callable[[str], Callable[[str], None]]
"""``warn(event) -> note(message)``, as :meth:`rnnx.training.loop.Loop.warn`."""


def resumable(
    checkpoints: Checkpoints,
    state: Any,
    steps: int,
    warn: Warn,
    on_log: OnLog | None,
    run: Callable[["ocp.CheckpointManager", Any, dict[str, Any], pathlib.Path | None], _R],
) -> _R:
    """``run(manager, state, extra, saved)`` inside the directory's lock, from its newest checkpoint that
    verifies (``saved``, its path; None and ``state`` as given when there is none), after a ``"resume"`` or
    ``"finished"`` record (with ``"pending_evaluation"``)."""
    directory = pathlib.Path(checkpoints.directory).absolute()
    lead = distributed.is_lead()  # one lock per job, held by its first process
    with (
        checkpoint.lock(directory, on_stale=warn("stale_lock")) if lead else contextlib.nullcontext(),
        checkpoint.manager(directory) as manager,
    ):
        found = checkpoint.restore_latest(manager, state, net=checkpoints.net, on_damaged=warn("damaged"))
        extra: dict[str, Any] = {}
        saved = None
        if found is not None:
            step, state, extra = found
            set_aside_damaged(manager, step, lead, warn("damaged"))
            done = step >= steps or extra.get("stopped", False)
            saved = directory / f"step_{step}"
            message = f"step {step} of {steps} (checkpoint {saved})"
            event, message = (
                ("finished", f"already finished at {message}") if done else ("resume", f"resuming from {message}")
            )
            pending = bool(extra.get("pending_evaluation"))
            emit(on_log, {"step": step, "event": event, "message": message, "pending_evaluation": pending})
        return run(manager, state, extra, saved)


def save_step(
    manager: "ocp.CheckpointManager",
    checkpoints: Checkpoints,
    step: int,
    state: Any,
    extra: dict[str, Any],
    protect: Iterable[int],
    replace: bool = False,
) -> pathlib.Path:
    """Save ``state`` as ``step`` (``replace``: over the one already there), then prune to
    ``checkpoints.max_to_keep`` besides the steps in ``protect``; returns the checkpoint's path."""
    if replace:  # a crash before the new one is complete resumes from the one before: nothing lost
        manager.delete(step)
    checkpoint.save_step(manager, step, state, net=checkpoints.net, extra=extra)
    if checkpoints.max_to_keep is not None:
        checkpoint.prune(manager, keep=checkpoints.max_to_keep, protect=tuple(protect))
    return pathlib.Path(manager.directory).absolute() / f"step_{step}"


def set_aside_damaged(manager: "ocp.CheckpointManager", step: int, lead: bool, note: Callable[[str], None]) -> None:
    """Rename the checkpoints newer than ``step`` (damaged ones that were passed over) to ``damaged.step_<n>``,
    which orbax does not take for a step: the run writes those steps anew, and the damaged data is kept for
    a look."""
    directory = pathlib.Path(manager.directory)
    damaged = [s for s in manager.all_steps() if s > step]
    if lead:
        for newer in damaged:
            source, target = directory / f"step_{newer}", directory / f"damaged.step_{newer}"
            suffix = 1
            while target.exists():
                target, suffix = directory / f"damaged.step_{newer}.{suffix}", suffix + 1
            source.rename(target)
            note(f"moved the damaged {source} aside to {target}; the run writes step {newer} anew")
    if damaged:
        distributed.barrier("rnnx: damaged checkpoints set aside")
        manager.reload()


__all__ = ["resumable", "save_step", "set_aside_damaged"]
