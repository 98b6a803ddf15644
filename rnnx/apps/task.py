"""What a task (classification, language modelling) hands the experiment pipeline of
:mod:`rnnx.apps.experiments`, and the one piece every task builds from its config the same way: the
optimiser.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import optax

from rnnx import training as train
from rnnx.apps.models import ModelParams
from rnnx.core import Stack
from rnnx.training.loop import EpochBatches
from rnnx.training.step import LossFn

if TYPE_CHECKING:
    from rnnx.apps.config import ClassifierConfig, LanguageModelConfig


class Setup(NamedTuple):
    """A task's model and everything :func:`rnnx.training.fit` takes from it, built once per run."""

    net: Stack  # the rnnx.Stack inside the params, recorded in the checkpoints
    loss_fn: LossFn
    params: ModelParams
    batches: Callable[[int], EpochBatches]  # epoch -> this process's batches
    evaluation: train.Evaluation
    initial_carry: Any  # a stateful loss's carry at the start of each epoch; None for a stateless one
    # () -> the baselines' results, which do not depend on the seed: a population computes them once
    baselines: Callable[[], dict[str, Any]]
    # (fit's result, seconds of training, the run directory where the lead process writes extra files, else
    # None, baselines()) -> the run's results
    report: Callable[[train.FitResult, float, Path | None, dict[str, Any]], dict[str, Any]]


class Task(NamedTuple):
    """The steps of the pipeline that differ between tasks."""

    load: Callable[[Any], Any]  # cfg -> its data, read and checked (ConfigError) before the run dir is made
    vocabulary: Callable[[Any, Any], Any]  # (cfg, data) -> the rnnx.apps.data.Vocab saved with the run
    build: Callable[..., Setup]  # (cfg, data, vocab, lanes, say) -> Setup; lanes: this process's batch rows


def optimizer(cfg: "ClassifierConfig | LanguageModelConfig") -> optax.GradientTransformation:
    """Adam at the config's learning rate and schedule (clipping is added by the train step)."""
    return optimizer_factory(cfg)(cfg.learning_rate)


def optimizer_factory(cfg: "ClassifierConfig | LanguageModelConfig") -> Callable[..., optax.GradientTransformation]:
    """``learning_rate -> optimiser``: Adam at that rate with the config's schedule; a population
    (:func:`rnnx.training.fit_population`) injects one rate per member."""

    def factory(learning_rate: Any) -> optax.GradientTransformation:
        return train.default_optimizer(train.learning_rate_schedule(cfg.schedule, learning_rate, cfg.steps))

    return factory


__all__ = ["Setup", "Task", "optimizer", "optimizer_factory"]
