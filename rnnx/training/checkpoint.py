"""Save and restore params, optimizer state and NNX modules with orbax-checkpoint, bit-exactly and verified.

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
- :func:`lock`: one process at a time per directory.

Atomicity comes from orbax: it writes into ``<name>.orbax-checkpoint-tmp*`` and renames the directory to
``<name>`` only after every item is complete, so an interrupted save is never taken for a checkpoint.
Just before that rename orbax (0.12) writes ``<name>/commit_success.txt``, but on a local disk it never
checks it (it trusts the rename; on GCS the file is the commit). A directory of this format without it was
not written whole (e.g. a partial copy), so :func:`restore` and :func:`restore_step` refuse it as damaged.
Checkpoints of the first format (``rnnx-checkpoint/1``, without checksums) are still read, unverified.

What orbax itself catches, found by damaging a step (orbax 0.12, OCDBT on a local disk):
``state/manifest.ocdbt`` deleted, an array file under ``state/ocdbt.process_0/d/`` deleted or truncated
(TensorStore reports ``NOT_FOUND``, ``OUT_OF_RANGE`` or a truncated zstd stream). Not needed when
restoring onto ``like``: ``state/_METADATA``, ``state/_sharding``, ``state/array_metadatas/``,
``state/ocdbt.process_0/manifest.ocdbt``, ``_CHECKPOINT_METADATA``. Caught only by the checksums: bytes
overwritten inside an array file, which orbax reads back silently as other values (unless they break a
zstd block: incompressible arrays are stored raw).

``state`` may be any pytree of arrays (params, optax states, step counters) and, at its top level or
nested in dicts, ``flax.nnx`` modules and optimizers, saved as ``nnx.state(obj)`` and restored in place.

>>> import tempfile, jax, optax, rnnx
>>> net = rnnx.stacked(rnnx.gru(4))
>>> params = net.init(jax.random.key(0), 3)
>>> state = {"params": params, "opt": optax.adam(1e-3).init(params)}
>>> path = rnnx.training.checkpoint.save(tempfile.mkdtemp() + "/step_1", state, net=net)
>>> restored = rnnx.training.checkpoint.restore(path, state, net=net)
>>> bool(jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), restored, state)))
True
"""

import contextlib
import datetime
import gc
import hashlib
import json
import logging
import os
import pathlib
import socket
import sys
import time
import types
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import jax
import numpy as np

if TYPE_CHECKING:
    import orbax.checkpoint as ocp  # imported where used: `import rnnx` stays quick

