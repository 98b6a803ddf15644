"""Checkpoint management: save and restore params, optimizer state and NNX modules with orbax-checkpoint,
bit-exactly and verified, one directory or a manager's ``step_<n>`` directories.

A checkpoint is a directory holding two orbax items: ``state`` (the arrays) and ``rnnx`` (JSON: the
architecture of every recurrent net in it, the shape, dtype and BLAKE2b checksum of every array, and the
caller's ``extra`` record). Restoring reads the JSON first and refuses, with the differences spelled out, a
checkpoint from another architecture (:class:`ValueError`: a user error); it then reads the arrays and
recomputes their checksums, and raises :class:`CheckpointError` (damage) when a file is missing, truncated
or altered.

- :func:`save` and :func:`restore`: one checkpoint directory;
- :func:`manager`, :func:`save_step`, :func:`restore_step`, :func:`read_extra`, :func:`restore_latest` and
  :func:`prune`: an ``orbax.checkpoint.CheckpointManager`` over ``step_<n>`` directories, as
  :func:`rnnx.training.fit` resumes from; :func:`restore_latest` falls back past damaged steps;
- :func:`lock`: one process at a time per directory (:mod:`rnnx.training.run_lock`); :func:`prune` is
  :mod:`rnnx.training.pruning`'s.

The record and its checks live in :mod:`rnnx.training.checkpoint_record`; hiding what orbax prints when a
read fails, in :mod:`rnnx.training.orbax_quiet`.

Atomicity comes from orbax: it writes into ``<name>.orbax-checkpoint-tmp*`` and renames the directory to
``<name>`` only after every item is complete, so an interrupted save is never taken for a checkpoint.
Just before that rename orbax (0.12) writes ``<name>/commit_success.txt``, but on a local disk it never
checks it (it trusts the rename; on GCS the file is the commit). A directory of this format without it was
not written whole (e.g. a partial copy), so :func:`restore` and :func:`restore_step` refuse it as damaged.
Checkpoints of the first format (``rnnx-checkpoint/1``, without checksums) are still read, unverified.

``state`` may be any pytree of arrays (params, optax states, step counters) and, at its top level or
nested in dicts, ``flax.nnx`` modules and optimizers, saved as ``nnx.state(obj)`` and restored in place
(through the :class:`StateConverter` that ``rnnx.nnx_state`` registers).

>>> import tempfile, jax, optax, rnnx
>>> net = rnnx.stacked(rnnx.gru(4))
>>> params = net.init(jax.random.key(0), 3)
>>> state = {"params": params, "opt": optax.adam(1e-3).init(params)}
>>> path = rnnx.training.checkpoint.save(tempfile.mkdtemp() + "/step_1", state, net=net)
>>> restored = rnnx.training.checkpoint.restore(path, state, net=net)
>>> bool(jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), restored, state)))
True
"""

import os
import pathlib
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from rnnx.training import orbax_quiet
from rnnx.training.checkpoint_record import ITEMS as _ITEMS
from rnnx.training.checkpoint_record import CheckpointError as CheckpointError
from rnnx.training.checkpoint_record import CheckpointMismatch as CheckpointMismatch
from rnnx.training.checkpoint_record import StateConverter as StateConverter
from rnnx.training.checkpoint_record import architecture as architecture
from rnnx.training.checkpoint_record import damaged as _damaged
from rnnx.training.checkpoint_record import read_record as _read_record
from rnnx.training.checkpoint_record import register_state_converter as register_state_converter
from rnnx.training.checkpoint_record import restore as _restore
from rnnx.training.checkpoint_record import save_args as _save_args
from rnnx.training.pruning import prune as prune
from rnnx.training.run_lock import lock as lock

if TYPE_CHECKING:
    import orbax.checkpoint as ocp  # imported where used: `import rnnx` stays quick

_PathLike = str | os.PathLike[str]
"""A checkpoint's or a run's directory."""

_T = TypeVar("_T")


