"""The checkpoint record and its verification: what rnnx writes beside orbax's arrays, and the checks that a
checkpoint read back is whole, of the expected architecture, and bit for bit what was saved.

The record is orbax's JSON item ``rnnx``: the format, the architecture of every recurrent net in the state,
the shape, dtype and BLAKE2b checksum of every array, and the caller's ``extra`` dict. Objects that are not
pytrees of arrays (``flax.nnx`` modules and optimizers) enter through a :class:`StateConverter`, which the
layer that knows them registers (``rnnx.nnx_state``, registered by ``import rnnx``): training depends on
the core only.

What orbax itself catches, found by damaging a step (orbax 0.12, OCDBT on a local disk):
``state/manifest.ocdbt`` deleted, an array file under ``state/ocdbt.process_0/d/`` deleted or truncated
(TensorStore reports ``NOT_FOUND``, ``OUT_OF_RANGE`` or a truncated zstd stream). Not needed when
restoring onto ``like``: ``state/_METADATA``, ``state/_sharding``, ``state/array_metadatas/``,
``state/ocdbt.process_0/manifest.ocdbt``, ``_CHECKPOINT_METADATA``. Caught only by the checksums: bytes
overwritten inside an array file, which orbax reads back silently as other values (unless they break a
zstd block: incompressible arrays are stored raw).
"""

import hashlib
import json
import pathlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import jax
import numpy as np

from rnnx.core import Stack
from rnnx.training import orbax_quiet

if TYPE_CHECKING:
    import orbax.checkpoint as ocp  # imported where used: `import rnnx` stays quick

_T = TypeVar("_T")
_Read = Callable[[Any], Any]  # read(orbax composite args) -> the items read

