"""Population training (``rnnx.training.fit_population``): wall time per update and members per second against
the population size N, for the seed's TREC classifier and its character language model.

    nice -n 10 python -m benchmarks.population                    # CPU: N = 1, 2, 4, 8, 16, 32; both models
    python -m benchmarks.population --tiny --repeats 2            # a rehearsal at tiny sizes
    python -m benchmarks.population --budget-seconds 120          # what benchmarks/device.sh runs on a GPU

The models are built as ``rnnx train`` builds them, on synthetic data of the real shapes (no download):

- classifier: ``rnnx train --task classify`` at its defaults (simple RNN, hidden 64, embedding 128, batch 32),
  TREC's vocabulary (8,700 words) and 6 classes, questions padded to the 16-token bucket most fall in;
- language model: ``LanguageModelConfig``'s defaults (2-layer GRU(128), embedding 300, batch 64, window 100,
  vocabulary 65).

Every N of one model is timed interleaved in this process (``benchmarks.timing``: median of ``--repeats``
rounds after two warm-up calls), one call = one update of every member, the members sharing the batch, as
``fit_population`` runs them; ``solo`` is ``rnnx.training.make_train_step``'s update alone, as ``fit`` runs
it. Reported: ms per update, the ratio to N = 1, member-updates per second (N / time), and Adam's update
alone over the stacked params (timed beside, the gradient replaced by the params): the part of the step
that reads and writes every parameter, and so grows with N whatever the batching. The goals of
issue 24 (ratios from this one run): on a 2-core CPU, the classifier's 8 members in at most 3x one member's
time per update and 32 in at most 10x; on a GPU, 16 members in at most 1.5x. ``--malloc heap`` (the
default; see :func:`heap_malloc`) keeps glibc from handing large buffers back to the kernel after every
step, ``--malloc glibc`` leaves its defaults. Writes ``population-<device>[-glibc].{json,md,png}`` to
``--out`` (default ``benchmarks/results``).
"""

import argparse
import ctypes
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax

import rnnx
from rnnx.apps import models
from rnnx.training import make_train_step
from rnnx.training.population import population

from .timing import time_interleaved

GOALS = {"cpu": ((8, 3.0), (32, 10.0)), "gpu": ((16, 1.5),)}
SIZES = {  # (vocab, embed, hidden, layers, batch, length)
    "classifier": (8700, 128, 64, 1, 32, 16),
    "language_model": (65, 300, 128, 2, 64, 100),
}
TINY = {"classifier": (50, 8, 8, 1, 4, 5), "language_model": (11, 8, 8, 2, 4, 6)}


def heap_malloc() -> None:
    """glibc: serve every allocation from the heap and keep freed memory (``mallopt(M_MMAP_MAX, 0)``,
    ``mallopt(M_TRIM_THRESHOLD, 2**30)``). With glibc's defaults every buffer above its mmap threshold (at
    most 32 MB) is a fresh ``mmap`` whose pages the kernel zeroes on first touch, at every step: here that
    made filling 8 x 4.5 MB (8 members' embeddings) take 37 ms instead of 1.6 ms. Process-wide, so it is set
    by this script (``--malloc heap``), never by the library."""
    libc = ctypes.CDLL("libc.so.6")
    if libc.mallopt(-4, 0) != 1 or libc.mallopt(-1, 2**30) != 1:
        raise RuntimeError("mallopt refused M_MMAP_MAX=0 or M_TRIM_THRESHOLD=2**30")


def model_and_loss(name: str, tiny: bool):
    vocab, embed, hidden, layers, batch, length = (TINY if tiny else SIZES)[name]
    rng = np.random.default_rng(0)
    if name == "classifier":
        model = models.classifier(rnnx.stacked(rnnx.simple_rnn(hidden), layers), vocab, embed, 6)
        tokens = rng.integers(0, vocab, (batch, length)).astype(np.int32)
        data = (tokens, rng.integers(3, length + 1, batch).astype(np.int32), rng.integers(0, 6, batch))

        def loss_fn(params, batch, key):
            logits = model.apply(params, batch[0], batch[1], key=key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[2]).mean(), {}

        return model, loss_fn, data, None
    model = models.language_model(rnnx.stacked(rnnx.gru(hidden), layers), vocab, embed)
    data = rng.integers(0, vocab, (batch, length + 1)).astype(np.int32)

    def lm_loss(params, batch, key, carry):
        logits, carry = model.apply(params, batch[:, :-1], carry)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean(), ({}, carry)

    carry = model.net.default_carry(model.init(jax.random.key(0))["rnn"], (batch,))
    return model, lm_loss, data, carry


def xla_bytes(jitted, *args) -> float | None:
    """The bytes that XLA's cost model says one call of ``jitted(*args)`` reads and writes (its compiled
    plan: deterministic, unlike a time); None where the backend gives no such figure."""
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return None if not cost or "bytes accessed" not in cost else float(cost["bytes accessed"])


