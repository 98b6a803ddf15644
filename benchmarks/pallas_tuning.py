"""The fused Pallas kernels' layout on a GPU: a search over :class:`rnnx.core.backends.pallas.Tuning`.

    python -m benchmarks.pallas_tuning [--cells lstm,gru,simple_rnn] [--shapes 64x100x128,64x1000x128]
                                       [--dtypes float32] [--modes forward,train] [--blocks 16,32,64]
                                       [--warps 2,4,8] [--stages 1,2,3] [--repeats 10]
                                       [--budget-seconds 150] [--out DIR] [--tiny]

For each cell, shape (``BxTxH``, input 300 as in the suite's headline) and dtype, every layout (batch rows per
kernel instance, Triton's warps and pipeline stages) is compiled inside :func:`rnnx.core.backends.pallas.tuned`
and timed interleaved with the others, forward and as a training step, with the default layout among them; the
fastest per mode is kept. Off a GPU the kernels run in Pallas's interpreter, which ignores warps and stages, so
a rehearsal (``--tiny``: tiny shapes, blocks 16 and 32, two repeats) searches the block alone and its times mean
nothing. Results are rewritten after every shape (``pallas_tuning-<device>.{json,md}``), so a run cut short keeps
what it measured; a layout that fails to compile is recorded with its one-line reason and the others still run.

Not searched: storing each step's gates in the forward pass against recomputing them in the backward one (the
kernels recompute; see :mod:`rnnx.core.backends.pallas`). That is a second kernel design, not a layout.
"""

import argparse
import itertools
import json
import time
from pathlib import Path

import jax

from benchmarks.peers import Config, Unavailable, build_rnnx_backend
from benchmarks.rows import fmt, slug
from benchmarks.timing import reason, time_interleaved
from rnnx.core.backends import pallas

__all__ = ["layouts", "main", "markdown", "search"]


def layouts(blocks, warps, stages, gpu: bool) -> list[pallas.Tuning]:
    """Every layout to try, the default first; off a GPU only the block varies (the interpreter ignores the rest)."""
    default = pallas.Tuning()
    if not gpu:
        warps, stages = (default.num_warps,), (default.num_stages,)
    found = [pallas.Tuning(block=b, num_warps=w, num_stages=s) for b, w, s in itertools.product(blocks, warps, stages)]
    return [default, *[t for t in found if t != default]]


def _label(tuning: pallas.Tuning) -> str:
    return f"block={tuning.block} warps={tuning.num_warps} stages={tuning.num_stages}"


def search(cfg: Config, tunings: list[pallas.Tuning], modes: tuple[str, ...], repeats: int) -> dict:
    """One shape: ``{"config", "layouts": {label: {mode: median_ms} or {"status": reason}}, "best": {mode: ...}}``."""
    calls, results = {}, {}
    for tuning in tunings:
        label = _label(tuning)
        try:
            with pallas.tuned(tuning):  # the contender compiles (traces) here, so this layout is baked in
                contender = build_rnnx_backend(cfg, modes, backend="pallas")
        except Unavailable as error:
            results[label] = {"status": f"failed: {error}"}
            continue
        calls.update({(label, mode): fn for mode, fn in contender.calls.items()})
        results[label] = {"status": "ok", "first_call_s": contender.first_call_s}
    errors: dict = {}
    timed = time_interleaved(calls, repeats=repeats, errors=errors)
    for (label, mode), timing in timed.items():
        results[label][f"{mode}_ms"] = timing["median_ms"]
    for (label, _), why in errors.items():
        results[label] = {"status": f"failed: {why}"}
    best = {}
    default = _label(pallas.Tuning())
    for mode in modes:
        key = f"{mode}_ms"
        timed_here = {label: r[key] for label, r in results.items() if key in r}
        if timed_here:
            winner = min(timed_here, key=timed_here.__getitem__)
            base = timed_here.get(default)
            best[mode] = {"layout": winner, "median_ms": timed_here[winner], "default_ms": base,
                          "speedup_over_default": None if base is None else base / timed_here[winner]}  # fmt: skip
    return {"config": vars(cfg), "layouts": results, "best": best}


