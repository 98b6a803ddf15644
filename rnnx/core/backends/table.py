"""The measurements behind ``backend="auto"``: which backend ran fastest, per device kind, cell, dtype and shape.

``measured.json`` beside this module is written by the benchmark suite (``python -m benchmarks.auto_table``
over the GPU suite's results) and committed. Each entry holds the medians (ms) of every rnnx backend
measured at one shape ``(B, T, H)``, per mode (``forward``, ``backward`` = forward + backward, ``train``)::

    {"device": "nvidia-h100-80gb-hbm3", "cell": "lstm", "dtype": "float32", "B": 64, "T": 100, "H": 128,
     "ms": {"scan": {"forward": 1.12, "train": 35.1}, "cudnn": {"forward": 1.95, "train": 36.5}}}

A call matches the entry nearest to its shape (in log scale) among those within a factor of 2 in each of
``B``, ``T`` and ``H``; where none is that near, the table has nothing to say and ``"auto"`` runs the scan.
"""

import functools
import json
import math
import pathlib
import re

TABLE = pathlib.Path(__file__).with_name("measured.json")


def device_key(kind: str) -> str:
    """A device kind as the table and the results files name it: ``"NVIDIA H100 80GB HBM3"`` ->
    ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


@functools.cache
def entries(path: pathlib.Path = TABLE) -> tuple[dict, ...]:
    """The table's entries; none where the file does not exist."""
    if not path.exists():
        return ()
    return tuple(json.loads(path.read_text())["entries"])


def winner(ms: dict[str, dict[str, float]]) -> str:
    """The backend to run at one measured shape: the fastest in total over the scan's modes among the
    backends never slower than the scan in any of them; the scan where none is.

    A call may run forward only or be differentiated, so a backend can win only where it and the scan were
    both measured forward and with gradients (``backward`` or ``train``): an unmeasured mode could be slower.

    >>> winner({"scan": {"forward": 1.0, "train": 9.0}, "pallas": {"forward": 0.5, "train": 9.5}})
    'scan'
    >>> winner({"scan": {"forward": 1.0, "train": 9.0}, "pallas": {"forward": 0.5, "train": 4.0}})
    'pallas'
    >>> winner({"scan": {"train": 9.0}, "cudnn": {"train": 6.0}})  # forward not measured
    'scan'
    """
    scan = ms.get("scan", {})
    if "forward" not in scan or not {"backward", "train"} & set(scan):
        return "scan"
    best, best_total = "scan", sum(scan.values())
    for name, times in ms.items():
        if name == "scan" or not all(mode in times and times[mode] <= scan[mode] for mode in scan):
            continue
        total = sum(times[mode] for mode in scan)
        if total < best_total:
            best, best_total = name, total
    return best


def fastest(device: str, cell: str, dtype: str, batch: int, steps: int, hidden: int, table=None) -> str | None:
    """:func:`winner` at the measured shape nearest to ``(batch, steps, hidden)`` for this device kind, cell
    and dtype; None where no entry lies within a factor of 2 in each axis.

    >>> row = {"device": "gpu-x", "cell": "gru", "dtype": "float32", "B": 64, "T": 100, "H": 128,
    ...        "ms": {"scan": {"forward": 1.0, "train": 3.0}, "pallas": {"forward": 0.4, "train": 1.0}}}
    >>> fastest("gpu-x", "gru", "float32", 48, 150, 128, [row])
    'pallas'
    >>> fastest("gpu-x", "gru", "float32", 48, 1000, 128, [row]) is None  # T more than 2x from any entry
    True
    """
    table = entries() if table is None else table
    if min(batch, steps, hidden) < 1:
        return None
    shape = {"B": batch, "T": steps, "H": hidden}
    near = []
    for entry in table:
        if (entry["device"], entry["cell"], entry["dtype"]) != (device, cell, dtype):
            continue
        gaps = [abs(math.log2(shape[axis] / entry[axis])) for axis in shape]
        if max(gaps) <= 1:
            near.append((sum(gaps), entry))
    if not near:
        return None
    return winner(min(near, key=lambda pair: pair[0])[1]["ms"])


__all__ = ["TABLE", "device_key", "entries", "fastest", "winner"]
