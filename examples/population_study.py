"""The seed's claims with error bars: the long-range study and the gradient study rerun as populations of seeds.

    nice python -m examples.population_study long-range [--seeds 8 --lengths 100 200 400 --updates 1000]
    nice python -m examples.population_study gradients [--seeds 8 --updates 1000]
    nice python -m examples.population_study modes --cells min_gru --lengths 200 400 [--seeds 8]
    python -m examples.population_study report --inputs <long-range or gradient results>.json ... --out <report>.json

Each configuration (cell, sequence length, clipping) trains ``--seeds`` members at once with
``rnnx.training.fit_population``: one compiled step, member ``i`` seeded ``i`` (its initial weights and its own
stream of adding-problem batches, drawn inside the loss from the member's step key). The task, the model (one
layer and a linear readout, ``examples.common``) and the optimiser (Adam, ``--lr``) are those of
``examples.long_range_classic`` and ``examples.gradient_study``; all members are evaluated on one fixed set of
sequences. Reported per configuration: the mean and 95% interval (t-distribution) of the final accuracy
(``|error| < 0.04``) and MSE, how many members learned (final MSE below 0.1; always answering 1 scores
0.167), and Welch's t-test of the differences the old single-seed verdicts drew. Writes
``examples/results/population_<study>.{json,png}``.

- ``long-range``: the adding problem at T = 100, 200, 400 for the simple RNN, LSTM, GRU and minGRU at one
  parameter budget (``--budget``, the classic study's 4,600), clipping at 1; "is the LSTM better beyond 100
  steps?" is tested against each other cell at each length.
- ``gradients``: T=100, hidden 64, the gradient study's five models (the tanh RNN with its orthogonal recurrent
  matrix scaled by 0.5, 1 and 2, LSTM, GRU), each with and without clipping (one population of ``2 x --seeds``
  members: a clip norm of 1e30 never clips), and after training ``log10 ||dL/dh_1|| / ||dL/dh_T||`` per member.
- ``modes``: the median seconds of one population's gradient step (``--seeds`` members, batch ``--batch``) for
  each cell with a parallel form, run by the parallel scan and by the sequential ``lax.scan`` (same results,
  tested in ``tests/test_unroll.py``), at each length: which to pass as ``--sequential`` to the two studies.
  ``--sequential`` runs every cell's sequential mode (``rnnx.unroll(parallel=False)``); the json records it.
"""

import argparse
import itertools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnx
from examples.common import adding_batch, hidden_size_for, readout, readout_model
from examples.gradient_study import MODELS as GRADIENT_MODELS
from examples.gradient_study import cell_of
from rnnx import diagnostics
from rnnx import training as train
from rnnx.apps.intervals import t_interval, welch_significant

LONG_RANGE_CELLS = ("simple_rnn", "lstm", "gru", "min_gru")
LEARNED_MSE = 0.1
NO_CLIP = 1e30  # clip_by_global_norm(1e30) leaves every finite gradient as it is


def population(init, predict, *, steps, args, clip_norms, eval_size):
    """Train one population on the adding problem at length ``steps``; return its result and seconds."""
    eval_xs, eval_ys = adding_batch(jax.random.key(10_000 + steps), eval_size, steps)

    def loss_fn(params, _, key):  # the member's step key draws its batch: each seed its own stream
        xs, ys = adding_batch(key, args.batch, steps)
        return jnp.mean((predict(params, xs) - ys) ** 2), {}

    def evaluate_one(params):
        err = predict(params, eval_xs) - eval_ys
        return {"mse": jnp.mean(err**2), "accuracy": jnp.mean(jnp.abs(err) < 0.04)}

    seeds = list(range(len(clip_norms)))
    started = time.perf_counter()
    result = train.fit_population(
        loss_fn,
        lambda seed: init(jax.random.key(seed % args.seeds)),  # the unclipped twin of a member has its seed
        itertools.repeat(np.zeros((), np.float32)),
        seeds=seeds,
        steps=args.updates,
        hyperparams={"learning_rate": args.lr},
        clip_norm=clip_norms,
        evaluation=train.Evaluation(jax.jit(jax.vmap(evaluate_one)), every=args.eval_every, monitor="mse"),
        log_every=args.updates,
        on_log=lambda record: None,
    )
    return result, time.perf_counter() - started


