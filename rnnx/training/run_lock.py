"""The run lock: one process at a time writes a directory of checkpoints.

``<directory>/rnnx.lock`` holds JSON ``{"pid", "host", "started"}``, published atomically; a lock left by a
process of this host that is no longer running, or an unreadable lock file, is taken over.
"""

import contextlib
import datetime
import json
import os
import pathlib
import socket
import uuid
import warnings
from collections.abc import Callable

from rnnx.training.checkpoint_record import CheckpointError

_LOCK_FILE = "rnnx.lock"


@contextlib.contextmanager
def lock(directory, *, on_stale: Callable[[str], None] | None = None, enabled: bool = True):
    """Hold ``directory/rnnx.lock`` for the ``with`` block, so that one process at a time writes there.

    The lock file holds JSON ``{"pid", "host", "started"}`` and is published atomically, content included
    (written beside it, then hard-linked into place, which fails if it exists; ``O_CREAT | O_EXCL`` where
    hard links are unsupported), so no other process ever reads a half-written one. It is removed on exit
    if it is still this process's. A lock left by a process of this host that is no longer running, or an
    unreadable lock file, is taken over.

    Args:
      directory: created if missing.
      on_stale: called with a one-line message when a stale lock is taken over (None: ``warnings.warn``).
      enabled: False makes this a no-op: in a multi-process JAX job pass ``jax.process_index() == 0``, so
        that one process holds the lock for the job.

    Yields:
      The lock file's path (None when not ``enabled``).

    Raises:
      CheckpointError: a running process of this host holds the lock, or a process of another host does
        (which cannot be checked from here: the message says to delete the lock file if it is gone).

    >>> import tempfile, rnnx
    >>> with rnnx.training.checkpoint.lock(tempfile.mkdtemp()) as path:
    ...     path.name
    'rnnx.lock'
    """
    if not enabled:
        yield None
        return
    directory = pathlib.Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _LOCK_FILE
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode()
    _acquire(path, record, on_stale or (lambda message: warnings.warn(message, stacklevel=5)))
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == record:  # taken over meanwhile (we were judged stale): not ours to remove
                path.unlink()


# ----------------------------------------------------------------------------------------------- helpers


def _acquire(path: pathlib.Path, record: bytes, on_stale) -> None:
    for _ in range(5):  # each retry follows another process's move; a live holder ends it with an error
        if _publish(path, record):
            return
        try:
            held = path.read_bytes()
        except FileNotFoundError:
            continue
        message = _stale(path, held)  # raises when the holder is (or may be) running
        if _take_over(path, held) and _publish(path, record):
            on_stale(message)
            return
    raise CheckpointError(f"could not take the lock {path}: other processes keep taking it; try again")


def _publish(path: pathlib.Path, content: bytes) -> bool:
    """Create ``path`` holding ``content`` atomically; False if it exists."""
    scratch = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    scratch.write_bytes(content)
    try:
        os.link(scratch, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        return True
    finally:
        scratch.unlink()


def _stale(path: pathlib.Path, held: bytes) -> str:
    """The message for taking over the lock ``held``; raises :class:`CheckpointError` if it may be live."""
    try:
        holder = json.loads(held)
        pid, host, started = int(holder["pid"]), str(holder["host"]), holder["started"]
    except (ValueError, TypeError, KeyError):
        return f"took over the unreadable lock file {path}"
    if pid <= 0:  # os.kill(0 or -n, 0) would ask about process groups
        return f"took over the lock file {path} holding the invalid pid {pid}"
    held_by = f"{path.parent} is in use by process {pid} on {host} since {started} (lock file {path})"
    if host != socket.gethostname():
        raise CheckpointError(
            f"{held_by}; a process on another host cannot be checked from here: if it is gone, delete {path}"
        )
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"took over the stale lock of process {pid} on {host}, started {started} and no longer running ({path})"
    except PermissionError:  # it exists, run by another user
        pass
    raise CheckpointError(f"{held_by}; wait for it to finish or stop it")


def _take_over(path: pathlib.Path, held: bytes) -> bool:
    """Move the stale lock ``held`` out of the way; False if another process got there first."""
    moved = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return False
    content = moved.read_bytes()
    moved.unlink()
    if content != held:  # a lock published since we read the stale one: put it back
        _publish(path, content)
        return False
    return True


__all__ = ["lock"]
