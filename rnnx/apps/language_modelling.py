"""The language-modelling task of :mod:`rnnx.apps.experiments`: a character-level recurrent model trained with
truncated BPTT (the carry flows from window to window), its held-out bits per character beside a smoothed
character n-gram (its order chosen on the validation text), and a sample; and reading a finished run back
for ``rnnx generate``.
"""

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnx import training as train
from rnnx.apps import baselines, corpora, data, models, run_dir
from rnnx.apps.config import ConfigError, LanguageModelConfig
from rnnx.apps.lanes import here, process_windows
from rnnx.apps.plots import plot_losses
from rnnx.apps.task import Setup, Task, optimizer
from rnnx.core import make_cell, stacked
from rnnx.training import checkpoint, losses, metrics


class Texts(NamedTuple):
    train: str
    validation: str  # cut to cfg.eval_chars: evaluated often (the test text is scored once, whole)
    test: str


def load(cfg: LanguageModelConfig) -> Texts:
    """The run's texts (``_load_text``), the validation text cut to ``cfg.eval_chars``; a text too short
    for the run is a :class:`ConfigError`."""
    train_text, val_text, test_text = _load_text(cfg)
    texts = Texts(train_text, val_text[: cfg.eval_chars], test_text)
    _check_text_lengths(cfg, texts)
    return texts


def _load_text(cfg: LanguageModelConfig):
    """``(train, validation, test)`` strings. Shakespeare holds out whole texts: every 7th (from the 3rd)
    for test and every 7th (from the 6th) for validation; local files hold out their last 10% / 5%. Text files
    are read here, in bounded blocks (``datasets`` and its cache are for the other formats)."""
    if cfg.dataset == "shakespeare":
        texts = [row["text"] for row in corpora.shakespeare_rows()]
        test = [t for i, t in enumerate(texts) if i % 7 == 2]
        val = [t for i, t in enumerate(texts) if i % 7 == 5]
        rest = [t for i, t in enumerate(texts) if i % 7 not in (2, 5)]
        return "\n".join(rest), "\n".join(val), "\n".join(test)
    paths = data.local_files(cfg.dataset)
    if paths is not None and data.is_text(paths):
        data.check_files(paths, max_bytes=cfg.max_dataset_mb << 20)
        text = data.read_text(paths)
    else:
        ds = data.load(cfg.dataset, split="train")
        column = "text" if "text" in ds.column_names else ds.column_names[0]
        text = "\n".join(ds[column])
    a, b = int(len(text) * 0.85), int(len(text) * 0.9)
    return text[:a], text[a:b], text[b:]


def vocabulary(cfg: LanguageModelConfig, texts: Texts) -> data.Vocab:
    return data.Vocab.build([texts.train], level="char")


