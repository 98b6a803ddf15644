"""``rnnx train --seeds N [--learning-rates ...]``: one experiment trained as a population with
:func:`rnnx.training.fit_population`, and its results per member and as a mean with a 95% interval.

The task's pipeline is :mod:`rnnx.apps.experiments`'s; what changes is that the task's
:class:`rnnx.apps.task.Setup` is built once per seed (the seed sets the initialisation and the classifier's
data order), and each member is reported as the solo run with that seed would be. The summary holds, for the
held-out metric and its margin over the task's baseline, the mean and its 95% interval from the
t-distribution over the members that did not fail (:mod:`rnnx.apps.intervals`).

Files in the run directory: those of a solo run, with ``population.json`` (the seeds and learning rates,
which a resumed run must share) and ``results.json`` holding ``members`` and ``summary``. As with a solo run
(:func:`rnnx.apps.run_dir.finished`), rerunning a finished population returns its saved results and writes
nothing. The baselines do not depend on the seed (every member has the same data): they are computed once.
"""

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from rnnx import training as train
from rnnx.apps import classification, language_modelling, run_dir
from rnnx.apps.config import ClassifierConfig, ConfigError, LanguageModelConfig
from rnnx.apps.console import progress_bar, say
from rnnx.apps.intervals import t_interval
from rnnx.apps.lanes import lanes
from rnnx.apps.task import optimizer_factory
from rnnx.training.loop import OnLog

_TASKS = {ClassifierConfig: classification.TASK, LanguageModelConfig: language_modelling.TASK}
# (the held-out metric, the baseline it is compared with, +1 if higher is better)
METRICS = {
    ClassifierConfig: ("test_accuracy", "bow_logreg_accuracy", 1.0),
    LanguageModelConfig: ("test_bits_per_char", "ngram_test_bits_per_char", -1.0),
}


def members(cfg: ClassifierConfig | LanguageModelConfig, seeds: int | None, rates: Sequence[float] | None) -> tuple:
    """``(seeds, learning rates)`` of the population the flags ask for: ``seeds`` members from ``cfg.seed``
    on (default: one per learning rate), each at its rate of ``rates`` (one rate: all; default ``cfg``'s)."""
    n = seeds if seeds is not None else len(rates or ())
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--seeds must be a positive integer, received {seeds!r}")
    rates = list(rates) if rates else [cfg.learning_rate]
    if len(rates) not in (1, n) or any(not r > 0 for r in rates):
        raise ConfigError(f"--learning-rates must be 1 or {n} (--seeds) positive numbers, received {rates}")
    return list(range(cfg.seed, cfg.seed + n)), rates * n if len(rates) == 1 else rates


def command(
    cfg: ClassifierConfig | LanguageModelConfig, seeds: int | None, rates: Sequence[float] | None, *, progress: bool
) -> dict[str, Any]:
    """``rnnx train --seeds N --learning-rates ...``: train the population with a progress bar, print the table."""
    seed_list, rate_list = members(cfg, seeds, rates)
    say(f"a population of {len(seed_list)} members: seeds {seed_list}, learning rates {rate_list}")
    with progress_bar(cfg.steps, enabled=progress, bits=isinstance(cfg, LanguageModelConfig)) as on_log:
        result = run_population(cfg, seed_list, rate_list, on_log=on_log, say=say)
    print(describe(result))
    print(f"Results in {cfg.run_dir}/results.json")
    return result


