"""What each process of a data-parallel run feeds and evaluates.

With a ``data_mesh`` over the devices of several processes, every process runs the whole experiment (``fit``'s
steps and orbax's saves are collective, and the same work keeps them in step up to their exit), feeding
only its slice of each global batch; process 0 alone writes the run's files and says anything.
"""

from typing import TypeVar

import jax
import numpy as np

from rnnx.apps import data
from rnnx.training import distributed

_Tree = TypeVar("_Tree")


def lanes(batch_size: int, data_mesh: jax.sharding.Mesh | None) -> slice:
    """The rows of every global batch this process feeds: process ``p`` of the ``n`` whose devices make up
    ``data_mesh`` (grouped by process, in process order, as ``jax.devices()`` lists them) feeds rows
    ``[p * batch_size // n, (p + 1) * batch_size // n)``; all of them without a mesh."""
    processes = [] if data_mesh is None else sorted({d.process_index for d in data_mesh.devices.flat})
    if len(processes) <= 1:
        return slice(0, batch_size)
    rows = distributed.process_shard(batch_size, index=processes.index(jax.process_index()), count=len(processes))
    return slice(rows.start, rows.stop)


def process_windows(ids: np.ndarray, batch_size: int, window: int, lanes: slice) -> np.ndarray:
    """``data.stream_windows(ids, batch_size=batch_size, window=window)[:, lanes]``, cut from the part of the
    stream those lanes read and nothing else, so a process holds only its own training windows."""
    lane = (len(ids) - 1) // batch_size
    part = ids[lanes.start * lane : lanes.stop * lane + 1]
    return data.stream_windows(part, batch_size=lanes.stop - lanes.start, window=window)


def here(params: _Tree) -> _Tree:
    """``params`` on one of this process's devices. ``fit`` hands evaluation params replicated over the mesh;
    evaluating this copy is the one-device computation, with the same metrics in every process, and needs
    no other process (which a computation on arrays spanning several processes would)."""
    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, params)


__all__ = ["here", "lanes", "process_windows"]
