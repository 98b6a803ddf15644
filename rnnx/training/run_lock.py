"""The run lock: one process at a time writes a directory of checkpoints.

The lock is an OS lock, taken with ``filelock`` on ``<directory>/rnnx.lock.os`` without waiting. The kernel
releases it when its holder ends, however it ends (SIGKILL included), so the lock of a dead process is taken
over without asking whether its pid still runs, and a reused pid (a container's entrypoint is pid 1 again)
cannot block a run. Beside it, ``rnnx.lock`` records the holder (JSON ``{"pid", "host", "started",
"os_lock"}``, written atomically), so that a refused writer is told who holds the directory and since when.

The record decides in two cases the OS lock cannot answer:

- a record from another host: ``flock`` on a network filesystem may be local to each host (Lustre's
  ``localflock``, some NFS setups), so holding the OS lock here says nothing about a process there;
- a record without ``"os_lock"``, written by rnnx 0.1.0's hand-written lock, whose holder takes no OS lock:
  only its pid can tell whether it still runs (kept for one release, in ``_legacy_holder``).
"""

import contextlib
import datetime
import json
import os
import pathlib
import socket
import warnings
from collections.abc import Callable, Iterator

import filelock

from rnnx.training.checkpoint_record import CheckpointError

RECORD_FILE = "rnnx.lock"  # the name rnnx 0.1.0's lock file had, so that its processes see this one too
OS_LOCK_FILE = "rnnx.lock.os"


@contextlib.contextmanager
def lock(
    directory: str | os.PathLike[str], *, on_stale: Callable[[str], None] | None = None, enabled: bool = True
) -> Iterator[pathlib.Path | None]:
    """Hold the run lock of ``directory`` for the ``with`` block, so that one process at a time writes there.

    Both files are removed on exit (the record only if it is still this process's).

    Args:
      directory: created if missing.
      on_stale: called with a one-line message when the lock of a process that ended without releasing it
        (or an unreadable record) is taken over (None: ``warnings.warn``).
      enabled: False makes this a no-op: in a multi-process JAX job pass ``jax.process_index() == 0``, so
        that one process holds the lock for the job.

    Yields:
      The path of the holder's record, ``directory/rnnx.lock`` (None when not ``enabled``).

    Raises:
      CheckpointError: another process holds the lock (the message names its pid, host and start time), a
        process of another host may (which cannot be checked from here: the message says to delete the
        record if it is gone), or a running process of rnnx 0.1.0 holds it.

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
    path = directory / RECORD_FILE
    os_lock = filelock.FileLock(directory / OS_LOCK_FILE, timeout=0)  # a second writer is refused, not queued
    try:
        os_lock.acquire()
    except filelock.Timeout:
        raise CheckpointError(_in_use(path)) from None
    record = None
    try:
        stale = _stale(path)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "os_lock": OS_LOCK_FILE}
        record = json.dumps(holder).encode()
        _write(path, record)
        if stale is not None:
            (on_stale or (lambda message: warnings.warn(message, stacklevel=4)))(stale)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if record is not None and path.read_bytes() == record:  # replaced meanwhile: not ours to remove
                path.unlink()
        # Unlinked while still held, so the directory is left as it was found: a process that opened the
        # file meanwhile finds it unlinked once it gets the OS lock, and filelock does not count it as held.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os_lock.lock_file)
        os_lock.release()


def _holder(path: pathlib.Path) -> dict | None:
    """The record at ``path`` with its pid an int; None if it is unreadable. Raises FileNotFoundError."""
    try:
        holder = json.loads(path.read_bytes())
        return holder | {"pid": int(holder["pid"]), "host": str(holder["host"]), "started": holder["started"]}
    except (ValueError, TypeError, KeyError):
        return None


def _held_by(path: pathlib.Path, holder: dict) -> str:
    return (
        f"{path.parent} is in use by process {holder['pid']} on {holder['host']} since {holder['started']} "
        f"(lock file {path})"
    )


def _in_use(path: pathlib.Path) -> str:
    """The refusal while another process holds the OS lock."""
    try:
        holder = _holder(path)
    except FileNotFoundError:  # it has the OS lock but has not written its record yet
        holder = None
    if holder is None:
        return f"{path.parent} is in use by another process (lock file {path.parent / OS_LOCK_FILE}); wait for it"
    return f"{_held_by(path, holder)}; wait for it to finish or stop it"


def _stale(path: pathlib.Path) -> str | None:
    """With the OS lock held: None if there is no record, else the message for taking it over. Raises
    :class:`CheckpointError` where the record's holder may still run (see the module docstring)."""
    try:
        holder = _holder(path)
    except FileNotFoundError:
        return None
    if holder is None:
        return f"took over the unreadable lock file {path}"
    pid, host, started = holder["pid"], holder["host"], holder["started"]
    if host != socket.gethostname():
        raise CheckpointError(
            f"{_held_by(path, holder)}; a process on another host cannot be checked from here: if it is gone, "
            f"delete {path}"
        )
    if "os_lock" not in holder:
        return _legacy_holder(path, holder)
    # We hold the OS lock, which the kernel released when the recorded process ended: whatever runs under
    # that pid now (pid reuse, this very process), it is not the holder.
    return (
        f"took over the stale lock of process {pid} on {host}, started {started}, which ended without releasing "
        f"it ({path})"
    )


def _legacy_holder(path: pathlib.Path, holder: dict) -> str:
    """A record of rnnx 0.1.0's lock, whose holder takes no OS lock: stale only if its pid is gone."""
    pid, host, started = holder["pid"], holder["host"], holder["started"]
    if pid <= 0:  # os.kill(0 or -n, 0) would ask about process groups
        return f"took over the lock file {path} holding the invalid pid {pid}"
    if pid != os.getpid() and _running(pid):  # this process is not rnnx 0.1.0: its own pid there is reused
        raise CheckpointError(f"{_held_by(path, holder)}; wait for it to finish or stop it")
    return f"took over the stale lock of process {pid} on {host}, started {started} and no longer running ({path})"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        pass
    return True


def _write(path: pathlib.Path, content: bytes) -> None:
    """``path`` holding ``content``, replaced atomically: a reader never sees half a record."""
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    scratch.write_bytes(content)
    os.replace(scratch, path)


__all__ = ["OS_LOCK_FILE", "RECORD_FILE", "lock"]
