"""End-to-end runs shared by the ``rnnx`` CLI and the examples: data, model, training, evaluation, baselines.

Each run writes into ``run_dir``: ``vocab.json``, ``config.json``, ``metrics.jsonl`` (training log),
``checkpoints/step_<n>`` (orbax) and ``results.json`` (the final metrics beside their baselines).
"""

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnnx import training as train
from rnnx.apps import baselines, corpora, data, models
from rnnx.core.cells import gru, lstm, simple_rnn
from rnnx.core.stack import stacked
from rnnx.training import checkpoint, losses, metrics

CELLS = {"rnn": simple_rnn, "lstm": lstm, "gru": gru}
CLASSIFICATION_SETS = ("trec", "trec-fine", "rotten_tomatoes")


@dataclasses.dataclass
class ClassifierConfig:
    dataset: str = "trec"  # trec, trec-fine, rotten_tomatoes, a Hub name or local file(s)
    text_column: str = "text"
    label_column: str = "label"
    group_column: str = "auto"  # keep each group (e.g. a movie) on one side; "auto": movie for rotten_tomatoes; "none"
    test_size: int = 500
    cell: str = "rnn"
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
    ngram_orders: tuple = (3, 4, 5, 6)
    seed: int = 0
    run_dir: str = "runs/language_model"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cell(name: str, hidden: int):
    if name not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, received {name!r}")
    return CELLS[name](hidden)


def _optimizer(cfg):
    return train.default_optimizer(train.learning_rate_schedule(cfg.schedule, cfg.learning_rate, cfg.steps),
                                   cfg.clip_norm)  # fmt: skip


def _prepare(run_dir, config) -> Path:
    """Make ``run_dir`` and save ``config`` there. A directory holding checkpoints resumes (train.fit does
    that), so it must hold the same settings; only ``steps`` (with a constant learning rate) and
    ``patience`` may change, to train on."""
    _optimizer(config)  # a bad schedule fails here, before any data is read
    run_dir = Path(run_dir)
    settings = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists, as saved
    saved_path = run_dir / "config.json"
    if saved_path.exists() and train.latest_checkpoint(run_dir / "checkpoints") is not None:
        saved = json.loads(saved_path.read_text())
        free = {"patience", "run_dir"} | ({"steps"} if config.schedule == "constant" else set())
        changed = {k: (saved.get(k), v) for k, v in settings.items() if k not in free and saved.get(k) != v}
        if changed:
            raise ValueError(
                f"{run_dir} holds checkpoints of a run with other settings, {changed} (saved, now); it would "
                f"resume from them. Pass another --run-dir, or delete {run_dir}, to start afresh"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps(settings, indent=1))
    return run_dir


# ------------------------------------------------------------------------------------------ classification


def load_classification(cfg: ClassifierConfig):
    """``(dataset, labels, groups or None, label names)`` for a named corpus, a Hub name or local files."""
    if cfg.dataset in CLASSIFICATION_SETS:
        ds = (
            corpora.rotten_tomatoes()
            if cfg.dataset == "rotten_tomatoes"
            else corpora.trec(fine=cfg.dataset == "trec-fine")
        )
    else:
        ds = data.load(cfg.dataset, split="train")
        for column in (cfg.text_column, cfg.label_column):
            if column not in ds.column_names:
                raise data.DataUnavailable(f"{cfg.dataset}: no column {column!r}; columns are {ds.column_names}")
    raw = ds[cfg.label_column]
    names = sorted(set(raw))
    labels = np.array([names.index(v) for v in raw], np.int32)
    group_column = {"auto": "movie" if cfg.dataset == "rotten_tomatoes" else None, "none": None}.get(
        cfg.group_column, cfg.group_column
    )
    groups = np.array(ds[group_column]) if group_column else None
    return ds, labels, groups, [str(n) for n in names]


def split(labels, groups, test_size: int, seed: int):
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
    test = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        test.extend(rows[: round(test_size * len(rows) / len(labels))])
    test = np.sort(np.array(test))
    return np.setdiff1d(np.arange(len(labels)), test), test


