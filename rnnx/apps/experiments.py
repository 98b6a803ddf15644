"""End-to-end runs shared by the ``rnnx`` CLI and the examples, as one pipeline: config -> data -> model ->
``fit`` -> report.

:func:`run` takes a validated config and goes through each step once: it reads and checks the task's data,
prepares the run directory (refusing other settings where checkpoints would resume), builds the vocabulary,
the model and its batches, trains with :func:`rnnx.training.fit` and reports the metrics beside their
baselines. What differs between tasks (:mod:`rnnx.apps.classification`, :mod:`rnnx.apps.language_modelling`)
is handed over as a :class:`rnnx.apps.task.Task`.

Each run writes into ``run_dir``: ``vocab.json``, ``config.json``, ``metrics.jsonl`` (training log),
``checkpoints/step_<n>`` (orbax) and ``results.json`` (the final metrics beside their baselines); see
:mod:`rnnx.apps.run_dir`. Nothing here prints: a run reports through ``on_log``
(:func:`rnnx.training.fit`'s records) and ``say`` (notes, one string each), which the caller shows.
"""

import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax

from rnnx import training as train
from rnnx.apps import classification, language_modelling, run_dir
from rnnx.apps.classification import _initial_classifier_params as _initial_classifier_params  # noqa: F401
from rnnx.apps.config import ClassifierConfig, LanguageModelConfig, validate
from rnnx.apps.lanes import lanes
from rnnx.apps.lanes import process_windows as _process_windows  # noqa: F401
from rnnx.apps.language_modelling import _load_text as _load_text  # noqa: F401
from rnnx.apps.language_modelling import language_model_config as language_model_config
from rnnx.apps.language_modelling import restore_language_model as restore_language_model
from rnnx.apps.task import optimizer
from rnnx.core.deprecation import MESH_RENAME, renamed_argument
from rnnx.training import distributed
from rnnx.training.loop import OnLog, emit

_Config = TypeVar("_Config", ClassifierConfig, LanguageModelConfig)

# The three private names above are imported for the tests that reach them here (tests/test_train.py,
# tests/test_cli_scale.py, tests/test_install.py).

_TASKS = {ClassifierConfig: classification.TASK, LanguageModelConfig: language_modelling.TASK}


def _quiet(message: object) -> None:
    del message


def run(
    cfg: ClassifierConfig | LanguageModelConfig,
    *,
    data_mesh: jax.sharding.Mesh | None = None,
    on_log: OnLog | None = None,
    say: Callable[[str], None] = _quiet,
    interrupt: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run the experiment ``cfg`` describes, already validated (:func:`rnnx.apps.config.validate`); return
    its results (also written to ``run_dir/results.json``). A finished run's saved results are returned as
    they are.

    ``data_mesh``: data-parallel training over its ``"data"`` axis, passed to :func:`rnnx.training.fit`;
    over several processes, each feeds its rows (lanes) of every global batch, together the one-process
    run's, and evaluates on its own copy of the params. ``on_log`` receives :func:`rnnx.training.fit`'s
    records (they also go to ``metrics.jsonl``); ``say`` receives notes on the data and on what runs next.
    Only process 0 writes files (holding the run directory's lock, :func:`rnnx.apps.run_dir.writing`) and
    calls ``on_log`` and ``say``. ``interrupt``: passed to :func:`rnnx.training.fit` (a Ctrl-C handler's).
    """
    task = _TASKS[type(cfg)]
    lead = distributed.is_lead()
    say = say if lead else _quiet
    directory = run_dir.check(cfg)  # reads only: a refused run writes nothing
    if (finished := run_dir.finished(directory, cfg, say)) is not None:
        return finished
    data = task.load(cfg)
    with run_dir.writing(cfg, say) as directory:  # only once the data is known to be usable
        if (finished := run_dir.finished(directory, cfg, say)) is not None:  # by another process meanwhile
            return finished
        vocab = task.vocabulary(cfg, data)
        if lead:
            vocab.save(directory / "vocab.json")
        setup = task.build(cfg, data, vocab, lanes(cfg.batch_size, data_mesh), say)
        if on_log is not None and lead:  # not in metrics.jsonl: a progress bar opens here
            message = f"data ready; training {cfg.steps} steps (the first compiles the model)"
            emit(on_log, {"step": 0, "event": "ready", "message": message})
        started = time.perf_counter()
        result = train.fit(
            setup.loss_fn,
            setup.params,
            setup.batches,
            steps=cfg.steps,
            optimizer=optimizer(cfg),
            clip_norm=cfg.clip_norm or None,
            seed=cfg.seed,
            initial_carry=setup.initial_carry,
            evaluation=setup.evaluation,
            checkpoints=run_dir.checkpoints(directory, cfg, setup.net),
            on_log=run_dir.log_to(directory, on_log) if lead else _quiet,
            on_nonfinite=cfg.on_nonfinite,
            data_mesh=data_mesh,
            interrupt=interrupt,
        )
        seconds = time.perf_counter() - started
        if on_log is not None and lead:  # not in metrics.jsonl: a progress bar closes here
            message = f"trained {result.step} steps in {seconds:.1f} s; scoring the held-out data and the baselines"
            emit(on_log, {"step": result.step, "event": "trained", "message": message})
        results = setup.report(result, seconds, directory if lead else None, setup.baselines())
        if lead:
            run_dir.write_results(directory, results)
    return results


def train_classifier(
    cfg: ClassifierConfig,
    *,
    data_mesh: jax.sharding.Mesh | None = None,
    on_log: OnLog | None = None,
    say: Callable[[str], None] = _quiet,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Validate ``cfg``, then train and evaluate a recurrent text classifier (the arguments as for
    :func:`run`; ``mesh`` is a deprecated alias of ``data_mesh``); return the metrics beside the
    majority-class and bag-of-words baselines."""
    data_mesh = renamed_argument("train_classifier", "mesh", mesh, "data_mesh", data_mesh, MESH_RENAME)
    return run(_validated(cfg, ClassifierConfig), data_mesh=data_mesh, on_log=on_log, say=say)


def train_language_model(
    cfg: LanguageModelConfig,
    *,
    data_mesh: jax.sharding.Mesh | None = None,
    on_log: OnLog | None = None,
    say: Callable[[str], None] = _quiet,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Validate ``cfg``, then train a character-level recurrent language model with truncated BPTT (the
    arguments as for :func:`run`; ``mesh`` is a deprecated alias of ``data_mesh``); return bits per
    character on held-out text beside a smoothed character n-gram model (its order chosen on the validation
    text). Over several processes, each holds only its lanes of the training stream (and their carry)."""
    data_mesh = renamed_argument("train_language_model", "mesh", mesh, "data_mesh", data_mesh, MESH_RENAME)
    return run(_validated(cfg, LanguageModelConfig), data_mesh=data_mesh, on_log=on_log, say=say)


def _validated(cfg: _Config, expected: type[_Config]) -> _Config:
    if not isinstance(cfg, expected):
        raise TypeError(f"cfg must be a {expected.__name__}, received {type(cfg).__name__}")
    validate(cfg)
    return cfg


__all__ = ["language_model_config", "restore_language_model", "run", "train_classifier", "train_language_model"]
