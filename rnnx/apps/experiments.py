"""End-to-end runs shared by the ``rnnx`` CLI and the examples: data, model, training, evaluation, baselines.

Each run writes into ``run_dir``: ``vocab.json``, ``config.json``, ``metrics.jsonl`` (training log),
``checkpoints/step_<n>`` (orbax) and ``results.json`` (the final metrics beside their baselines). Nothing
here prints: a run reports through ``on_log`` (:func:`rnnx.training.fit`'s records) and ``say`` (notes,
one string each), which the caller shows.
"""

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnnx import training as train
from rnnx.apps import baselines, corpora, data, models
from rnnx.apps.config import CLASSIFICATION_SETS, ClassifierConfig, ConfigError, LanguageModelConfig, validate
from rnnx.core import make_cell, stacked
from rnnx.training import checkpoint, distributed, losses, metrics


def _quiet(message: str) -> None:
    del message


def _log_to(run_dir: Path, on_log):
    """``fit``'s ``on_log``: each record appended to ``run_dir/metrics.jsonl``, then passed to ``on_log``.
    On resuming from step N, the log is first cut back to what that checkpoint holds (the records up to
    step N, less the evaluation of step N when it is done again), so no step appears twice."""
    path = run_dir / "metrics.jsonl"
    write = train.jsonl_log(path)

    def log(record: dict):
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


def _optimizer(cfg):
    return train.default_optimizer(train.learning_rate_schedule(cfg.schedule, cfg.learning_rate, cfg.steps))


def _prepare(run_dir, config) -> Path:
    """Validate ``config``, make ``run_dir`` and save ``config`` there. A directory holding checkpoints
    resumes (train.fit does that), so it must hold the same settings; only ``steps`` (with a constant
    learning rate) and ``patience`` may change, to train on."""
    validate(config)  # before any data is read
    run_dir = Path(run_dir)
    settings = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists, as saved
    saved_path = run_dir / "config.json"
    if saved_path.exists() and _latest_step(run_dir / "checkpoints") is not None:
        saved = json.loads(saved_path.read_text())
        free = {"patience", "run_dir", "checkpoint_every", "keep_checkpoints", "on_nonfinite"} | (
            {"steps"} if config.schedule == "constant" else set()
        )
        changed = {k: (saved.get(k), v) for k, v in settings.items() if k not in free and saved.get(k) != v}
        if changed:
            raise ConfigError(
                f"{run_dir} holds checkpoints of a run with other settings, {changed} (saved, now); it would "
                f"resume from them. Pass another --run-dir, or delete {run_dir}, to start afresh"
            )
    distributed.barrier("rnnx: run directory read")  # each read it before process 0 writes to it
    if distributed.is_lead():
        run_dir.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps(settings, indent=1))
    return run_dir


def _finished(run_dir: Path, cfg, say) -> dict | None:
    """The saved results of a run in ``run_dir`` that already trained its ``cfg.steps`` (or stopped early),
    after saying so; None when there is training left to do."""
    path = run_dir / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    step = _latest_step(run_dir / "checkpoints")
    if step is None or results.get("steps") != step or (step < cfg.steps and not results.get("stopped_early")):
        return None
    say(
        f"{run_dir} holds a finished run ({step} of {cfg.steps} steps); its results stay as they are in {path}. "
        "To train on, pass more --steps (constant schedule) or another --run-dir"
    )
    return results


def _checkpoints(run_dir: Path, cfg, net) -> train.Checkpoints:
    return train.Checkpoints(
        run_dir / "checkpoints", every=cfg.checkpoint_every, max_to_keep=cfg.keep_checkpoints, net=net
    )


def _latest_step(directory: Path) -> int | None:
    if not directory.is_dir():
        return None
    with checkpoint.manager(directory, read_only=True) as manager:
        return manager.latest_step()


# ------------------------------------------------------------------------- several devices and processes
# With a ``mesh`` over the devices of several processes, every process runs the whole experiment (``fit``'s
# steps and orbax's saves are collective, and the same work keeps them in step up to their exit), feeding
# only its slice of each global batch; process 0 alone writes the run's files and says anything.


