"""Where a recurrent layer's time goes: cost per time step, fixed cost per call, and the fraction of the matmul peak.

Pure Python over the rows ``python -m benchmarks`` writes (no JAX import), shared by the suite and its reports.

- **Per step.** Where one configuration (library, mode, cell, dtype, B, I, H) was measured at two or more sequence
  lengths, its medians are fitted by a least-squares line ``median = fixed + T * step``: ``fixed_ms`` is the
  intercept, clamped to [0, the configuration's smallest median] so that no step costs less than nothing on a noisy
  machine, and ``per_step_us = (median - fixed) / T``; basis ``"fit"``. Where it was measured at one T only,
  ``per_step_us = median / T`` (fixed cost included); basis ``"median/T"``.
- **Peak.** The denominator of "fraction of peak" is the device's dense tensor-core rate from its datasheet where
  :data:`PEAKS` knows the device kind (JAX runs float32 matmuls as TF32 on these GPUs at its default precision, and
  torch's cuDNN RNNs allow TF32 by default, so TF32 is the float32 figure), else the rate this process measured
  for a large matmul (CPUs, unknown GPUs).
"""

import re

__all__ = ["PEAKS", "peak", "with_per_step"]

# (pattern on the device slug, {dtype: dense TFLOP/s}, source). NVIDIA quotes tensor-core rates "with sparsity";
# the dense rate is half of that.
PEAKS = (
    (r"h100-(80gb-hbm3|sxm)", {"float32": 494.7, "bfloat16": 989.4}, "NVIDIA H100 SXM5 datasheet, dense TF32 / BF16"),
    (r"h100-pcie", {"float32": 378.0, "bfloat16": 756.0}, "NVIDIA H100 PCIe datasheet, dense TF32 / BF16"),
    (r"h200", {"float32": 494.7, "bfloat16": 989.4}, "NVIDIA H200 SXM datasheet, dense TF32 / BF16"),
    (r"a100", {"float32": 156.0, "bfloat16": 312.0}, "NVIDIA A100 datasheet, dense TF32 / BF16"),
)
_CONFIG = ("peer", "mode", "cell", "batch", "input", "hidden", "layers", "bidirectional", "dtype", "remat")


def peak(device_slug: str, dtype: str, measured_gflops: float | None = None) -> tuple[float | None, str]:
    """``(GFLOP/s, source)``: the datasheet figure for this device kind, else ``measured_gflops``."""
    for pattern, figures, source in PEAKS:
        if re.search(pattern, device_slug) and dtype in figures:
            return figures[dtype] * 1e3, source
    return measured_gflops, "measured here: best of 10 runs of a 2048x2048 matmul"


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)`` of ``y`` on ``x``."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return mean_y - slope * mean_x, slope


def with_per_step(rows: list[dict]) -> list[dict]:
    """``rows`` with ``fixed_ms``, ``per_step_us`` and ``per_step_basis`` on every ok row (see the module doc)."""
    groups = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault(tuple(r.get(k) for k in _CONFIG), []).append((r["steps"], r["median_ms"]))
    fixed = {}
    for key, points in groups.items():
        if len({t for t, _ in points}) > 1:
            fixed[key] = min(max(0.0, _line(points)[0]), min(ms for _, ms in points))
    out = []
    for r in rows:
        if r.get("status") != "ok":
            out.append(r)
            continue
        f = fixed.get(tuple(r.get(k) for k in _CONFIG))
        basis = "median/T" if f is None else "fit"
        per_step = 1e3 * (r["median_ms"] - (f or 0.0)) / r["steps"]
        out.append({**r, "fixed_ms": f, "per_step_us": per_step, "per_step_basis": basis})
    return out
