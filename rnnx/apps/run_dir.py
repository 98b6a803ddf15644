"""A run directory: the settings a rerun must share with the run it resumes, and the files a run keeps there
(``config.json``, ``metrics.jsonl``, ``checkpoints/step_<n>``, ``results.json``; the pipeline adds
``vocab.json``).

Rerunning a run's command resumes it from its newest checkpoint, and rerunning a finished run with more
``--steps`` trains on from there, when its learning rate is constant. Only the lead process writes, and only
while it holds the directory's lock (:func:`writing`): a process refused it leaves every byte as it was, and a
finished run is read, never written.
"""

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rnnx import training as train
from rnnx.apps.config import ClassifierConfig, ConfigError, LanguageModelConfig
from rnnx.core import Stack
from rnnx.training import checkpoint, distributed
from rnnx.training.loop import OnLog

Config = ClassifierConfig | LanguageModelConfig

POPULATION = "population.json"  # the seeds and learning rates of a population (rnnx train --seeds)
# Settings a rerun may change: they steer how the run goes on, not what it has computed so far.
_FREE = {"patience", "run_dir", "checkpoint_every", "keep_checkpoints", "on_nonfinite", "max_dataset_mb"}


def check(cfg: Config, population: dict[str, Any] | None = None) -> Path:
    """``cfg.run_dir``, after checking, reading only, that a run with ``cfg`` may use it.

    A directory holding checkpoints resumes from them (``fit`` does that), so it must hold the same settings;
    only ``patience``, the checkpoint and non-finite policies, the dataset size limit and, with a constant
    learning rate, ``steps`` ("train on") may change. It must also hold the same kind of run: a solo run
    (``population`` None), or the population (``{"seeds", "learning_rates"}`` of ``rnnx train --seeds``)
    saved in its ``population.json``. Anything else is a :class:`ConfigError` naming what differs, as is a
    ``run_dir`` that is a file.
    """
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir must be a directory, received the file {run_dir}")
    if latest_step(run_dir / "checkpoints") is None:
        return run_dir
    saved_path, population_path = run_dir / "config.json", run_dir / POPULATION
    if saved_path.exists():
        _check_unchanged(run_dir, json.loads(saved_path.read_text()), _settings(cfg))
    saved = json.loads(population_path.read_text()) if population_path.exists() else None
    if saved != population:
        held, now = (f"the population {p}" if p is not None else "a solo run" for p in (saved, population))
        raise ConfigError(
            f"{run_dir} holds checkpoints of {held}, and this is {now}; it would resume from them. Pass another "
            f"--run-dir, or delete {run_dir}, to start afresh"
        )
    return run_dir


@contextlib.contextmanager
def writing(cfg: Config, say: Callable[[str], None], population: dict[str, Any] | None = None) -> Iterator[Path]:
    """Hold ``cfg.run_dir``'s lock (``rnnx.lock``, as ``fit`` holds its checkpoints'), check the settings
    again under it and save ``cfg`` as ``config.json`` (and ``population`` as ``population.json``, or remove
    a population's left without checkpoints), for the ``with`` block: the only way into a run directory. A
    process refused the lock (:class:`rnnx.training.checkpoint.CheckpointError`) or the settings
    (:class:`ConfigError`) has written nothing. In a multi-process job, process 0 holds the lock and writes;
    the others only read."""
    lead = distributed.is_lead()
    with checkpoint.lock(cfg.run_dir, enabled=lead, on_stale=say):
        run_dir = check(cfg, population)  # again: another process may have written here since the first check
        distributed.barrier("rnnx: run directory read")  # each read it before process 0 writes to it
        if lead:
            for path, value in (("config.json", _settings(cfg)), (POPULATION, population)):
                _write_if_changed(run_dir / path, value)
        yield run_dir


def _write_if_changed(path: Path, value: Any) -> None:
    """``value`` as ``path``'s JSON, unless it already holds it; None removes the file."""
    if value is None:
        path.unlink(missing_ok=True)
        return
    text = json.dumps(value, indent=1)
    if not (path.exists() and path.read_text() == text):
        path.write_text(text)