def _lanes(batch_size: int, mesh) -> slice:
    """The rows of every global batch this process feeds: process ``p`` of the ``n`` whose devices make up
    ``mesh`` (grouped by process, in process order, as ``jax.devices()`` lists them) feeds rows
    ``[p * batch_size // n, (p + 1) * batch_size // n)``; all of them without a mesh."""
    processes = [] if mesh is None else sorted({d.process_index for d in mesh.devices.flat})
    if len(processes) <= 1:
        return slice(0, batch_size)
    rows = distributed.process_shard(batch_size, index=processes.index(jax.process_index()), count=len(processes))
    return slice(rows.start, rows.stop)


def _process_windows(ids: np.ndarray, batch_size: int, window: int, lanes: slice) -> np.ndarray:
    """``data.stream_windows(ids, batch_size=batch_size, window=window)[:, lanes]``, cut from the part of the
    stream those lanes read and nothing else, so a process holds only its own training windows."""
    lane = (len(ids) - 1) // batch_size
    part = ids[lanes.start * lane : lanes.stop * lane + 1]
    return data.stream_windows(part, batch_size=lanes.stop - lanes.start, window=window)


def _here(params):
    """``params`` on one of this process's devices. ``fit`` hands evaluation params replicated over the mesh;
    evaluating this copy is the one-device computation, with the same metrics in every process, and needs
    no other process (which a computation on arrays spanning several processes would)."""
    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, params)


# ------------------------------------------------------------------------------------------ classification


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
    test = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        test.extend(rows[: round(test_size * len(rows) / len(labels))])
    test = np.sort(np.array(test))
    return np.setdiff1d(np.arange(len(labels)), test), test


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


