"""The settings of an experiment run, their validation, and the command-line flags built from them.

Shared by the ``rnnx`` CLI and the examples: both build their flags with :func:`add_config_flags` and read
them back with :func:`config_from_args`.
"""

import argparse
import dataclasses
import math
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from rnnx.apps.data import SPECIALS
from rnnx.core import CELLS
from rnnx.training import NONFINITE_POLICIES, SCHEDULES

CLASSIFICATION_SETS = ("trec", "trec-fine", "rotten_tomatoes")
PRETRAINED = ("none", "glove50")


class ConfigError(ValueError):
    """A setting is invalid (a flag, a config field, a column, a run directory); the message names it, what
    was expected and what was received."""


@dataclasses.dataclass
class ClassifierConfig:
    dataset: str = "trec"  # trec, trec-fine, rotten_tomatoes, a Hub name or local file(s)
    text_column: str = "text"
    label_column: str = "label"
    group_column: str = "auto"  # keep each group (e.g. a movie) on one side; "auto": movie for rotten_tomatoes; "none"
    test_size: int = 500
    cell: str = "simple_rnn"
    hidden: int = 64
    embed: int = 128
    pretrained: str = "none"  # or glove50: GloVe 6B 50-d vectors for the embedding (needs --embed 50)
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # on the embedded inputs, the final state, and between stacked layers
    batch_size: int = 32
    max_length: int = 64
    min_freq: int = 1
    max_vocab: int = 20000
    steps: int = 3000
    learning_rate: float = 3e-4
    schedule: str = "constant"  # or cosine: decay to 0 over the steps
    clip_norm: float = 1.0
    eval_every: int = 200
    patience: int | None = 5
    checkpoint_every: int = 200  # also before every evaluation and at the end
    keep_checkpoints: int = 3  # the newest this many, plus the one of the best evaluation
    on_nonfinite: str = "raise"  # or skip_update: drop updates with a non-finite loss or gradient, and go on
    seed: int = 0
    run_dir: str = "runs/classifier"


@dataclasses.dataclass
class LanguageModelConfig:
    dataset: str = "shakespeare"  # shakespeare, or local text file(s) (the last 10% held out)
    cell: str = "gru"
    hidden: int = 128
    embed: int = 300
    layers: int = 2
    dropout: float = 0.0
    batch_size: int = 64
    window: int = 100
    steps: int = 3000
    learning_rate: float = 2e-3
    schedule: str = "constant"  # or cosine: decay to 0 over the steps
    clip_norm: float = 1.0
    eval_every: int = 500
    eval_chars: int = 100_000
    patience: int | None = None
    checkpoint_every: int = 200  # also before every evaluation and at the end
    keep_checkpoints: int = 3  # the newest this many, plus the one of the best evaluation
    on_nonfinite: str = "raise"  # or skip_update: drop updates with a non-finite loss or gradient, and go on
    ngram_orders: tuple = (3, 4, 5, 6)
    seed: int = 0
    run_dir: str = "runs/language_model"
    max_dataset_mb: int = 512  # a larger text file is refused: it is held in memory whole, several times over


_Config = TypeVar("_Config", ClassifierConfig, LanguageModelConfig)


