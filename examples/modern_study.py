"""The long-range study of the modern cells, as populations of seeds: LSTM, GRU, minGRU, LRU, RG-LRU, sLSTM and
mLSTM at equal parameter counts on three tasks.

    nice -n 10 python -m examples.modern_study adding  [--seeds 4 --length 1000 --updates 150 --memory-only mlstm]
    nice -n 10 python -m examples.modern_study copying [--seeds 4 --length 256 --tokens 8 --updates 200]
    nice -n 10 python -m examples.modern_study lm      --seeds 3 [--updates 100]
    nice -n 10 python -m examples.modern_study lm      --seeds 3 --main-job [--updates 1800]
    python -m examples.modern_study report   (examples.modern_report)

- ``adding``: the adding problem (``examples.common.adding_batch``) at T = 1,000, one cell layer and a linear
  readout (``examples.common.readout_model``) within ``--budget`` parameters, batch 32, Adam 3e-3, clipping at 1,
  as ``examples.population_study long-range``. Metric: the final MSE (always answering 1 scores 0.167) and
  accuracy (``|error| < 0.04``); a member learned if its MSE is below 0.1.
- ``copying``: the selective-copying task (``examples.selective_copying``), scaled down from Gu & Dao's
  length 4,096 and 16 data tokens to ``--length`` and ``--tokens`` (vocabulary 16 as theirs). One-hot tokens, one
  cell layer, a linear readout at each marker step, cross-entropy. Metric: accuracy per copied token (chance
  1/14); a member learned if it beats chance by 0.05.
- ``lm``: the seed's Shakespeare character model (``rnnx.apps.config.LanguageModelConfig``'s defaults: two
  layers, embedding 300, batch 64, windows of 100, Adam 2e-3; not the README's main job, ``rnnx train``'s smaller
  command-line defaults) through ``rnnx.apps.population_run``, each cell's hidden size the largest within the
  parameter count of its 2-layer GRU of 128, for ``--updates`` updates instead of 3,000. Metric: held-out
  (test) bits/char and the margin over the n-gram baseline (positive: better than it); a member learned if its
  margin is positive. ``--main-job`` runs the README's main job's settings instead (``rnnx train``'s
  command-line defaults, ``rnnx.apps.cli.LM_DEFAULTS``: embedding 64, windows of 50, 1,800 updates on a cosine
  schedule from 0.01), written to ``modern_lm_main_job.json``.

Members ``0 .. --seeds - 1`` train at once in ``rnnx.training.fit_population`` (one compiled, vmapped step); in
``adding`` and ``copying`` each draws its own batches inside the loss from its step key. Reported per cell: the
mean and 95% t-interval of the metric, the members that learned, seconds per population update (between the
first and the last training record: without compilation; on a shared CPU, so rough), and the memory XLA plans
for one member's training step (``memory_analysis()`` of the compiled step: arguments, outputs and
temporaries; deterministic). Welch's t-test compares each new cell with the LSTM and the GRU. Each task writes
``examples/results/modern_<task>.json``; ``report`` prints the tables and draws ``modern_study.png``.
"""

import argparse
import dataclasses
import itertools
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnx
from examples.common import adding_batch, hidden_size_for, readout_model
from examples.modern_report import METRIC, RESULTS, VOCAB, report
from examples.population_study import fmt, summary
from examples.selective_copying import selective_copying_batch
from rnnx import training as train
from rnnx.apps import language_modelling, models, population_run
from rnnx.apps.cli import LM_DEFAULTS
from rnnx.apps.config import LanguageModelConfig
from rnnx.apps.intervals import welch_significant
from rnnx.apps.lanes import lanes
from rnnx.apps.task import optimizer

CELLS = ("lstm", "gru", "min_gru", "lru", "rg_lru", "slstm", "mlstm")
NEW = ("lru", "rg_lru", "slstm", "mlstm")