def markdown(record: dict) -> str:
    lines = [f"# Pallas kernel layouts on {record['device']}", ""]
    if not record["gpu"]:
        lines += ["Not a GPU: the kernels ran in Pallas's interpreter (block only; the times mean nothing).", ""]
    lines += ["| cell | dtype | B x T x H | mode | best layout | best ms | default ms | speed-up |", "|---" * 8 + "|"]
    for shape in record["shapes"]:
        c = shape["config"]
        for mode, best in shape["best"].items():
            lines.append(
                f"| {c['cell']} | {c['dtype']} | {c['batch']}x{c['steps']}x{c['hidden']} | {mode} | {best['layout']} "
                f"| {fmt(best['median_ms'], '.3f')} | {fmt(best['default_ms'], '.3f')} "
                f"| {fmt(best['speedup_over_default'], '.2f')}x |"
            )
    failed = [(s["config"]["cell"], label, r["status"]) for s in record["shapes"] for label, r in s["layouts"].items()]
    failed = [f for f in failed if f[2] != "ok"]
    if failed:
        lines += ["", "Layouts that did not run:", ""] + [f"- {cell}, {label}: {why}" for cell, label, why in failed]
    if record["skipped"]:
        lines += ["", f"Not reached within the budget: {', '.join(record['skipped'])}"]
    return "\n".join(lines) + "\n"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _shapes(text: str) -> list[tuple[int, int, int]]:
    shapes = []
    for item in text.split(","):
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(f"--shapes takes BxTxH items such as 64x100x128, received {item!r}")
        shapes.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return shapes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pallas_tuning", description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default="lstm,gru,simple_rnn")
    parser.add_argument("--shapes", type=_shapes, default=None, help="BxTxH items (default 64x100x128,64x1000x128)")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--modes", default="forward,train")
    parser.add_argument("--blocks", type=_ints, default=(16, 32, 64))
    parser.add_argument("--warps", type=_ints, default=(2, 4, 8))
    parser.add_argument("--stages", type=_ints, default=(1, 2, 3))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budget-seconds", type=float, default=150.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tiny", action="store_true", help="a rehearsal: tiny shapes, blocks 16 and 32, 2 repeats")
    args = parser.parse_args(argv)
    gpu = jax.default_backend() == "gpu"
    shapes = args.shapes or ([(20, 4, 8)] if args.tiny else [(64, 100, 128), (64, 1000, 128)])
    blocks, repeats = ((16, 32), 2) if args.tiny else (args.blocks, args.repeats)
    tunings = layouts(blocks, args.warps, args.stages, gpu)
    device = jax.devices()[0].device_kind
    record = {"device": device, "gpu": gpu, "layouts": [_label(t) for t in tunings], "shapes": [], "skipped": []}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"pallas_tuning-{slug(device)}"
    started = time.perf_counter()
    todo = [(c, s, d) for s in shapes for c in args.cells.split(",") for d in args.dtypes.split(",")]
    for n, (cell, (batch, steps, hidden), dtype) in enumerate(todo):
        name = f"{cell} {dtype} {batch}x{steps}x{hidden}"
        if time.perf_counter() - started > args.budget_seconds:
            record["skipped"].append(name)
            continue
        print(f"[{n + 1}/{len(todo)}] {name}: {len(tunings)} layouts", flush=True)
        cfg = Config(cell, batch=batch, steps=steps, input=8 if args.tiny else 300, hidden=hidden, dtype=dtype)
        try:
            shape = search(cfg, tunings, tuple(args.modes.split(",")), repeats)
        except Exception as error:  # one shape's failure is a record, never the end of the run
            shape = {"config": vars(cfg), "layouts": {"all": {"status": f"failed: {reason(error)}"}}, "best": {}}
        record["shapes"].append(shape)
        for mode, best in shape["best"].items():
            print(f"    {mode}: {best['layout']} {best['median_ms']:.3f} ms (default {fmt(best['default_ms'], '.3f')})")
        stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
        stem.with_suffix(".md").write_text(markdown(record))
    print(f"wrote {stem}.json and .md in {time.perf_counter() - started:.0f} s")
    return record


if __name__ == "__main__":
    main()
