"""The scan itself on a GPU: ``rnnx.unroll``'s ``unroll=`` 1, 4, 8 and 16, under XLA's default flags and with XLA
running while loops as CUDA graphs (command buffers).

    python -m benchmarks.scan_tuning [--cells lstm,gru,simple_rnn] [--steps 100,1000] [--budget-seconds 150]
                                     [--settings default,while-graphs,while-graphs-unrolled] [--out DIR] [--tiny]

XLA reads ``XLA_FLAGS`` once, when JAX starts, so each flag setting runs the suite (``python -m benchmarks
--suite gpu --parts headline``, peers ``rnnx`` and ``rnnx-unroll{4,8,16}``, B=64 I=300 H=128 float32) in its own
subprocess; within one the unroll factors are timed interleaved, between settings they are not (a ratio across
settings compares two processes run one after the other). This process never imports JAX, so it holds no GPU
memory. The settings (:data:`SETTINGS`):

- ``default``: XLA's own command buffers (fusions, cuBLAS, cuDNN, custom calls; no ``WHILE``), graphs of >= 5 ops.
- ``while-graphs``: ``--xla_gpu_enable_command_buffer`` with ``WHILE`` and ``CONDITIONAL`` added, and
  ``--xla_gpu_graph_min_graph_size=1``, so a scan's whole loop can become one CUDA graph (openxla/xla#30695 is the
  unrolled form). The full list is spelled out: XLA's ``+WHILE,+CONDITIONAL`` form has, in versions whose flag
  parser returns inside its loop, applied only the first item.
- ``while-graphs-unrolled``: the same and ``--xla_gpu_command_buffer_unroll_loops=true``: the loop is recorded
  unrolled into the graph (needs CUDA >= 12.9, says XLA's test).

An unknown flag makes XLA abort at start: that setting's record then holds the exit status and the last line of
its stderr, and the others still run. Each part is written as it finishes and the merged
``scan_tuning-<device>.{json,md}`` is rewritten after every setting, so a run cut short keeps what it measured.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.rows import fmt, ok, slug

__all__ = ["SETTINGS", "main", "markdown"]

_WHILE = (
    "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,DYNAMIC_SLICE_FUSION,WHILE,CONDITIONAL"
    " --xla_gpu_graph_min_graph_size=1"
)
SETTINGS = {
    "default": "",
    "while-graphs": _WHILE,
    "while-graphs-unrolled": _WHILE + " --xla_gpu_command_buffer_unroll_loops=true",
}
UNROLLS = {"rnnx": 1, "rnnx-unroll4": 4, "rnnx-unroll8": 8, "rnnx-unroll16": 16}


def _child(setting: str, args, budget: float) -> list[str]:
    peers = ",".join(UNROLLS)
    command = [sys.executable, "-m", "benchmarks", "--suite", "gpu", "--parts", "headline", "--dtypes", "float32"]
    command += ["--cells", args.cells, "--modes", args.modes, "--peers", peers, "--sweep-peers", peers]
    command += ["--repeats", str(args.repeats), "--budget-seconds", f"{budget:.0f}", "--out", str(args.out / "parts")]
    command += ["--name", f"scan_tuning-{{device}}-{setting}"]
    command += ["--tiny"] if args.tiny else []
    return command + (["--headline-steps", args.steps] if args.steps else [])


def run_setting(setting: str, args, seconds: float) -> tuple[dict, dict | None]:
    """Run one setting's subprocess for at most ``seconds``; ``(record, its results or None)``."""
    flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), SETTINGS[setting]) if f)
    record = {"xla_flags": SETTINGS[setting], "seconds_allowed": round(seconds)}
    start = time.perf_counter()
    # the child's own budget is half its time, the other half left for JAX's start and the last configuration
    # before the kill; at least 5 s, so that the first configuration always starts
    command = _child(setting, args, max(5.0, seconds / 2))
    try:
        done = subprocess.run(
            command, env=os.environ | {"XLA_FLAGS": flags}, capture_output=True, text=True, timeout=seconds
        )
        record["returncode"], stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as error:
        record["returncode"], stderr = "timeout", (error.stderr or b"").decode(errors="replace")
    record["elapsed_s"] = round(time.perf_counter() - start, 1)
    if record["returncode"] != 0:
        record["error"] = _why(stderr)
    (args.out / "parts" / f"scan_tuning-{setting}.log").write_text(stderr)
    found = sorted((args.out / "parts").glob(f"scan_tuning-*-{setting}.json"))
    return record, (json.loads(found[-1].read_text()) if found else None)