FORMAT = "rnnx-checkpoint/2"  # /2 added the checksums, the extra record and the commit-file check
_FORMATS = ("rnnx-checkpoint/1", FORMAT)
ITEMS = ("rnnx", "state")
COMMIT_FILE = "commit_success.txt"  # orbax's atomicity_types.COMMIT_SUCCESS_FILE
_REASON_CHARS = 200


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (a file missing, truncated or altered) or a directory in use.

    The message is one line: the directory and what failed. Another architecture is a :class:`ValueError`.
    """


class CheckpointMismatch(ValueError):
    """A whole checkpoint of another architecture or state layout (a user error); one line: what differs."""


def architecture(net: object) -> dict[str, Any]:
    """A JSON description of a :class:`rnnx.Stack` or an ``rnnx.nn`` module: what must match to restore.

    >>> import rnnx
    >>> rnnx.training.checkpoint.architecture(rnnx.stacked(rnnx.lstm(8), 2))["cell"]
    'lstm'
    """
    net = getattr(net, "net", net)  # an rnnx.nn module wraps its Stack as .net
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


class StateConverter(NamedTuple):
    """How objects that are not pytrees of arrays enter a checkpoint, at the top of ``state`` or nested in
    dicts: ``owns(obj)``, whether this converter handles ``obj``; ``to_arrays(obj)``, its state as a pytree
    of arrays; ``update(obj, arrays) -> obj``, the object holding those arrays (in place, once every array is
    read and verified); ``nets(obj)``, ``(sub-path, net)`` of each recurrent net inside it, for
    :func:`architecture`."""

    owns: Callable[[Any], bool]
    to_arrays: Callable[[Any], Any]
    update: Callable[[Any, Any], Any]
    nets: Callable[[Any], Iterable[tuple[tuple, Any]]]


# The converters registered, consulted in order. Module-level because the layer that knows the objects
# (above training) registers its converter once, at import.
_CONVERTERS: list[StateConverter] = []


def register_state_converter(converter: StateConverter) -> None:
    """Let :func:`rnnx.training.checkpoint.save` and ``restore`` take the objects ``converter`` owns."""
    if converter not in _CONVERTERS:
        _CONVERTERS.append(converter)


def save_args(state: Any, net: object, extra: dict[str, Any] | None) -> "ocp.args.Composite":
    """orbax's arguments to write ``state`` and its record."""
    import orbax.checkpoint as ocp

    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a JSON-serialisable dict or None, received {type(extra).__name__}")
    arrays = _to_arrays(state)
    meta = {
        "format": FORMAT,
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


def restore(read: _Read, path: pathlib.Path, like: _T, net: object) -> tuple[_T, dict[str, Any]]:
    """``(like filled from the checkpoint that read(composite args) reads, its record)``, verified."""
    import orbax.checkpoint as ocp

    meta = read_record(read, path)
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
    if meta["format"] == FORMAT:  # rnnx-checkpoint/1 has no checksums: read unverified
        _verify(path, meta["checksums"], _checksums(restored))
    return _from_arrays(like, restored), meta  # after verifying: objects in `like` change only now


def read_record(read: _Read, path: pathlib.Path) -> dict[str, Any]:
    """The ``rnnx`` JSON item, checked to be a whole record of a known format."""
    import orbax.checkpoint as ocp

    meta = _orbax_read(read, ocp.args.Composite(rnnx=ocp.args.JsonRestore()), path, "rnnx/metadata").rnnx
    if not isinstance(meta, dict) or not {"format", "architecture", "arrays"} <= meta.keys():
        raise damaged(path, f"rnnx/metadata is not an rnnx record: {_clip(repr(meta))}")
    if meta["format"] not in _FORMATS:
        raise CheckpointMismatch(f"{path} is not an rnnx checkpoint: expected format {FORMAT!r}, received {meta!r}")
    if meta["format"] == FORMAT and not (path / COMMIT_FILE).is_file():
        raise damaged(path, f"{COMMIT_FILE} missing: orbax writes it last, so this directory was not written whole")
    if meta["format"] == FORMAT and not isinstance(meta.get("checksums"), dict):
        raise damaged(path, "rnnx/metadata has no checksums")
    return meta


def damaged(path: pathlib.Path, reason: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is damaged ({reason})")


def _orbax_read(read, args, path, what):
    """``read(args)``, with a failure (orbax or TensorStore, often a traceback of hundreds of lines) turned
    into a one-line :class:`CheckpointError`."""
    with orbax_quiet.hidden():
        try:
            return read(args)
        except Exception as error:  # noqa: BLE001 - any failure to read a whole checkpoint is damage
            reason = f"cannot read {what}: {_first_line(error, path)}"
        orbax_quiet.settle_abandoned_reads()
    raise damaged(path, reason)


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
        raise damaged(path, f"checksum mismatch in {differ[0]}: {len(differ)} of {len(saved)} arrays differ")


def _converter(node) -> StateConverter | None:
    return next((c for c in _CONVERTERS if c.owns(node)), None)


def _to_arrays(state):
    """``state`` with the objects a converter owns replaced by their arrays."""
    if (converter := _converter(state)) is not None:
        return converter.to_arrays(state)
    if isinstance(state, dict):
        return {k: _to_arrays(v) for k, v in state.items()}
    return state


def _from_arrays(like, restored):
    if (converter := _converter(like)) is not None:
        return converter.update(like, restored)
    if isinstance(like, dict):
        return {k: _from_arrays(v, restored[k]) for k, v in like.items()}
    return restored


def _architectures(state, net) -> dict:
    """``{path: architecture}`` for ``net`` (path ``""``) and every recurrent net inside objects in ``state``."""
    found = {} if net is None else {"": architecture(net)}

    def visit(node, prefix):
        if (converter := _converter(node)) is not None:
            for sub_path, module in converter.nets(node):
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


def _check_architecture(path, saved: dict, expected: dict) -> None:
    for key in sorted(set(saved) & set(expected)):
        if saved[key] != expected[key]:
            diff = {k: (saved[key].get(k), expected[key].get(k)) for k in saved[key] | expected[key]}
            diff = {k: v for k, v in diff.items() if v[0] != v[1]}
            where = f" at {key!r}" if key else ""
            raise CheckpointMismatch(
                f"{path} holds a different architecture{where}: (saved, expected) differ in {diff}; "
                f"saved {saved[key]}, expected {expected[key]}"
            )


def _check_signature(path, saved: dict, expected: dict) -> None:
    if saved == expected:
        return
    missing = sorted(set(saved) - set(expected))
    extra = sorted(set(expected) - set(saved))
    changed = {k: (saved[k], expected[k]) for k in sorted(set(saved) & set(expected)) if saved[k] != expected[k]}
    raise CheckpointMismatch(
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
    "COMMIT_FILE",
    "FORMAT",
    "ITEMS",
    "CheckpointError",
    "CheckpointMismatch",
    "StateConverter",
    "architecture",
    "damaged",
    "read_record",
    "register_state_converter",
    "restore",
    "save_args",
]