def summary(values):
    mean, low, high = t_interval(values)
    return {"mean": mean, "low": low, "high": high, "values": values}


def members_summary(result, index):
    final = [result.histories[i][-1] for i in index]
    return {
        "accuracy": summary([f["accuracy"] for f in final]),
        "mse": summary([f["mse"] for f in final]),
        "learned": sum(f["mse"] < LEARNED_MSE for f in final),
        "failures": [result.failures[i] for i in index if result.failures[i] is not None],
    }


def unroll_mode(args):
    return False if args.sequential else None  # None: the parallel scan where the cell has one


def long_range(args):
    out = {"config": vars(args), "results": {}}
    for steps in args.lengths:
        for name in args.cells:
            model_for = lambda h, name=name: readout_model(rnnx.make_cell(name, h), parallel=unroll_mode(args))  # noqa: E731
            hidden, count = hidden_size_for(model_for, args.budget)
            init, predict = model_for(hidden)
            result, seconds = population(init, predict, steps=steps, args=args, clip_norms=[1.0] * args.seeds,
                                         eval_size=args.eval_size)  # fmt: skip
            row = {"hidden": hidden, "parameters": count, "seconds": round(seconds, 1)}
            row |= members_summary(result, range(args.seeds))
            out["results"][f"{name} T={steps}"] = row
            print(f"T={steps} {name} (h={hidden}): {line(row)} [{seconds:.0f} s]", flush=True)
            save(out, args)  # after each configuration: a run stopped early keeps what it measured
    out["tests"] = {
        f"lstm vs {other} T={steps}": test(out["results"], f"lstm T={steps}", f"{other} T={steps}")
        for steps in args.lengths
        for other in args.cells
        if other != "lstm" and "lstm" in args.cells
    }
    return out


def gradients(args):
    out = {"config": vars(args), "results": {}}
    for name in args.models:
        init, predict = readout_model(cell_of(name, args.hidden), parallel=unroll_mode(args))
        clips = [1.0] * args.seeds + [NO_CLIP] * args.seeds
        result, seconds = population(init, predict, steps=args.length, args=args, clip_norms=clips,
                                     eval_size=args.eval_size)  # fmt: skip
        ratios = gradient_ratios(name, result, args)
        for clipped, index in (("clipped", range(args.seeds)), ("unclipped", range(args.seeds, 2 * args.seeds))):
            row = {"seconds": round(seconds, 1), **members_summary(result, index)}
            row["log10_grad_ratio"] = summary([ratios[i] for i in index])
            out["results"][f"{name} {clipped}"] = row
            print(f"{name} {clipped}: {line(row)}, log10 |dL/dh_1|/|dL/dh_T| {fmt(row['log10_grad_ratio'])}")
        save(out, args)
    out["tests"] = {f"{name} clipped vs unclipped": test(out["results"], f"{name} clipped", f"{name} unclipped")
                    for name in args.models}  # fmt: skip
    for other in ("lstm", "rnn"):
        if other in args.models and "gru" in args.models:
            out["tests"][f"gru vs {other} clipped"] = test(out["results"], "gru clipped", f"{other} clipped")
    return out