def build(cfg: LanguageModelConfig, texts: Texts, vocab: data.Vocab, lanes: slice, say: Callable[[str], None]) -> Setup:
    """The model, its stateful loss, this process's training windows, the evaluation and the report."""
    encode = lambda text: np.asarray(vocab.encode(text), np.int32)  # noqa: E731
    train_ids, val_ids, test_ids = encode(texts.train), encode(texts.validation), encode(texts.test)
    say(
        f"{cfg.dataset}: {len(train_ids):,} training / {len(val_ids):,} validation / {len(test_ids):,} test "
        f"characters, vocabulary {len(vocab)}"
    )
    model, loss_fn = _language_model(cfg, len(vocab))
    windows = process_windows(train_ids, cfg.batch_size, cfg.window, lanes)
    val_windows = _held_out_windows(val_ids, cfg.batch_size, cfg.window)
    nll_on_stream = jax.jit(lambda params, windows: _nll_on_stream(model, params, windows))

    def evaluate(params):
        nll = float(nll_on_stream(here(params), val_windows))
        return {"bits_per_char": metrics.bits_per_token(nll), "perplexity": metrics.perplexity(nll)}

    params = model.init(jax.random.key(cfg.seed))

    def report(result: train.FitResult, seconds: float, directory: Path | None) -> dict[str, Any]:
        best = here(result.params)
        test_nll = float(nll_on_stream(best, _held_out_windows(test_ids, cfg.batch_size, cfg.window)))
        ngram_val, best_order, ngram_test = _ngram_baseline(cfg, texts, say)
        prompt = "ROMEO.\n" if cfg.dataset == "shakespeare" else texts.train[: min(20, len(texts.train))]
        generated = models.sample(
            model,
            best,
            vocab.encode(prompt),
            length=200,
            key=jax.random.key(cfg.seed),
            temperature=0.8,
            exclude=range(len(data.SPECIALS)),
        )
        out = {
            "dataset": cfg.dataset,
            "cell": cfg.cell,
            "hidden": cfg.hidden,
            "layers": cfg.layers,
            "characters": {"train": len(train_ids), "validation": len(val_ids), "test": len(test_ids)},
            "test_bits_per_char": metrics.bits_per_token(test_nll),
            "test_perplexity": metrics.perplexity(test_nll),
            "ngram_order": best_order,
            "ngram_validation_bits_per_char": ngram_val,
            "ngram_test_bits_per_char": ngram_test,
            "uniform_bits_per_char": math.log2(len(vocab)),
            "steps": result.step,
            "train_seconds": round(seconds, 1),
            "sample": {"prompt": prompt, "temperature": 0.8, "text": vocab.decode(generated)},
            "history": result.history,
        }
        out["plot"] = None if directory is None else plot_losses(directory, out, say)  # from metrics.jsonl
        return out

    return Setup(
        net=model.net,
        loss_fn=loss_fn,
        params=params,
        batches=lambda epoch: windows,
        evaluation=train.Evaluation(evaluate, cfg.eval_every, monitor="bits_per_char", patience=cfg.patience),
        initial_carry=model.net.default_carry(params["rnn"], (lanes.stop - lanes.start,)),
        report=report,
    )


def _check_text_lengths(cfg: LanguageModelConfig, texts: Texts) -> None:
    """One window per lane of training text and one window of each held-out text, or a :class:`ConfigError`."""
    need = cfg.batch_size * cfg.window + 1
    if len(texts.train) < need:
        raise ConfigError(
            f"--dataset {cfg.dataset} is too short: its training part has {len(texts.train):,} characters, fewer "
            f"than --batch-size {cfg.batch_size} x --window {cfg.window} + 1 = {need:,}"
        )
    for split, text in (("validation", texts.validation), ("test", texts.test)):
        if len(text) < cfg.window + 1:
            raise ConfigError(
                f"--dataset {cfg.dataset} is too short: its {split} part has {len(text):,} characters, fewer than "
                f"--window {cfg.window} + 1 = {cfg.window + 1:,}"
            )


