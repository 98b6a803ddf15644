"""The ways of running a cell over a sequence, one module each, and the one resolver that picks among them.

- :mod:`rnnx.core.backends.scan`: ``lax.scan`` of ``cell.step``, the reference semantics;
- :mod:`rnnx.core.backends.parallel_scan`: one associative scan, for linear recurrences;
- :mod:`rnnx.core.backends.sharded`: the parallel scan with time split over a device mesh;
- :mod:`rnnx.core.backends.cudnn`: cuDNN's fused LSTM, a whole stack in one call;
- :mod:`rnnx.core.backends.pallas`: fused Pallas kernels that loop over time on chip;
- :mod:`rnnx.core.backends.resolver`: which one runs a call, or why each cannot;
- :mod:`rnnx.core.backends.table`: the measurements behind ``backend="auto"``;
- :mod:`rnnx.core.backends.call`: what the resolver knows of a call.
"""

from rnnx.core.backends.resolver import BACKENDS as BACKENDS
from rnnx.core.backends.resolver import choose as choose
from rnnx.core.backends.resolver import reasons as reasons

__all__ = ["BACKENDS", "choose", "reasons"]
