"""Gradient flow through time in the simple RNN, LSTM and GRU, at initialisation and after training.

    nice python -m examples.gradient_study [--steps 100 --jacobian-steps 200 --hidden 64 --updates 1000]

The task is the adding problem (``examples.long_range.adding_batch``): two marked values, one in each half
of a ``--steps``-long sequence, whose sum is read from the last output by a linear readout, so the loss
reaches the early steps only through the recurrence. Models (one layer, ``--hidden`` units each):

* ``rnn``: tanh RNN, orthogonal recurrent weights (rnnx's default); ``rnn_small`` and ``rnn_large``: the same
  with the orthogonal matrix scaled by 0.5 and 2, to show vanishing and exploding gradients;
* ``lstm`` (forget-gate bias 1) and ``gru``: rnnx's defaults.

For each model, at initialisation and after ``--updates`` Adam steps with and without
``optax.clip_by_global_norm(1.0)`` (same batches for every run), it measures on fixed sequences:

* ``||dL/dh_t||`` for every ``t`` (``rnnx.diagnostics.hidden_grad_norms``; for the LSTM also ``||dL/dc_t||``);
* ``||dh_T/dh_0||`` (spectral norm) for ``T = 1 .. --jacobian-steps`` (``rnnx.diagnostics.jacobian_norms``,
  geometric mean over sequences; for the LSTM also the cell-state path ``||dc_T/dc_0||``);
* the global gradient norm at every training step (before clipping) and the training loss.

Writes ``examples/results/gradient_study.json`` and ``.png``.
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnx
from examples.common import adding_batch, fit_adding, readout, readout_model
from rnnx import diagnostics


def scaled_orthogonal(gain):
    return lambda key, shape, dtype=jnp.float32: gain * jax.nn.initializers.orthogonal()(key, shape, dtype)


# model: (registry cell name, keyword arguments). The rnn variants differ only in their initial weights.
MODELS = {
    "rnn_small": ("simple_rnn", dict(recurrent_init=scaled_orthogonal(0.5))),
    "rnn": ("simple_rnn", {}),
    "rnn_large": ("simple_rnn", dict(recurrent_init=scaled_orthogonal(2.0))),
    "lstm": ("lstm", {}),
    "gru": ("gru", {}),
}


def cell_of(name, hidden):
    cell_name, kwargs = MODELS[name]
    return rnnx.make_cell(cell_name, hidden, **kwargs)


def make_functions(cell):
    """Jitted diagnostics and evaluation for one cell."""

    @jax.jit
    def probe(params, xs, targets, jac_xs):
        def loss_of_outputs(ys):
            return jnp.mean((readout(params, ys) - targets) ** 2)

        loss, grad_norms = diagnostics.hidden_grad_norms(cell, params["cell"], xs, loss_of_outputs)
        jac = diagnostics.jacobian_norms(cell, params["cell"], jac_xs, log=True)
        return loss, grad_norms, {k: v.mean(0) for k, v in jac.items() if k in ("dh_dh0", "dc_dc0")}

    @jax.jit
    def evaluate(params, xs, targets):
        err = readout(params, rnnx.unroll(cell, params["cell"], xs)[1]) - targets
        return jnp.mean(err**2), jnp.mean(jnp.abs(err) < 0.04)

    return dict(probe=probe, evaluate=evaluate)


def measure(fns, params, data):
    loss, grad_norms, jac = fns["probe"](params, *data["probe"])
    mse, acc = fns["evaluate"](params, *data["eval"])
    out = {"loss": float(loss), "eval_mse": float(mse), "eval_accuracy": float(acc)}
    if isinstance(grad_norms, rnnx.LSTMCarry):
        out |= {"dL_dh": grad_norms.h.tolist(), "dL_dc": grad_norms.c.tolist()}
    else:
        out["dL_dh"] = grad_norms.tolist()
    return out | {f"log10_{k}": v.tolist() for k, v in jac.items()}


def train(predict, mode, params, args):
    """``args.updates`` Adam steps through ``rnnx.training.fit``, clipped or not; every update's loss and
    global gradient norm (before clipping)."""
    losses, norms = [], []

    def on_update(record):
        losses.append(record["loss"])
        norms.append(record["grad_norm"])

    result, _ = fit_adding(
        predict,
        params,
        data_key=jax.random.key(args.seed + 1),
        batch=args.batch,
        steps=args.steps,
        lr=args.lr,
        updates=args.updates,
        clip=mode == "clip",
        on_update=on_update,
    )
    return result.last_params, losses, norms


def log_ratio(g):
    """log10 ||dL/dh_1|| / ||dL/dh_T||, as text: float32 gradients can underflow to exactly 0."""
    return f"{np.log10(g[0] / g[-1]):.1f}" if g[0] > 0 else "-inf (dL/dh_1 underflows to 0)"


def summary(name, stage, m, steps):
    g = m["dL_dh"]
    jac = np.asarray(m["log10_dh_dh0"])
    cpath = f"  log10||dc_T/dc_0|| T={steps}: {m['log10_dc_dc0'][steps - 1]:7.2f}" if "log10_dc_dc0" in m else ""
    return (
        f"{name:9s} {stage:13s} log10 ||dL/dh_1||/||dL/dh_T|| {log_ratio(g)}  "
        f"log10||dh_T/dh_0|| T={steps}: {jac[steps - 1]:7.2f} T={len(jac)}: {jac[-1]:7.2f}{cpath}  "
        f"eval MSE {m['eval_mse']:.4f} acc {m['eval_accuracy']:.3f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="sequence length T of the task")
    parser.add_argument("--jacobian-steps", type=int, default=200, help="longest T for ||dh_T/dh_0||")
    parser.add_argument("--jacobian-sequences", type=int, default=4, help="sequences averaged for ||dh_T/dh_0||")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--updates", type=int, default=1000, help="Adam steps per training run")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gradient_study.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = {
        "probe": (
            *adding_batch(jax.random.key(20_000), 256, args.steps),
            adding_batch(jax.random.key(30_000), args.jacobian_sequences, args.jacobian_steps)[0],
        ),
        "eval": adding_batch(jax.random.key(10_000), 2000, args.steps),
    }
    results = {"config": vars(args), "backend": jax.default_backend(), "cpu_count": os.cpu_count(), "models": {}}
    for name in args.models:
        init, predict = readout_model(cell_of(name, args.hidden))
        fns = make_functions(cell_of(name, args.hidden))
        params0 = init(jax.random.key(args.seed))
        r = results["models"][name] = {
            "parameters": rnnx.count_params(params0),
            "init": measure(fns, params0, data),
        }
        print(f"[{time.perf_counter() - start:6.1f}s] {summary(name, 'init', r['init'], args.steps)}", flush=True)
        for mode in ("clip", "no_clip"):
            params, losses, norms = train(predict, mode, params0, args)
            r[mode] = measure(fns, params, data) | {
                "train_loss": losses,
                "grad_norm": norms,
                "max_grad_norm": max(norms),
                "max_grad_norm_update": int(np.argmax(norms)),
                "median_grad_norm": float(np.median(norms)),
                "updates_above_1": int(np.sum(np.asarray(norms) > 1.0)),
                "finite": bool(np.all(np.isfinite(losses))),
            }
            m = r[mode]
            print(
                f"[{time.perf_counter() - start:6.1f}s] {summary(name, mode, m, args.steps)}  grad norm median "
                f"{m['median_grad_norm']:.3g} max {m['max_grad_norm']:.3g} at update {m['max_grad_norm_update']}",
                flush=True,
            )
    results["seconds"] = round(time.perf_counter() - start, 1)
    print_tables(results, args)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    plot(results, args, args.out.removesuffix(".json") + ".png")


def print_tables(results, args):
    t, tj = args.steps, args.jacobian_steps
    print(
        f"\n{results['seconds']:.0f} s. Adding problem T={t}, hidden {args.hidden}, batch {args.batch}, "
        f"{args.updates} Adam updates (lr {args.lr}); ||dh_T/dh_0||: spectral norm, geometric mean over "
        f"{args.jacobian_sequences} sequences.\n"
    )
    print(
        f"| model | stage | log10 ‖∂L/∂h_1‖ / ‖∂L/∂h_{t}‖ | log10 ‖∂h_T/∂h_0‖, T={t} | T={tj} | "
        f"log10 ‖∂c_T/∂c_0‖, T={t} | T={tj} | eval MSE | accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results["models"].items():
        for stage in ("init", "clip", "no_clip"):
            m = r[stage]
            g = m["dL_dh"]
            c = m.get("log10_dc_dc0")
            cc = f"{c[t - 1]:.1f} | {c[-1]:.1f}" if c else "– | –"
            label = {"init": "initialisation", "clip": "trained, clipped", "no_clip": "trained, unclipped"}[stage]
            print(
                f"| {name} | {label} | {log_ratio(g)} | {m['log10_dh_dh0'][t - 1]:.1f} | "
                f"{m['log10_dh_dh0'][-1]:.1f} | {cc} | {m['eval_mse']:.4f} | {m['eval_accuracy']:.3f} |"
            )
    print("\n| model | clipping | median global grad norm | max (update) | updates with norm > 1 | final train loss |")
    print("|---|---|---|---|---|---|")
    for name, r in results["models"].items():
        for mode in ("clip", "no_clip"):
            m = r[mode]
            print(
                f"| {name} | {'yes' if mode == 'clip' else 'no'} | {m['median_grad_norm']:.3g} | "
                f"{m['max_grad_norm']:.3g} ({m['max_grad_norm_update']}) | {m['updates_above_1']} / {args.updates} | "
                f"{m['train_loss'][-1]:.4f} |"
            )


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = {"init": "at initialisation", "clip": "after training, clipped", "no_clip": "after training, unclipped"}
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    colors = dict(zip(MODELS, ["tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple"]))
    for col, (stage, title) in enumerate(stages.items()):
        for name, r in results["models"].items():
            m, color = r[stage], colors[name]
            t = np.arange(1, len(m["dL_dh"]) + 1)
            axes[0, col].semilogy(t, m["dL_dh"], color=color, label=name)
            if "dL_dc" in m:
                # dL/dc_T is 0: the last output is computed before the carry it would move (see the docstring).
                axes[0, col].semilogy(t[:-1], m["dL_dc"][:-1], color=color, ls="--", label=f"{name} ‖∂L/∂c_t‖")
            tj = np.arange(1, len(m["log10_dh_dh0"]) + 1)
            axes[1, col].semilogy(tj, 10.0 ** np.asarray(m["log10_dh_dh0"]), color=color, label=name)
            if "log10_dc_dc0" in m:
                axes[1, col].semilogy(
                    tj, 10.0 ** np.asarray(m["log10_dc_dc0"]), color=color, ls="--", label=f"{name} ‖∂c_T/∂c_0‖"
                )
        axes[0, col].set(title=f"‖∂L/∂h_t‖ {title}", xlabel="t (loss at t = T)")
        axes[1, col].set(title=f"‖∂h_T/∂h_0‖ (spectral) {title}", xlabel="T")
    for name, r in results["models"].items():
        for mode, ls in (("clip", "-"), ("no_clip", ":")):
            label = f"{name}, {'clipped' if mode == 'clip' else 'unclipped'}"
            axes[0, 3].semilogy(r[mode]["grad_norm"], color=colors[name], ls=ls, label=label)
            axes[1, 3].plot(r[mode]["train_loss"], color=colors[name], ls=ls, label=label)
    axes[0, 3].axhline(1.0, color="gray", lw=0.5)
    axes[0, 3].set(title="global gradient norm (before clipping)", xlabel="update")
    axes[1, 3].set(title="training loss (MSE)", xlabel="update", ylim=(0, 0.5))
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    axes[0, 3].legend(fontsize=6, ncol=2)
    fig.suptitle(f"adding problem T={args.steps}, hidden {args.hidden}, {args.updates} Adam updates (lr {args.lr})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
