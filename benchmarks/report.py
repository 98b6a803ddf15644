"""Reports of a benchmark run: Markdown tables, the accelerator goals as met/missed, a plot, and merging.

    python -m benchmarks.report PART.json [PART.json ...] --out DIR [--name gpu-{device}]

merges the JSON of several runs (e.g. the device script's headline and sweep parts) into one
``DIR/<name>.{json,md,png}``. Pure Python over the rows ``python -m benchmarks`` writes; no JAX import.

A row is one (library, configuration, mode): ``peer``, ``part``, ``mode``, the :class:`benchmarks.peers.Config`
fields, ``status`` (``"ok"``, ``"unavailable: ..."``, ``"unsupported: ..."``, ``"failed: ..."``) and, when ok,
``median_ms``, ``ratio_to_rnnx``, ``tokens_per_s``, ``memory_mib``, ``compile_s``.
"""

import argparse
import json
import re
import sys
from pathlib import Path

__all__ = ["GOALS", "goals", "gpu_markdown", "merge", "plot", "slug"]

CONFIG_KEYS = ("cell", "batch", "steps", "input", "hidden", "layers", "bidirectional", "dtype", "remat")

# The accelerator issue's goals: (key, statement, target).
GOALS = (
    ("cudnn", "LSTM rnnx `auto` (cuDNN) within 1.1x of torch cuDNN, float32: rnnx time / torch time <= 1.1", 1.1),
    ("scan", "rnnx scan at least 1.3x faster than flax `nn.RNN`, every cell: flax time / rnnx time >= 1.3", 1.3),
    ("bf16", "bfloat16 training at least 1.5x faster than float32 at H >= 512: f32 time / bf16 time >= 1.5", 1.5),
)


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def _key(row, *drop):
    return tuple(row[k] for k in CONFIG_KEYS if k not in drop)


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def goals(rows: list[dict]) -> list[dict]:
    """Each goal's cases, measured in one run: ``{"goal", "case", "ratio", "target", "verdict"}``.

    - ``cudnn``: every headline LSTM row of ``rnnx-auto`` (or ``rnnx-cudnn`` where auto was not measured)
      against ``torch`` of the same configuration and mode; met when the time ratio is <= 1.1. Only float32
      decides the verdict (cuDNN's LSTM in ``jax.experimental.rnn`` is float32); bfloat16 is shown too.
    - ``scan``: every headline row of ``rnnx`` (the scan) against the fastest ``flax.linen`` variant of the same
      configuration and mode; met when flax takes >= 1.3x as long.
    - ``bf16``: every ``rnnx`` training-step row at H >= 512 in bfloat16 against the float32 row of the same
      configuration; met when float32 takes >= 1.5x as long.
    """
    ok = _ok(rows)
    by = {}
    for r in ok:
        by.setdefault((r["peer"], r["mode"], _key(r)), r)
    out = []
    headline = [r for r in ok if r.get("part", "headline") == "headline"]
    for r in headline:
        if r["cell"] != "lstm" or r["peer"] not in ("rnnx-auto", "rnnx-cudnn"):
            continue
        if r["peer"] == "rnnx-cudnn" and ("rnnx-auto", r["mode"], _key(r)) in by:
            continue
        torch = by.get(("torch", r["mode"], _key(r)))
        if torch:
            ratio = r["median_ms"] / torch["median_ms"]
            case = f"{r['peer']} / torch, {r['dtype']} {r['mode']}"
            out.append(_case("cudnn", case, ratio, ratio <= 1.1, counts=r["dtype"] == "float32"))
    for r in headline:
        if r["peer"] != "rnnx":
            continue
        flax = [x for x in ok if x["peer"].startswith("flax.linen") and x["mode"] == r["mode"] and _key(x) == _key(r)]
        if flax:
            fastest = min(flax, key=lambda x: x["median_ms"])
            ratio = fastest["median_ms"] / r["median_ms"]
            case = f"{fastest['peer']} / rnnx, {r['cell']} {r['dtype']} {r['mode']}"
            out.append(_case("scan", case, ratio, ratio >= 1.3))
    for r in ok:
        if r["peer"] != "rnnx" or r["mode"] != "train" or r["dtype"] != "bfloat16" or r["hidden"] < 512:
            continue
        f32 = by.get(("rnnx", "train", _key({**r, "dtype": "float32"})))
        if f32:
            ratio = f32["median_ms"] / r["median_ms"]
            case = f"rnnx {r['cell']} B={r['batch']} T={r['steps']} H={r['hidden']}: float32 / bfloat16"
            out.append(_case("bf16", case, ratio, ratio >= 1.5))
    return out


def _case(goal, case, ratio, met, counts=True):
    """One measured case; ``counts=False`` marks a case shown for information, outside the goal's verdict."""
    target = dict((k, t) for k, _, t in GOALS)[goal]
    verdict = ("met" if met else "missed") + ("" if counts else " (information only)")
    return {"goal": goal, "case": case, "ratio": ratio, "target": target, "verdict": verdict, "counts": counts}


