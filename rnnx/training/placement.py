"""Placement across devices for data-parallel :func:`rnnx.training.fit`: batches split over a mesh's
``"data"`` axis, everything else replicated.

On a mesh over the devices of several processes, each batch is this process's slice of the global batch,
assembled with ``jax.make_array_from_process_local_data``; on one process's devices the whole batch is put
with ``jax.device_put``.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnx.training.loop import FitState

DATA_AXIS = "data"


class Placement:
    """Where :func:`rnnx.training.fit` puts things on a data-parallel ``data_mesh``."""

    def __init__(self, mesh: jax.sharding.Mesh) -> None:
        if DATA_AXIS not in mesh.axis_names:
            raise ValueError(
                f"data_mesh must have an axis named {DATA_AXIS!r}, received axes {tuple(mesh.axis_names)} (the batch "
                "is split over it)"
            )
        self.devices = mesh.shape[DATA_AXIS]
        self.processes = len({d.process_index for d in mesh.devices.flat})  # that feed the mesh
        self.split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))
        self.copy = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def batch(self, tree: Any, name: str = "batch") -> Any:
        """``tree`` split along its leading (batch) axis, after checking that it divides over the devices."""
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            size = jnp.shape(leaf)[0] if jnp.ndim(leaf) else None
            if size is None or (size * self.processes) % self.devices:
                where = f"{name}{jax.tree_util.keystr(path)}"
                received = "a scalar" if size is None else f"batch size {size}"
                if size is not None and self.processes > 1:
                    received += f" per process ({size * self.processes} in all over {self.processes} processes)"
                raise ValueError(
                    f"{received} does not divide over the {self.devices} devices of mesh axis {DATA_AXIS!r} "
                    f"(at {where})"
                )
        if self.processes == 1:
            return jax.device_put(tree, self.split)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.split, np.asarray(x)), tree)

    def replicated(self, tree: Any) -> Any:
        if self.processes == 1:
            return jax.device_put(tree, self.copy)
        # every process holds the same values (same seed); each puts them on its own devices of the mesh
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.copy, np.asarray(x)), tree)

    def state(self, state: FitState) -> FitState:
        train = state.train
        train = self.replicated(train._replace(carry=None))._replace(carry=train.carry)
        return FitState(train, *self.replicated(tuple(state[1:])))


__all__ = ["DATA_AXIS", "Placement"]