def contenders(name: str, members: list[int], tiny: bool) -> tuple[dict, dict]:
    """``({label: zero-argument call}, traffic)``: one update of a population of each size, the solo step,
    Adam alone and a memory stream at each size; ``traffic["params"]`` is one member's parameter count and
    ``traffic[n]`` the bytes one update of ``n`` members moves by XLA's count (:func:`xla_bytes`)."""
    model, loss_fn, data, carry = model_and_loss(name, tiny)
    init = lambda seed: model.init(jax.random.key(seed))  # noqa: E731
    calls: dict = {}
    traffic: dict = {"params": rnnx.count_params(jax.eval_shape(init, 0))}
    solo = make_train_step(loss_fn, optax.adam(1e-3))
    solo_state = solo.init(init(0), carry)
    key = jax.random.key(0)
    calls["solo"] = lambda: solo.update(solo_state, data, key)[0].params
    adam = optax.adam(1e-3)
    update = jax.jit(lambda params, opt_state: optax.apply_updates(params, adam.update(params, opt_state, params)[0]))
    stream = jax.jit(lambda x, y: x + 1.5 * y)  # the machine's memory rate at this size: 3 arrays moved
    for n in members:
        step, state, _ = population(
            loss_fn, init, list(range(n)), hyperparams={"learning_rate": 1e-3}, initial_carry=carry
        )
        seeds = np.arange(n, dtype=np.int32)
        traffic[n] = xla_bytes(step, state, data, seeds)
        calls[f"N={n}"] = lambda step=step, state=state, seeds=seeds: step(state, data, seeds)[0].fit.train.params
        # Adam's update alone over the stacked params (the gradient replaced by the params): the share of the
        # step that touches every parameter and so grows with N whatever the batching.
        params = state.fit.train.params
        opt_state = adam.init(params)
        calls[f"adam N={n}"] = lambda params=params, opt_state=opt_state: update(params, opt_state)
        # two arrays read and one written, each of N members' parameter count
        x, y = (jax.device_put(np.full((n, traffic["params"]), v, np.float32)) for v in (1.0, 2.0))
        calls[f"stream N={n}"] = lambda x=x, y=y: stream(x, y)
    return calls, traffic


