"""The rnnx benchmark suite: speed and parameter counts of RNN, LSTM and GRU against the usual libraries.

    python -m benchmarks                      # defaults: B=64 T=100 I=300 H=128 float32, all cells and peers
    python -m benchmarks --cells lstm --steps 1000 --remat --peers rnnx,torch
    python -m benchmarks --sweep              # also time vs T and vs H (rnnx, torch, flax.linen) and plot

Every contender of one configuration is timed interleaved in this one process (medians after warm-up,
``block_until_ready``), so the shared machine's noise falls on all alike; ratios are peer / rnnx.
Writes a Markdown table to stdout and ``--out``/``<device>.json`` (all samples, device, versions), and
with ``--sweep`` a PNG plot if matplotlib is installed. Progress goes to stderr.
"""

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path

import jax

import rnnx
from benchmarks.peers import PEERS, RNNX_CELLS, Config, Unavailable
from benchmarks.timing import time_interleaved

MODES = ("forward", "train")
# The seed's speed claims, as ranges of the time ratio they assert.
CLAIMS = {
    "LSTM ~3x slower than GRU (lstm/gru = 2.5-3.5)": ("lstm", "gru", 2.5, 3.5),
    "GRU ~25% faster than LSTM (lstm/gru = 1.15-1.45)": ("lstm", "gru", 1.15, 1.45),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def matmul_peak_gflops(dtype: str, size: int = 2048, repeats: int = 10) -> float:
    """This device's measured dense matmul rate: the denominator of "fraction of peak"."""
    a = jax.random.normal(jax.random.key(0), (size, size)).astype(dtype)
    fn = jax.jit(lambda a: a @ a)
    t = time_interleaved({"mm": lambda: fn(a)}, repeats=repeats)["mm"]["min_ms"]  # a peak is the best run
    return 2 * size**3 / (t * 1e-3) / 1e9


def run_config(cfg: Config, peers: list[str], modes, repeats: int, peak: float) -> list[dict]:
    """Time every available peer on one configuration, interleaved; one row per (peer, mode)."""
    contenders, rows = {}, []
    for name in peers:
        log(f"  building {name} {cfg.cell} (B={cfg.batch} T={cfg.steps} H={cfg.hidden})")
        try:
            contenders[name] = PEERS[name](cfg)
        except Unavailable as why:
            log(f"  skipped {name}: {why}")
            rows.append({"peer": name, "skipped": str(why), **dataclasses.asdict(cfg)})
    for mode in modes:
        log(f"  timing {mode}: {', '.join(contenders)}")
        times = time_interleaved({n: getattr(c, mode) for n, c in contenders.items()}, repeats=repeats)
        base = times["rnnx"]["median_ms"] if "rnnx" in times else None
        for name, t in times.items():
            c = contenders[name]
            gflops = cfg.flops(mode) / (t["median_ms"] * 1e-3) / 1e9
            rows.append({
                "peer": name, "mode": mode, **dataclasses.asdict(cfg), **t,
                "ratio_to_rnnx": t["median_ms"] / base if base else None,
                "compile_s": c.compile_s[mode], "temp_mib": c.temp_bytes / 2**20 if c.temp_bytes else None,
                "params": c.params, "gflops": gflops, "fraction_of_peak": gflops / peak,
            })  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| cell | mode | library | median ms (min-max) | x rnnx | compile s | XLA temp MiB | GFLOP/s | % peak | params |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            continue
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append(
            f"| {r['cell']} | {r['mode']} | {r['peer']} | {r['median_ms']:.2f} ({r['min_ms']:.1f}-{r['max_ms']:.1f}) "
            f"| {fmt(r['ratio_to_rnnx'], '.2f')} | {fmt(r['compile_s'], '.2f')} | {fmt(r['temp_mib'], '.1f')} "
            f"| {r['gflops']:.0f} | {100 * r['fraction_of_peak']:.0f} | {r['params']:,} |"
        )
    skipped = sorted({f"{r['peer']}: {r['skipped']}" for r in rows if "skipped" in r})
    return "\n".join(lines + ([""] + [f"- skipped {s}" for s in skipped] if skipped else []))


def claims(rows: list[dict], libraries=("rnnx", "torch")) -> str:
    """The seed's claims against the measured medians, per library and mode."""
    median = {(r["peer"], r["mode"], r["cell"]): r["median_ms"] for r in rows
              if "skipped" not in r and r["peer"] in libraries}  # fmt: skip
    lines = ["| claim | library | mode | measured | verdict |", "|---|---|---|---|---|"]
    for claim, (slow, fast, low, high) in CLAIMS.items():
        for (peer, mode, cell), ms in sorted(median.items()):
            if cell != slow or (peer, mode, fast) not in median:
                continue
            ratio = ms / median[(peer, mode, fast)]
            verdict = "holds" if low <= ratio <= high else "does not hold"
            lines.append(f"| {claim} | {peer} | {mode} | {ratio:.2f} | {verdict} |")
    for (peer, mode, cell), ms in sorted(median.items()):
        if cell == "gru" and (peer, mode, "rnn") in median:
            lines.append(f"| (context) gru/rnn time | {peer} | {mode} | {ms / median[(peer, mode, 'rnn')]:.2f} | - |")
    return "\n".join(lines)


def parameter_table(input_size: int, hidden: int) -> str:
    i, h = input_size, hidden
    return "\n".join([
        f"| convention (input {i}, hidden {h}) | RNN | LSTM | GRU |",
        "|---|---|---|---|",
        f"| rnnx (one folded bias; GRU reset-after keeps b_hn) | "
        f"{rnnx.count_params(rnnx.simple_rnn(h).init(jax.random.key(0), i)):,} | "
        f"{rnnx.count_params(rnnx.lstm(h).init(jax.random.key(0), i)):,} | "
        f"{rnnx.count_params(rnnx.gru(h).init(jax.random.key(0), i)):,} |",
        f"| textbook, one bias per gate (rnnx gru reset_after=False) | {h * (i + h + 1):,} | {4 * h * (i + h + 1):,} | "
        f"{rnnx.count_params(rnnx.gru(h, reset_after=False).init(jax.random.key(0), i)):,} |",
        f"| PyTorch / cuDNN / Keras, two biases | {h * (i + h + 2):,} | {4 * h * (i + h + 2):,} | {3 * h * (i + h + 2):,} |",
    ])  # fmt: skip


def environment() -> dict:
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "equinox", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(), "device": device.device_kind, "platform": platform.platform(),
        "processor": platform.processor(), "cpu_count": __import__("os").cpu_count(), "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }  # fmt: skip


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    sweep = [r for r in rows if "skipped" not in r and r.get("sweep")]
    cells = sorted({r["cell"] for r in sweep})
    fig, axes = plt.subplots(2, len(cells), figsize=(4 * len(cells), 7), squeeze=False)
    for col, cell in enumerate(cells):
        for row, (axis, label) in enumerate((("steps", "sequence length T"), ("hidden", "hidden size H"))):
            ax = axes[row][col]
            for peer in sorted({r["peer"] for r in sweep}):
                points = sorted((r[axis], r["median_ms"]) for r in sweep
                                if r["cell"] == cell and r["peer"] == peer and r["sweep"] == axis)  # fmt: skip
                if points:
                    ax.plot(*zip(*points), marker="o", label=peer)
            ax.set(xscale="log", yscale="log", xlabel=label, ylabel="train step ms", title=cell)
            ticks = sorted({r[axis] for r in sweep if r["sweep"] == axis})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="rnn,lstm,gru,min_gru", help=f"comma-separated subset of {list(RNNX_CELLS)}")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--remat", action="store_true", help="rnnx rematerialises each step")
    parser.add_argument("--modes", default="forward,train")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {list(PEERS)}")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sweep", action="store_true", help="also train-step time vs T and vs H, and a plot")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default=None, help="results file stem (default: the device)")
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers: unknown {unknown}; expected a subset of {list(PEERS)}")
    cells = args.cells.split(",")
    if not set(cells) <= set(RNNX_CELLS):
        parser.error(f"--cells: expected a subset of {','.join(RNNX_CELLS)}, received {args.cells}")
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        parser.error(f"--modes: expected a subset of {','.join(MODES)}, received {args.modes}")

    env = environment()
    log(f"device: {env['backend']} {env['device']}; measuring matmul peak")
    peak = matmul_peak_gflops(args.dtype)
    base = dict(batch=args.batch, steps=args.steps, input=args.input, hidden=args.hidden, layers=args.layers,
                bidirectional=args.bidirectional, dtype=args.dtype, remat=args.remat)  # fmt: skip
    rows = []
    for cell in cells:
        log(f"[{cell}]")
        rows += run_config(Config(cell, **base), peers, modes, args.repeats, peak)
    if args.sweep:
        sweep_peers = [p for p in peers if p in ("rnnx", "torch", "flax.linen")]
        for cell in cells:
            for axis, values in (("steps", (25, 100, 400)), ("hidden", (64, 128, 256, 512))):
                for value in values:
                    log(f"[sweep {cell} {axis}={value}]")
                    cfg = Config(cell, **(base | {axis: value}))
                    for r in run_config(cfg, sweep_peers, ["train"], max(5, args.repeats // 3), peak):
                        rows.append(r | {"sweep": axis})

    main_rows = [r for r in rows if not r.get("sweep")]
    torch_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"## {env['backend']} {env['device']} ({env['cpu_count']} cores), measured matmul peak {peak:.0f} GFLOP/s "
          f"({args.dtype})\n")  # fmt: skip
    print(f"B={args.batch} T={args.steps} I={args.input} H={args.hidden} layers={args.layers} "
          f"bidirectional={args.bidirectional} remat={args.remat}; medians of {args.repeats} interleaved runs.\n")  # fmt: skip
    print(markdown(main_rows) + "\n")
    print(f"Process peak RSS (all libraries in one process, torch included): {torch_rss:.0f} MiB.\n")
    print("### The seed's speed claims\n\n" + claims(main_rows) + "\n")
    print("### Parameter counts\n\n" + parameter_table(args.input, args.hidden) + "\n")

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"{env['backend']}-{env['device']}".replace(" ", "_").lower()
    result = {"environment": env, "matmul_peak_gflops": peak, "args": {k: str(v) for k, v in vars(args).items()},
              "process_peak_rss_mib": torch_rss, "rows": rows}  # fmt: skip
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text(f"# {stem}\n\n" + markdown(main_rows) + "\n\n" + claims(main_rows) + "\n")
    log(f"wrote {args.out / stem}.json and .md")
    if args.sweep and plot(rows, args.out / f"{stem}.png"):
        log(f"wrote {args.out / stem}.png")


if __name__ == "__main__":
    main()
