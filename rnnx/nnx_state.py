"""flax.nnx modules and optimizers in rnnx checkpoints: their state as pure dicts of arrays, restored in
place, and the architectures of the ``rnnx.nn`` modules inside them.

:mod:`rnnx.training` builds on the core only and does not know flax.nnx, so this module, beside
:mod:`rnnx.nn`, hands its checkpoints a :class:`rnnx.training.checkpoint.StateConverter` (:data:`CONVERTER`),
which ``import rnnx`` registers. It never imports flax.nnx or :mod:`rnnx.nn` itself: no nnx object exists
before flax.nnx is imported, nor an ``rnnx.nn`` module before :mod:`rnnx.nn` is, so it looks them up among
the modules already loaded, and ``import rnnx`` stays quick.
"""

import sys

from rnnx.training.checkpoint import StateConverter


def _loaded(name: str):
    return sys.modules.get(name)


def owns(obj) -> bool:
    """Whether ``obj`` is a flax.nnx object (a module, an optimizer): one this converter handles."""
    nnx = _loaded("flax.nnx")
    return nnx is not None and isinstance(obj, nnx.Pytree)


def to_arrays(obj):
    """``obj``'s whole state (params, optimiser state, RNG streams) as a pure dict of arrays."""
    nnx = _loaded("flax.nnx")
    return nnx.to_pure_dict(nnx.state(obj))


def update(obj, arrays):
    """``obj``, its state replaced in place by ``arrays`` (a pure dict of :func:`to_arrays`'s structure)."""
    nnx = _loaded("flax.nnx")
    current = nnx.state(obj)
    nnx.replace_by_pure_dict(current, arrays)
    nnx.update(obj, current)
    return obj


def nets(obj) -> list:
    """``(sub-path, module)`` of every ``rnnx.nn`` recurrent module inside ``obj``: their architectures go
    into the checkpoint's record."""
    rnnx_nn = _loaded("rnnx.nn")
    if rnnx_nn is None:
        return []
    return [(path, m) for path, m in _loaded("flax.nnx").iter_modules(obj) if isinstance(m, rnnx_nn.Recurrent)]


CONVERTER = StateConverter(owns=owns, to_arrays=to_arrays, update=update, nets=nets)

__all__ = ["CONVERTER", "nets", "owns", "to_arrays", "update"]