def _why(stderr: str) -> str:
    """The line of a failed child's stderr that says why: XLA's complaint about a flag, else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()] or ["(no output)"]
    flag = [line for line in lines if re.search(r"Unknown flag|Illegal value|Flag parsing failed", line)]
    return (flag[0] if flag else lines[-1])[:300]


def _kernels_per_step(median: dict, cell: str, steps: int, unroll: int) -> float | None:
    """Kernels per time step of the default flags' compiled forward pass: the loop body's count / unroll, or,
    where the loop was unrolled away (unroll >= T), the whole module's count / T."""
    row = median.get(("default", cell, steps, "forward", unroll)) or median.get(
        ("default", cell, steps, "train", unroll)
    )
    counts = (row or {}).get("hlo")
    if not counts:
        return None
    return counts["per_step"] / unroll if counts["loops"] else counts["module"]["kernels"] / steps


def markdown(result: dict) -> str:
    """Median per unroll factor (rows) and setting (columns), with the ratio to the default scan (unroll 1)."""
    rows = ok(result["rows"])
    settings = list(result["settings"])
    median = {(r["setting"], r["cell"], r["steps"], r["mode"], r["unroll"]): r for r in rows}
    lines = [
        f"# scan tuning: {result.get('device')}",
        "",
        "Median ms and (x the default scan, unroll 1, default flags) of `rnnx.unroll`'s scan, B=64 I=300 H=128 "
        "float32 (tiny shapes in a rehearsal). Settings run one after another in separate processes; unroll "
        "factors within a setting are interleaved. Kernels per step: the compiled loop body's kernel count / unroll "
        "(default flags, forward where measured, else the training step).",
        "",
        "| setting | XLA_FLAGS | exit | seconds | note |",
        "|---|---|---|---|---|",
    ]
    for name, record in result["settings"].items():
        lines.append(
            f"| {name} | `{record['xla_flags'] or '(none)'}` | {record.get('returncode')} | "
            f"{record.get('elapsed_s')} | {record.get('error', '')} |"
        )
    lines += ["", "| cell | T | mode | unroll | " + " | ".join(settings) + " | kernels per step |"]
    lines.append("|---" * (5 + len(settings)) + "|")
    best = {}
    for cell, steps, mode in dict.fromkeys((r["cell"], r["steps"], r["mode"]) for r in rows):
        base = median.get(("default", cell, steps, mode, 1))
        for unroll in sorted(set(UNROLLS.values())):
            cells = []
            for name in settings:
                r = median.get((name, cell, steps, mode, unroll))
                if r is None:
                    cells.append("-")
                    continue
                ratio = base and r["median_ms"] / base["median_ms"]
                cells.append(f"{r['median_ms']:.3g}" + (f" ({ratio:.2f}x)" if ratio else ""))
                if ratio and ratio < best.get((cell, steps, mode), ("", 1.0))[1]:
                    best[(cell, steps, mode)] = (f"{name}, unroll {unroll}", ratio)
            per_step = _kernels_per_step(median, cell, steps, unroll)
            lines.append(
                f"| {cell} | {steps} | {mode} | {unroll} | " + " | ".join(cells) + f" | {fmt(per_step, '.2g')} |"
            )
    lines += ["", "Faster than the default scan:", ""]
    lines += [f"- {c} T={t} {m}: {how} ({ratio:.2f}x)" for (c, t, m), (how, ratio) in best.items()] or ["- none"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="lstm,gru,simple_rnn")
    parser.add_argument("--steps", default=None, help="comma-separated T (default 100,1000; --tiny 4,10)")
    parser.add_argument("--modes", default="forward,train")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"subset of {list(SETTINGS)}")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget-seconds", type=float, default=150.0, help="for all settings together")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and 2 repeats (rehearsals)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "benchmarks/results"))
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; expected a subset of {list(SETTINGS)}")
    args.repeats = 2 if args.tiny else args.repeats
    args.steps = args.steps or (None if args.tiny else "100,1000")
    (args.out / "parts").mkdir(parents=True, exist_ok=True)
    start, result = time.perf_counter(), {"device": None, "settings": {}, "rows": [], "skipped_configs": []}
    written = None
    for i, name in enumerate(settings):
        seconds = (args.budget_seconds - (time.perf_counter() - start)) / (len(settings) - i)
        print(f"[scan tuning] {name}: up to {seconds:.0f} s, XLA_FLAGS+={SETTINGS[name] or '(none)'}", file=sys.stderr)
        record, part = run_setting(name, args, seconds)
        result["settings"][name] = record
        if part:
            result["device"] = result["device"] or part["environment"]["device"]
            tag = {"setting": name, "xla_flags": SETTINGS[name]}
            result["rows"] += [{**r, **tag, "unroll": UNROLLS[r["peer"]]} for r in part["rows"]]
            result["skipped_configs"] += [{**s, **tag} for s in part.get("skipped_configs", [])]
        print(f"[scan tuning] {name}: {record}", file=sys.stderr)
        stem = args.out / f"scan_tuning-{slug(result['device'] or 'unknown')}"
        if written not in (None, stem):  # the first settings failed before naming the device
            for suffix in (".json", ".md"):
                written.with_suffix(suffix).unlink(missing_ok=True)
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
        stem.with_suffix(".md").write_text(markdown(result))
        written = stem
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