def save(directory: _PathLike, state: Any, *, net: object = None, force: bool = False) -> pathlib.Path:
    """Write ``state`` to ``directory`` atomically, with a checksum of every array; return its absolute path.

    Args:
      directory: the checkpoint's path; it must not exist unless ``force``.
      state: a pytree of arrays, possibly holding ``flax.nnx`` modules and optimizers (see the module doc).
      net: the :class:`rnnx.Stack` the params belong to, recorded so that :func:`restore` can check it.
        ``rnnx.nn`` modules inside ``state`` record their own.
      force: overwrite an existing checkpoint.
    """
    import orbax.checkpoint as ocp

    path = pathlib.Path(directory).absolute()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(path, _save_args(state, net, None), force=force)
    return path


def restore(directory: _PathLike, like: _T, *, net: object = None) -> _T:
    """Read a checkpoint written by :func:`save` into the structure of ``like``, verifying every array.

    Args:
      directory: the path :func:`save` returned.
      like: a pytree shaped like the saved ``state`` (arrays or ``jax.ShapeDtypeStruct``s); ``flax.nnx``
        modules and optimizers in it are updated in place, once every array is read and verified. Each
        array is restored with the sharding of its counterpart here (a ``jax.Array``'s or a
        ``ShapeDtypeStruct``'s ``sharding``), so a checkpoint saved on one mesh restores on another mesh or
        on one device.
      net: the :class:`rnnx.Stack` expected, checked against the recorded one.

    Returns:
      ``like`` with every array replaced by the saved one, bit for bit (dtypes included).

    Raises:
      FileNotFoundError: no complete checkpoint at ``directory`` (e.g. an interrupted save).
      CheckpointError: the checkpoint is damaged: a file missing or unreadable, or a checksum mismatch.
      ValueError: the checkpoint holds another architecture, or arrays of other shapes or dtypes.
    """
    import orbax.checkpoint as ocp

    path = _check_complete(pathlib.Path(directory).absolute())
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        return _restore(lambda args: checkpointer.restore(path, args), path, like, net)[0]


def manager(
    directory: _PathLike, *, max_to_keep: int | None = None, read_only: bool = False
) -> "ocp.CheckpointManager":
    """An ``orbax.checkpoint.CheckpointManager`` over ``directory/step_<n>``; use it in a ``with`` block.

    ``latest_step()`` is the newest complete step (None when there is none); interrupted saves are skipped.
    Saves are synchronous, so a checkpoint is complete when :func:`save_step` returns.

    Args:
      directory: where the step directories live; created on the first save unless ``read_only``.
      max_to_keep: keep the newest this many steps (None: all; see :func:`prune` to keep chosen ones too).
      read_only: only read; never create, write or delete.
    """
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        step_prefix="step",
        read_only=read_only,
        create=not read_only,
        enable_async_checkpointing=False,
        save_interval_steps=0 if read_only else 1,  # what orbax sets itself for read_only, with a warning
    )
    with orbax_quiet.read_only_quiet(read_only):
        return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options, item_names=_ITEMS)


