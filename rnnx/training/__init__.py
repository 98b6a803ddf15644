"""Training with Optax: losses, metrics, the training loop and orbax checkpoints.

- :mod:`rnnx.training.losses`: cross-entropy for language models, binary cross-entropy for classifiers;
- :mod:`rnnx.training.metrics`: accuracy, perplexity, bits per token;
- :mod:`rnnx.training.loop`: the default optimiser, the train state and jitted step, :func:`fit` and its
  :class:`NonFiniteError`;
- :mod:`rnnx.training.checkpoint`: save and restore with an architecture record, and step directories.

Builds on :mod:`rnnx.core` only; nothing here prints.
"""

from rnnx.training import checkpoint as checkpoint
from rnnx.training import distributed as distributed
from rnnx.training import losses as losses
from rnnx.training import metrics as metrics
from rnnx.training.loop import MAX_CONSECUTIVE_SKIPS as MAX_CONSECUTIVE_SKIPS
from rnnx.training.loop import NONFINITE_POLICIES as NONFINITE_POLICIES
from rnnx.training.loop import SCHEDULES as SCHEDULES
from rnnx.training.loop import Checkpoints as Checkpoints
from rnnx.training.loop import Evaluation as Evaluation
from rnnx.training.loop import FitResult as FitResult
from rnnx.training.loop import FitState as FitState
from rnnx.training.loop import NonFiniteError as NonFiniteError
from rnnx.training.loop import TrainState as TrainState
from rnnx.training.loop import TrainStep as TrainStep
from rnnx.training.loop import default_optimizer as default_optimizer
from rnnx.training.loop import fit as fit
from rnnx.training.loop import initial_state as initial_state
from rnnx.training.loop import jsonl_log as jsonl_log
from rnnx.training.loop import learning_rate_schedule as learning_rate_schedule
from rnnx.training.loop import make_train_step as make_train_step

__all__ = [
    "MAX_CONSECUTIVE_SKIPS",
    "NONFINITE_POLICIES",
    "SCHEDULES",
    "Checkpoints",
    "Evaluation",
    "FitResult",
    "FitState",
    "NonFiniteError",
    "TrainState",
    "TrainStep",
    "checkpoint",
    "distributed",
    "default_optimizer",
    "fit",
    "initial_state",
    "jsonl_log",
    "learning_rate_schedule",
    "losses",
    "make_train_step",
    "metrics",
]