_FORMAT = "rnnx-checkpoint/2"  # /2 added the checksums, the extra record and the commit-file check
_FORMATS = ("rnnx-checkpoint/1", _FORMAT)
_ITEMS = ("rnnx", "state")
_COMMIT_FILE = "commit_success.txt"  # orbax's atomicity_types.COMMIT_SUCCESS_FILE
_LOCK_FILE = "rnnx.lock"
_REASON_CHARS = 200


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (a file missing, truncated or altered) or a directory in use.

    The message is one line: the directory and what failed. Another architecture is a :class:`ValueError`.
    """


def architecture(net) -> dict:
    """A JSON description of a :class:`rnnx.Stack` or an ``rnnx.nn`` module: what must match to restore.

    >>> import rnnx
    >>> rnnx.training.checkpoint.architecture(rnnx.stacked(rnnx.lstm(8), 2))["cell"]
    'lstm'
    """
    from rnnx.core.stack import Stack

    net = getattr(net, "net", net)
    if not isinstance(net, Stack):
        raise TypeError(f"net must be an rnnx.Stack or an rnnx.nn module, received {type(net).__name__}")
    described = {
        "cell": net.cell.name,
        **net.cell.config,
        "num_layers": net.num_layers,
        "bidirectional": net.bidirectional,
        "dropout": net.dropout,
        "time_major": net.time_major,
    }
    return json.loads(json.dumps(described, default=repr))  # tuples -> lists, as they come back from disk


def save(directory, state, *, net=None, force: bool = False) -> pathlib.Path:
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


def restore(directory, like, *, net=None):
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


def manager(directory, *, max_to_keep: int | None = None, read_only: bool = False) -> "ocp.CheckpointManager":
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
    absl = logging.getLogger("absl")
    level = absl.level
    if read_only:  # orbax warns that the directory is read only: asked for, so no news
        absl.setLevel(logging.ERROR)
    try:
        return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options, item_names=_ITEMS)
    finally:
        absl.setLevel(level)


def save_step(manager: "ocp.CheckpointManager", step: int, state, *, net=None, extra: dict | None = None) -> None:
    """Write ``state`` as step ``step`` of ``manager`` (see :func:`save` for ``state`` and ``net``).

    Args:
      extra: a JSON-serialisable dict stored beside the arrays (e.g. an evaluation history), read back by
        :func:`read_extra` and :func:`restore_latest`.
    """
    manager.save(step, args=_save_args(state, net, extra), force=True)


def restore_step(manager: "ocp.CheckpointManager", step: int, like, *, net=None):
    """Read step ``step`` of ``manager`` into the structure of ``like``, verifying it (see :func:`restore`).

    Raises:
      FileNotFoundError: there is no step ``step``.
      CheckpointError: the step is damaged: an item or orbax's commit file missing, a file unreadable, or a
        checksum mismatch.
      ValueError: the step holds another architecture, or arrays of other shapes or dtypes.
    """
    return _restore_step(manager, step, like, net)[0]


def read_extra(manager: "ocp.CheckpointManager", step: int) -> dict:
    """The ``extra`` dict that :func:`save_step` stored with step ``step`` ({} if none); reads only the JSON.

    Raises:
      CheckpointError: the JSON record is missing or unreadable.
    """
    record = _read_record(lambda args: manager.restore(step, args=args), _step_path(manager, step))
    return record.get("extra") or {}


def restore_latest(
    manager: "ocp.CheckpointManager", like, *, net=None, on_damaged: Callable[[str], None] | None = None
) -> "tuple[int, object, dict] | None":
    """Restore the newest step of ``manager`` that reads and verifies, falling back past damaged ones.

    Args:
      manager: from :func:`manager`.
      like, net: as for :func:`restore`.
      on_damaged: called with a one-line message for each damaged step passed over for an older one
        (None: ``warnings.warn``); a damaged checkpoint is never skipped silently.

    Returns:
      None when ``manager`` has no complete step, else ``(step, state, extra)``: the step restored, ``like``
      filled from it and its ``extra`` record ({} if none).

    Raises:
      CheckpointError: every step is damaged; the message names each directory and why, and how to start
        afresh.
      ValueError: a step holds another architecture (raised at once: a user error, not damage).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    report = on_damaged or (lambda message: warnings.warn(message, stacklevel=3))
    failures = []
    for step in steps:
        try:
            state, record = _restore_step(manager, step, like, net)
        except CheckpointError as error:
            failures.append(str(error))
            if step != steps[-1]:
                report(f"{error}; falling back to an older one")
            continue
        return step, state, record.get("extra") or {}
    directory = pathlib.Path(manager.directory)
    failures = [failure.replace(f"checkpoint {directory}/", "") for failure in failures]  # named once
    raise CheckpointError(
        f"no usable checkpoint in {directory}: {'; '.join(failures)}; delete {directory} to start afresh"
    )