def run_population(
    cfg: ClassifierConfig | LanguageModelConfig,
    seeds: list[int],
    learning_rates: list[float],
    *,
    on_log: OnLog | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Train the population and return ``{"members": [...], "summary": {...}}`` (also in ``results.json``); a
    finished population's saved results, writing nothing."""
    task = _TASKS[type(cfg)]
    population = {"seeds": seeds, "learning_rates": learning_rates}
    directory = run_dir.check(cfg, population)  # reads only: a refused run writes nothing
    if (finished := run_dir.finished(directory, cfg, say)) is not None:
        return finished
    data = task.load(cfg)
    with run_dir.writing(cfg, say, population) as directory:  # the lock, and the settings checked again
        if (finished := run_dir.finished(directory, cfg, say)) is not None:  # by another process meanwhile
            return finished
        return _train(task, cfg, data, directory, seeds, learning_rates, on_log, say)


def _train(task, cfg, data, directory, seeds, learning_rates, on_log, say) -> dict[str, Any]:
    vocab = task.vocabulary(cfg, data)
    vocab.save(directory / "vocab.json")
    configs = [dataclasses.replace(cfg, seed=s) for s in seeds]
    setups = {
        s: task.build(c, data, vocab, lanes(cfg.batch_size, None), say if s == seeds[0] else lambda m: None)
        for s, c in zip(seeds, configs)
    }
    first = setups[seeds[0]]
    shared_baselines = first.baselines()  # the same data for every member
    started = time.perf_counter()
    result = train.fit_population(
        first.loss_fn,
        lambda seed: setups[seed].params,
        lambda epoch, seed: setups[seed].batches(epoch),
        seeds=seeds,
        steps=cfg.steps,
        optimizer=optimizer_factory(cfg),
        hyperparams={"learning_rate": learning_rates},
        clip_norm=cfg.clip_norm or None,
        member_data=True,
        initial_carry=first.initial_carry,
        evaluation=first.evaluation._replace(evaluate=train.each_member(first.evaluation.evaluate)),
        checkpoints=run_dir.checkpoints(directory, cfg, first.net),
        on_log=run_dir.log_to(directory, on_log),
        on_nonfinite="skip_update" if cfg.on_nonfinite == "skip_update" else "freeze",
    )
    seconds = time.perf_counter() - started
    metric, baseline, sign = METRICS[type(cfg)]
    rows: list[dict[str, Any]] = []
    for i, seed in enumerate(seeds):
        row = {"member": i, "seed": seed, "learning_rate": learning_rates[i], "failure": result.failures[i]}
        if result.failures[i] is None:
            report = setups[seed].report(result.member(i), seconds, None, shared_baselines)
            margin = sign * (report[metric] - report[baseline])
            row |= {metric: report[metric], baseline: report[baseline], "margin": margin, "steps": report["steps"]}
        rows.append(row)
    kept = [r for r in rows if r["failure"] is None]
    summary = {
        name: dict(zip(("mean", "low", "high"), t_interval([r[name] for r in kept])), n=len(kept))
        for name in (metric, "margin")
    } if kept else {}  # fmt: skip
    results = {
        "metric": metric,
        "baseline": baseline,
        "members": rows,
        "summary": summary,
        "steps": max(result.steps),  # the population's last checkpoint: run_dir.finished compares them
        "stopped_early": max(result.steps) < cfg.steps,  # every member stopped or failed before cfg.steps
        "train_seconds": round(seconds, 1),
    }
    run_dir.write_results(directory, results)
    return results


def describe(results: dict[str, Any]) -> str:
    """The results as a table of members and a line for the mean with its 95% interval."""
    metric, baseline = results["metric"], results["baseline"]
    lines = [f"| member | seed | learning rate | {metric} | margin over {baseline} |", "|---|---|---|---|---|"]
    for r in results["members"]:
        values = f"{r[metric]:.4f} | {r['margin']:+.4f}" if r["failure"] is None else "failed | -"
        lines.append(f"| {r['member']} | {r['seed']} | {r['learning_rate']:.3g} | {values} |")
    for name, s in results["summary"].items():
        lines.append(
            f"{name}: mean {s['mean']:.4f}, 95% interval [{s['low']:.4f}, {s['high']:.4f}] over {s['n']} members"
        )
    lines += [r["failure"] for r in results["members"] if r["failure"] is not None]
    return "\n".join(lines)


__all__ = ["METRICS", "command", "describe", "members", "run_population"]
