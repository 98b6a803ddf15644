"""Reports of a benchmark run: Markdown tables, the accelerator goals as met/missed, a plot, and merging.

    python -m benchmarks.report PART.json [PART.json ...] --out DIR [--name gpu-{device}]

merges the JSON of several runs (e.g. the device script's headline and sweep parts) into one
``DIR/<name>.{json,md,png}``. Pure Python over the rows ``python -m benchmarks`` writes; no JAX import.

The rows are described in :mod:`benchmarks.rows`, the goals in :mod:`benchmarks.goals`, per-step cost and the
fraction of the matmul peak in :mod:`benchmarks.roofline`.
"""

import argparse
import json
import sys
from pathlib import Path

from benchmarks import roofline
from benchmarks.goals import GOALS, goals, goals_markdown
from benchmarks.rows import fmt, ok, slug

__all__ = ["GOALS", "goals", "goals_markdown", "gpu_markdown", "merge", "plot", "slug"]

_PER_STEP_PEERS = ("rnnx", "rnnx-pallas", "rnnx-auto", "rnnx-cudnn", "torch")


def _row_cells(r) -> str:
    if r.get("status") != "ok":
        return f"- | - | - | - | - | {r.get('status')} |"
    spread = f"{r['median_ms']:.3g} ({r['min_ms']:.3g}-{r['max_ms']:.3g})"
    return (
        f"{spread} | {fmt(r.get('ratio_to_rnnx'), '.2f')} | {fmt(r.get('tokens_per_s'), ',.0f')} | "
        f"{fmt(r.get('memory_mib'), '.1f')} | {fmt(r.get('compile_s'), '.2f')} | ok |"
    )