def save_step(
    manager: "ocp.CheckpointManager",
    step: int,
    state: Any,
    *,
    net: object = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``state`` as step ``step`` of ``manager`` (see :func:`save` for ``state`` and ``net``).

    Args:
      extra: a JSON-serialisable dict stored beside the arrays (e.g. an evaluation history), read back by
        :func:`read_extra` and :func:`restore_latest`.

    Raises:
      OSError: the write failed (no space left on device, a read-only file system, ...), naming the step's
        directory; orbax's follow-on reports are hidden, and the older steps are intact.
    """
    try:
        with orbax_quiet.failed_write_quiet():
            manager.save(step, args=_save_args(state, net, extra), force=True)
    except ValueError as error:  # TensorStore reports a failed write as a ValueError
        os_error = orbax_quiet.os_error(error, _step_path(manager, step))
        if os_error is None:
            raise
        raise os_error from None


def restore_step(manager: "ocp.CheckpointManager", step: int, like: _T, *, net: object = None) -> _T:
    """Read step ``step`` of ``manager`` into the structure of ``like``, verifying it (see :func:`restore`).

    Raises:
      FileNotFoundError: there is no step ``step``.
      CheckpointError: the step is damaged: an item or orbax's commit file missing, a file unreadable, or a
        checksum mismatch.
      ValueError: the step holds another architecture, or arrays of other shapes or dtypes.
    """
    return _restore_step(manager, step, like, net)[0]


def read_extra(manager: "ocp.CheckpointManager", step: int) -> dict[str, Any]:
    """The ``extra`` dict that :func:`save_step` stored with step ``step`` ({} if none); reads only the JSON.

    Raises:
      CheckpointError: the JSON record is missing or unreadable.
    """
    record = _read_record(lambda args: manager.restore(step, args=args), _step_path(manager, step))
    return record.get("extra") or {}


def restore_latest(
    manager: "ocp.CheckpointManager", like: _T, *, net: object = None, on_damaged: Callable[[str], None] | None = None
) -> tuple[int, _T, dict[str, Any]] | None:
    """Restore the newest step of ``manager`` that reads and verifies, falling back past damaged ones.

    Args:
      manager: from :func:`manager`.
      like, net: as for :func:`restore`.
      on_damaged: called with a one-line message for each damaged step passed over for an older one
        (None: ``warnings.warn``); a damaged checkpoint is never skipped silently. A step that vanishes while
        it is read (pruned by a process still training) is not damaged: the steps are listed again.

    Returns:
      None when ``manager`` has no complete step, else ``(step, state, extra)``: the step restored, ``like``
      filled from it and its ``extra`` record ({} if none).

    Raises:
      CheckpointError: every step is damaged; the message names each directory and why, and how to start
        afresh.
      ValueError: a step holds another architecture (raised at once: a user error, not damage).
    """
    report = on_damaged or (lambda message: warnings.warn(message, stacklevel=3))
    for _ in range(5):  # a writer may prune a step while it is read: then the list is read again
        steps, failures, pruned = sorted(manager.all_steps(), reverse=True), [], False
        for step in steps:
            try:
                state, record = _restore_step(manager, step, like, net)
            except (CheckpointError, FileNotFoundError) as error:
                if pruned := not _step_path(manager, step).exists():  # gone, not damaged: another process pruned it
                    break
                if isinstance(error, FileNotFoundError):
                    raise
                failures.append(str(error))
                if step != steps[-1]:
                    report(f"{error}; falling back to an older one")
                continue
            return step, state, record.get("extra") or {}
        if not pruned:
            break
        manager.reload()
    if not steps:
        return None
    directory = pathlib.Path(manager.directory)
    failures = [failure.replace(f"checkpoint {directory}/", "") for failure in failures]  # named once
    raise CheckpointError(
        f"no usable checkpoint in {directory}: {'; '.join(failures)}; delete {directory} to start afresh"
    )


# ----------------------------------------------------------------------------------------------- helpers


def _step_path(manager: "ocp.CheckpointManager", step: int) -> pathlib.Path:
    return pathlib.Path(manager.directory) / f"step_{step}"


def _restore_step(manager: "ocp.CheckpointManager", step: int, like: _T, net: object) -> tuple[_T, dict[str, Any]]:
    """``(like filled from step, its JSON record)``, after checking that the step is whole."""
    path = _step_path(manager, step)
    if not path.is_dir():
        raise FileNotFoundError(f"no step {step} in {manager.directory}: found steps {list(manager.all_steps())}")
    missing = [name for name in _ITEMS if not (path / name).is_dir()]
    if missing:
        raise _damaged(path, f"items {missing} missing")
    return _restore(lambda args: manager.restore(step, args=args), path, like, net)


def _check_complete(path: pathlib.Path) -> pathlib.Path:
    import orbax.checkpoint as ocp

    if ocp.path.step.is_tmp_checkpoint(path):
        raise FileNotFoundError(
            f"{path} is an unfinished temporary directory left by an interrupted save; expected a complete "
            "checkpoint (orbax renames the temporary directory only once every item is written)"
        )
    if not path.is_dir():
        found = ocp.path.step.tmp_checkpoints(path.parent) if path.parent.is_dir() else []
        partial = [name for name in found if name.startswith(path.name + ".")]
        reason = f"; found {sorted(partial)}, left by an interrupted save" if partial else ""
        raise FileNotFoundError(f"no checkpoint at {path}{reason}")
    missing = [name for name in _ITEMS if not (path / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a complete rnnx checkpoint: {missing} missing (expected the items {list(_ITEMS)} "
            "that save writes)"
        )
    return path


__all__ = [
    "CheckpointError",
    "CheckpointMismatch",
    "StateConverter",
    "architecture",
    "lock",
    "manager",
    "prune",
    "read_extra",
    "register_state_converter",
    "restore",
    "restore_latest",
    "restore_step",
    "save",
    "save_step",
]