def flag(name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


_POSITIVE_INTEGERS = (
    "hidden",
    "embed",
    "layers",
    "batch_size",
    "window",
    "steps",
    "eval_every",
    "eval_chars",
    "test_size",
    "max_length",
    "min_freq",
    "max_vocab",
    "patience",
    "checkpoint_every",
    "keep_checkpoints",
    "max_dataset_mb",
)


def positive_integer(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= 1; ``name`` is the flag shown."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, received {value!r}")


def positive_number(name: str, value: object) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number > 0; ``name`` is the flag shown."""
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, received {value!r}")


def validate(config: "ClassifierConfig | LanguageModelConfig") -> None:
    """Raise :class:`ConfigError` for a setting no run could use, before any data is read. The message
    names the setting by its flag (``--batch-size``), the values allowed and the value received."""
    if not isinstance(config.run_dir, str) or not config.run_dir.strip():
        raise ConfigError(f"--run-dir must name a directory, received {config.run_dir!r}")
    if config.cell not in CELLS:
        raise ConfigError(f"--cell must be one of {sorted(CELLS)}, received {config.cell!r}")
    if config.schedule not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {SCHEDULES}, received {config.schedule!r}")
    for name in _POSITIVE_INTEGERS:
        if hasattr(config, name) and not (name == "patience" and config.patience is None):
            positive_integer(flag(name), getattr(config, name))
    if config.on_nonfinite not in NONFINITE_POLICIES:
        raise ConfigError(f"--on-nonfinite must be one of {NONFINITE_POLICIES}, received {config.on_nonfinite!r}")
    positive_number("--learning-rate", config.learning_rate)
    if not isinstance(config.clip_norm, int | float) or not math.isfinite(config.clip_norm) or config.clip_norm < 0:
        raise ConfigError(f"--clip-norm must be a finite number >= 0 (0: no clipping), received {config.clip_norm!r}")
    if not isinstance(config.dropout, int | float) or not 0 <= config.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), received {config.dropout!r}")
    for order in getattr(config, "ngram_orders", (1,)):
        positive_integer("--ngram-orders", order)
    if getattr(config, "ngram_orders", (1,)) == ():
        raise ConfigError("--ngram-orders must name at least one order, received none")
    if isinstance(config, LanguageModelConfig) and config.eval_chars < config.window + 1:
        raise ConfigError(
            f"--eval-chars must be at least --window {config.window} + 1 = {config.window + 1}, "
            f"received {config.eval_chars}"
        )
    if isinstance(config, ClassifierConfig) and config.max_vocab <= len(SPECIALS):
        raise ConfigError(
            f"--max-vocab must exceed the {len(SPECIALS)} special tokens {list(SPECIALS)}, received {config.max_vocab}"
        )
    pretrained = getattr(config, "pretrained", "none")
    if pretrained not in PRETRAINED:
        raise ConfigError(f"--pretrained must be one of {PRETRAINED}, received {pretrained!r}")
    if pretrained == "glove50" and config.embed != 50:
        raise ConfigError(
            f"--pretrained glove50 has 50-dimensional vectors, so --embed must be 50, received {config.embed}"
        )


def warnings(config: "ClassifierConfig | LanguageModelConfig") -> list[str]:
    """Settings that are legal but probably not meant: one line each, for the caller to show."""
    notes = []
    if config.clip_norm == 0:
        notes.append("--clip-norm 0 turns gradient clipping off; pass a positive bound such as 1.0 to clip")
    return notes


def add_config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_class: type[ClassifierConfig | LanguageModelConfig],
    skip: Collection[str] = (),
) -> set[str]:
    """One ``--flag`` per field of ``config_class`` not in ``skip``, typed from its default; returns the
    field names it added. Defaults stay None here, so that the task's own config default applies (the two
    tasks share flags such as --learning-rate with different defaults)."""
    added = set()
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        flag, default = "--" + field.name.replace("_", "-"), field.default
        note = f"default {default!r}"
        if field.name == "cell":
            parser.add_argument(flag, choices=sorted(CELLS), default=None, help=note)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=note)
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=int, nargs="+", default=None, help=note)
        else:
            kind = int if field.name == "patience" else (str if default is None else type(default))
            parser.add_argument(flag, type=kind, default=None, help=note)
        added.add(field.name)
    return added


def default_notes(tasks: Mapping[str, tuple[type, Mapping[str, object]]]) -> dict[str, str]:
    """``{field: "default 64 (lm), 128 (classify)"}`` over the tasks' config classes and the command line's own
    defaults for each (``{task: (config_class, overrides)}``): the defaults a run really gets, for ``--help``."""
    by_field: dict[str, dict[str, object]] = {}
    for task, (config_class, overrides) in tasks.items():
        for field in dataclasses.fields(config_class):
            by_field.setdefault(field.name, {})[task] = overrides.get(field.name, field.default)
    notes = {}
    for name, defaults in by_field.items():
        values = list(defaults.values())
        same = len(defaults) == len(tasks) and all(v == values[0] for v in values)
        notes[name] = (
            f"default {values[0]!r}" if same else "default " + ", ".join(f"{v!r} ({t})" for t, v in defaults.items())
        )
    return notes


def config_from_args(args: argparse.Namespace, config_class: type[_Config], **defaults: Any) -> _Config:
    """``config_class`` from the flags given on the command line, else ``defaults``, else its own defaults."""
    names = {f.name for f in dataclasses.fields(config_class)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names and v is not None}
    return config_class(**(defaults | given))


__all__ = [
    "CLASSIFICATION_SETS",
    "PRETRAINED",
    "ClassifierConfig",
    "ConfigError",
    "LanguageModelConfig",
    "add_config_flags",
    "config_from_args",
    "default_notes",
    "flag",
    "positive_integer",
    "positive_number",
    "validate",
    "warnings",
]