def _held_out_windows(ids, batch_size, window):
    """Stream windows of held-out text: as many lanes as it fills, up to ``batch_size``."""
    lanes = max(1, min(batch_size, (len(ids) - 1) // window))
    return data.stream_windows(ids, batch_size=lanes, window=window)


def _nll_on_stream(model, params, windows):
    """Mean NLL (nats) over held-out ``windows``, carrying the state across them as in training."""

    def body(carry, w):
        logits, carry = model.apply(params, w[:, :-1], carry)
        return carry, losses.masked_cross_entropy(logits, w[:, 1:])

    _, nll = jax.lax.scan(body, model.net.default_carry(params["rnn"], (windows.shape[1],)), windows)
    return jnp.mean(nll)


def _language_model(cfg: LanguageModelConfig, vocab_size: int):
    """The model and its stateful loss (truncated BPTT: the carry flows from window to window)."""
    # Ten steps per scan iteration cut the loop overhead that dominates a small cell on CPU (measured: about
    # a third off a training step of the main job on two cores); the results are the same.
    model = models.language_model(
        stacked(make_cell(cfg.cell, cfg.hidden), cfg.layers, dropout=cfg.dropout), vocab_size, cfg.embed, unroll=10
    )

    def loss_fn(params, batch, key, carry):
        logits, carry = model.apply(params, batch[:, :-1], carry, key=key)
        return losses.masked_cross_entropy(logits, batch[:, 1:]), ({}, carry)

    return model, loss_fn


def _ngram_baseline(
    cfg: LanguageModelConfig, texts: Texts, say: Callable[[str], None]
) -> tuple[dict[int, float], int, float]:
    """``(validation bits/char by order, best order, its test bits/char)``: counted once at the highest order,
    with a note before each part, so that the half minute it takes is not silent. Repeated for the same texts
    (a population's members), the counts and scores are remembered."""
    orders = sorted(set(cfg.ngram_orders))
    say(f"baseline: Witten-Bell character n-gram, counting up to order {orders[-1]} on the training text")
    ngram_val: dict[int, float] = {}
    for i, n in enumerate(orders, 1):
        say(f"baseline: order {n} on the validation text ({i}/{len(orders)})")
        ngram_val[n] = _ngram_bits(texts.train, orders[-1], n, texts.validation)
    best = min(ngram_val, key=ngram_val.__getitem__)
    say(f"baseline: order {best} (best on validation) on the test text")
    return ngram_val, best, _ngram_bits(texts.train, orders[-1], best, texts.test)


# Cached: the members of a population share their texts, and so their baseline (half a minute each otherwise).
@functools.lru_cache(maxsize=1)
def _ngram_counts(text: str, order: int) -> baselines.CharNGram:
    return baselines.CharNGram(text, order)


@functools.lru_cache(maxsize=16)
def _ngram_bits(text: str, counted: int, order: int, held_out: str) -> float:
    """Bits/char on ``held_out`` of the order-``order`` model from ``text``'s counts up to order ``counted``."""
    return _ngram_counts(text, counted).with_order(order).bits_per_char(held_out)


def language_model_config(directory: str | os.PathLike[str]) -> LanguageModelConfig:
    """The :class:`LanguageModelConfig` saved in run directory ``directory``, or a :class:`ConfigError` saying
    what the directory holds instead (nothing, a classifier run, a damaged config). Reads no arrays."""
    directory = Path(directory)
    path = directory / "config.json"
    if not path.exists():
        raise ConfigError(f"--run-dir {directory} is not a language-model run: {path} is missing")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"--run-dir {directory} is not a language-model run: {path} is not JSON") from None
    fields = {f.name for f in dataclasses.fields(LanguageModelConfig)}
    if not isinstance(saved, dict) or "window" not in saved or not set(saved) <= fields:  # older runs lack new fields
        kind = "a classifier run" if isinstance(saved, dict) and "label_column" in saved else "another kind of run"
        raise ConfigError(
            f"--run-dir {directory} holds {kind}, not a language model; generate needs the run directory of "
            "rnnx train --task lm"
        )
    if not (directory / "vocab.json").exists():
        raise ConfigError(f"--run-dir {directory} is not a language-model run: {directory / 'vocab.json'} is missing")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    return LanguageModelConfig(**values)


def restore_language_model(
    directory: str | os.PathLike[str], say: Callable[[str], None] = lambda message: None
) -> tuple[models.Model, models.ModelParams, data.Vocab]:
    """``(model, params, vocab)`` from a run directory written by a language-model run: the best evaluated
    params of its newest checkpoint that verifies (``say`` hears of any damaged one skipped)."""
    directory = Path(directory)
    cfg = language_model_config(directory)
    no_checkpoint = f"--run-dir {directory} has no complete checkpoint under {directory / 'checkpoints'}"
    vocab = data.Vocab.load(directory / "vocab.json")
    model, loss_fn = _language_model(cfg, len(vocab))
    if run_dir.latest_step(directory / "checkpoints") is None:
        raise ConfigError(no_checkpoint)
    # The state fit saved, as the `like` to restore into: its optimiser state's structure comes from the
    # train step of the run's own optimiser.
    params = model.init(jax.random.key(cfg.seed))
    carry = model.net.default_carry(params["rnn"], (cfg.batch_size,))
    step = train.make_train_step(loss_fn, optimizer(cfg), clip_norm=cfg.clip_norm or None)
    like = train.initial_state(step, params, carry)
    with checkpoint.manager(directory / "checkpoints", read_only=True) as manager:
        found = checkpoint.restore_latest(manager, like, net=model.net, on_damaged=say)
    if found is None:  # the step seen above went meanwhile
        raise ConfigError(no_checkpoint)
    _, state, _ = found
    return model, state.best_params, vocab


TASK = Task(load=load, vocabulary=vocabulary, build=build)

__all__ = ["TASK", "Texts", "build", "language_model_config", "load", "restore_language_model", "vocabulary"]
