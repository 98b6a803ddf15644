"""Save and restore params, optimizer state and NNX modules with orbax-checkpoint, bit-exactly.

A checkpoint is a directory holding two orbax items: ``state`` (the arrays) and ``rnnx`` (JSON: the
architecture of every recurrent net in it and the shape and dtype of every array). Restoring reads the
JSON first and refuses, with the differences spelled out, a checkpoint from another architecture.

- :func:`save` and :func:`restore`: one checkpoint directory;
- :func:`manager`, :func:`save_step` and :func:`restore_step`: an ``orbax.checkpoint.CheckpointManager``
  over ``step_<n>`` directories, as :func:`rnnx.training.fit` resumes from. The manager finds the latest
  complete step, keeps at most ``max_to_keep`` and skips interrupted saves.

Atomicity comes from orbax: it writes into ``<name>.orbax-checkpoint-tmp*`` and renames the directory to
``<name>`` only after every item is complete, so an interrupted save is never taken for a checkpoint.

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

import json
import pathlib
from typing import TYPE_CHECKING

import jax
import numpy as np

if TYPE_CHECKING:
    import orbax.checkpoint as ocp  # imported where used: `import rnnx` stays quick

_FORMAT = "rnnx-checkpoint/1"
_ITEMS = ("rnnx", "state")


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
    """Write ``state`` to ``directory`` atomically; return its absolute path.

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
        checkpointer.save(path, _save_args(state, net), force=force)
    return path


def restore(directory, like, *, net=None):
    """Read a checkpoint written by :func:`save` into the structure of ``like``.

    Args:
      directory: the path :func:`save` returned.
      like: a pytree shaped like the saved ``state`` (arrays or ``jax.ShapeDtypeStruct``s); ``flax.nnx``
        modules and optimizers in it are updated in place. Each array is restored with the sharding of its
        counterpart here (a ``jax.Array``'s or a ``ShapeDtypeStruct``'s ``sharding``), so a checkpoint saved
        on one mesh restores on another mesh or on one device.
      net: the :class:`rnnx.Stack` expected, checked against the recorded one.

    Returns:
      ``like`` with every array replaced by the saved one, bit for bit (dtypes included).

    Raises:
      FileNotFoundError: no complete checkpoint at ``directory`` (e.g. an interrupted save).
      ValueError: the checkpoint holds another architecture, or arrays of other shapes or dtypes.
    """
    import orbax.checkpoint as ocp

    path = _check_complete(pathlib.Path(directory).absolute())
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        return _restore(lambda args: checkpointer.restore(path, args), path, like, net)


def manager(directory, *, max_to_keep: int | None = None, read_only: bool = False) -> "ocp.CheckpointManager":
    """An ``orbax.checkpoint.CheckpointManager`` over ``directory/step_<n>``; use it in a ``with`` block.

    ``latest_step()`` is the newest complete step (None when there is none); interrupted saves are skipped.
    Saves are synchronous, so a checkpoint is complete when :func:`save_step` returns.

    Args:
      directory: where the step directories live; created on the first save unless ``read_only``.
      max_to_keep: keep the newest this many steps (None: all).
      read_only: only read; never create, write or delete.
    """
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        step_prefix="step",
        read_only=read_only,
        create=not read_only,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options, item_names=_ITEMS)


def save_step(manager: "ocp.CheckpointManager", step: int, state, *, net=None) -> None:
    """Write ``state`` as step ``step`` of ``manager`` (see :func:`save` for ``state`` and ``net``)."""
    manager.save(step, args=_save_args(state, net), force=True)


def restore_step(manager: "ocp.CheckpointManager", step: int, like, *, net=None):
    """Read step ``step`` of ``manager`` into the structure of ``like`` (see :func:`restore`)."""
    path = pathlib.Path(manager.directory) / f"step_{step}"
    return _restore(lambda args: manager.restore(step, args=args), path, like, net)


# ----------------------------------------------------------------------------------------------- helpers


def _save_args(state, net) -> "ocp.args.Composite":
    import orbax.checkpoint as ocp

    arrays = _to_arrays(state)
    meta = {"format": _FORMAT, "architecture": _architectures(state, net), "arrays": _signature(arrays)}
    return ocp.args.Composite(state=ocp.args.StandardSave(arrays), rnnx=ocp.args.JsonSave(meta))


def _restore(read, path, like, net):
    """``like`` filled from the checkpoint that ``read(composite args)`` reads, after checking its record."""
    import orbax.checkpoint as ocp

    meta = read(ocp.args.Composite(rnnx=ocp.args.JsonRestore())).rnnx
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{path} is not an rnnx checkpoint: expected format {_FORMAT!r}, received {meta!r}")
    arrays = _to_arrays(like)
    _check_architecture(path, meta["architecture"], _architectures(like, net))
    _check_signature(path, meta["arrays"], _signature(arrays))
    # Each array comes back with the sharding of its counterpart in `like` (a jax.Array's, or a
    # ShapeDtypeStruct's `sharding`), so a checkpoint written on one mesh restores onto another or onto one
    # device; orbax reads the global array, whatever topology wrote it.
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), _dtype(a), sharding=getattr(a, "sharding", None)), arrays
    )
    return _from_arrays(like, read(ocp.args.Composite(state=ocp.args.StandardRestore(target))).state)


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


__all__ = ["architecture", "manager", "restore", "restore_step", "save", "save_step"]
