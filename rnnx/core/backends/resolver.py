"""Which backend runs a call: the one resolver that ``rnnx.unroll`` and ``rnnx.Stack.apply`` ask.

The backends, one module each, all computing the same function:

============  ==========================================================================  ======================
name          what runs                                                                   module
============  ==========================================================================  ======================
``scan``      ``lax.scan`` of ``cell.step``                                              ``backends.scan``
``parallel``  one associative scan of a linear recurrence (minGRU, minLSTM)               ``backends.parallel_scan``
``sharded``   the parallel scan with time split over ``seq_mesh=``                        ``backends.sharded``
``cudnn``     cuDNN's fused LSTM, a whole stack in one call (``jax.experimental.rnn``)    ``backends.cudnn``
``pallas``    fused Pallas kernels that loop over time on chip                            ``backends.pallas``
============  ==========================================================================  ======================

``backend=`` takes ``"auto"``, ``"scan"``, ``"cudnn"`` or ``"pallas"``. ``"scan"`` names the scan family:
the parallel scan for parallel-scan cells (``parallel=``), sharded with ``seq_mesh=``, the sequential scan
otherwise. ``"cudnn"`` and ``"pallas"`` run where they compute the call exactly and raise a ValueError
naming the reason elsewhere; nothing falls back silently from an explicit choice. ``"auto"`` runs what the
committed measurements (:mod:`rnnx.core.backends.table`) found fastest on this device kind, cell, dtype and
shape, among the backends that can run the call, and the scan family where there is no measurement: it is
never slower than the scan where measured, and never picks the kernels' interpreter off a GPU.

Adding a backend: one module with ``NAME``, ``unsupported(call)`` and ``run(...)``, and one line in
:data:`MODULES`.
"""

from rnnx.core.backends import cudnn, pallas, parallel_scan, scan, sharded, table
from rnnx.core.backends.call import Call, device_kind_of

MODULES = {module.NAME: module for module in (scan, parallel_scan, sharded, cudnn, pallas)}
"""Every backend by name."""

BACKENDS = ("auto", "scan", "cudnn", "pallas")
"""What ``backend=`` accepts."""

WHOLE_STACK = ("cudnn",)
"""The backends that run a whole stack, layers and directions, in one call."""


def family(name: str) -> str:
    """What ``backend=`` calls the backend ``name``: the scan family's members are all ``"scan"``."""
    return name if name in BACKENDS else "scan"


def reasons(call: Call) -> dict[str, str | None]:
    """Every backend's reason not to run ``call`` (None where it can).

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.gru(8)
    >>> call = Call(cell, [[cell.init(jax.random.key(0), 3)]], jnp.ones((2, 5, 3)), platform="cpu")
    >>> {name: why is None for name, why in reasons(call).items()}
    {'scan': True, 'parallel': False, 'sharded': False, 'cudnn': False, 'pallas': True}
    """
    return {name: module.unsupported(call) for name, module in MODULES.items()}


def choose(call: Call, backend: str) -> str:
    """The name of the backend that runs ``call`` when the caller asked for ``backend``.

    Raises:
      ValueError: ``backend`` is not one of :data:`BACKENDS`, or an explicit ``"cudnn"`` or ``"pallas"``
        cannot run the call (the message names the reason).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, received {backend!r}")
    family = "sharded" if call.mesh is not None else "parallel" if call.parallel else "scan"
    if backend == "scan":
        return family
    if backend != "auto":
        why = MODULES[backend].unsupported(call)
        if why is not None:
            raise ValueError(f"backend={backend!r} cannot run this call: {why}; use backend='scan' or 'auto'")
        return backend
    if family != "scan" or call.where not in ("gpu", "cuda"):
        return family
    kind = table.device_key(device_kind_of(call.xs))
    best = table.fastest(kind, call.cell.name, call.dtype.name, call.batch, call.steps, call.cell.hidden_size)
    if best is not None and best != "scan" and best in MODULES and MODULES[best].unsupported(call) is None:
        return best
    return family


__all__ = ["BACKENDS", "MODULES", "WHOLE_STACK", "choose", "family", "reasons"]
