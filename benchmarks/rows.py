"""The result rows of ``python -m benchmarks``: their configuration keys and the small helpers every report shares.

A row is one (library, configuration, mode): ``peer``, ``part``, ``mode``, the :class:`benchmarks.peers.Config`
fields, ``status`` (``"ok"``, ``"unavailable: ..."``, ``"unsupported: ..."``, ``"failed: ..."``) and, when ok,
``median_ms``, ``ratio_to_rnnx``, ``tokens_per_s``, ``memory_mib``, ``compile_s``, ``fraction_of_peak`` and (from
:mod:`benchmarks.roofline`) ``per_step_us``. Pure Python; no JAX import.
"""

import re

__all__ = ["CONFIG_KEYS", "config_key", "fmt", "ok", "slug"]

CONFIG_KEYS = ("cell", "batch", "steps", "input", "hidden", "layers", "bidirectional", "dtype", "remat")


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok"]


def config_key(row: dict, *drop: str) -> tuple:
    """The row's configuration, less the ``drop``ped fields."""
    return tuple(row.get(k) for k in CONFIG_KEYS if k not in drop)


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)