def modes(args, repeats=5):
    """Median seconds of one population gradient step, parallel scan against sequential scan, per cell and length."""
    out = {"config": vars(args), "results": {}}
    for steps in args.lengths:
        xs, ys = adding_batch(jax.random.key(0), args.batch, steps)
        for name in (c for c in args.cells if rnnx.make_cell(c, 1).parallel):
            hidden, _ = hidden_size_for(lambda h, name=name: readout_model(rnnx.make_cell(name, h)), args.budget)
            times = {}
            for mode, parallel in (("parallel", True), ("sequential", False)):
                init, predict = readout_model(rnnx.make_cell(name, hidden), parallel=parallel)
                params = jax.vmap(init)(jax.random.split(jax.random.key(0), args.seeds))
                grad = jax.jit(jax.vmap(jax.grad(lambda p: jnp.mean((predict(p, xs) - ys) ** 2))))
                jax.block_until_ready(grad(params))  # compile
                runs = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    jax.block_until_ready(grad(params))
                    runs.append(time.perf_counter() - started)
                times[mode] = float(np.median(runs))
            out["results"][f"{name} T={steps}"] = {"hidden": hidden, "seconds": times}
            each = ", ".join(f"{mode} {s:.3f} s" for mode, s in times.items())
            print(f"T={steps} {name} (h={hidden}, {args.seeds} members, batch {args.batch}): {each} per step")
    out["tests"] = {}
    return out


def gradient_ratios(name, result, args):
    """``log10 ||dL/dh_1|| / ||dL/dh_T||`` of each member's final params, on 64 fixed sequences."""
    cell = cell_of(name, args.hidden)
    xs, ys = adding_batch(jax.random.key(20_000), 64, args.length)
    ratios = []
    for i in range(len(result.steps)):
        params = jax.tree.map(lambda x: x[i], result.last_params)
        loss = lambda outputs, p=params: jnp.mean((readout(p, outputs) - ys) ** 2)  # noqa: E731
        _, grads = diagnostics.hidden_grad_norms(cell, params["cell"], xs, loss)
        norms = np.asarray(getattr(grads, "h", grads))
        ratios.append(float(np.log10(norms[0]) - np.log10(norms[-1])) if norms[0] > 0 else float("-inf"))
    return ratios


def test(results, a, b):
    """Welch's t-test of ``a`` against ``b`` on the final accuracy and on the final MSE."""
    out = {}
    for metric in ("accuracy", "mse"):
        t, significant = welch_significant(results[a][metric]["values"], results[b][metric]["values"])
        diff = results[a][metric]["mean"] - results[b][metric]["mean"]
        out |= {f"{metric}_difference": diff, f"{metric}_t": t, f"{metric}_significant": significant}
    return out


def report(args):
    """Merge the results of several long-range runs, test the LSTM against each cell at each length, print
    the table and draw the plot."""
    results, configs = {}, {}
    for path in args.inputs:
        with open(path) as f:
            run = json.load(f)
        configs[path] = run["config"]
        for key, row in run["results"].items():
            results[key] = row | ({"unroll": unroll_of(key, run["config"])} if " T=" in key else {})
    if not any(" T=" in k for k in results):  # a gradient study: redraw it
        models = list(dict.fromkeys(k.rsplit(" ", 1)[0] for k in results))
        with open(args.inputs[0]) as f:
            out = json.load(f)
        return out, {c: [f"{m} {c}" for m in models] for c in ("clipped", "unclipped")}
    lengths = sorted({int(k.split(" T=")[1]) for k in results})
    cells = [c for c in LONG_RANGE_CELLS if any(k.startswith(c + " ") for k in results)]
    print("| T | cell | final accuracy, mean [95% interval] | final MSE, mean [95% interval] | learned (MSE < 0.1) |")
    print("|---|---|---|---|---|")
    for steps in lengths:
        for cell in cells:
            r = results.get(f"{cell} T={steps}")
            if r is not None:
                n = len(r["accuracy"]["values"])
                print(f"| {steps} | {cell} | {fmt(r['accuracy'])} | {fmt(r['mse'], 4)} | {r['learned']} / {n} |")
    tests = {
        f"lstm vs {other} T={steps}": test(results, f"lstm T={steps}", f"{other} T={steps}")
        for steps in lengths
        for other in cells
        if other != "lstm" and f"lstm T={steps}" in results and f"{other} T={steps}" in results
    }
    out = {"inputs": args.inputs, "configs": configs, "results": results, "tests": tests}
    groups = {f"T={s}": [f"{c} T={s}" for c in cells if f"{c} T={s}" in results] for s in lengths}
    return out, groups


