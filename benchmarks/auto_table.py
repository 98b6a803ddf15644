"""``"auto"``'s table: the medians of rnnx's own backends per device kind, cell, dtype and shape, for the resolver.

    python -m benchmarks.auto_table RESULTS.json [RESULTS.json ...] --out rnnx/core/backends/measured.json

reads results of the suite (``python -m benchmarks``, ``benchmarks.report``'s merged files) or of
``benchmarks.cudnn_split``, and writes (merging into ``--out`` when it exists)::

    {"version": 1, "entries": [{"device": "nvidia-h100-80gb-hbm3", "cell": "lstm", "dtype": "float32",
      "B": 64, "T": 100, "H": 128, "ms": {"scan": {"forward": 1.12, "train": 4.22}, "cudnn": {...}},
      "choice": "scan", "source": "benchmarks/results/gpu-nvidia-h100-80gb-hbm3.json"}]}

- ``device``: ``jax.devices()[0].device_kind`` lower-cased, runs of other characters than a-z and 0-9 replaced
  by ``-`` (and stripped from the ends): :func:`rnnx.core.backends.table.device_key`, the resolver's own.
- ``ms``: median milliseconds per backend (``scan``, ``cudnn``, ``pallas``: the suite's ``rnnx``, ``rnnx-cudnn``
  and ``rnnx-pallas`` rows; ``rnnx-auto``, the other libraries and rows that did not run are left out) per mode:
  ``forward``, ``backward`` (forward+backward: the gradient), ``train`` (the gradient, clipping and Adam).
  Only single-layer, unidirectional, non-rematerialised rows go in: the key has no room for more (the input
  size is not in it either: the GPU suite measures I=300, as the resolver assumes).
- **Merging.** Entries are keyed by (device, cell, dtype, B, T, H). A later input (the existing ``--out`` first,
  then the files in the order given) replaces a mode's times for every backend of that entry at once, so that
  the backends of one mode always come from one run, measured side by side; modes it did not measure are kept.
  ``source`` lists the files an entry's times come from.
- ``choice``: what ``backend="auto"`` runs at that shape, by the resolver's own rule
  (:func:`rnnx.core.backends.table.winner`: the fastest in total over the scan's modes among the backends never
  slower than the scan in any of them; the scan where none is). The resolver reads ``ms``; ``choice`` is there
  for a reader of the table, and regenerating the table keeps it current.
"""

import argparse
import json
import sys
from pathlib import Path

from benchmarks.rows import ok
from rnnx.core.backends.table import device_key, winner

__all__ = ["BACKENDS", "KEY", "MODES", "entries_from", "main", "merge"]

BACKENDS = {"rnnx": "scan", "rnnx-cudnn": "cudnn", "rnnx-pallas": "pallas"}
MODES = ("forward", "backward", "train")
KEY = ("device", "cell", "dtype", "B", "T", "H")
_SPLIT = {"rnnx-scan": "scan", "rnnx-cudnn": "cudnn"}  # benchmarks.cudnn_split's case prefixes
_SPLIT_MODES = {"forward": "forward", "grad": "backward"}


def _suite_times(result: dict):
    """``(key fields, backend, mode, ms)`` of a suite result's rnnx rows."""
    device = device_key(result["environment"]["device"])
    for r in ok(result["rows"]):
        simple = r.get("layers", 1) == 1 and not r.get("bidirectional") and not r.get("remat")
        if r["peer"] in BACKENDS and simple:
            key = {"device": device, "cell": r["cell"], "dtype": r["dtype"], "B": r["batch"], "T": r["steps"]}
            yield key | {"H": r["hidden"]}, BACKENDS[r["peer"]], r["mode"], r["median_ms"]


def _split_times(result: dict):
    """The same from ``benchmarks.cudnn_split`` (an LSTM in float32 at its B, I and H)."""
    for r in result["rows"]:
        backend, _, mode = r["case"].rpartition(" ")
        if backend in _SPLIT and mode in _SPLIT_MODES and "ms" in r:
            key = {"device": device_key(result["device"]), "cell": "lstm", "dtype": "float32", "B": result["B"]}
            yield key | {"T": r["T"], "H": result["H"]}, _SPLIT[backend], _SPLIT_MODES[mode], r["ms"]


def entries_from(result: dict, source: str) -> list[dict]:
    """The table entries one results file holds."""
    times = _suite_times(result) if "environment" in result else _split_times(result)
    entries = {}
    for key, backend, mode, ms in times:
        entry = entries.setdefault(tuple(key.values()), {**key, "ms": {}, "source": source})
        entry["ms"].setdefault(backend, {})[mode] = round(ms, 4)
    return list(entries.values())


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with ``new`` merged in: per entry and mode, the newer run's times replace the older run's."""
    table = {tuple(e[k] for k in KEY): {**e, "ms": {b: dict(m) for b, m in e["ms"].items()}} for e in old}
    for entry in new:
        key = tuple(entry[k] for k in KEY)
        if key not in table:
            table[key] = {**entry, "ms": {b: dict(m) for b, m in entry["ms"].items()}}
            continue
        mine = table[key]
        for mode in [m for m in MODES if any(m in times for times in entry["ms"].values())]:
            for times in mine["ms"].values():
                times.pop(mode, None)
            for backend, times in entry["ms"].items():
                if mode in times:
                    mine["ms"].setdefault(backend, {})[mode] = times[mode]
        mine["ms"] = {b: t for b, t in mine["ms"].items() if t}
        sources = mine["source"].split(", ") + [entry["source"]]
        mine["source"] = ", ".join(dict.fromkeys(s for s in sources if s))
    out = [{**e, "ms": _ordered(e["ms"]), "choice": winner(e["ms"])} for e in table.values()]
    return sorted(out, key=lambda e: tuple(e[k] for k in KEY))


def _ordered(ms: dict) -> dict:
    """Backends and modes in one fixed order, so that the same measurements always write the same file."""
    return {b: {m: ms[b][m] for m in MODES if m in ms[b]} for b in BACKENDS.values() if b in ms}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="suite or cudnn_split results (JSON)")
    parser.add_argument("--out", type=Path, required=True, help="the table to write (merged into when it exists)")
    args = parser.parse_args(argv)
    table = json.loads(args.out.read_text()) if args.out.exists() else {"version": 1, "entries": []}
    if table.get("version") != 1:
        parser.error(f"{args.out}: version {table.get('version')!r}, this writer knows version 1")
    entries = table["entries"]
    for path in args.results:
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            print(f"skipping {path}: {error}", file=sys.stderr)
            continue
        new = entries_from(result, str(path))
        entries = merge(entries, new)
        print(f"{path}: {len(new)} entries", file=sys.stderr)
    table = {"version": 1, "entries": merge(entries, [])}  # choice recomputed even when no file was read
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.out}: {len(table['entries'])} entries", file=sys.stderr)
    return table


if __name__ == "__main__":
    main()
