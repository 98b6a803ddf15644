"""The rnnx benchmark suite: speed, memory and parameter counts of rnnx's cells against the usual libraries.

    python -m benchmarks                      # CPU: B=64 T=100 I=300 H=128 float32, cells and peers below
    python -m benchmarks --cells lstm --steps 1000 --remat --peers rnnx,torch
    python -m benchmarks --sweep              # CPU: also time vs T and vs H (rnnx, torch, flax.linen), and a plot
    python -m benchmarks --suite gpu          # what a GPU machine runs by default (see below)

Cells are named as in ``rnnx.CELLS``. Every contender of one configuration is timed interleaved in this one
process (medians after warm-up; JAX waits with ``block_until_ready``, torch with ``torch.cuda.synchronize``),
so noise falls on all alike; ratios are peer / rnnx (the scan path). A contender that is unavailable,
unsupported for a dtype or fails is reported in its row; it never stops the run.

**The GPU suite** (default when ``jax.default_backend() == "gpu"``): torch CUDA (cuDNN) beside rnnx's scan,
rnnx ``pallas`` (the fused kernels), ``auto`` and ``cudnn`` (LSTM), flax ``nn.RNN``, flax.nnx and Equinox, forward,
forward+backward (``backward``) and training step (``train``). In order of value: the headline B=64 I=300 H=128 at
T=100 and T=1000 in float32 for the goal cells (LSTM, GRU, simple RNN; T=1000 with the fewer ``--sweep-peers``),
then the other cells, then bfloat16; then sweeps over H (512, 1024, 256), T (10000) and B (8, 256), each value in
float32 and bfloat16 side by side, forward and training step (parts ``hidden``, ``steps``, ``batch``). It
reports median time, ratio to rnnx, tokens/s, memory, compile time, per-step µs and the fraction of the matmul
peak (``benchmarks/roofline.py``), kernels per scan step from the compiled HLO, and the accelerator goals as
met/missed/not measured, and writes ``gpu-<device>.{json,md,png}``. A contender that cannot run a configuration
(no cuDNN GRU, a ValueError from ``backend="pallas"``) is a row with its one-line reason. ``--budget-seconds`` skips
(and records) the configurations left when time runs out; results are rewritten after every configuration, so a
run killed by ``timeout`` keeps what it measured. ``--tiny`` shrinks every shape and repeat, for rehearsing on a
CPU, where ``pallas`` runs in Pallas's interpreter.

Results go to ``--out``, default ``$OUT`` when set, else ``benchmarks/results``. Progress goes to stderr.
"""

import argparse
import dataclasses
import os
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path

import jax

import rnnx
from benchmarks import report, roofline
from benchmarks.peers import DEFAULT_MODES, MODES, PEERS, Config, Unavailable, Unsupported
from benchmarks.rows import fmt, slug
from benchmarks.timing import reason, time_interleaved

# The seed's speed claims, as ranges of the time ratio they assert.
CLAIMS = {
    "LSTM ~3x slower than GRU (lstm/gru = 2.5-3.5)": ("lstm", "gru", 2.5, 3.5),
    "GRU ~25% faster than LSTM (lstm/gru = 1.15-1.45)": ("lstm", "gru", 1.15, 1.45),
}
CPU_CELLS = ("simple_rnn", "lstm", "gru", "min_gru", "lru", "rg_lru", "slstm", "mlstm")
CPU_PEERS = ("rnnx", "flax.linen", "flax.linen OptimizedLSTM", "flax.nnx", "equinox", "torch")
GPU_CELLS = (
    "lstm",
    "gru",
    "simple_rnn",
    "min_gru",
    "min_lstm",
    "lru",
    "rg_lru",
    "slstm",
    "mlstm",
)  # cuDNN's goal first
GOAL_CELLS = ("lstm", "gru", "simple_rnn")  # the fused-kernel goals' cells
GPU_PEERS = (
    "rnnx",
    "rnnx-pallas",
    "rnnx-auto",
    "rnnx-cudnn",
    "flax.linen",
    "flax.linen OptimizedLSTM",
    "flax.nnx",
    "equinox",
    "torch",
)
SWEEP_PEERS = ("rnnx", "rnnx-pallas", "rnnx-cudnn", "flax.linen", "torch")
SWEEP_MODES = ("forward", "train")
HEADLINE = {"batch": 64, "steps": 100, "input": 300, "hidden": 128}
HEADLINE_STEPS = (100, 1000)  # the fused-kernel goals are stated at both
# In order of value: H=512 and 1024 hold the bfloat16 goal and lie past cuDNN's persistent-kernel limit; then the
# long sequence, where only the per-step cost counts; then batch.
SWEEPS = {"hidden": (512, 1024, 256), "steps": (10000,), "batch": (8, 256)}
TINY = {"batch": 2, "steps": 4, "input": 6, "hidden": 4}
TINY_HEADLINE_STEPS = (4, 10)
TINY_SWEEPS = {"hidden": (8, 12), "steps": (16,), "batch": (1, 3)}
GPU_PARTS = ("headline", *SWEEPS)