def headline_markdown(rows: list[dict]) -> str:
    header = (
        "| cell | mode | library | median ms (min-max) | x rnnx | tokens/s | memory MiB | compile s | status |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    parts = []
    for dtype, steps in dict.fromkeys((r["dtype"], r["steps"]) for r in rows):
        mine = [r for r in rows if (r["dtype"], r["steps"]) == (dtype, steps)]
        lines = [f"### {dtype}, T={steps:,}", "", header]
        lines += [f"| {r['cell']} | {r.get('mode', '-')} | {r['peer']} | {_row_cells(r)}" for r in mine]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def sweep_markdown(rows: list[dict]) -> str:
    lines = [
        "| sweep | B | T | H | cell | dtype | mode | library | µs per step | % of peak | median ms (min-max) | x rnnx "
        "| tokens/s | memory MiB | compile s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = r.get("fraction_of_peak")
        lines.append(
            f"| {r['part'].removeprefix('sweep-')} | {r['batch']} | {r['steps']} | {r['hidden']} | {r['cell']} | "
            f"{r['dtype']} | {r.get('mode', '-')} | {r['peer']} | {fmt(r.get('per_step_us'), '.3g')} | "
            f"{fmt(share and 100 * share, '.2g')} | {_row_cells(r)}"
        )
    return "\n".join(lines)


def kernels_markdown(rows: list[dict], cell="lstm", mode="forward") -> str:
    """Kernels per scan step of every JAX contender, for ``cell``'s ``mode`` at the headline shape."""
    lines = [
        "| dtype | T | library | while loops | kernels per step | fusions | custom calls | other | whole module "
        "(outside loops) | custom-call targets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ok(rows):
        counts = (r.get("hlo") or {}) if r.get("part") == "headline" and r["cell"] == cell else {}
        if r["mode"] != mode or not counts:
            continue
        step = max(counts["loops"], key=lambda loop: loop["kernels"], default=None)
        per_step = [str(step[k]) if step else "0" for k in ("kernels", "fusion", "custom_call", "other")]
        targets = ", ".join(f"`{k}` x{v}" for k, v in counts["module"]["custom_call_targets"].items()) or "-"
        lines.append(
            f"| {r['dtype']} | {r['steps']} | {r['peer']} | {len(counts['loops'])} | {' | '.join(per_step)} | "
            f"{counts['module']['kernels']} | {targets} |"
        )
    return "\n".join(lines)


def per_step_markdown(rows: list[dict], peaks: dict) -> str:
    """Per-step µs and the fraction of the matmul peak of the rnnx backends and torch at the headline shape."""
    lines = [
        "| cell | dtype | mode | library | T | median ms | fixed ms | µs per step | basis | % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in roofline.with_per_step(ok(rows)):
        if r.get("part") == "headline" and r["peer"] in _PER_STEP_PEERS:
            share = r.get("fraction_of_peak")
            lines.append(
                f"| {r['cell']} | {r['dtype']} | {r['mode']} | {r['peer']} | {r['steps']:,} | {r['median_ms']:.3g} | "
                f"{fmt(r['fixed_ms'], '.3g')} | {r['per_step_us']:.3g} | {r['per_step_basis']} | "
                f"{fmt(share and 100 * share, '.2g')} |"
            )
    used = "; ".join(
        f"{d} {fmt(p.get('gflops') and p['gflops'] / 1e3, ',.1f')} TFLOP/s ({p.get('source')})"
        for d, p in peaks.items()
    )
    return "\n".join(
        lines
        + [
            "",
            "µs per step: with basis `fit`, (median - fixed) / T, where `fixed` is the intercept (clamped to [0, smallest median]) of a "
            "least-squares line through this configuration's medians over every T measured; with basis `median/T`, "
            "median / T (fixed cost included), where only one T was measured.",
            "",
            "% of peak: the matmul FLOPs of a call (input and recurrent products; backward and training step count "
            f"3x the forward) / median time / the peak: {used or 'not recorded'}.",
        ]
    )


def gpu_markdown(result: dict) -> str:
    """The accelerator report: device, goals, headline tables, kernel counts, sweeps, what was skipped."""
    env, rows = result["environment"], roofline.with_per_step(result["rows"])
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    head = [r for r in rows if r.get("part") == "headline"]
    sweep = [r for r in rows if r.get("part", "").startswith("sweep")]
    steps = ", ".join(f"{t:,}" for t in dict.fromkeys(r["steps"] for r in head))
    shape = next((f"B={r['batch']} T={steps} I={r['input']} H={r['hidden']}" for r in head), "-")
    lines = [
        f"# {result.get('name', 'benchmark')}: {env.get('device')}",
        "",
        f"- JAX device: {env.get('device')} (backend {env.get('backend')}); torch device: "
        f"{env.get('torch_device') or '-'}",
        f"- {versions}; {env.get('date')}; {env.get('platform')}",
        f"- Medians of {result.get('repeats', '?')} interleaved runs after warm-up (sweeps: fewer); JAX waits with "
        "`block_until_ready`, torch with `torch.cuda.synchronize()`. `x rnnx` is time / the rnnx scan's time in "
        "the same configuration (above 1: slower than rnnx). tokens/s = B*T / median time.",
        "- Memory: JAX, XLA's compiled argument + output + temp bytes of the call; torch, "
        "`torch.cuda.max_memory_allocated` over its first call after a reset (CPU: not measured). "
        "Compile s: first call (trace, compile, run) minus the steady median.",
        "",
        "## Goals",
        "",
        goals_markdown(rows),
        "",
        f"## Headline shape ({shape}, I/O in the row's dtype)",
        "",
        headline_markdown(head) if head else "(not run)",
        "",
        "## Per time step and fraction of the matmul peak, headline shape",
        "",
        per_step_markdown(head, result.get("peak") or {}),
        "",
        "## Where the time goes: kernels per scan step, LSTM forward at the headline shape",
        "",
        "Counted in each contender's compiled HLO (`benchmarks/hlo.py`): a scan step launches about this many "
        "kernels on a GPU; cuDNN runs every step inside one custom call.",
        "",
        kernels_markdown(rows),
        "",
        "## Sweeps",
        "",
        sweep_markdown(sweep) if sweep else "(not run)",
    ]
    skipped = result.get("skipped_configs") or []
    if skipped:
        lines += ["", f"## Skipped: time budget exceeded ({len(skipped)} configurations)", ""]
        lines += [
            f"- {s['part']}: {s['cell']} {s['dtype']} B={s['batch']} T={s['steps']} H={s['hidden']}" for s in skipped
        ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, metric: str = "tokens_per_s") -> bool:
    """Sweep rows (plus the headline rows they start from) as ``metric`` against T, H and B; else headline bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    good = [r for r in ok(rows) if r.get(metric) is not None]
    axes_ = [a for a in ("steps", "hidden", "batch") if any(r.get("part") == f"sweep-{a}" for r in good)]
    labels = {"steps": "sequence length T", "hidden": "hidden size H", "batch": "batch B"}
    ylabel = {"tokens_per_s": "train tokens/s", "median_ms": "train step ms"}.get(metric, metric)
    if axes_:
        cells = sorted({r["cell"] for r in good if r.get("part", "").startswith("sweep")})
        colors = {}
        fig, grid = plt.subplots(len(axes_), len(cells), figsize=(4.5 * len(cells), 3.6 * len(axes_)), squeeze=False)
        for i, axis in enumerate(axes_):
            for j, cell in enumerate(cells):
                ax = grid[i][j]
                mine = [r for r in good if r["cell"] == cell and r["mode"] == "train"]
                mine = [r for r in mine if r.get("part") == f"sweep-{axis}" or _starts(r, axis, good)]
                for peer, dtype in sorted({(r["peer"], r["dtype"]) for r in mine}):
                    points = sorted((r[axis], r[metric]) for r in mine if r["peer"] == peer and r["dtype"] == dtype)
                    if len(points) > 1:  # one colour per library, solid float32, dashed bfloat16
                        style = "-" if dtype == "float32" else "--"
                        color = colors.setdefault(peer, f"C{len(colors) % 10}")
                        ax.plot(*zip(*points), style, color=color, marker="o", label=f"{peer} {dtype}")
                ax.set(xscale="log", yscale="log", xlabel=labels[axis], ylabel=ylabel, title=cell)
                ticks = sorted({r[axis] for r in mine})
                ax.set_xticks(ticks, [str(t) for t in ticks])
                ax.minorticks_off()
                ax.legend(fontsize=6)
    else:
        head = [r for r in good if r.get("part", "headline") == "headline"]
        names = [f"{r['cell']} {r['mode']} {r['dtype']} {r['peer']}" for r in head]
        fig, ax = plt.subplots(figsize=(8, 0.22 * len(names) + 1.5))
        ax.barh(range(len(head)), [r[metric] for r in head])
        ax.set_yticks(range(len(head)), names, fontsize=6)
        ax.set(xscale="log", xlabel=metric.replace("_", " "), title="headline shape")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _starts(row: dict, axis: str, rows: list[dict]) -> bool:
    """Whether ``row`` is a headline row that a sweep along ``axis`` starts from (its other axes equal the sweep's)."""
    sweep = next((r for r in rows if r.get("part") == f"sweep-{axis}"), None)
    others = [a for a in ("steps", "hidden", "batch") if a != axis]
    return row.get("part") == "headline" and sweep is not None and all(row[a] == sweep[a] for a in others)


def write(result: dict, out: Path, stem: str, markdown: str, with_plot: bool = True) -> list[Path]:
    """Write ``out/stem.json`` and ``.md`` (and ``.png``); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    paths[0].write_text(json.dumps(result, indent=1, default=str))
    paths[1].write_text(markdown)
    if with_plot and plot(result["rows"], out / f"{stem}.png"):
        paths.append(out / f"{stem}.png")
    return paths


def merge(results: list[dict], name: str | None = None) -> dict:
    """One result from several runs of the suite (rows, skipped configurations and budgets concatenated)."""
    if not results:
        raise ValueError("merge needs at least one result")
    first = results[0]
    device = first["environment"].get("device", "unknown")
    return {
        **first,
        "name": (name or "gpu-{device}").format(device=slug(device)),
        "rows": roofline.with_per_step([r for res in results for r in res["rows"]]),
        "skipped_configs": [s for res in results for s in res.get("skipped_configs", [])],
        "parts": [
            {"name": res.get("name"), "elapsed_s": res.get("elapsed_s"), "args": res.get("args")} for res in results
        ],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="gpu-{device}", help="file stem; {device} is the device's slug")
    args = parser.parse_args(argv)
    results = []
    for path in args.parts:
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            print(f"skipping {path}: {error}", file=sys.stderr)
    result = merge(results, args.name)
    for path in write(result, args.out, result["name"], gpu_markdown(result)):
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
