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
Time counts training steps only (not compilation, not evaluation). minGRU and minLSTM run in ``unroll``'s
default mode (parallel scan). Writes ``examples/results/long_range.json``.
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import optax

import rnnx

CELLS = {"min_gru": rnnx.min_gru, "min_lstm": rnnx.min_lstm, "gru": rnnx.gru, "lstm": rnnx.lstm}
THRESHOLDS = (0.25, 0.5, 0.9)


def adding_batch(key, batch, steps):
    """``xs (batch, steps, 2)`` and targets ``(batch,)`` of the adding problem."""
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (batch, steps))
    first = jax.random.randint(k_first, (batch,), 0, steps // 2)
    second = jax.random.randint(k_second, (batch,), steps // 2, steps)
    rows = jnp.arange(batch)
    markers = jnp.zeros((batch, steps)).at[rows, first].set(1.0).at[rows, second].set(1.0)
    return jnp.stack([values, markers], axis=-1), values[rows, first] + values[rows, second]


def model(cell):
    net = rnnx.stacked(cell, num_layers=2)

    def init(key):
        k_net, k_out = jax.random.split(key)
        params = {"net": net.init(k_net, 2)}
        return params | {"w": jax.random.normal(k_out, (cell.hidden_size,)) / cell.hidden_size**0.5, "b": jnp.ones(())}

    def predict(params, xs):
        return net.apply(params["net"], xs)[1][:, -1] @ params["w"] + params["b"]

    return init, predict


def hidden_size_for(make, budget):
    """The largest hidden size whose model has at most ``budget`` parameters, and that count."""
    best = None
    for h in range(1, 512):
        init, _ = model(make(h))
        count = rnnx.count_params(jax.eval_shape(init, jax.random.key(0)))
        if count > budget:
            break
        best = (h, count)
    return best


def adding_trainer(predict, opt, batch, steps, eval_xs, eval_ys):
    """Jitted ``step(params, state, key) -> (params, state, loss)`` on fresh adding-problem batches, and
    ``evaluate(params) -> (mse, accuracy)`` on a fixed set, accuracy meaning ``|error| < 0.04``."""

    @jax.jit
    def step(params, state, key):
        xs, ys = adding_batch(key, batch, steps)
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((predict(p, xs) - ys) ** 2))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    @jax.jit
    def evaluate(params):
        err = predict(params, eval_xs) - eval_ys
        return jnp.mean(err**2), jnp.mean(jnp.abs(err) < 0.04)

    return step, evaluate


def train(name, hidden_size, args):
    init, predict = model(CELLS[name](hidden_size))
    params = init(jax.random.key(args.seed))
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
    state = opt.init(params)
    eval_xs, eval_ys = adding_batch(jax.random.key(10_000), 2000, args.steps)
    step, evaluate = adding_trainer(predict, opt, args.batch, args.steps, eval_xs, eval_ys)

    data_key = jax.random.key(args.seed + 1)
    start = time.perf_counter()
    jax.block_until_ready((step(params, state, data_key), evaluate(params)))  # compile; results discarded
    compile_s = time.perf_counter() - start
    history, reached, train_s, update = [], {}, 0.0, 0
    while train_s < args.seconds and update < args.max_updates:
        start = time.perf_counter()
        params, state, loss = step(params, state, jax.random.fold_in(data_key, update))
        jax.block_until_ready(loss)
        train_s += time.perf_counter() - start
        update += 1
        if update % args.eval_every == 0 or train_s >= args.seconds or update == args.max_updates:
            mse, acc = (float(v) for v in evaluate(params))
            record = dict(update=update, seconds=round(train_s, 2), train_loss=float(loss), mse=mse, accuracy=acc)
            history.append(record)
            for t in THRESHOLDS:
                if acc >= t and t not in reached:
                    reached[t] = dict(update=update, seconds=round(train_s, 2))
            print(f"{name:8s} update {update:5d}  {train_s:6.1f}s  loss {float(loss):.4f}  eval mse {mse:.4f}  "
                  f"accuracy {acc:.3f}", flush=True)  # fmt: skip
    best = max(history, key=lambda r: r["accuracy"])
    return dict(hidden_size=hidden_size, compile_seconds=round(compile_s, 1), updates=update,
                ms_per_update=round(1e3 * train_s / update, 2), final=history[-1], best=best,
                reached={str(t): reached.get(t) for t in THRESHOLDS}, history=history)  # fmt: skip


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
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "long_range.json"))
    args = parser.parse_args(argv)
    results = {"config": vars(args), "backend": jax.default_backend(), "cpu_count": os.cpu_count(), "models": {}}
    for name in args.cells:
        hidden_size, count = hidden_size_for(CELLS[name], args.budget)
        print(f"{name}: 2 layers, hidden {hidden_size}, {count:,} parameters", flush=True)
        results["models"][name] = dict(parameters=count, **train(name, hidden_size, args))
    print(f"\nAdding problem, T={args.steps}, batch {args.batch}, Adam {args.lr}, <= {args.seconds:.0f} s or "
          f"{args.max_updates} updates per model; accuracy: |error| < 0.04; MSE baseline 0.167\n")  # fmt: skip
    print("| cell | hidden | params | updates | ms/update | final MSE | final accuracy | best accuracy | "
          + " | ".join(f"time to {t:.0%}" for t in THRESHOLDS) + " |")  # fmt: skip
    print("|---" * (8 + len(THRESHOLDS)) + "|")
    for name, r in results["models"].items():
        to = [f"{r['reached'][str(t)]['seconds']:.0f} s ({r['reached'][str(t)]['update']} upd.)"
              if r["reached"][str(t)] else "not reached" for t in THRESHOLDS]  # fmt: skip
        print(f"| {name} | {r['hidden_size']} | {r['parameters']:,} | {r['updates']} | {r['ms_per_update']:.1f} | "
              f"{r['final']['mse']:.4f} | {r['final']['accuracy']:.3f} | {r['best']['accuracy']:.3f} | "
              + " | ".join(to) + " |")  # fmt: skip
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