@dataclasses.dataclass(frozen=True)
class Job:
    """One configuration to time: its contenders and modes, and the part of the plan it belongs to."""

    part: str  # "headline", "sweep-hidden", "sweep-steps", "sweep-batch", or "cpu" / "sweep-<axis>" on the CPU suite
    config: Config
    peers: tuple[str, ...]
    modes: tuple[str, ...]
    repeats: int


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def gpu_plan(
    parts=GPU_PARTS,
    cells=GPU_CELLS,
    sweep_cells=GOAL_CELLS,
    dtypes=("float32", "bfloat16"),
    peers=GPU_PEERS,
    sweep_peers=SWEEP_PEERS,
    repeats: int = 15,
    tiny: bool = False,
    base: dict | None = None,
    headline_steps: tuple[int, ...] | None = None,
    modes: tuple[str, ...] = MODES,
) -> list[Job]:
    """The GPU suite's configurations, most valuable first.

    The headline shape at each of ``headline_steps`` (the first with every contender, the others with the sweep
    contenders), in ``modes``, ordered: float32 before bfloat16, the goal cells before the others, short before
    long. Then per sweep axis and value, each sweep cell in float32 and bfloat16 side by side, in those of
    ``modes`` among forward and training step, with fewer repeats; a configuration the headline holds is not repeated.
    """
    base = dict(TINY if tiny else (base or HEADLINE))
    default_steps = HEADLINE_STEPS if base["steps"] == HEADLINE["steps"] else (base["steps"],)
    steps = headline_steps or (TINY_HEADLINE_STEPS if tiny else default_steps)
    sweeps = TINY_SWEEPS if tiny else SWEEPS
    jobs = []
    if "headline" in parts:
        order = sorted(
            ((d, c, t) for d in dtypes for c in cells for t in steps),
            key=lambda k: (dtypes.index(k[0]), k[1] not in GOAL_CELLS, steps.index(k[2]), cells.index(k[1])),
        )
        for dtype, cell, t in order:
            config = Config(cell, **(base | {"steps": t}), dtype=dtype)
            jobs.append(Job("headline", config, tuple(peers if t == steps[0] else sweep_peers), modes, repeats))
    planned = {j.config for j in jobs}
    sweep_modes = tuple(m for m in SWEEP_MODES if m in modes)
    for axis, values in sweeps.items():
        if axis not in parts:
            continue
        for value in values:
            for cell in sweep_cells:
                for dtype in dtypes:
                    cfg = Config(cell, **(base | {axis: value}), dtype=dtype)
                    if cfg not in planned:
                        jobs.append(Job(f"sweep-{axis}", cfg, tuple(sweep_peers), sweep_modes, max(3, repeats // 3)))
    return jobs


def cpu_plan(cells, peers, modes, dtypes, repeats, base: dict, sweep: bool) -> list[Job]:
    """The CPU suite: every cell at ``base``; with ``sweep``, forward and training-step time against T and
    training-step time against H."""
    jobs = [Job("cpu", Config(c, **base, dtype=d), tuple(peers), tuple(modes), repeats) for d in dtypes for c in cells]
    if sweep:
        sweep_peers = tuple(p for p in peers if p in ("rnnx", "torch", "flax.linen"))
        for cell in cells:
            for axis, values in (("steps", (25, 100, 400)), ("hidden", (64, 128, 256, 512))):
                for value in values:
                    cfg = Config(cell, **(base | {axis: value}), dtype=dtypes[0])
                    sweep_modes = tuple(modes) if axis == "steps" else ("train",)
                    jobs.append(Job(f"sweep-{axis}", cfg, sweep_peers, sweep_modes, max(5, repeats // 3)))
    return jobs


def matmul_peak_gflops(dtype: str, size: int = 2048, repeats: int = 10) -> float:
    """This device's measured dense matmul rate: the denominator of "fraction of peak"."""
    a = jax.random.normal(jax.random.key(0), (size, size)).astype(dtype)
    fn = jax.jit(lambda a: a @ a)
    t = time_interleaved({"mm": lambda: fn(a)}, repeats=repeats)["mm"]["min_ms"]  # a peak is the best run
    return 2 * size**3 / (t * 1e-3) / 1e9


def run_config(job: Job, peers: dict = PEERS, peak: dict | None = None) -> list[dict]:
    """Build and time every contender of one job, interleaved; one row per (peer, mode), failures included."""
    cfg, contenders, rows = job.config, {}, []
    common = {"part": job.part, **dataclasses.asdict(cfg)}
    for name in job.peers:
        log(f"  building {name} {cfg.cell} {cfg.dtype} (B={cfg.batch} T={cfg.steps} H={cfg.hidden})")
        try:
            contenders[name] = peers[name](cfg, job.modes)
            continue
        except Unsupported as why:
            status = f"unsupported: {why}"
        except Unavailable as why:
            status = f"unavailable: {why}"
        except Exception as error:  # any library's failure is a row, never the end of the run
            status = f"failed: {reason(error)}"
        log(f"  {name}: {status}")
        rows += [{"peer": name, "mode": mode, **common, "status": status} for mode in job.modes]
    for mode in job.modes:
        log(f"  timing {mode}: {', '.join(contenders)}")
        errors = {}
        times = time_interleaved({n: c.calls[mode] for n, c in contenders.items()}, job.repeats, errors=errors)
        base = times["rnnx"]["median_ms"] if "rnnx" in times else None
        for name, c in contenders.items():
            if name not in times:
                rows.append({"peer": name, "mode": mode, **common, "status": f"failed: {errors.get(name)}"})
                continue
            t, memory = times[name], c.memory_bytes.get(mode)
            gflops = cfg.flops(mode) / (t["median_ms"] * 1e-3) / 1e9
            rows.append(
                {
                    "peer": name,
                    "mode": mode,
                    **common,
                    "status": "ok",
                    **t,
                    "ratio_to_rnnx": t["median_ms"] / base if base else None,
                    "tokens_per_s": cfg.tokens / (t["median_ms"] * 1e-3),
                    "memory_mib": memory / 2**20 if memory is not None else None,
                    "first_call_s": c.first_call_s[mode],
                    "compile_s": c.first_call_s[mode] - t["median_ms"] * 1e-3,
                    "params": c.params,
                    "gflops": gflops,
                    "fraction_of_peak": gflops / peak[cfg.dtype] if peak and peak.get(cfg.dtype) else None,
                    "hlo": c.hlo.get(mode),
                }
            )
    return sorted(rows, key=lambda r: (job.modes.index(r["mode"]), job.peers.index(r["peer"])))


def markdown(rows: list[dict]) -> str:
    """The CPU suite's table."""
    lines = [
        "| cell | mode | library | median ms (min-max) | x rnnx | compile s | memory MiB | GFLOP/s | % peak | params |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("status") != "ok":
            continue
        lines.append(
            f"| {r['cell']} | {r['mode']} | {r['peer']} | {r['median_ms']:.2f} ({r['min_ms']:.1f}-{r['max_ms']:.1f}) "
            f"| {fmt(r['ratio_to_rnnx'], '.2f')} | {fmt(r['compile_s'], '.2f')} | {fmt(r['memory_mib'], '.1f')} "
            f"| {r['gflops']:.0f} | {fmt(r['fraction_of_peak'] and 100 * r['fraction_of_peak'], '.0f')} | {r['params']:,} |"
        )
    skipped = sorted({f"{r['peer']}: {r['status']}" for r in rows if r.get("status") != "ok"})
    return "\n".join(lines + ([""] + [f"- {s}" for s in skipped] if skipped else []))


def claims(rows: list[dict], libraries=("rnnx", "torch")) -> str:
    """The seed's claims against the measured medians, per library and mode."""
    median = {
        (r["peer"], r["mode"], r["cell"]): r["median_ms"]
        for r in rows
        if r.get("status") == "ok" and r["peer"] in libraries
    }
    lines = ["| claim | library | mode | measured | verdict |", "|---|---|---|---|---|"]
    for claim, (slow, fast, low, high) in CLAIMS.items():
        for (peer, mode, cell), ms in sorted(median.items()):
            if cell != slow or (peer, mode, fast) not in median:
                continue
            ratio = ms / median[(peer, mode, fast)]
            verdict = "holds" if low <= ratio <= high else "does not hold"
            lines.append(f"| {claim} | {peer} | {mode} | {ratio:.2f} | {verdict} |")
    for (peer, mode, cell), ms in sorted(median.items()):
        if cell == "gru" and (peer, mode, "simple_rnn") in median:
            ratio = ms / median[(peer, mode, "simple_rnn")]
            lines.append(f"| (context) gru/simple_rnn time | {peer} | {mode} | {ratio:.2f} | - |")
    return "\n".join(lines)


def parameter_table(input_size: int, hidden: int) -> str:
    i, h = input_size, hidden
    count = lambda name, **kw: rnnx.count_params(rnnx.make_cell(name, h, **kw).init(jax.random.key(0), i))  # noqa: E731
    return "\n".join(
        [
            f"| convention (input {i}, hidden {h}) | RNN | LSTM | GRU |",
            "|---|---|---|---|",
            f"| rnnx (one folded bias; GRU reset-after keeps b_hn) | {count('simple_rnn'):,} | {count('lstm'):,} | "
            f"{count('gru'):,} |",
            f"| textbook, one bias per gate (rnnx gru reset_after=False) | {h * (i + h + 1):,} | {4 * h * (i + h + 1):,} | "
            f"{count('gru', reset_after=False):,} |",
            f"| PyTorch / cuDNN / Keras, two biases | {h * (i + h + 2):,} | {4 * h * (i + h + 2):,} | {3 * h * (i + h + 2):,} |",
        ]
    )


def environment(with_torch: bool) -> dict:
    versions = {}
    for package in ("jax", "jaxlib", "jax-cuda12-plugin", "flax", "optax", "equinox", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    device = jax.devices()[0]
    torch_device = None
    if with_torch:
        try:
            import torch

            torch_device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        except Exception as error:  # torch missing or broken: the JAX rows still stand
            torch_device = f"unavailable: {reason(error)}"
    return {
        "backend": jax.default_backend(),
        "device": device.device_kind,
        "torch_device": torch_device,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _split(text: str | None, default) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else tuple(default)


def _check(parser, flag, values, allowed):
    unknown = [v for v in values if v not in allowed]
    if unknown:
        parser.error(f"{flag}: unknown {unknown}; expected a subset of {list(allowed)}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--suite",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="auto: gpu when jax's default backend is a GPU, else cpu",
    )
    parser.add_argument("--cells", help=f"comma-separated subset of {list(rnnx.CELLS)}")
    parser.add_argument("--sweep-cells", default=",".join(GOAL_CELLS), help="GPU suite: cells of the sweeps")
    parser.add_argument("--parts", default=",".join(GPU_PARTS), help=f"GPU suite: subset of {list(GPU_PARTS)}")
    parser.add_argument("--batch", type=int, default=HEADLINE["batch"])
    parser.add_argument("--steps", type=int, default=HEADLINE["steps"])
    parser.add_argument(
        "--headline-steps",
        help="GPU suite: comma-separated T of the headline (default 100,1000; --tiny 4,10); the first gets every peer",
    )
    parser.add_argument("--input", type=int, default=HEADLINE["input"])
    parser.add_argument("--hidden", type=int, default=HEADLINE["hidden"])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="one dtype (same as --dtypes)")
    parser.add_argument("--dtypes", help="comma-separated; default float32 (CPU suite), float32,bfloat16 (GPU)")
    parser.add_argument("--remat", action="store_true", help="rnnx rematerialises each step")
    parser.add_argument(
        "--modes", help=f"subset of {list(MODES)}; default forward,train (CPU suite), all three (GPU headline)"
    )
    parser.add_argument("--peers", help=f"comma-separated subset of {list(PEERS)}")
    parser.add_argument("--sweep-peers", default=",".join(SWEEP_PEERS), help="GPU suite: peers of the sweeps")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 15; --tiny 2)")
    parser.add_argument(
        "--sweep", action="store_true", help="CPU suite: also train-step time vs T and vs H, and a plot"
    )
    parser.add_argument("--tiny", "--quick", action="store_true", help="tiny shapes and few repeats (rehearsals)")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="skip the configurations left once this many seconds have passed (recorded)",
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "benchmarks/results"))
    parser.add_argument("--name", default=None, help="results file stem; {device} is the device's slug")
    args = parser.parse_args(argv)
    args.suite = ("gpu" if jax.default_backend() == "gpu" else "cpu") if args.suite == "auto" else args.suite
    gpu = args.suite == "gpu"
    args.cells = _split(args.cells, GPU_CELLS if gpu else CPU_CELLS)
    args.sweep_cells = _split(args.sweep_cells, ())
    args.parts = _split(args.parts, GPU_PARTS)
    args.dtypes = _split(args.dtypes or args.dtype, ("float32", "bfloat16") if gpu else ("float32",))
    args.modes = _split(args.modes, MODES if gpu else DEFAULT_MODES)
    args.headline_steps = tuple(int(t) for t in _split(args.headline_steps, ())) or None
    args.peers = _split(args.peers, GPU_PEERS if gpu else CPU_PEERS)
    args.sweep_peers = _split(args.sweep_peers, SWEEP_PEERS)
    args.repeats = args.repeats or (2 if args.tiny else 15)
    _check(parser, "--cells", args.cells + args.sweep_cells, rnnx.CELLS)
    _check(parser, "--parts", args.parts, GPU_PARTS)
    _check(parser, "--dtypes", args.dtypes, ("float32", "bfloat16"))
    _check(parser, "--modes", args.modes, MODES)
    _check(parser, "--peers", args.peers + args.sweep_peers, PEERS)
    return args


def main(argv=None):
    start = time.perf_counter()
    args = parse_args(argv)
    gpu = args.suite == "gpu"
    base = {"batch": args.batch, "steps": args.steps, "input": args.input, "hidden": args.hidden}
    if gpu:
        jobs = gpu_plan(
            args.parts,
            args.cells,
            args.sweep_cells,
            args.dtypes,
            args.peers,
            args.sweep_peers,
            args.repeats,
            args.tiny,
            base,
            args.headline_steps,
            args.modes,
        )
    else:
        base = TINY if args.tiny else base
        base = base | {"layers": args.layers, "bidirectional": args.bidirectional, "remat": args.remat}
        jobs = cpu_plan(args.cells, args.peers, args.modes, args.dtypes, args.repeats, base, args.sweep)
    env = environment(with_torch="torch" in args.peers)
    log(f"device: {env['backend']} {env['device']} (torch: {env['torch_device']}); {len(jobs)} configurations")
    measured = {d: matmul_peak_gflops(d, size=128 if args.tiny else 2048) for d in args.dtypes}
    peaks = {d: roofline.peak(slug(env["device"]), d, measured[d]) for d in args.dtypes}
    peak = {d: gflops for d, (gflops, _) in peaks.items()}
    stem = (args.name or ("gpu-{device}" if gpu else f"{env['backend']}-{env['device']}")).format(
        device=slug(env["device"])
    )
    if not gpu and args.name is None:
        stem = stem.replace(" ", "_").lower()
    result = {
        "name": stem,
        "suite": args.suite,
        "environment": env,
        "matmul_peak_gflops": measured,
        "peak": {d: {"gflops": gflops, "source": source} for d, (gflops, source) in peaks.items()},
        "repeats": args.repeats,
        "budget_seconds": args.budget_seconds,
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": [],
        "skipped_configs": [],
    }

    def save(final: bool):
        result["elapsed_s"] = time.perf_counter() - start
        stats = jax.devices()[0].memory_stats() or {}
        result["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
        result["rows"] = roofline.with_per_step(result["rows"])
        if gpu:
            text = report.gpu_markdown(result)
        else:
            rows = [r for r in result["rows"] if r["part"] == "cpu"]
            text = f"# {stem}\n\n" + markdown(rows) + "\n\n" + claims(rows) + "\n"
        return report.write(result, args.out, stem, text, with_plot=final and (gpu or args.sweep))

    for i, job in enumerate(jobs):
        elapsed = time.perf_counter() - start
        if args.budget_seconds is not None and elapsed > args.budget_seconds:
            log(f"[{i + 1}/{len(jobs)}] skipped (budget {args.budget_seconds:.0f} s spent): {job.part} {job.config}")
            result["skipped_configs"].append({"part": job.part, **dataclasses.asdict(job.config)})
            continue
        log(f"[{i + 1}/{len(jobs)} {elapsed:.0f} s] {job.part} {job.config.cell} {job.config.dtype}")
        result["rows"] += run_config(job, peak=peak)
        save(final=False)
    paths = save(final=True)

    if gpu:
        print(report.gpu_markdown(result))
    else:
        rows = [r for r in result["rows"] if r["part"] == "cpu"]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"## {env['backend']} {env['device']} ({env['cpu_count']} cores), measured matmul peak "
            f"{', '.join(f'{v:.0f} GFLOP/s ({k})' for k, v in peak.items())}\n"
        )
        print(
            f"B={base['batch']} T={base['steps']} I={base['input']} H={base['hidden']} layers={args.layers} "
            f"bidirectional={args.bidirectional} remat={args.remat}; medians of {args.repeats} interleaved runs.\n"
        )
        print(markdown(rows) + "\n")
        print(f"Process peak RSS (all libraries in one process, torch included): {rss:.0f} MiB.\n")
        print("### The seed's speed claims\n\n" + claims(rows) + "\n")
        print("### Parameter counts\n\n" + parameter_table(base["input"], base["hidden"]) + "\n")
    log("wrote " + ", ".join(str(p) for p in paths))
    return result


if __name__ == "__main__":
    main()