def train_classifier(
    cfg: ClassifierConfig,
    *,
    mesh: jax.sharding.Mesh | None = None,
    on_log: Callable | None = None,
    say: Callable[[str], None] = _quiet,
) -> dict:
    """Train and evaluate a recurrent text classifier; return the metrics beside the baselines.

    ``mesh``: data-parallel training, passed to :func:`rnnx.training.fit`; over several processes, each
    feeds its rows of every global batch (the global batches are the one-process run's, so together the
    processes see every training row once per epoch) and evaluates the whole validation and test sets on
    its own copy of the params. ``on_log`` receives :func:`rnnx.training.fit`'s records (they also go to
    ``metrics.jsonl``); ``say`` receives notes on the data and on what runs next. Only process 0 writes
    files and calls ``on_log`` and ``say``.
    """
    validate(cfg)
    say = say if distributed.is_lead() else _quiet
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
    run_dir = _prepare(cfg.run_dir, cfg)  # only once the data is known to be usable
    if (finished := _finished(run_dir, cfg, say)) is not None:
        return finished
    vocab = data.Vocab.build(ds.select(fit_rows)[cfg.text_column], min_freq=cfg.min_freq, max_size=cfg.max_vocab)
    if distributed.is_lead():
        vocab.save(run_dir / "vocab.json")
    ids = data.encode(ds, vocab, text_column=cfg.text_column, max_length=cfg.max_length)["ids"]
    # Whether one movie (or other group) sits on both sides, also when the split ignores the groups.
    known = groups if groups is not None else (np.array(ds["movie"]) if "movie" in ds.column_names else None)
    leaked = None if known is None else len(set(known[train_rows]) & set(known[test_rows]))
    say(
        f"{cfg.dataset}: {len(fit_rows)} train / {len(val_rows)} validation / {len(test_rows)} test rows, "
        f"{len(names)} classes, vocabulary {len(vocab)}"
    )

    binary = len(names) == 2
    model = models.classifier(
        stacked(make_cell(cfg.cell, cfg.hidden), cfg.layers, bidirectional=cfg.bidirectional, dropout=cfg.dropout),
        len(vocab),
        cfg.embed,
        1 if binary else len(names),
        dropout_rate=cfg.dropout,
    )
    buckets = tuple(b for b in (8, 16, 32, 64, 128, 256) if b < cfg.max_length) + (cfg.max_length,)

    def batches_of(rows, epoch=None):
        return data.padded_batches(
            [ids[i] for i in rows],
            labels[rows],
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
    val_batches, test_batches = batches_of(val_rows), batches_of(test_rows)

    def evaluate(params, batches=val_batches):
        params, totals = _here(params), np.zeros(3)
        for b in batches:
            loss, aux = eval_step(params, b)
            n = b["weights"].sum()
            totals += [float(loss) * n, float(aux["accuracy"]) * n, n]
        return {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}

    params, coverage = _initial_classifier_params(model, vocab, cfg)
    if coverage is not None:
        say(f"GloVe 6B 50d covers {coverage:.1%} of the {len(vocab):,}-word vocabulary")
    lanes = _lanes(cfg.batch_size, mesh)  # this process's rows of every global batch
    started = time.perf_counter()
    result = train.fit(
        loss_fn,
        params,
        lambda epoch: [{k: v[lanes] for k, v in b.items()} for b in batches_of(fit_rows, epoch)],
        steps=cfg.steps,
        optimizer=_optimizer(cfg),
        clip_norm=cfg.clip_norm or None,
        seed=cfg.seed,
        evaluation=train.Evaluation(evaluate, cfg.eval_every, monitor="accuracy", mode="max", patience=cfg.patience),
        checkpoints=_checkpoints(run_dir, cfg, model.net),
        on_log=_log_to(run_dir, on_log) if distributed.is_lead() else _quiet,
        on_nonfinite=cfg.on_nonfinite,
        mesh=mesh,
    )
    seconds = time.perf_counter() - started
    test = evaluate(result.params, test_batches)
    say("baselines: majority class and bag-of-words logistic regression on the same split")
    out = {
        "dataset": cfg.dataset,
        "cell": cfg.cell,
        "classes": len(names),
        "rows": {"train": len(fit_rows), "validation": len(val_rows), "test": len(test_rows)},
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "best_validation_accuracy": max(h["accuracy"] for h in result.history),
        "majority_accuracy": baselines.majority_accuracy(labels[train_rows], labels[test_rows]),
        "bow_logreg_accuracy": baselines.bow_logistic_regression(
            [ids[i] for i in train_rows],
            labels[train_rows],
            [ids[i] for i in test_rows],
            labels[test_rows],
            vocab_size=len(vocab),
            num_classes=len(names),
        ),
        "pretrained": cfg.pretrained,
        "pretrained_vocabulary_coverage": coverage,
        "split": "by group (no group in both train and test)" if groups is not None else "stratified by label",
        "groups_in_both_train_and_test": leaked,
        "steps": result.step,
        "stopped_early": result.stopped_early,
        "train_seconds": round(seconds, 1),
        "history": result.history,
    }
    if distributed.is_lead():
        (run_dir / "results.json").write_text(json.dumps(out, indent=1))
    return out


# ------------------------------------------------------------------------------------------ language model


def _load_text(cfg: LanguageModelConfig):
    """``(train, validation, test)`` strings. Shakespeare holds out whole texts: every 7th (from the 3rd)
    for test and every 7th (from the 6th) for validation; local files hold out their last 10% / 5%."""
    if cfg.dataset == "shakespeare":
        texts = [row["text"] for row in corpora.shakespeare_rows()]
        test = [t for i, t in enumerate(texts) if i % 7 == 2]
        val = [t for i, t in enumerate(texts) if i % 7 == 5]
        rest = [t for i, t in enumerate(texts) if i % 7 not in (2, 5)]
        return "\n".join(rest), "\n".join(val), "\n".join(test)
    ds = data.load(cfg.dataset, split="train")
    column = "text" if "text" in ds.column_names else ds.column_names[0]
    text = "\n".join(ds[column])
    a, b = int(len(text) * 0.85), int(len(text) * 0.9)
    return text[:a], text[a:b], text[b:]


def _check_text_lengths(cfg: LanguageModelConfig, train_text: str, val_text: str, test_text: str) -> None:
    """One window per lane of training text and one window of each held-out text, or a :class:`ConfigError`."""
    need = cfg.batch_size * cfg.window + 1
    if len(train_text) < need:
        raise ConfigError(
            f"--dataset {cfg.dataset} is too short: its training part has {len(train_text):,} characters, fewer "
            f"than --batch-size {cfg.batch_size} x --window {cfg.window} + 1 = {need:,}"
        )
    for split, text in (("validation", val_text), ("test", test_text)):
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

    _, nll = jax.lax.scan(body, model.net.initial_carry(params["rnn"], (windows.shape[1],)), windows)
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


def _initial_lm_state(cfg: LanguageModelConfig, model, loss_fn, lanes: int | None = None):
    """The parameters and the ``fit`` state of a fresh language-model run; the carry has ``lanes`` rows
    (default ``cfg.batch_size``; a process of several: its own lanes)."""
    params = model.init(jax.random.key(cfg.seed))
    carry = model.net.initial_carry(params["rnn"], (cfg.batch_size if lanes is None else lanes,))
    step = train.make_train_step(loss_fn, _optimizer(cfg), clip_norm=cfg.clip_norm or None)
    return params, carry, train.initial_state(step, params, carry)


def train_language_model(
    cfg: LanguageModelConfig,
    *,
    mesh: jax.sharding.Mesh | None = None,
    on_log: Callable | None = None,
    say: Callable[[str], None] = _quiet,
) -> dict:
    """Train a character-level recurrent language model with truncated BPTT; bits per character on held-out
    text beside a smoothed character n-gram model (its order chosen on the validation text).

    ``mesh``, ``on_log`` and ``say`` as in :func:`train_classifier`; over several processes, each holds
    only its lanes of the training stream (and their carry), together the one-process run's lanes.
    """
    validate(cfg)
    say = say if distributed.is_lead() else _quiet
    train_text, val_text, test_text = _load_text(cfg)
    val_text = val_text[: cfg.eval_chars]  # evaluated often; the test text is scored once, whole
    _check_text_lengths(cfg, train_text, val_text, test_text)
    run_dir = _prepare(cfg.run_dir, cfg)  # only once the data is known to be usable
    if (finished := _finished(run_dir, cfg, say)) is not None:
        return finished
    vocab = data.Vocab.build([train_text], level="char")
    if distributed.is_lead():
        vocab.save(run_dir / "vocab.json")
    encode = lambda text: np.asarray(vocab.encode(text), np.int32)  # noqa: E731
    train_ids, val_ids, test_ids = encode(train_text), encode(val_text), encode(test_text)
    say(
        f"{cfg.dataset}: {len(train_ids):,} training / {len(val_ids):,} validation / {len(test_ids):,} test "
        f"characters, vocabulary {len(vocab)}"
    )
    model, loss_fn = _language_model(cfg, len(vocab))
    lanes = _lanes(cfg.batch_size, mesh)  # this process's lanes of every global batch
    windows = _process_windows(train_ids, cfg.batch_size, cfg.window, lanes)
    val_windows = _held_out_windows(val_ids, cfg.batch_size, cfg.window)
    nll_on_stream = jax.jit(lambda params, windows: _nll_on_stream(model, params, windows))

    def evaluate(params):
        nll = float(nll_on_stream(_here(params), val_windows))
        return {"bits_per_char": metrics.bits_per_token(nll), "perplexity": metrics.perplexity(nll)}

    params, carry, _ = _initial_lm_state(cfg, model, loss_fn, lanes.stop - lanes.start)
    started = time.perf_counter()
    result = train.fit(
        loss_fn,
        params,
        lambda epoch: windows,
        steps=cfg.steps,
        optimizer=_optimizer(cfg),
        clip_norm=cfg.clip_norm or None,
        seed=cfg.seed,
        initial_carry=carry,
        evaluation=train.Evaluation(evaluate, cfg.eval_every, monitor="bits_per_char", patience=cfg.patience),
        checkpoints=_checkpoints(run_dir, cfg, model.net),
        on_log=_log_to(run_dir, on_log) if distributed.is_lead() else _quiet,
        on_nonfinite=cfg.on_nonfinite,
        mesh=mesh,
    )
    seconds = time.perf_counter() - started
    best = _here(result.params)
    test_nll = float(nll_on_stream(best, _held_out_windows(test_ids, cfg.batch_size, cfg.window)))
    ngram_val, best_order, ngram_test = _ngram_baseline(cfg, train_text, val_text, test_text, say)
    prompt = "ROMEO.\n" if cfg.dataset == "shakespeare" else train_text[: min(20, len(train_text))]
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
    out["plot"] = (
        _plot_losses(run_dir, out, say) if distributed.is_lead() else None
    )  # it reads process 0's metrics.jsonl
    if distributed.is_lead():
        (run_dir / "results.json").write_text(json.dumps(out, indent=1))
    return out


def _plot_losses(run_dir: Path, out: dict, say) -> str | None:
    """``run_dir/loss.png``: training and validation bits/char by step beside the n-gram's test figure;
    returns its path, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("no loss plot: matplotlib is not installed (pip install matplotlib)")
        return None
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    trained = [(r["step"], metrics.bits_per_token(r["loss"])) for r in records if "loss" in r]
    evaluated = [(r["step"], r["eval"]["bits_per_char"]) for r in records if "eval" in r]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(*zip(*trained), label="training (mean since the previous record)")
    if evaluated:
        axes.plot(*zip(*evaluated), "o-", label="validation")
    order, last = out["ngram_order"], trained[-1][0]
    axes.axhline(out["ngram_validation_bits_per_char"][order], color="gray", ls="--", label=f"{order}-gram validation")
    axes.plot([last], [out["test_bits_per_char"]], "C0*", ms=12, label="test (final)")
    axes.plot([last], [out["ngram_test_bits_per_char"]], "kx", ms=10, label=f"{order}-gram test")
    axes.set(xlabel="update", ylabel="bits per character", title=f"{out['cell']} on {out['dataset']}")
    axes.legend()
    figure.tight_layout()
    path = run_dir / "loss.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


def _ngram_baseline(cfg: LanguageModelConfig, train_text: str, val_text: str, test_text: str, say):
    """``(validation bits/char by order, best order, its test bits/char)``: counted once at the highest order,
    with a note before each part, so that the half minute it takes is not silent."""
    orders = sorted(set(cfg.ngram_orders))
    say(f"baseline: Witten-Bell character n-gram, counting up to order {orders[-1]} on the training text")
    full = baselines.CharNGram(train_text, orders[-1])
    ngram_val = {}
    for i, n in enumerate(orders, 1):
        say(f"baseline: order {n} on the validation text ({i}/{len(orders)})")
        ngram_val[n] = full.with_order(n).bits_per_char(val_text)
    best = min(ngram_val, key=ngram_val.get)
    say(f"baseline: order {best} (best on validation) on the test text")
    return ngram_val, best, full.with_order(best).bits_per_char(test_text)


def language_model_config(run_dir) -> LanguageModelConfig:
    """The :class:`LanguageModelConfig` saved in ``run_dir``, or a :class:`ConfigError` saying what the
    directory holds instead (nothing, a classifier run, a damaged config). Reads no arrays."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        raise ConfigError(f"--run-dir {run_dir} is not a language-model run: {path} is missing")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"--run-dir {run_dir} is not a language-model run: {path} is not JSON") from None
    fields = {f.name for f in dataclasses.fields(LanguageModelConfig)}
    if not isinstance(saved, dict) or "window" not in saved or not set(saved) <= fields:  # older runs lack new fields
        kind = "a classifier run" if isinstance(saved, dict) and "label_column" in saved else "another kind of run"
        raise ConfigError(
            f"--run-dir {run_dir} holds {kind}, not a language model; generate needs the run directory of "
            "rnnx train --task lm"
        )
    if not (run_dir / "vocab.json").exists():
        raise ConfigError(f"--run-dir {run_dir} is not a language-model run: {run_dir / 'vocab.json'} is missing")
    return LanguageModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def restore_language_model(run_dir, say: Callable[[str], None] = _quiet):
    """``(model, params, vocab)`` from a run directory written by :func:`train_language_model`: the best
    evaluated params of its newest checkpoint that verifies (``say`` hears of any damaged one skipped)."""
    run_dir = Path(run_dir)
    cfg = language_model_config(run_dir)
    vocab = data.Vocab.load(run_dir / "vocab.json")
    model, loss_fn = _language_model(cfg, len(vocab))
    if _latest_step(run_dir / "checkpoints") is None:
        raise ConfigError(f"--run-dir {run_dir} has no complete checkpoint under {run_dir / 'checkpoints'}")
    _, _, like = _initial_lm_state(cfg, model, loss_fn)
    with checkpoint.manager(run_dir / "checkpoints", read_only=True) as manager:
        _, state, _ = checkpoint.restore_latest(manager, like, net=model.net, on_damaged=say)
    return model, state.best_params, vocab


__all__ = ["language_model_config", "restore_language_model", "train_classifier", "train_language_model"]