PRETRAINED = ("none", "glove50")


def _initial_classifier_params(model, vocab, cfg):
    """Fresh parameters, with GloVe rows in the embedding for the words it knows when ``cfg.pretrained``
    asks; returns ``(params, share of the vocabulary found)`` (the share is None without pretraining)."""
    if cfg.pretrained not in PRETRAINED:
        raise ValueError(f"pretrained must be one of {PRETRAINED}, received {cfg.pretrained!r}")
    params = model.init(jax.random.key(cfg.seed))
    if cfg.pretrained == "none":
        return params, None
    if cfg.embed != 50:
        raise ValueError(f"pretrained glove50 has 50-dimensional vectors, so embed must be 50, received {cfg.embed}")
    vectors, found = corpora.glove50(vocab.tokens)
    _say(f"GloVe 6B 50d covers {found.mean():.1%} of the {len(vocab):,}-word vocabulary")
    params["embed"] = jnp.where(found[:, None], vectors, params["embed"])
    return params, float(found.mean())


def train_classifier(cfg: ClassifierConfig, *, progress: bool = True) -> dict:
    """Train and evaluate a recurrent text classifier; return the metrics beside the baselines."""
    run_dir = _prepare(cfg.run_dir, cfg)
    ds, labels, groups, names = load_classification(cfg)
    train_rows, test_rows = split(labels, groups, cfg.test_size, cfg.seed)
    fit_rows, val_rows = split(labels[train_rows], None if groups is None else groups[train_rows],
                               max(1, len(train_rows) // 10), cfg.seed + 1)  # fmt: skip
    fit_rows, val_rows = train_rows[fit_rows], train_rows[val_rows]
    vocab = data.Vocab.build(ds.select(fit_rows)[cfg.text_column], min_freq=cfg.min_freq, max_size=cfg.max_vocab)
    vocab.save(run_dir / "vocab.json")
    ids = data.encode(ds, vocab, text_column=cfg.text_column, max_length=cfg.max_length)["ids"]
    # Whether one movie (or other group) sits on both sides, also when the split ignores the groups.
    known = groups if groups is not None else (np.array(ds["movie"]) if "movie" in ds.column_names else None)
    leaked = None if known is None else len(set(known[train_rows]) & set(known[test_rows]))
    _say(f"{cfg.dataset}: {len(fit_rows)} train / {len(val_rows)} validation / {len(test_rows)} test rows, "
         f"{len(names)} classes, vocabulary {len(vocab)}")  # fmt: skip

    binary = len(names) == 2
    model = models.classifier(
        stacked(_cell(cfg.cell, cfg.hidden), cfg.layers, bidirectional=cfg.bidirectional, dropout=cfg.dropout),
        len(vocab),
        cfg.embed,
        1 if binary else len(names),
        dropout_rate=cfg.dropout,
    )
    buckets = tuple(b for b in (8, 16, 32, 64, 128, 256) if b < cfg.max_length) + (cfg.max_length,)

    def batches_of(rows, epoch=None):
        return data.padded_batches([ids[i] for i in rows], labels[rows], batch_size=cfg.batch_size, buckets=buckets,
                                   seed=None if epoch is None else cfg.seed, epoch=epoch or 0,
                                   drop_last=epoch is not None, sort_within=None if epoch is None else 8)  # fmt: skip

    def loss_fn(params, batch, key):
        logits = model.apply(params, batch["tokens"], batch["lengths"], key=key)
        loss = (losses.binary_cross_entropy if binary else losses.cross_entropy)(
            logits, batch["labels"], batch["weights"]
        )
        return loss, {"accuracy": metrics.accuracy(logits, batch["labels"], batch["weights"])}

    eval_step = jax.jit(lambda p, b: loss_fn(p, b, None))
    val_batches, test_batches = batches_of(val_rows), batches_of(test_rows)

    def evaluate(params, batches=val_batches):
        totals = np.zeros(3)
        for b in batches:
            loss, aux = eval_step(params, b)
            n = b["weights"].sum()
            totals += [float(loss) * n, float(aux["accuracy"]) * n, n]
        return {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}

    params, coverage = _initial_classifier_params(model, vocab, cfg)
    started = time.perf_counter()
    result = train.fit(
        loss_fn, params, lambda epoch: batches_of(fit_rows, epoch), steps=cfg.steps,
        optimizer=_optimizer(cfg), seed=cfg.seed, evaluate=evaluate,
        eval_every=cfg.eval_every, monitor="accuracy", mode="max", patience=cfg.patience,
        log_path=run_dir / "metrics.jsonl", checkpoint_dir=run_dir / "checkpoints", checkpoint_every=cfg.eval_every,
        net=model.net, progress=progress,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    test = evaluate(result.params, test_batches)
    _say("baselines: majority class and bag-of-words logistic regression on the same split")
    out = {
        "dataset": cfg.dataset, "cell": cfg.cell, "classes": len(names),
        "rows": {"train": len(fit_rows), "validation": len(val_rows), "test": len(test_rows)},
        "test_accuracy": test["accuracy"], "test_loss": test["loss"],
        "best_validation_accuracy": max(h["accuracy"] for h in result.history),
        "majority_accuracy": baselines.majority_accuracy(labels[train_rows], labels[test_rows]),
        "bow_logreg_accuracy": baselines.bow_logistic_regression(
            [ids[i] for i in train_rows], labels[train_rows], [ids[i] for i in test_rows], labels[test_rows],
            vocab_size=len(vocab), num_classes=len(names)),
        "pretrained": cfg.pretrained, "pretrained_vocabulary_coverage": coverage,
        "split": "by group (no group in both train and test)" if groups is not None else "stratified by label",
        "groups_in_both_train_and_test": leaked,
        "steps": result.step, "stopped_early": result.stopped_early, "train_seconds": round(seconds, 1),
        "history": result.history,
    }  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps(out, indent=1))
    return out


# ------------------------------------------------------------------------------------------ language model


def load_text(cfg: LanguageModelConfig):
    """``(train, validation, test)`` strings. Shakespeare holds out whole texts: every 7th (from the 3rd)
    for test and every 7th (from the 6th) for validation; local files hold out their last 10% / 5%."""
    if cfg.dataset == "shakespeare":
        texts = corpora.shakespeare()["text"]
        test = [t for i, t in enumerate(texts) if i % 7 == 2]
        val = [t for i, t in enumerate(texts) if i % 7 == 5]
        rest = [t for i, t in enumerate(texts) if i % 7 not in (2, 5)]
        return "\n".join(rest), "\n".join(val), "\n".join(test)
    ds = data.load(cfg.dataset, split="train")
    column = "text" if "text" in ds.column_names else ds.column_names[0]
    text = "\n".join(ds[column])
    a, b = int(len(text) * 0.85), int(len(text) * 0.9)
    return text[:a], text[a:b], text[b:]


def _held_out_windows(ids, batch_size, window):
    """Stream windows of held-out text: as many lanes as it fills, up to ``batch_size``."""
    lanes = max(1, min(batch_size, (len(ids) - 1) // window))
    return data.stream_windows(ids, batch_size=lanes, window=window)


def _nll_on_stream(model, params, windows):
    """Mean NLL (nats) over held-out ``windows``, carrying the state across them as in training."""

    def body(carry, w):
        logits, carry = model.apply(params, w[:, :-1], carry)
        return carry, losses.masked_cross_entropy(logits, w[:, 1:])

    _, nll = jax.lax.scan(body, model.net.initial_carry(params["rnn"], (windows.shape[1],)), windows)
    return jnp.mean(nll)


def train_language_model(cfg: LanguageModelConfig, *, progress: bool = True) -> dict:
    """Train a character-level recurrent language model with truncated BPTT; bits per character on held-out
    text beside a smoothed character n-gram model (its order chosen on the validation text)."""
    run_dir = _prepare(cfg.run_dir, cfg)
    train_text, val_text, test_text = load_text(cfg)
    vocab = data.Vocab.build([train_text], level="char")
    vocab.save(run_dir / "vocab.json")
    encode = lambda text: np.asarray(vocab.encode(text), np.int32)  # noqa: E731
    train_ids, val_ids, test_ids = encode(train_text), encode(val_text[: cfg.eval_chars]), encode(test_text)
    _say(f"{cfg.dataset}: {len(train_ids):,} training / {len(val_ids):,} validation / {len(test_ids):,} test "
         f"characters, vocabulary {len(vocab)}")  # fmt: skip
    model = models.language_model(stacked(_cell(cfg.cell, cfg.hidden), cfg.layers, dropout=cfg.dropout),
                                  len(vocab), cfg.embed)  # fmt: skip
    windows = data.stream_windows(train_ids, batch_size=cfg.batch_size, window=cfg.window)
    val_windows = _held_out_windows(val_ids, cfg.batch_size, cfg.window)

    def loss_fn(params, batch, key, carry):
        logits, carry = model.apply(params, batch[:, :-1], carry, key=key)
        return losses.masked_cross_entropy(logits, batch[:, 1:]), ({}, carry)

    nll_on_stream = jax.jit(lambda params, windows: _nll_on_stream(model, params, windows))

    def evaluate(params):
        nll = float(nll_on_stream(params, val_windows))
        return {"bits_per_char": metrics.bits_per_token(nll), "perplexity": metrics.perplexity(nll)}

    params = model.init(jax.random.key(cfg.seed))
    started = time.perf_counter()
    result = train.fit(
        loss_fn, params, lambda epoch: windows, steps=cfg.steps,
        optimizer=_optimizer(cfg), seed=cfg.seed, evaluate=evaluate,
        eval_every=cfg.eval_every, monitor="bits_per_char", mode="min", patience=cfg.patience,
        initial_carry=model.net.initial_carry(params["rnn"], (cfg.batch_size,)),
        log_path=run_dir / "metrics.jsonl", checkpoint_dir=run_dir / "checkpoints", checkpoint_every=cfg.eval_every,
        net=model.net, progress=progress,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    test_nll = float(nll_on_stream(result.params, _held_out_windows(test_ids, cfg.batch_size, cfg.window)))
    _say("baseline: Witten-Bell character n-gram, order chosen on the validation text")
    ngram_val = {n: baselines.CharNGram(train_text, n).bits_per_char(val_text[: cfg.eval_chars])
                 for n in cfg.ngram_orders}  # fmt: skip
    best_order = min(ngram_val, key=ngram_val.get)
    ngram_test = baselines.CharNGram(train_text, best_order).bits_per_char(test_text)
    out = {
        "dataset": cfg.dataset, "cell": cfg.cell, "hidden": cfg.hidden, "layers": cfg.layers,
        "characters": {"train": len(train_ids), "validation": len(val_ids), "test": len(test_ids)},
        "test_bits_per_char": metrics.bits_per_token(test_nll), "test_perplexity": metrics.perplexity(test_nll),
        "ngram_order": best_order, "ngram_validation_bits_per_char": ngram_val,
        "ngram_test_bits_per_char": ngram_test,
        "uniform_bits_per_char": math.log2(len(vocab)),
        "steps": result.step, "train_seconds": round(seconds, 1), "history": result.history,
    }  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps(out, indent=1))
    return out


def restore_language_model(run_dir):
    """``(model, params, vocab)`` from a run directory written by :func:`train_language_model`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a language-model run: config.json is missing")
    cfg = LanguageModelConfig(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in json.loads((run_dir / "config.json").read_text()).items()})  # fmt: skip
    vocab = data.Vocab.load(run_dir / "vocab.json")
    model = models.language_model(stacked(_cell(cfg.cell, cfg.hidden), cfg.layers, dropout=cfg.dropout),
                                  len(vocab), cfg.embed)  # fmt: skip
    latest = train.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        raise FileNotFoundError(f"no complete checkpoint under {run_dir / 'checkpoints'}")
    like = model.init(jax.random.key(0))
    state = train.initial_state(like, _optimizer(cfg),
                                model.net.initial_carry(like["rnn"], (cfg.batch_size,)))  # fmt: skip
    return model, checkpoint.restore(latest, state, net=model.net)["best_params"], vocab
