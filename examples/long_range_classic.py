"""Does the LSTM beat the simple RNN and the GRU on dependencies longer than 100 steps? The adding problem.

    nice python -m examples.long_range_classic [--lengths 50 100 200 400 --budget 4600 --updates 2000]

The adding problem (Hochreiter & Schmidhuber 1997; ``examples.long_range.adding_batch``): each input step is
``(value ~ U(0, 1), marker)``, two steps are marked, one in each half of the sequence, and the target is the
sum of their values, read from the last output. Always predicting 1 scores an MSE of 1/6 = 0.167 and an
accuracy (``|error| < 0.04``) of about 0.08.

Each model is one ``rnnx`` layer (``simple_rnn`` tanh, ``lstm``, ``gru``, rnnx's default initialisation) with
a linear readout, its hidden size the largest that keeps the parameter count within ``--budget``. For every
sequence length all three see the same stream of batches and the same evaluation set (fixed seed), and are
trained with Adam (``--lr``, gradient norm clipped to 1) for ``--updates`` updates, stopping early only past
``--max-seconds`` of training (recorded). Writes ``examples/results/long_range_classic.json`` and ``.png``.

The verdict compares final accuracies at each length over 100 steps with a margin of ``--margin``; a
model learned if its final MSE is below ``--learned-mse``; where only one of two learned it is the better, where
neither did the comparison is inconclusive. One seed: differences near the margin are not significant.
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

import rnnx
from examples.common import adding_batch, fit_adding, hidden_size_for, readout_model

CELLS = ("simple_rnn", "lstm", "gru")  # the default comparison; any of rnnx.CELLS may be chosen
BASELINE_MSE = 1 / 6


def model(name, hidden):
    return readout_model(rnnx.make_cell(name, hidden))


def train(name, hidden, steps, args):
    init, predict = model(name, hidden)
    eval_xs, eval_ys = adding_batch(jax.random.key(10_000 + steps), args.eval_size, steps)

    @jax.jit
    def evaluate(params):
        err = predict(params, eval_xs) - eval_ys
        return {"mse": jnp.mean(err**2), "accuracy": jnp.mean(jnp.abs(err) < 0.04)}

    history = []

    def on_eval(record):
        history.append(record)
        print(
            f"  T={steps} {name} update {record['update']:5d} {record['seconds']:6.1f} s  eval MSE "
            f"{record['mse']:.4f}  accuracy {record['accuracy']:.3f}",
            flush=True,
        )

    # The same batches for every cell at this length.
    _, timing = fit_adding(
        predict,
        init(jax.random.key(args.seed)),
        data_key=jax.random.key(args.seed + steps),
        batch=args.batch,
        steps=steps,
        lr=args.lr,
        updates=args.updates,
        evaluate=evaluate,
        eval_every=args.eval_every,
        max_seconds=args.max_seconds,
        on_eval=on_eval,
    )
    update, train_s, final = timing["updates"], timing["train_seconds"], history[-1]
    print(
        f"T={steps:4d} {name:5s} hidden {hidden:3d}: {update} updates in {train_s:5.1f} s "
        f"(+{timing['compile_seconds']:.1f} s first update and compile)  eval MSE {final['mse']:.4f}  "
        f"accuracy {final['accuracy']:.3f}  best accuracy {max(h['accuracy'] for h in history):.3f}",
        flush=True,
    )
    return dict(
        hidden_size=hidden,
        updates=update,
        train_seconds=round(train_s, 1),
        compile_seconds=round(timing["compile_seconds"], 1),
        ms_per_update=round(1e3 * train_s / max(1, update - 1), 2),
        stopped_by_time=update < args.updates,
        final=final,
        best_accuracy=max(h["accuracy"] for h in history),
        history=history,
    )


def compare(a, b, args):
    """'better', 'worse', 'no clear difference' or 'inconclusive' for run ``a`` against run ``b``.

    A run learned if its final MSE is below ``--learned-mse``. Neither learned: inconclusive; one learned:
    it is better; both learned: the one whose final accuracy is higher by ``--margin`` or more.
    """
    learned_a, learned_b = a["final"]["mse"] < args.learned_mse, b["final"]["mse"] < args.learned_mse
    if not (learned_a or learned_b):
        return "inconclusive"
    if learned_a != learned_b:
        return "better" if learned_a else "worse"
    diff = a["final"]["accuracy"] - b["final"]["accuracy"]
    return "better" if diff >= args.margin else "worse" if diff <= -args.margin else "no clear difference"


def verdict(runs, args):
    long = [t for t in args.lengths if t > 100]
    rows = {
        other: {t: compare(runs[t]["lstm"], runs[t][other], args) for t in args.lengths}
        for other in args.cells
        if other != "lstm" and all(other in runs[t] for t in args.lengths)
    }
    verdicts = {}
    for other, by_t in rows.items():
        outcomes = [by_t[t] for t in long if by_t[t] != "inconclusive"]
        overall = "inconclusive" if not outcomes else "holds" if set(outcomes) == {"better"} else "does not hold"
        verdicts[other] = f"{overall} ({', '.join(f'T={t}: LSTM {by_t[t]}' for t in long)})"
    return rows, verdicts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200, 400], help="sequence lengths T")
    parser.add_argument("--budget", type=int, default=4600, help="parameters per model, at most")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--updates", type=int, default=2000, help="Adam updates per run")
    parser.add_argument("--max-seconds", type=float, default=150.0, help="training wall-clock cap per run")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-size", type=int, default=1000)
    parser.add_argument("--margin", type=float, default=0.1, help="accuracy difference that counts as better")
    parser.add_argument("--learned-mse", type=float, default=0.1, help="MSE below which a model learned something")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=sorted(rnnx.CELLS))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "long_range_classic.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sizes = {name: hidden_size_for(lambda h, name=name: model(name, h), args.budget) for name in args.cells}
    for name, (h, count) in sizes.items():
        print(f"{name}: hidden {h}, {count:,} parameters", flush=True)
    runs = {
        t: {name: train(name, sizes[name][0], t, args) | {"parameters": sizes[name][1]} for name in args.cells}
        for t in args.lengths
    }
    rows, verdicts = verdict(runs, args) if "lstm" in args.cells else ({}, {})
    results = {
        "config": vars(args),
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "seconds": round(time.perf_counter() - start, 1),
        "runs": {str(t): r for t, r in runs.items()},
        "lstm_vs": {o: {str(t): v for t, v in by_t.items()} for o, by_t in rows.items()},
        "verdict_lstm_better_over_100_steps": verdicts,
    }
    print_table(results, args, sizes)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    plot(results, args, args.out.removesuffix(".json") + ".png")


def print_table(results, args, sizes):
    print(
        f"\n{results['seconds']:.0f} s. Adding problem, one layer + linear readout, <= {args.budget:,} parameters "
        f"({', '.join(f'{n} h={h}' for n, (h, _) in sizes.items())}), batch {args.batch}, Adam {args.lr} with "
        f"clipping at 1, {args.updates} updates per run; final (best) accuracy (|error| < 0.04) / final MSE "
        f"(always predicting 1: {BASELINE_MSE:.3f}); seed {args.seed}.\n"
    )
    print("| T | " + " | ".join(args.cells) + " | " + " | ".join(f"LSTM vs {o}" for o in results["lstm_vs"]) + " |")
    print("|---" * (1 + len(args.cells) + len(results["lstm_vs"])) + "|")
    for t, r in results["runs"].items():
        cells = [
            f"{r[n]['final']['accuracy']:.3f} ({r[n]['best_accuracy']:.3f}) / {r[n]['final']['mse']:.4f}"
            for n in args.cells
        ]
        vs = [results["lstm_vs"][o][t] for o in results["lstm_vs"]]
        print(f"| {t} | " + " | ".join(cells + vs) + " |")
    timed_out = [f"T={t} {n}" for t, r in results["runs"].items() for n in args.cells if r[n]["stopped_by_time"]]
    if timed_out:
        print(f"\nstopped by --max-seconds before {args.updates} updates: {', '.join(timed_out)}")
    for other, v in results["verdict_lstm_better_over_100_steps"].items():
        print(f"\nVerdict, 'LSTM better than {other} on > 100 steps' under this budget: {v}")


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    lengths = [int(t) for t in results["runs"]]
    for name in args.cells:
        runs = [results["runs"][str(t)][name] for t in lengths]
        axes[0].plot(lengths, [r["final"]["accuracy"] for r in runs], "o-", label=name)
        axes[1].plot(lengths, [r["final"]["mse"] for r in runs], "o-", label=name)
        curve = results["runs"][str(sorted(lengths)[-2 if len(lengths) > 1 else -1])][name]["history"]
        axes[2].plot([h["update"] for h in curve], [h["mse"] for h in curve], "o-", label=name)
    axes[0].axhline(0.08, color="gray", ls=":", label="always 1")
    axes[1].axhline(BASELINE_MSE, color="gray", ls=":", label="always 1")
    axes[2].axhline(BASELINE_MSE, color="gray", ls=":", label="always 1")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(t) for t in lengths])
        ax.minorticks_off()
    axes[1].set_yscale("log")
    axes[0].set(xlabel="T", ylabel="final accuracy (|error| < 0.04)", title="adding problem: accuracy")
    axes[1].set(xlabel="T", ylabel="final eval MSE", title="adding problem: MSE")
    t2 = sorted(lengths)[-2] if len(lengths) > 1 else lengths[0]
    axes[2].set(xlabel="update", ylabel="eval MSE", title=f"learning curves, T={t2}")
    for ax in axes:
        ax.legend()
    fig.suptitle(f"<= {args.budget:,} parameters, {args.updates} Adam updates, batch {args.batch}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
