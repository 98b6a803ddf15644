"""Quieting orbax-checkpoint, so that a damaged checkpoint costs the user one line instead of pages.

Why this exists: written against orbax-checkpoint 0.12 (0.12.8, OCDBT on a local disk). When one read of a
checkpoint fails, orbax closes its event loop with the other reads still pending, and TensorStore
completes them later from its own threads. Each abandoned read then prints a TensorStore spec of about
sixty lines: its shard reader catches BaseException, so closing the pending read raises again ("Exception
ignored in <coroutine ...>"); TensorStore's callbacks find the event loop closed; asyncio logs the other
failed tasks ("Task exception was never retrieved"); and Python warns of coroutines never awaited. The
failure itself is reported by rnnx as one :class:`rnnx.training.checkpoint.CheckpointError`. Recheck these
filters against a new orbax: they match its file names and messages, and drop nothing else.

- :func:`hidden`: the ``with`` block around one orbax read;
- :func:`settle_abandoned_reads`: after a failed read, wait until what it abandoned has printed (hidden);
- :func:`read_only_quiet`: orbax's warning that a read-only manager is read only, which was asked for;
- :func:`failed_write_quiet` and :func:`os_error`: a failed write (a full disk, a read-only one) costs
  hundreds of lines the same way, with absl's error log of each of orbax's writer threads (tracebacks
  included) on top; the failure itself comes as TensorStore's ``ValueError`` with ``[os_error_code=N]``,
  which :func:`os_error` turns into the ``OSError`` it is.
"""

import contextlib
import errno
import gc
import logging
import os
import re
import sys
import time
import types
import warnings
import weakref
from collections.abc import Iterator


@contextlib.contextmanager
def hidden() -> Iterator[None]:
    """Hide what orbax's abandoned reads print (see the module docstring). The hook and warning filter are
    process-wide for the duration of the block, the logging filter from then on; other output passes."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None if _orbax_noise(unraisable) else previous(unraisable)
    # A future may be collected long after (at the next garbage collection, or at exit), so this filter
    # stays once added; it drops only asyncio's reports of abandoned orbax/TensorStore reads.
    asyncio_log = logging.getLogger("asyncio")
    if _not_an_orbax_task not in asyncio_log.filters:
        asyncio_log.addFilter(_not_an_orbax_task)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"coroutine .* was never awaited", RuntimeWarning)
            yield
    finally:
        sys.unraisablehook = previous


def settle_abandoned_reads(timeout_s: float = 2.0) -> None:
    """Wait until the reads orbax abandoned when one failed have finished and are collected, so that what
    they print on the way out is printed while it is :func:`hidden`."""
    gc.collect()
    pending = [weakref.ref(o) for o in gc.get_objects() if type(o) is types.CoroutineType and _from_orbax(o)]
    deadline = time.monotonic() + timeout_s
    while any(ref() is not None for ref in pending) and time.monotonic() < deadline:
        time.sleep(0.005)
        gc.collect()


@contextlib.contextmanager
def read_only_quiet(read_only: bool) -> Iterator[None]:
    """Inside the block, absl drops orbax's warning that a ``read_only`` manager's directory is read only."""
    absl = logging.getLogger("absl")
    level = absl.level
    if read_only:
        absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


@contextlib.contextmanager
def failed_write_quiet() -> Iterator[None]:
    """Around one orbax save: if it fails, what its abandoned writes print is hidden (see the module
    docstring); the failure itself is raised. absl's reports of failed writer threads are dropped from then
    on, since those threads may log after the block, as is its warning that an interrupted save's directory
    is replaced."""
    absl = logging.getLogger("absl")
    if _not_a_failed_writer_thread not in absl.filters:
        absl.addFilter(_not_a_failed_writer_thread)
    with hidden():
        try:
            yield
        except Exception:
            settle_abandoned_reads()
            raise


def os_error(error: BaseException, path: object) -> OSError | None:
    """The ``OSError`` that a TensorStore error inside orbax reports (``[os_error_code='28']``: no space left on
    device), naming ``path``; None when it reports none."""
    while error.__cause__ is not None and not isinstance(error, OSError):
        error = error.__cause__
    if isinstance(error, OSError):
        return error
    found = re.search(r"os_error_code='?(\d+)", str(error))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code) if code in errno.errorcode else str(error).splitlines()[0], str(path))


def _not_a_failed_writer_thread(record: logging.LogRecord) -> bool:
    """Also drops the warning that a save replaces the unfinished directory of an interrupted one: the run
    lock makes sure its writer is gone, so that is what a resumed run is meant to do."""
    message = record.getMessage()
    replaced = "Removing existing directory since it is not finalized" in message
    return not (replaced or "_SignalingThread.run() raised an exception" in message)


def _orbax_noise(unraisable) -> bool:
    closed_loop = isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"
    return closed_loop or _from_orbax(unraisable.object)


def _from_orbax(coroutine) -> bool:
    code = getattr(coroutine, "cr_code", None)
    return code is not None and "orbax" in code.co_filename


def _not_an_orbax_task(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    abandoned = message.startswith(("Task exception was never retrieved", "Future exception was never retrieved"))
    return not (abandoned and ("orbax" in message or "tensorstore_spec" in message))


__all__ = ["failed_write_quiet", "hidden", "os_error", "read_only_quiet", "settle_abandoned_reads"]
