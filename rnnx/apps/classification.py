"""The classification task of :mod:`rnnx.apps.experiments`: a labelled text dataset split into training,
validation and test rows, a recurrent classifier over it, and its test accuracy beside the majority class
and a bag-of-words logistic regression on the same split.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnx import training as train
from rnnx.apps import baselines, corpora, data, models
from rnnx.apps.config import CLASSIFICATION_SETS, ClassifierConfig, ConfigError
from rnnx.apps.lanes import here
from rnnx.apps.task import Setup, Task
from rnnx.core import make_cell, stacked
from rnnx.training import losses, metrics

if TYPE_CHECKING:
    from datasets import Dataset


class Data(NamedTuple):
    """A classification dataset, read, split and checked."""

    ds: "Dataset"
    labels: np.ndarray  # (rows,) int32 class indices
    groups: np.ndarray | None  # (rows,) the group of each row (e.g. its movie), kept on one side of the split
    names: list[str]  # the class names, in index order
    train_rows: np.ndarray  # the rows of training and validation, held apart from the test rows
    test_rows: np.ndarray
    fit_rows: np.ndarray  # the training rows proper (a part of train_rows)
    val_rows: np.ndarray


def load(cfg: ClassifierConfig) -> Data:
    """The dataset of ``cfg``, split three ways, or a :class:`ConfigError` when it cannot serve the run."""
    ds, labels, groups, names = _load_classification(cfg)
    if cfg.test_size >= len(labels):
        raise ConfigError(
            f"--test-size must be smaller than the {len(labels)} rows of {cfg.dataset}, received {cfg.test_size}"
        )
    train_rows, test_rows = _split(labels, groups, cfg.test_size, cfg.seed)
    fit_rows, val_rows = _split(
        labels[train_rows], None if groups is None else groups[train_rows], max(1, len(train_rows) // 10), cfg.seed + 1
    )
    fit_rows, val_rows = train_rows[fit_rows], train_rows[val_rows]
    _check_classifier_splits(cfg, labels, names, {"training": fit_rows, "validation": val_rows, "test": test_rows})
    return Data(ds, labels, groups, names, train_rows, test_rows, fit_rows, val_rows)


def vocabulary(cfg: ClassifierConfig, d: Data) -> data.Vocab:
    return data.Vocab.build(d.ds.select(d.fit_rows)[cfg.text_column], min_freq=cfg.min_freq, max_size=cfg.max_vocab)


def build(cfg: ClassifierConfig, d: Data, vocab: data.Vocab, lanes: slice, say: Callable[[str], None]) -> Setup:
    """The classifier, its loss, batches and evaluation, and the report of its run."""
    ids = data.encode(d.ds, vocab, text_column=cfg.text_column, max_length=cfg.max_length)["ids"]
    # Whether one movie (or other group) sits on both sides, also when the split ignores the groups.
    known = d.groups if d.groups is not None else (np.array(d.ds["movie"]) if "movie" in d.ds.column_names else None)
    leaked = None if known is None else len(set(known[d.train_rows]) & set(known[d.test_rows]))
    say(
        f"{cfg.dataset}: {len(d.fit_rows)} train / {len(d.val_rows)} validation / {len(d.test_rows)} test rows, "
        f"{len(d.names)} classes, vocabulary {len(vocab)}"
    )
    binary = len(d.names) == 2
    model = models.classifier(
        stacked(make_cell(cfg.cell, cfg.hidden), cfg.layers, bidirectional=cfg.bidirectional, dropout=cfg.dropout),
        len(vocab),
        cfg.embed,
        1 if binary else len(d.names),
        dropout_rate=cfg.dropout,
    )
    buckets = tuple(b for b in (8, 16, 32, 64, 128, 256) if b < cfg.max_length) + (cfg.max_length,)

    def batches_of(rows, epoch=None):
        return data.padded_batches(
            [ids[i] for i in rows],
            d.labels[rows],
            batch_size=cfg.batch_size,
            buckets=buckets,
            seed=None if epoch is None else cfg.seed,
            epoch=epoch or 0,
            drop_last=epoch is not None,
            sort_within=None if epoch is None else 8,
        )

    def loss_fn(params, batch, key):
        logits = model.apply(params, batch["tokens"], batch["lengths"], key=key)
        loss = (losses.binary_cross_entropy if binary else losses.cross_entropy)(
            logits, batch["labels"], batch["weights"]
        )
        return loss, {"accuracy": metrics.accuracy(logits, batch["labels"], batch["weights"])}

    eval_step = jax.jit(lambda p, b: loss_fn(p, b, None))
    val_batches, test_batches = batches_of(d.val_rows), batches_of(d.test_rows)

    def evaluate(params, batches=val_batches):
        params, totals = here(params), np.zeros(3)
        for b in batches:
            loss, aux = eval_step(params, b)
            n = b["weights"].sum()
            totals += [float(loss) * n, float(aux["accuracy"]) * n, n]
        return {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}

    params, coverage = _initial_classifier_params(model, vocab, cfg)
    if coverage is not None:
        say(f"GloVe 6B 50d covers {coverage:.1%} of the {len(vocab):,}-word vocabulary")

    def baseline_results() -> dict[str, Any]:
        say("baselines: majority class and bag-of-words logistic regression on the same split")
        train_rows, test_rows = d.train_rows, d.test_rows
        return {
            "majority_accuracy": baselines.majority_accuracy(d.labels[train_rows], d.labels[test_rows]),
            "bow_logreg_accuracy": baselines.bow_logistic_regression(
                [ids[i] for i in train_rows],
                d.labels[train_rows],
                [ids[i] for i in test_rows],
                d.labels[test_rows],
                vocab_size=len(vocab),
                num_classes=len(d.names),
            ),
        }

    def report(result: train.FitResult, seconds: float, run_dir: Path | None, bases: dict) -> dict[str, Any]:
        test = evaluate(result.params, test_batches)
        return {
            "dataset": cfg.dataset,
            "cell": cfg.cell,
            "classes": len(d.names),
            "rows": {"train": len(d.fit_rows), "validation": len(d.val_rows), "test": len(d.test_rows)},
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "best_validation_accuracy": max(h["accuracy"] for h in result.history),
            **bases,
            "pretrained": cfg.pretrained,
            "pretrained_vocabulary_coverage": coverage,
            "split": "by group (no group in both train and test)" if d.groups is not None else "stratified by label",
            "groups_in_both_train_and_test": leaked,
            "steps": result.step,
            "stopped_early": result.stopped_early,
            "train_seconds": round(seconds, 1),
            "history": result.history,
        }

    return Setup(
        net=model.net,
        loss_fn=loss_fn,
        params=params,
        batches=lambda epoch: [{k: v[lanes] for k, v in b.items()} for b in batches_of(d.fit_rows, epoch)],
        evaluation=train.Evaluation(evaluate, cfg.eval_every, monitor="accuracy", mode="max", patience=cfg.patience),
        initial_carry=None,
        baselines=baseline_results,
        report=report,
    )


def _load_classification(cfg: ClassifierConfig):
    """``(dataset, labels, groups or None, label names)`` for a named corpus, a Hub name or local files."""
    if cfg.dataset in CLASSIFICATION_SETS:
        ds = (
            corpora.rotten_tomatoes()
            if cfg.dataset == "rotten_tomatoes"
            else corpora.trec(fine=cfg.dataset == "trec-fine")
        )
    else:
        ds = data.load(cfg.dataset, split="train")
    group_column = {"auto": "movie" if cfg.dataset == "rotten_tomatoes" else None, "none": None}.get(
        cfg.group_column, cfg.group_column
    )
    for name, column in (
        ("text_column", cfg.text_column),
        ("label_column", cfg.label_column),
        ("group_column", group_column),
    ):
        if column is not None and column not in ds.column_names:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be one of the columns {ds.column_names} of {cfg.dataset}, "
                f"received {column!r}"
            )
    raw = ds[cfg.label_column]
    names = sorted(set(raw))
    if len(names) < 2:
        raise ConfigError(
            f"--label-column {cfg.label_column!r} of {cfg.dataset} must hold at least 2 classes, received "
            f"{len(names)}: {[str(n) for n in names]}"
        )
    labels = np.array([names.index(v) for v in raw], np.int32)
    groups = np.array(ds[group_column]) if group_column else None
    return ds, labels, groups, [str(n) for n in names]


def _split(labels, groups, test_size: int, seed: int):
    """Indices ``(train, test)``: stratified by label, or by group (whole groups) when ``groups`` is given."""
    rng = np.random.default_rng(seed)
    if groups is not None:
        unique = rng.permutation(np.unique(groups))
        sizes = {g: n for g, n in zip(*np.unique(groups, return_counts=True))}
        chosen, total = set(), 0
        for g in unique:
            if total >= test_size:
                break
            chosen.add(g)
            total += sizes[g]
        in_test = np.isin(groups, list(chosen))
        return np.flatnonzero(~in_test), np.flatnonzero(in_test)
    test: list[int] = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        test.extend(rows[: round(test_size * len(rows) / len(labels))])
    test_rows = np.sort(np.array(test))
    return np.setdiff1d(np.arange(len(labels)), test_rows), test_rows


def _check_classifier_splits(cfg: ClassifierConfig, labels, names, splits: dict) -> None:
    """Every class in every split, and one full batch of training rows, or a :class:`ConfigError`."""
    for split, rows in splits.items():
        missing = [str(names[c]) for c in range(len(names)) if not np.any(labels[rows] == c)]
        if missing:
            raise ConfigError(
                f"--test-size {cfg.test_size} of {cfg.dataset} ({len(labels)} rows) leaves class(es) {missing} "
                f"without {split} rows; every class needs rows in the training, validation and test splits"
            )
    if len(splits["training"]) < cfg.batch_size:
        raise ConfigError(
            f"--batch-size must be at most the {len(splits['training'])} training rows of {cfg.dataset}, "
            f"received {cfg.batch_size}"
        )


def _initial_classifier_params(model, vocab, cfg):
    """Fresh parameters, with GloVe rows in the embedding for the words it knows when ``cfg.pretrained``
    asks; returns ``(params, share of the vocabulary found)`` (the share is None without pretraining)."""
    params = model.init(jax.random.key(cfg.seed))
    if cfg.pretrained == "none":
        return params, None
    vectors, found = corpora.glove50(vocab.tokens)
    params["embed"] = jnp.where(found[:, None], vectors, params["embed"])
    return params, float(found.mean())


TASK = Task(load=load, vocabulary=vocabulary, build=build)

__all__ = ["TASK", "Data", "build", "load", "vocabulary"]