def prune(manager: "ocp.CheckpointManager", *, keep: int, protect: Iterable[int] = ()) -> list[int]:
    """Delete every step of ``manager`` but the newest ``keep`` and those in ``protect``; return those deleted.

    >>> import tempfile, jax.numpy as jnp, rnnx
    >>> with rnnx.training.checkpoint.manager(tempfile.mkdtemp()) as m:
    ...     for step in (1, 2, 3, 4):
    ...         rnnx.training.checkpoint.save_step(m, step, {"w": jnp.zeros(2)})
    ...     rnnx.training.checkpoint.prune(m, keep=2, protect=[1]), m.all_steps()
    ([2], [1, 3, 4])
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, received {keep}")
    protected = set(protect)
    doomed = [step for step in sorted(manager.all_steps(), reverse=True)[keep:] if step not in protected]
    for step in doomed:
        manager.delete(step)
    return sorted(doomed)


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


def _save_args(state, net, extra) -> "ocp.args.Composite":
    import orbax.checkpoint as ocp

    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a JSON-serialisable dict or None, received {type(extra).__name__}")
    arrays = _to_arrays(state)
    meta = {
        "format": _FORMAT,
        "architecture": _architectures(state, net),
        "arrays": _signature(arrays),
        "checksums": _checksums(arrays),
    }
    if extra is not None:
        try:
            meta["extra"] = json.loads(json.dumps(extra))
        except (TypeError, ValueError) as error:
            raise TypeError(f"extra must be JSON-serialisable: {error}") from None
    return ocp.args.Composite(state=ocp.args.StandardSave(arrays), rnnx=ocp.args.JsonSave(meta))


def _step_path(manager, step) -> pathlib.Path:
    return pathlib.Path(manager.directory) / f"step_{step}"


def _restore_step(manager, step, like, net):
    """``(like filled from step, its JSON record)``, after checking that the step is whole."""
    path = _step_path(manager, step)
    if not path.is_dir():
        raise FileNotFoundError(f"no step {step} in {manager.directory}: found steps {list(manager.all_steps())}")
    missing = [name for name in _ITEMS if not (path / name).is_dir()]
    if missing:
        raise _damaged(path, f"items {missing} missing")
    return _restore(lambda args: manager.restore(step, args=args), path, like, net)


def _restore(read, path, like, net):
    """``(like filled from the checkpoint that read(composite args) reads, its JSON record)``, verified."""
    import orbax.checkpoint as ocp

    meta = _read_record(read, path)
    arrays = _to_arrays(like)
    _check_architecture(path, meta["architecture"], _architectures(like, net))
    _check_signature(path, meta["arrays"], _signature(arrays))
    # Each array comes back with the sharding of its counterpart in `like` (a jax.Array's, or a
    # ShapeDtypeStruct's `sharding`), so a checkpoint written on one mesh restores onto another or onto one
    # device; orbax reads the global array, whatever topology wrote it.
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), _dtype(a), sharding=getattr(a, "sharding", None)), arrays
    )
    restored = _orbax_read(read, ocp.args.Composite(state=ocp.args.StandardRestore(target)), path, "state").state
    if meta["format"] == _FORMAT:  # rnnx-checkpoint/1 has no checksums: read unverified
        _verify(path, meta["checksums"], _checksums(restored))
    return _from_arrays(like, restored), meta  # after verifying: nnx objects in `like` change only now


def _read_record(read, path) -> dict:
    """The ``rnnx`` JSON item, checked to be a whole record of a known format."""
    import orbax.checkpoint as ocp

    meta = _orbax_read(read, ocp.args.Composite(rnnx=ocp.args.JsonRestore()), path, "rnnx/metadata").rnnx
    if not isinstance(meta, dict) or not {"format", "architecture", "arrays"} <= meta.keys():
        raise _damaged(path, f"rnnx/metadata is not an rnnx record: {_clip(repr(meta))}")
    if meta["format"] not in _FORMATS:
        raise ValueError(f"{path} is not an rnnx checkpoint: expected format {_FORMAT!r}, received {meta!r}")
    if meta["format"] == _FORMAT and not (path / _COMMIT_FILE).is_file():
        raise _damaged(path, f"{_COMMIT_FILE} missing: orbax writes it last, so this directory was not written whole")
    if meta["format"] == _FORMAT and not isinstance(meta.get("checksums"), dict):
        raise _damaged(path, "rnnx/metadata has no checksums")
    return meta


def _orbax_read(read, args, path, what):
    """``read(args)``, with a failure (orbax or TensorStore, often a traceback of hundreds of lines) turned
    into a one-line :class:`CheckpointError`."""
    with _orbax_noise_hidden():
        try:
            return read(args)
        except Exception as error:  # noqa: BLE001 - any failure to read a whole checkpoint is damage
            reason = f"cannot read {what}: {_first_line(error, path)}"
        _settle_abandoned_reads()
    raise _damaged(path, reason)


def _settle_abandoned_reads(timeout_s: float = 2.0) -> None:
    """Wait until the reads orbax abandoned when one failed have finished and are collected, so that what
    they print on the way out is printed while it is hidden. Orbax closes its event loop with them pending;
    TensorStore completes them later from its own threads."""
    gc.collect()
    pending = [weakref.ref(o) for o in gc.get_objects() if type(o) is types.CoroutineType and _from_orbax(o)]
    deadline = time.monotonic() + timeout_s
    while any(ref() is not None for ref in pending) and time.monotonic() < deadline:
        time.sleep(0.005)
        gc.collect()


@contextlib.contextmanager
def _orbax_noise_hidden():
    """Hide what orbax's abandoned reads print once one read fails, each with a TensorStore spec of sixty
    lines: its shard reader catches BaseException, so closing a pending read raises again ("Exception
    ignored in <coroutine ...>"); TensorStore's callbacks find the event loop closed; asyncio logs the
    other failed tasks ("Task exception was never retrieved"); and Python warns of coroutines never
    awaited. The hook and warning filter are process-wide for the duration of one failed read, the logging
    filter from then on; other output passes through."""
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


def _first_line(error: BaseException, path) -> str:
    """The innermost cause's first line, without TensorStore's spec and this checkpoint's path, clipped."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).splitlines()
    text = lines[0] if lines else ""
    text = text.split(" [tensorstore_spec")[0].replace(f"{path}/", "")
    return _clip(text or type(error).__name__)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _damaged(path, reason) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is damaged ({reason})")


def _checksums(arrays) -> dict:
    return {jax.tree_util.keystr(k): _digest(a) for k, a in jax.tree_util.tree_leaves_with_path(arrays)}


def _digest(a) -> str:
    if isinstance(a, jax.Array):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        if not a.is_fully_addressable:  # every process hashes the whole array, so all record the same
            from jax.experimental import multihost_utils

            a = multihost_utils.process_allgather(a, tiled=True)
    return hashlib.blake2b(np.ascontiguousarray(np.asarray(a)).tobytes(), digest_size=16).hexdigest()


def _verify(path, saved: dict, found: dict) -> None:
    differ = [key for key in saved if saved[key] != found.get(key)]
    if differ:
        raise _damaged(path, f"checksum mismatch in {differ[0]}: {len(differ)} of {len(saved)} arrays differ")


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


def _nnx():
    from flax import nnx  # imported where used: `import rnnx` stays quick

    return nnx


def _is_nnx_object(x) -> bool:
    return isinstance(x, _nnx().Pytree)


def _to_arrays(state):
    """``state`` with nnx objects replaced by their pure-dict state."""
    if _is_nnx_object(state):
        nnx = _nnx()
        return nnx.to_pure_dict(nnx.state(state))
    if isinstance(state, dict):
        return {k: _to_arrays(v) for k, v in state.items()}
    return state


def _from_arrays(like, restored):
    if _is_nnx_object(like):
        nnx = _nnx()
        current = nnx.state(like)
        nnx.replace_by_pure_dict(current, restored)
        nnx.update(like, current)
        return like
    if isinstance(like, dict):
        return {k: _from_arrays(v, restored[k]) for k, v in like.items()}
    return restored


def _architectures(state, net) -> dict:
    """``{path: architecture}`` for ``net`` (path ``""``) and every rnnx.nn module inside ``state``."""
    found = {} if net is None else {"": architecture(net)}

    def visit(node, prefix):
        if _is_nnx_object(node):
            from rnnx.nn import Recurrent

            for sub_path, module in _nnx().iter_modules(node):
                if isinstance(module, Recurrent):
                    found["/".join(map(str, (*prefix, *sub_path)))] = architecture(module)
        elif isinstance(node, dict):
            for k, v in node.items():
                visit(v, (*prefix, k))

    visit(state, ())
    return found


def _dtype(a):
    return a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype


def _signature(arrays) -> dict:
    leaves = jax.tree_util.tree_leaves_with_path(arrays)
    return {jax.tree_util.keystr(k): [list(np.shape(a)), str(_dtype(a))] for k, a in leaves}


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


def _check_architecture(path, saved: dict, expected: dict) -> None:
    for key in sorted(set(saved) & set(expected)):
        if saved[key] != expected[key]:
            diff = {k: (saved[key].get(k), expected[key].get(k)) for k in saved[key] | expected[key]}
            diff = {k: v for k, v in diff.items() if v[0] != v[1]}
            where = f" at {key!r}" if key else ""
            raise ValueError(
                f"{path} holds a different architecture{where}: (saved, expected) differ in {diff}; "
                f"saved {saved[key]}, expected {expected[key]}"
            )


def _check_signature(path, saved: dict, expected: dict) -> None:
    if saved == expected:
        return
    missing = sorted(set(saved) - set(expected))
    extra = sorted(set(expected) - set(saved))
    changed = {k: (saved[k], expected[k]) for k in sorted(set(saved) & set(expected)) if saved[k] != expected[k]}
    raise ValueError(
        f"{path} holds arrays that do not fit `like` (a different architecture or state layout): "
        + "; ".join(
            part
            for part in (
                f"only in the checkpoint: {missing[:5]}" if missing else "",
                f"only in `like`: {extra[:5]}" if extra else "",
                f"(saved, expected) [shape, dtype]: {dict(list(changed.items())[:5])}" if changed else "",
            )
            if part
        )
    )


__all__ = [
    "CheckpointError",
    "architecture",
    "lock",
    "manager",
    "prune",
    "read_extra",
    "restore",
    "restore_latest",
    "restore_step",
    "save",
    "save_step",
]