def measure(name: str, members: list[int], repeats: int, tiny: bool) -> dict:
    started = time.perf_counter()
    errors: dict = {}
    calls, traffic = contenders(name, members, tiny)
    timed = time_interleaved(calls, repeats=repeats, warmup=2, errors=errors)
    one = timed.get("N=1", {}).get("median_ms")
    rows = []
    for n in members:
        t = timed.get(f"N={n}")
        if t is None:
            rows.append({"members": n, "error": errors.get(f"N={n}", "not measured")})
            continue
        ms, adam, moved = t["median_ms"], timed.get(f"adam N={n}", {}).get("median_ms"), traffic.get(n)
        streamed = timed.get(f"stream N={n}", {}).get("median_ms")
        rows.append({"members": n, "ms_per_update": ms, "ratio_to_1": ms / one if one else None,
                     "member_updates_per_s": 1e3 * n / ms, "min_ms": t["min_ms"], "max_ms": t["max_ms"],
                     "adam_ms": adam, "bytes": moved,
                     "param_passes": None if moved is None else moved / (4 * traffic["params"] * n),
                     "gb_per_s": None if moved is None else moved / ms / 1e6,
                     "stream_gb_per_s": None if streamed is None else 12 * traffic["params"] * n / streamed / 1e6})  # fmt: skip
    solo = timed.get("solo", {}).get("median_ms")
    return {"model": name, "sizes": (TINY if tiny else SIZES)[name], "params": traffic["params"], "solo_ms": solo,
            "rows": rows,
            "split_ms": fixed_and_per_member(rows), "errors": errors,
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def fixed_and_per_member(rows: list[dict]) -> dict | None:
    """The least-squares line ``ms = fixed + N * per_member`` through the rows of N <= 8 (above that the
    stacked arrays outgrow the cache). A ratio goal ``T(N) <= b * T(1)`` holds on this line only if
    ``fixed / per_member >= (N - b) / (b - 1)``: 2.5 for 8 members in 3x, 2.4 for 32 in 10x. Only a step whose
    fixed part (dispatch, launches, the loop) outweighs its per-member arithmetic gains from batching."""
    points = [(r["members"], r["ms_per_update"]) for r in rows if "error" not in r and r["members"] <= 8]
    if len(points) < 2:
        return None
    per_member, fixed = np.polyfit(*zip(*points), 1)
    return {"fixed": float(fixed), "per_member": float(per_member), "over_members": [p[0] for p in points]}


def goals(results: list[dict], backend: str) -> list[str]:
    lines = []
    classifier = next((r for r in results if r["model"] == "classifier"), None)
    for n, bound in GOALS.get(backend, ()):
        row = None if classifier is None else next((r for r in classifier["rows"] if r["members"] == n), None)
        if row is None or row.get("ratio_to_1") is None:
            lines.append(f"| classifier, {n} members <= {bound}x one member | not measured | - |")
        else:
            verdict = "met" if row["ratio_to_1"] <= bound else "missed"
            lines.append(f"| classifier, {n} members <= {bound}x one member | {row['ratio_to_1']:.2f}x | {verdict} |")
    other = "gpu" if backend == "cpu" else "cpu"
    for n, bound in GOALS[other]:
        lines.append(f"| {other.upper()}: classifier, {n} members <= {bound}x | not measured on this device | - |")
    return lines


def markdown(report: dict) -> str:
    out = [
        f"# Population training on {report['device']}",
        "",
        f"Command: `{report['command']}` (malloc: {report['malloc']})",
        "",
    ]
    out += ["| goal (ratios from this run) | measured | verdict |", "|---|---|---|", *report["goals"], ""]
    for result in report["results"]:
        out += [f"## {result['model']} {tuple(result['sizes'])} (vocab, embed, hidden, layers, batch, length)", ""]
        solo = result["solo_ms"]
        out.append(f"fit's solo step: {solo:.2f} ms per update" if solo else "fit's solo step: not measured")
        split = result.get("split_ms")
        if split:
            out += ["", f"Least squares over N = {split['over_members']}: {split['fixed']:.2f} ms fixed + "
                        f"{split['per_member']:.2f} ms per member (the goals need fixed >= 2.5 x per member)"]  # fmt: skip
        moved = [r["param_passes"] for r in result["rows"] if r.get("param_passes") is not None]
        if moved:
            out += ["", f"Memory traffic (XLA's cost model of the compiled step): {min(moved):.1f} to "
                        f"{max(moved):.1f} parameter-sized float32 arrays read or written per member per update "
                        f"({result['params']:,} parameters a member), the same at every N: batching shares none "
                        "of it. Dense Adam alone needs at least 7 (read the params, the gradient and both "
                        "moments; write the params and both moments). The stream column is the machine's memory "
                        "rate at N members' parameter count (`x + 1.5 y`, timed beside); XLA's count is a model, "
                        "not a measurement, and can exceed it where a fusion rereads a buffer still in cache."]  # fmt: skip
        out += ["", "| members N | ms per update | ratio to N=1 | member-updates per s | of which Adam alone (ms) "
                    "| arrays moved per member (XLA) | step GB/s (XLA bytes / time) | stream GB/s |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in result["rows"]:
            if "error" in r:
                out.append(f"| {r['members']} | {r['error']} | - | - | - | - | - | - |")
            else:
                adam, arrays, rate, stream = (
                    "-" if r.get(k) is None else f"{r[k]:.{d}f}"
                    for k, d in (("adam_ms", 2), ("param_passes", 1), ("gb_per_s", 1), ("stream_gb_per_s", 1))
                )
                out.append(f"| {r['members']} | {r['ms_per_update']:.2f} | {r['ratio_to_1']:.2f} | "
                           f"{r['member_updates_per_s']:.1f} | {adam} | {arrays} | {rate} | {stream} |")  # fmt: skip
        out.append("")
    return "\n".join(out)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for result in report["results"]:
        rows = [r for r in result["rows"] if "error" not in r]
        ns = [r["members"] for r in rows]
        axes[0].plot(ns, [r["ratio_to_1"] for r in rows], "o-", label=result["model"])
        axes[1].plot(ns, [r["member_updates_per_s"] for r in rows], "o-", label=result["model"])
    ns = sorted({r["members"] for result in report["results"] for r in result["rows"]})
    axes[0].plot(ns, ns, "k:", label="N x one member (no gain)")
    for ax, title in zip(axes, ("time per update / one member's", "member-updates per second")):
        ax.set(xscale="log", yscale="log", xlabel="members N", title=title)
        ax.legend()
    fig.suptitle(f"rnnx population training, {report['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", default="1,2,4,8,16,32")
    parser.add_argument("--models", default="classifier,language_model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, for a rehearsal")
    parser.add_argument("--budget-seconds", type=float, default=None, help="skip the models left after this")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--malloc", choices=["heap", "glibc"], default="heap", help="see heap_malloc (Linux, glibc)")
    args = parser.parse_args(argv)
    if args.malloc == "heap" and platform.system() == "Linux":
        heap_malloc()
    members = [int(n) for n in args.members.split(",")]
    backend = jax.default_backend()
    device = "cpu-2core" if backend == "cpu" else jax.devices()[0].device_kind.lower().replace(" ", "-")
    command = "python -m benchmarks.population " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"device": device, "backend": backend, "platform": platform.platform(), "command": command.strip(),
              "malloc": args.malloc,
              "jax": jax.__version__, "results": [], "skipped": []}  # fmt: skip
    started, out = time.perf_counter(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        if args.budget_seconds is not None and time.perf_counter() - started > args.budget_seconds:
            report["skipped"].append(name)
            continue
        print(f"population benchmark: {name}, N = {members}", file=sys.stderr, flush=True)
        report["results"].append(measure(name, members, args.repeats, args.tiny))
        report["goals"] = goals(report["results"], backend)
        stem = out / f"population-{device}{'-tiny' if args.tiny else ''}{'-glibc' if args.malloc == 'glibc' else ''}"
        stem.with_suffix(".json").write_text(json.dumps(report, indent=1))  # after each model: a kill keeps it
        stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