def goals_markdown(rows: list[dict]) -> str:
    cases = goals(rows)
    lines = []
    for key, statement, _ in GOALS:
        mine = [c for c in cases if c["goal"] == key and c["counts"]]
        verdict = "not measured" if not mine else "met" if all(c["verdict"] == "met" for c in mine) else "missed"
        lines.append(f"- **{verdict}**: {statement}")
    lines += ["", "| goal | case | ratio | target | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {c['goal']} | {c['case']} | {c['ratio']:.2f} | {c['target']} | {c['verdict']} |" for c in cases]
    return "\n".join(lines)


def _row_cells(r) -> str:
    if r.get("status") != "ok":
        return f"- | - | - | - | - | {r.get('status')} |"
    spread = f"{r['median_ms']:.3g} ({r['min_ms']:.3g}-{r['max_ms']:.3g})"
    return (
        f"{spread} | {_fmt(r.get('ratio_to_rnnx'), '.2f')} | {_fmt(r.get('tokens_per_s'), ',.0f')} | "
        f"{_fmt(r.get('memory_mib'), '.1f')} | {_fmt(r.get('compile_s'), '.2f')} | ok |"
    )


def headline_markdown(rows: list[dict]) -> str:
    header = (
        "| cell | mode | library | median ms (min-max) | x rnnx | tokens/s | memory MiB | compile s | status |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    parts = []
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        mine = [r for r in rows if r["dtype"] == dtype]
        lines = [f"### {dtype}", "", header]
        lines += [f"| {r['cell']} | {r.get('mode', '-')} | {r['peer']} | {_row_cells(r)}" for r in mine]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def sweep_markdown(rows: list[dict]) -> str:
    lines = [
        "| sweep | B | T | H | cell | dtype | mode | library | median ms (min-max) | x rnnx | tokens/s | memory MiB | "
        "compile s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['part'].removeprefix('sweep-')} | {r['batch']} | {r['steps']} | {r['hidden']} | {r['cell']} | "
            f"{r['dtype']} | {r.get('mode', '-')} | {r['peer']} | {_row_cells(r)}"
        )
    return "\n".join(lines)


def kernels_markdown(rows: list[dict], cell="lstm", mode="forward") -> str:
    """Kernels per scan step of every JAX contender, for ``cell``'s ``mode`` at the headline shape."""
    lines = [
        "| dtype | library | while loops | kernels per step | fusions | custom calls | other | whole module "
        "(outside loops) | custom-call targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _ok(rows):
        counts = (r.get("hlo") or {}) if r.get("part") == "headline" and r["cell"] == cell else {}
        if r["mode"] != mode or not counts:
            continue
        step = max(counts["loops"], key=lambda loop: loop["kernels"], default=None)
        per_step = [str(step[k]) if step else "0" for k in ("kernels", "fusion", "custom_call", "other")]
        targets = ", ".join(f"`{k}` x{v}" for k, v in counts["module"]["custom_call_targets"].items()) or "-"
        lines.append(
            f"| {r['dtype']} | {r['peer']} | {len(counts['loops'])} | {' | '.join(per_step)} | "
            f"{counts['module']['kernels']} | {targets} |"
        )
    return "\n".join(lines)


def gpu_markdown(result: dict) -> str:
    """The accelerator report: device, goals, headline tables, kernel counts, sweeps, what was skipped."""
    env, rows = result["environment"], result["rows"]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    head = [r for r in rows if r.get("part") == "headline"]
    sweep = [r for r in rows if r.get("part", "").startswith("sweep")]
    shape = next((f"B={r['batch']} T={r['steps']} I={r['input']} H={r['hidden']}" for r in head), "-")
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
        "## Where the time goes: kernels per scan step, LSTM forward at the headline shape",
        "",
        "Counted in each contender's compiled HLO (`benchmarks/hlo.py`): a scan step launches about this many "
        "kernels on a GPU; cuDNN runs every step inside one custom call.",
        "",
        kernels_markdown(rows),
        "",
        "## Sweeps (training step unless noted)",
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
    ok = [r for r in _ok(rows) if r.get(metric) is not None]
    axes_ = [a for a in ("steps", "hidden", "batch") if any(r.get("part") == f"sweep-{a}" for r in ok)]
    labels = {"steps": "sequence length T", "hidden": "hidden size H", "batch": "batch B"}
    ylabel = {"tokens_per_s": "train tokens/s", "median_ms": "train step ms"}.get(metric, metric)
    if axes_:
        cells = sorted({r["cell"] for r in ok if r.get("part", "").startswith("sweep")})
        colors = {}
        fig, grid = plt.subplots(len(axes_), len(cells), figsize=(4.5 * len(cells), 3.6 * len(axes_)), squeeze=False)
        for i, axis in enumerate(axes_):
            for j, cell in enumerate(cells):
                ax = grid[i][j]
                mine = [r for r in ok if r["cell"] == cell and r["mode"] == "train"]
                mine = [r for r in mine if r.get("part") in (f"sweep-{axis}", "headline")]
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
        head = [r for r in ok if r.get("part", "headline") == "headline"]
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
        "rows": [r for res in results for r in res["rows"]],
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