def _settings(cfg: Config) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as lists, as saved


def _check_unchanged(run_dir: Path, saved: dict, settings: dict) -> None:
    free = _FREE | ({"steps"} if settings["schedule"] == "constant" else set())
    changed = {k: (saved.get(k), v) for k, v in settings.items() if k not in free and saved.get(k) != v}
    if set(changed) == {"steps"}:  # so both runs have the cosine schedule
        old, new = changed["steps"]
        raise ConfigError(
            f"{run_dir} holds a run with --schedule cosine over --steps {old}, whose learning rate decays to 0 at "
            f"step {old}: it cannot go on to --steps {new}, because the schedule was defined over the old step "
            f"count. Pass --steps {old} to keep that run, or another --run-dir to train {new} steps (with "
            "--schedule constant to be able to train on later)"
        )
    if changed:
        raise ConfigError(
            f"{run_dir} holds checkpoints of a run with other settings, {changed} (saved, now); it would "
            f"resume from them. Pass another --run-dir, or delete {run_dir}, to start afresh"
        )


def finished(run_dir: Path, cfg: Config, say: Callable[[str], None]) -> dict[str, Any] | None:
    """The saved results of a run in ``run_dir`` that already trained its ``cfg.steps`` (or stopped early),
    after saying so; None when there is training left to do."""
    path = run_dir / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    step = latest_step(run_dir / "checkpoints")
    if step is None or results.get("steps") != step or (step < cfg.steps and not results.get("stopped_early")):
        return None
    hint = (
        "To train on, pass more --steps, or another --run-dir to start afresh"
        if cfg.schedule == "constant"
        else "Its cosine schedule ended at its last step; to train longer, pass another --run-dir"
    )
    say(f"{run_dir} holds a finished run ({step} of {cfg.steps} steps); its results stay as they are in {path}. {hint}")
    return results


def log_to(run_dir: Path, on_log: OnLog | None) -> OnLog:
    """``fit``'s ``on_log``: each record appended to ``run_dir/metrics.jsonl``, then passed to ``on_log``.
    On resuming from step N, the log is first cut back to what that checkpoint holds (the records up to
    step N, less the evaluation of step N when it is done again), so no step appears twice."""
    path = run_dir / "metrics.jsonl"
    write = train.jsonl_log(path)

    def log(record: dict[str, Any]) -> Any:
        if record.get("event") in ("resume", "finished") and path.exists():
            step, again = record["step"], record["pending_evaluation"]
            kept = [line for line in path.read_text().splitlines() if line and _kept(json.loads(line), step, again)]
            path.write_text("".join(line + "\n" for line in kept))
        write(record)
        return on_log(record) if on_log is not None else None

    return log


def _kept(record: dict, step: int, evaluated_again: bool) -> bool:
    """Whether a ``metrics.jsonl`` record survives a resume from a checkpoint of ``step`` (whose evaluation
    is ``evaluated_again`` or is in the checkpoint)."""
    at = record.get("step")
    return at is None or at < step or (at == step and ("loss" in record or ("eval" in record and not evaluated_again)))


def checkpoints(run_dir: Path, cfg: Config, net: Stack) -> train.Checkpoints:
    """``fit``'s checkpoint hook for a run: ``run_dir/checkpoints``, as often and as many as ``cfg`` says."""
    return train.Checkpoints(
        run_dir / "checkpoints", every=cfg.checkpoint_every, max_to_keep=cfg.keep_checkpoints, net=net
    )


def latest_step(directory: Path) -> int | None:
    """The newest complete checkpoint step in ``directory`` (None: none, or no such directory); reads only."""
    if not directory.is_dir():
        return None
    with checkpoint.manager(directory, read_only=True) as manager:
        return manager.latest_step()


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))


__all__ = ["check", "checkpoints", "finished", "latest_step", "log_to", "write_results", "writing"]