def step_memory(loss_fn, params, batch, carry=None, opt=None):
    """Bytes XLA plans for one member's clipped Adam step: ``{"argument", "output", "temp", "total"}``."""
    step = train.make_train_step(loss_fn, opt or optax.adam(3e-3), clip_norm=1.0)
    stats = step.update.lower(step.init(params, carry), batch, jax.random.key(0)).compile().memory_analysis()
    out = {k: int(getattr(stats, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp")}
    return out | {"total": sum(out.values())}


class Clock:
    """``on_log`` that times the training records of member 0: seconds per update without compilation."""

    def __init__(self):
        self.times = []

    def __call__(self, record):
        if record.get("member") == 0 and "loss" in record:
            self.times.append((record["step"], time.perf_counter()))

    def per_update(self):
        (s0, t0), (s1, t1) = self.times[0], self.times[-1]
        return (t1 - t0) / max(s1 - s0, 1)


def synthetic(task, name, args):
    """One population on ``adding`` or ``copying``: its row of results."""
    if task == "adding":
        model_for = lambda h: readout_model(rnnx.make_cell(name, h), parallel=args.parallel)  # noqa: E731
        draw = lambda key, n: adding_batch(key, n, args.length)  # noqa: E731
    else:
        model_for = lambda h: copying_model(rnnx.make_cell(name, h), args.tokens, args.parallel)  # noqa: E731
        draw = lambda key, n: selective_copying_batch(key, n, args.length, args.tokens, VOCAB)  # noqa: E731
    hidden, count = hidden_size_for(model_for, args.budget)
    init, predict = model_for(hidden)
    eval_xs, eval_ys = draw(jax.random.key(10_000), args.eval_size)

    def loss_fn(params, _, key):  # the member's step key draws its batch: each seed its own stream
        xs, ys = draw(key, args.batch)
        return task_loss(task, predict(params, xs), ys), {}

    def evaluate(params):  # in chunks of 50 sequences: the parallel scans' intermediates grow with the batch
        chunks = eval_xs.reshape(-1, 50, *eval_xs.shape[1:])
        out = jax.lax.map(lambda xs: predict(params, xs), chunks)
        out = out.reshape(-1, *out.shape[2:])
        if task == "adding":
            return {"mse": jnp.mean((out - eval_ys) ** 2), "accuracy": jnp.mean(jnp.abs(out - eval_ys) < 0.04)}
        return {"nll": task_loss(task, out, eval_ys), "accuracy": jnp.mean(jnp.argmax(out, -1) == eval_ys)}

    memory = step_memory(loss_fn, init(jax.random.key(0)), np.zeros((), np.float32))
    if name in args.memory_only:
        return {"hidden": hidden, "parameters": count, "memory": memory}
    clock = Clock()
    started = time.perf_counter()
    result = train.fit_population(
        loss_fn,
        lambda seed: init(jax.random.key(seed)),
        itertools.repeat(np.zeros((), np.float32)),
        seeds=list(range(args.seeds)),
        steps=args.updates,
        hyperparams={"learning_rate": args.lr},
        clip_norm=1.0,
        evaluation=train.Evaluation(jax.jit(jax.vmap(evaluate)), every=args.updates, monitor=METRIC[task][0]),
        log_every=args.log_every,
        on_log=clock,
    )
    finals = [h[-1] for h in result.histories]
    row = {"hidden": hidden, "parameters": count, "seconds": round(time.perf_counter() - started, 1)}
    row |= {m: summary([float(f[m]) for f in finals]) for m in finals[0] if m != "step"}
    row["failures"] = [f for f in result.failures if f is not None]
    row["seconds_per_update"] = clock.per_update()
    row["memory"] = memory
    row["parallel"] = args.parallel  # unroll's mode: False, the sequential scan; None, the cell's default
    return row


def task_loss(task, out, ys):
    if task == "adding":
        return jnp.mean((out - ys) ** 2)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, ys))


def copying_model(cell, tokens, parallel=None):
    """``(init, predict)``: one-hot tokens through ``cell`` (``rnnx.unroll``'s mode ``parallel``), a linear
    readout of the last ``tokens`` outputs to ``VOCAB`` logits ``(b, tokens, VOCAB)``."""

    def init(key):
        k_cell, k_out = jax.random.split(key)
        h = cell.hidden_size
        return {
            "cell": cell.init(k_cell, VOCAB),
            "w": jax.random.normal(k_out, (h, VOCAB)) / h**0.5,
            "b": jnp.zeros(VOCAB),
        }

    def predict(params, inputs):
        ys = rnnx.unroll(cell, params["cell"], jax.nn.one_hot(inputs, VOCAB), parallel=parallel)[1]
        return ys[:, -tokens:] @ params["w"] + params["b"]

    return init, predict


def language_model(name, args):
    """One population of the ``rnnx train --task lm`` model for ``cell = name``: its row of results."""
    base = LanguageModelConfig(**LM_DEFAULTS) if args.main_job else LanguageModelConfig()
    vocab_size = len(language_modelling.vocabulary(base, language_modelling.load(base)))

    def lm_for(cell, h):
        return models.language_model(rnnx.stacked(rnnx.make_cell(cell, h), base.layers), vocab_size, base.embed)

    budget = rnnx.count_params(jax.eval_shape(lm_for("gru", base.hidden).init, jax.random.key(0)))
    hidden, count = hidden_size_for(lambda h: (lm_for(name, h).init, None), budget)
    with tempfile.TemporaryDirectory() as directory:
        cfg = dataclasses.replace(
            base,
            cell=name,
            hidden=hidden,
            steps=args.updates,
            eval_every=args.updates,
            checkpoint_every=args.updates,
            keep_checkpoints=1,
            run_dir=directory,
        )
        clock = Clock()
        seeds = list(range(args.seeds))
        started = time.perf_counter()
        out = population_run.run_population(cfg, seeds, [cfg.learning_rate] * len(seeds), on_log=clock)
        seconds = time.perf_counter() - started
        texts = language_modelling.load(cfg)
        setup = language_modelling.build(
            cfg, texts, language_modelling.vocabulary(cfg, texts), lanes(cfg.batch_size, None), lambda message: None
        )
    kept = [m for m in out["members"] if m["failure"] is None]
    row = {"hidden": hidden, "parameters": count, "main_job_parameters": budget, "seconds": round(seconds, 1)}
    row |= {k: summary([m[key] for m in kept]) for k, key in (("bits_per_char", out["metric"]), ("margin", "margin"))}
    row["ngram_test_bits_per_char"] = kept[0][out["baseline"]] if kept else None
    row["failures"] = [m["failure"] for m in out["members"] if m["failure"] is not None]
    row["seconds_per_update"] = clock.per_update()
    batch = np.asarray(setup.batches(0)[0])
    row["memory"] = step_memory(setup.loss_fn, setup.params, batch, setup.initial_carry, optimizer(cfg))
    return row


def run(args):
    path = os.path.join(RESULTS, f"modern_{args.task}{'_main_job' if args.main_job else ''}.json")
    out = {"config": vars(args), "cpu_count": os.cpu_count(), "results": {}}
    if args.add and os.path.exists(path):  # the cells of earlier runs, with their configs
        with open(path) as f:
            earlier = json.load(f)
        out |= {k: earlier[k] for k in ("results", "memory_only") if k in earlier}
        out["earlier_configs"] = [earlier["config"], *earlier.get("earlier_configs", [])]
    for name in args.memory_only:  # too costly to train here: the memory its training step would need
        out.setdefault("memory_only", {})[name] = synthetic(args.task, name, args)
    for name in args.cells:
        row = language_model(name, args) if args.task == "lm" else synthetic(args.task, name, args)
        metric, higher, threshold, _ = METRIC[args.task]
        values = row[metric]["values"]
        row["learned"] = sum((v > threshold) if higher else (v < threshold) for v in values)
        out["results"][name] = row
        print(
            f"{args.task} {name} (h={row['hidden']}, {row['parameters']:,} params): {metric} {fmt(row[metric])}, "
            f"learned {row['learned']}/{len(values)}, {row['seconds_per_update']:.3f} s/update, "
            f"{row['memory']['total'] / 2**20:.1f} MiB, {row['seconds']:.0f} s",
            flush=True,
        )
        save(out, path)  # after each cell: a run stopped early keeps what it measured
    return save(out, path)


def save(out, path):
    out["tests"] = tests(out["results"], METRIC[out["config"]["task"]][0])
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    return out


def tests(results, metric):
    """Welch's t-test of each new cell against the LSTM and the GRU (and minGRU against both)."""
    out = {}
    for a in (*NEW, "min_gru"):
        for b in ("lstm", "gru"):
            if a in results and b in results:
                t, significant = welch_significant(results[a][metric]["values"], results[b][metric]["values"])
                diff = results[a][metric]["mean"] - results[b][metric]["mean"]
                out[f"{a} vs {b}"] = {"difference": diff, "t": t, "significant": significant}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=[*METRIC, "report"])
    parser.add_argument("--add", action="store_true", help="add to the task's json instead of starting it afresh")
    parser.add_argument("--cells", nargs="*", default=list(CELLS), choices=sorted(rnnx.CELLS))
    parser.add_argument(
        "--memory-only",
        nargs="+",
        default=[],
        choices=sorted(rnnx.CELLS),
        help="adding, copying: cells whose training step's memory is recorded, without training",
    )
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--updates", type=int, default=None, help="default: 150 (adding), 200 (copying), 100 (lm)")
    parser.add_argument("--length", type=int, default=None, help="default: 1000 (adding), 256 (copying)")
    parser.add_argument("--tokens", type=int, default=8, help="copying: data tokens to copy")
    parser.add_argument("--budget", type=int, default=None, help="parameters, at most: 4600 (adding), 10000 (copying)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eval-size", type=int, default=1000)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="adding, copying: each cell in unroll's default mode (the parallel forms where there are "
        "any), not the sequential scan for all; lm always runs the default",
    )
    parser.add_argument(
        "--main-job",
        action="store_true",
        help="lm: the README's main job's settings (rnnx.apps.cli.LM_DEFAULTS; --updates default 1800), written "
        "to modern_lm_main_job.json; without it, LanguageModelConfig's defaults",
    )
    args = parser.parse_args(argv)
    if args.main_job and args.task != "lm":
        parser.error(f"--main-job applies to the lm task only, received the task {args.task!r}")
    args.parallel = None if args.parallel else False  # unroll's parallel=: None is the cell's default mode
    if args.task == "report":
        return report()
    lm_updates = LM_DEFAULTS["steps"] if args.main_job else 100
    defaults = {"adding": (150, 1000, 4600), "copying": (200, 256, 10_000), "lm": (lm_updates, None, None)}[args.task]
    args.updates = args.updates or defaults[0]
    args.length = args.length or defaults[1]
    args.budget = args.budget or defaults[2]
    return run(args)


if __name__ == "__main__":
    main()
