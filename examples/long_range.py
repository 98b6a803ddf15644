"""Long-range learning: the adding problem at T=200, minGRU / minLSTM against GRU / LSTM at one parameter budget.

    nice python -m examples.long_range [--steps 200 --budget 10000 --batch 64 --max-updates 1000 --seconds 300]

The adding problem (Hochreiter & Schmidhuber 1997): each input step is ``(value ~ U(0, 1), marker)``; two
steps are marked, one in each half of the sequence, and the target is the sum of their two values, read
out from the last output. Always predicting 1 scores an MSE of 1/6 = 0.167; an answer counts as correct
when ``|error| < 0.04``.

Every model is a two-layer ``rnnx.stacked`` network with a linear readout, its hidden size the largest that
keeps the parameter count within ``--budget``. All see the same stream of batches (fixed seed), are trained
with Adam (gradient norm clipped to 1) for ``--max-updates`` updates or ``--seconds`` of training wall-clock,
whichever comes first (by default the same number of updates for all: on a shared machine wall-clock is
noisy), and are evaluated every ``--eval-every`` updates on one fixed set of 2,000 sequences.
Time counts training steps only (not the first, which compiles, and not evaluation). minGRU and minLSTM run
in ``unroll``'s default mode (parallel scan). Writes ``examples/results/long_range.json``.
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp

import rnnx
from examples.common import adding_batch, fit_adding, hidden_size_for, readout_model

CELLS = ("min_gru", "min_lstm", "gru", "lstm")  # the default comparison; any of rnnx.CELLS may be chosen
THRESHOLDS = (0.25, 0.5, 0.9)


def model(name, hidden_size):
    return readout_model(rnnx.make_cell(name, hidden_size), num_layers=2)


def train(name, hidden_size, args):
    init, predict = model(name, hidden_size)
    eval_xs, eval_ys = adding_batch(jax.random.key(10_000), 2000, args.steps)

    @jax.jit
    def evaluate(params):
        err = predict(params, eval_xs) - eval_ys
        return {"mse": jnp.mean(err**2), "accuracy": jnp.mean(jnp.abs(err) < 0.04)}

    history, reached = [], {}

    def on_eval(record):
        history.append(record)
        for t in THRESHOLDS:
            if record["accuracy"] >= t and t not in reached:
                reached[t] = dict(update=record["update"], seconds=record["seconds"])
        print(
            f"{name:8s} update {record['update']:5d}  {record['seconds']:6.1f}s  loss {record['train_loss']:.4f}  "
            f"eval mse {record['mse']:.4f}  accuracy {record['accuracy']:.3f}",
            flush=True,
        )

    _, timing = fit_adding(
        predict,
        init(jax.random.key(args.seed)),
        data_key=jax.random.key(args.seed + 1),
        batch=args.batch,
        steps=args.steps,
        lr=args.lr,
        updates=args.max_updates,
        evaluate=evaluate,
        eval_every=args.eval_every,
        max_seconds=args.seconds,
        on_eval=on_eval,
    )
    update = timing["updates"]
    best = max(history, key=lambda r: r["accuracy"])
    return dict(
        hidden_size=hidden_size,
        compile_seconds=round(timing["compile_seconds"], 1),
        updates=update,
        ms_per_update=round(1e3 * timing["train_seconds"] / max(1, update - 1), 2),
        final=history[-1],
        best=best,
        reached={str(t): reached.get(t) for t in THRESHOLDS},
        history=history,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="sequence length T")
    parser.add_argument("--budget", type=int, default=10_000, help="parameters per model, at most")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seconds", type=float, default=300.0, help="training wall-clock per model, at most")
    parser.add_argument("--max-updates", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=sorted(rnnx.CELLS))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "long_range.json"))
    args = parser.parse_args(argv)
    results = {"config": vars(args), "backend": jax.default_backend(), "cpu_count": os.cpu_count(), "models": {}}
    for name in args.cells:
        hidden_size, count = hidden_size_for(lambda h: model(name, h), args.budget)
        print(f"{name}: 2 layers, hidden {hidden_size}, {count:,} parameters", flush=True)
        results["models"][name] = dict(parameters=count, **train(name, hidden_size, args))
    print(
        f"\nAdding problem, T={args.steps}, batch {args.batch}, Adam {args.lr}, <= {args.seconds:.0f} s or "
        f"{args.max_updates} updates per model; accuracy: |error| < 0.04; MSE baseline 0.167\n"
    )
    print(
        "| cell | hidden | params | updates | ms/update | final MSE | final accuracy | best accuracy | "
        + " | ".join(f"time to {t:.0%}" for t in THRESHOLDS)
        + " |"
    )
    print("|---" * (8 + len(THRESHOLDS)) + "|")
    for name, r in results["models"].items():
        to = [
            f"{r['reached'][str(t)]['seconds']:.0f} s ({r['reached'][str(t)]['update']} upd.)"
            if r["reached"][str(t)]
            else "not reached"
            for t in THRESHOLDS
        ]
        print(
            f"| {name} | {r['hidden_size']} | {r['parameters']:,} | {r['updates']} | {r['ms_per_update']:.1f} | "
            f"{r['final']['mse']:.4f} | {r['final']['accuracy']:.3f} | {r['best']['accuracy']:.3f} | "
            + " | ".join(to)
            + " |"
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    plot(results, args.out.removesuffix(".json") + ".png")


def plot(results, path):
    """Accuracy against training time, if matplotlib happens to be installed (it is not a dependency)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results["models"].items():
        ax.plot([h["seconds"] for h in r["history"]], [h["accuracy"] for h in r["history"]], label=name)
    ax.set(xlabel="training seconds", ylabel="accuracy (|error| < 0.04)", title="adding problem")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
