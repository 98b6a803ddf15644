"""Training with Optax: losses, metrics, the training loop and orbax checkpoints.

- :mod:`rnnx.training.losses`: cross-entropy for language models, binary cross-entropy for classifiers;
- :mod:`rnnx.training.metrics`: accuracy, perplexity, bits per token;
- :mod:`rnnx.training.step`: the default optimiser, the learning-rate schedules and the jitted train step;
- :mod:`rnnx.training.fitting`: :func:`fit`, which runs :mod:`rnnx.training.loop` (the steps, records,
  evaluations) with the hooks and result of :mod:`rnnx.training.hooks`, placed by
  :mod:`rnnx.training.placement` on a data-parallel mesh;
- :mod:`rnnx.training.population`: :func:`fit_population`, many seeds and hyper-parameters in one compiled,
  ``vmap``-ped step (its loop in :mod:`rnnx.training.population_loop`);
- :mod:`rnnx.training.checkpoint`: save and restore with an architecture record, and step directories
  (the record in :mod:`rnnx.training.checkpoint_record`, the lock in :mod:`rnnx.training.run_lock`);
- :mod:`rnnx.training.distributed`: several processes as one JAX job.

Builds on :mod:`rnnx.core` only; nothing here prints.
"""

from rnnx.training import checkpoint as checkpoint
from rnnx.training import distributed as distributed
from rnnx.training import losses as losses
from rnnx.training import metrics as metrics
from rnnx.training.fitting import fit as fit
from rnnx.training.hooks import MAX_CONSECUTIVE_SKIPS as MAX_CONSECUTIVE_SKIPS
from rnnx.training.hooks import NONFINITE_POLICIES as NONFINITE_POLICIES
from rnnx.training.hooks import Checkpoints as Checkpoints
from rnnx.training.hooks import Evaluation as Evaluation
from rnnx.training.hooks import FitResult as FitResult
from rnnx.training.hooks import Interrupted as Interrupted
from rnnx.training.hooks import NonFiniteError as NonFiniteError
from rnnx.training.hooks import jsonl_log as jsonl_log
from rnnx.training.loop import FitState as FitState
from rnnx.training.loop import initial_state as initial_state
from rnnx.training.population import each_member as each_member
from rnnx.training.population import fit_population as fit_population
from rnnx.training.population_loop import PopulationResult as PopulationResult
from rnnx.training.step import SCHEDULES as SCHEDULES
from rnnx.training.step import TrainState as TrainState
from rnnx.training.step import TrainStep as TrainStep
from rnnx.training.step import default_optimizer as default_optimizer
from rnnx.training.step import learning_rate_schedule as learning_rate_schedule
from rnnx.training.step import make_train_step as make_train_step

__all__ = [
    "MAX_CONSECUTIVE_SKIPS",
    "NONFINITE_POLICIES",
    "SCHEDULES",
    "Checkpoints",
    "Evaluation",
    "FitResult",
    "FitState",
    "Interrupted",
    "NonFiniteError",
    "PopulationResult",
    "TrainState",
    "TrainStep",
    "checkpoint",
    "distributed",
    "default_optimizer",
    "each_member",
    "fit",
    "fit_population",
    "initial_state",
    "jsonl_log",
    "learning_rate_schedule",
    "losses",
    "make_train_step",
    "metrics",
]
