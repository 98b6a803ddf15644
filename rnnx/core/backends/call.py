"""What the resolver (:mod:`rnnx.core.backends.resolver`) knows of a call, and the options a backend takes.

A :class:`Call` describes one ``rnnx.unroll`` (a one-layer, one-direction stack) or ``rnnx.Stack.apply``:
enough for each backend to say whether it computes exactly that function, and for ``"auto"`` to look up
which backend was measured fastest on its shape.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from rnnx.core.cells import Cell
from rnnx.core.typing import StackParams


@dataclasses.dataclass(frozen=True)
class Call:
    """One call to run ``cell`` over ``xs``: the arguments that decide which backends can run it.

    Attributes:
      cell: the cell of every layer and direction.
      params: stack params, a list over layers of lists over directions (``[[params]]`` for ``unroll``).
      xs: the inputs, ``(*b, t, d)`` or ``(t, *b, d)`` if ``time_major``.
      time_major: the layout of ``xs``.
      num_layers, bidirectional: the stack's shape (1 and False for ``unroll``).
      reverse: a lone reverse direction (``unroll(..., reverse=True)``).
      mask, reset: whether a gap mask or resets were given.
      initial_carry: the initial carry as given (None: the cells' default).
      dropout: the rate of dropout between layers where it is active (a key was given), else 0.
      parallel: ``unroll``'s ``parallel`` after its check (True: the parallel scan).
      mesh: ``unroll``'s ``seq_mesh``, or None.
      platform: where the call runs; None: the platform of ``xs``, else ``jax.default_backend()``.
    """

    cell: Cell
    params: StackParams
    xs: Any
    time_major: bool = False
    num_layers: int = 1
    bidirectional: bool = False
    reverse: bool = False
    mask: bool = False
    reset: bool = False
    initial_carry: Any = None
    dropout: float = 0.0
    parallel: bool = False
    mesh: Mesh | None = None
    platform: str | None = None

    @property
    def where(self) -> str:
        """The platform the call runs on: ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"tpu"``, ..."""
        return self.platform if self.platform is not None else platform_of(self.xs)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        shape = jnp.shape(self.xs)
        return tuple(shape[1:-1] if self.time_major else shape[:-2])

    @property
    def batch(self) -> int:
        """``B``: the batch axes flattened."""
        return math.prod(self.batch_shape)

    @property
    def steps(self) -> int:
        """``T``."""
        return jnp.shape(self.xs)[0 if self.time_major else -2]

    @property
    def dtype(self) -> jnp.dtype:
        """The compute dtype: the dtype of the cell's carry."""
        return jnp.dtype(jax.tree.leaves(self.cell.default_carry(self.params[0][0]))[0].dtype)


@dataclasses.dataclass(frozen=True)
class Options:
    """The knobs of the scan family, as ``rnnx.unroll`` takes them; other backends ignore them.

    ``unroll``, ``remat`` and ``hoist`` are the sequential scan's, ``remat`` also the parallel scan's,
    ``mesh`` (``unroll``'s ``seq_mesh``) the sequence-parallel scan's, and ``kernel`` the fused kernels' layout
    (:class:`rnnx.core.backends.pallas.Tuning`; None: its defaults).
    """

    unroll: int = 1
    remat: bool = False
    hoist: bool | None = None
    mesh: Mesh | None = None
    kernel: Any = None


def platform_of(xs) -> str:
    """The platform a concrete array lives on; for a tracer or a non-array, the default device's."""
    if isinstance(xs, jax.Array) and not isinstance(xs, jax.core.Tracer):
        return next(iter(xs.devices())).platform
    device = _default_device()
    if isinstance(device, str):
        return device
    return device.platform if device is not None else jax.default_backend()


def device_kind_of(xs) -> str:
    """The kind of device a concrete array lives on (``"NVIDIA H100 80GB HBM3"``); for a tracer, the default
    device's."""
    if isinstance(xs, jax.Array) and not isinstance(xs, jax.core.Tracer):
        return next(iter(xs.devices())).device_kind
    device = _default_device()
    return device.device_kind if device is not None and not isinstance(device, str) else jax.devices()[0].device_kind


def _default_device():
    """``jax.default_device``'s setting: None, a device, or a platform name."""
    return getattr(jax.config, "jax_default_device")  # noqa: B009 - not in jax's type stubs


def is_vmapped(tree) -> bool:
    """Whether any leaf is a ``jax.vmap`` tracer, at any nesting of traces."""
    # By name, so as not to import a private JAX module.
    return any(
        isinstance(x, jax.core.Tracer) and any(t.__name__ == "BatchTracer" for t in type(x).__mro__)
        for x in jax.tree.leaves(tree)
    )


__all__ = ["Call", "Options", "device_kind_of", "is_vmapped", "platform_of"]