def unroll_of(key, config):
    """How a long-range row's cell ran (the same results, another speed): ``rnnx.unroll``'s parallel scan,
    its default where the cell has one, or the sequential scan (every other cell, and with ``--sequential``)."""
    parallel = rnnx.make_cell(key.split(" ")[0], 1).parallel and not config.get("sequential")
    return "parallel" if parallel else "sequential"


def fmt(s, digits=3):
    return f"{s['mean']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}]"


def line(row):
    return f"accuracy {fmt(row['accuracy'])}, MSE {fmt(row['mse'])}, learned {row['learned']}"


def plot(out, path, groups):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.6), squeeze=False)
    top = max([0.25] + [1.05 * v for r in out["results"].values() for v in r["mse"]["values"]])  # every member shows
    for ax, (title, keys) in zip(axes[0], groups.items()):
        rows = [out["results"][k] for k in keys]
        means = [r["mse"]["mean"] for r in rows]
        errors = [
            [m - max(r["mse"]["low"], 0) for m, r in zip(means, rows)],
            [r["mse"]["high"] - m for m, r in zip(means, rows)],
        ]
        ax.bar(range(len(rows)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.7)
        for x, r in enumerate(rows):
            ax.plot([x] * len(r["mse"]["values"]), r["mse"]["values"], "k.", alpha=0.5)
        ax.axhline(1 / 6, color="tab:red", linestyle=":", label="always 1 (0.167)")
        ax.axhline(LEARNED_MSE, color="tab:green", linestyle="--", label=f"learned (< {LEARNED_MSE})")
        ax.set_xticks(range(len(rows)), [k.split(" T=")[0].split(" ")[0] for k in keys], rotation=30)
        ax.set(title=title, ylim=(0, top), ylabel="final MSE: mean, 95% interval, members")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def output_path(args):
    name = f"population_{args.study.replace('-', '_')}.json"
    return args.out or os.path.join(os.path.dirname(__file__), "results", name)


def save(out, args):
    with open(output_path(args), "w") as f:
        json.dump(out, f, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=["long-range", "gradients", "report", "modes"])
    parser.add_argument(
        "--inputs", nargs="+", default=[], help="report: long-range results to merge, or a gradient study"
    )
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-size", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32, help="32 as in long_range_classic; the gradient study used 64")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--cells", nargs="+", default=list(LONG_RANGE_CELLS), choices=sorted(rnnx.CELLS))
    parser.add_argument("--budget", type=int, default=4600)
    parser.add_argument("--models", nargs="+", default=list(GRADIENT_MODELS), choices=list(GRADIENT_MODELS))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--sequential", action="store_true", help="run parallel cells by the sequential scan")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.study == "modes":
        out = modes(args)
        save(out, args)
        print(f"wrote {output_path(args)}")
        return out
    if args.study == "report":
        out, groups = report(args)
    else:
        out = long_range(args) if args.study == "long-range" else gradients(args)
        if args.study == "long-range":
            groups = {f"T={steps}": [f"{c} T={steps}" for c in args.cells] for steps in args.lengths}
        else:
            groups = {c: [f"{m} {c}" for m in args.models] for c in ("clipped", "unclipped")}
    if args.study != "report":
        out["seconds"] = round(time.perf_counter() - started, 1)
    path = output_path(args)
    save(out, args)
    for name, t in out["tests"].items():
        print(
            f"{name}: accuracy {t['accuracy_difference']:+.3f} (Welch t {t['accuracy_t']:.2f}, "
            f"{'' if t['accuracy_significant'] else 'not '}significant at 5%), MSE {t['mse_difference']:+.4f} "
            f"(t {t['mse_t']:.2f}, {'' if t['mse_significant'] else 'not '}significant)"
        )
    plot(out, path.removesuffix(".json") + ".png", groups)
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return out


if __name__ == "__main__":
    main()
