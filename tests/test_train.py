"""Training utilities: losses and metrics against hand computations, compile-once steps, resumable fits,
and real learning on small real slices with a fixed seed."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnx
from rnnx import training as train
from rnnx.apps import baselines, corpora, data, models
from rnnx.training import losses, metrics
from tests.faulty_fit import problem  # a linear regression over fixed batches, deterministic per epoch


def test_masked_cross_entropy_and_perplexity_equal_a_hand_computation():
    logits = jnp.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [9.0, -9.0, 0.0]]])
    targets = jnp.array([[0, 2, 1]])
    mask = jnp.array([[True, True, False]])  # the third token is padding and must not count
    log_softmax = np.asarray(logits[0]) - np.log(np.exp(np.asarray(logits[0])).sum(-1, keepdims=True))
    expected = -(log_softmax[0, 0] + log_softmax[1, 2]) / 2
    nll = float(losses.masked_cross_entropy(logits, targets, mask))
    assert nll == pytest.approx(expected, rel=1e-6)
    assert metrics.perplexity(nll) == pytest.approx(math.exp(expected), rel=1e-6)
    assert metrics.bits_per_token(nll) == pytest.approx(expected / math.log(2), rel=1e-6)


def test_binary_and_multiclass_losses_and_accuracy_respect_weights():
    logits = jnp.array([2.0, -1.0, 3.0])
    labels = jnp.array([1, 1, 0])
    weights = jnp.array([1.0, 1.0, 0.0])
    bce = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0))]
    assert float(losses.binary_cross_entropy(logits, labels, weights)) == pytest.approx(np.mean(bce), rel=1e-6)
    assert float(metrics.accuracy(logits, labels, weights)) == 0.5
    multi = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    assert float(metrics.accuracy(multi, jnp.array([0, 0]))) == 0.5
    assert float(losses.cross_entropy(multi, jnp.array([0, 1]))) == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)


def test_the_step_clips_with_optax_and_reports_norms_before_and_after():
    params = {"w": jnp.zeros(4)}
    loss_fn = lambda p, g, key: (p["w"] @ g, {})  # noqa: E731  the gradient is the batch itself
    grads = jnp.array([3.0, 4.0, 0.0, 0.0])
    step = train.make_train_step(loss_fn, train.default_optimizer(learning_rate=0.1), clip_norm=1.0)
    state, out = step.update(step.init(params), grads, jax.random.key(0))
    assert float(out["grad_norm"]) == pytest.approx(5.0) and float(out["clipped_grad_norm"]) == pytest.approx(1.0)
    assert int(state.step) == 1 and state.carry is None
    # Exactly clip-then-Adam: Adam's first step moves every coordinate by -lr * sign(g).
    np.testing.assert_allclose(state.params["w"], [-0.1, -0.1, 0.0, 0.0], atol=1e-6)
    chain = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    updates, _ = chain.update({"w": grads}, chain.init(params), params)
    chex.assert_trees_all_equal(state.params, optax.apply_updates(params, updates))
    # Below the bound nothing is clipped; without a bound there is no clipped norm.
    _, out = step.update(step.init(params), grads / 10, jax.random.key(0))
    assert float(out["clipped_grad_norm"]) == pytest.approx(0.5) == float(out["grad_norm"])
    unclipped = train.make_train_step(loss_fn, train.default_optimizer(0.1), clip_norm=None)
    assert set(unclipped.update(unclipped.init(params), grads, jax.random.key(0))[1]) == {"loss", "grad_norm", "finite"}


def test_train_step_compiles_once_per_batch_shape():
    loss_fn, batches, params = problem()
    counted = chex.assert_max_traces(loss_fn, n=1)
    step = train.make_train_step(counted, train.default_optimizer())
    state = step.init(params)
    for batch in batches(0)[:4]:
        state, out = step.update(state, batch, jax.random.key(0))
    assert set(out) == {"loss", "grad_norm", "clipped_grad_norm", "finite"} and int(state.step) == 4
    with pytest.raises(AssertionError, match="traced > 1 times"):  # another batch shape compiles again
        step.update(state, (batches(0)[0][0][:5], batches(0)[0][1][:5]), jax.random.key(0))


def test_fit_compiles_its_step_once_and_reports_through_on_log(tmp_path):
    loss_fn, batches, params = problem()
    records = []
    result = train.fit(
        chex.assert_max_traces(loss_fn, n=1),
        params,
        batches,
        steps=30,
        log_every=10,
        evaluation=train.Evaluation(lambda p: {"loss": float(loss_fn(p, batches(0)[0], None)[0])}, 15),
        on_log=records.append,
    )
    assert result.step == 30 and [h["step"] for h in result.history] == [15, 30]
    assert [(r["step"], "eval" in r) for r in records] == [
        (10, False),
        (15, True),
        (20, False),
        (30, False),
        (30, True),
    ]
    assert records[0]["epoch"] == 1 and set(records[0]) == {
        "time",
        "step",
        "epoch",
        "loss",
        "grad_norm",
        "clipped_grad_norm",
    }
    # A true return value from on_log stops training after that step, which is evaluated as the last.
    stopped = train.fit(
        loss_fn,
        params,
        batches,
        steps=30,
        log_every=1,
        on_log=lambda r: r["step"] == 7,
        evaluation=train.Evaluation(lambda p: {"loss": 0.0}, 15),
    )
    assert stopped.step == 7 and stopped.stopped_early and [h["step"] for h in stopped.history] == [7]


def test_fit_takes_an_iterable_of_batches_and_resumes_it_bit_exactly(tmp_path):
    loss_fn, batches, params = problem()
    stream = [b for epoch in range(3) for b in batches(epoch)]  # 24 batches: the epochs end to end
    by_epoch = train.fit(loss_fn, params, batches, steps=20)
    whole = train.fit(loss_fn, params, iter(stream), steps=20)
    chex.assert_trees_all_equal(whole.last_params, by_epoch.last_params)
    hooks = train.Checkpoints(tmp_path / "run", every=5, max_to_keep=2)
    train.fit(loss_fn, params, iter(stream), steps=12, checkpoints=hooks)
    resumed = train.fit(loss_fn, params, iter(stream), steps=20, checkpoints=hooks)  # skips the 12 batches trained on
    chex.assert_trees_all_equal(whole.last_params, resumed.last_params)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_15", "step_20"]  # max_to_keep
    short = train.fit(loss_fn, params, stream[:6], steps=20, on_log=(records := []).append, log_every=4)
    assert short.step == 6 and [r.get("step") for r in records] == [4, 6, None]  # a stream that runs out ends it
    assert records[-1]["event"] == "batches_ran_out" and short.stopped_early  # and says so
    assert short.stop_reason == "the batches ran out after 6 of 20 steps"


def test_learning_rate_schedules():
    assert train.learning_rate_schedule("constant", 0.1, 100) == 0.1
    cosine = train.learning_rate_schedule("cosine", 0.1, 100)
    np.testing.assert_allclose([cosine(0), cosine(50), cosine(100), cosine(150)], [0.1, 0.05, 0.0, 0.0], atol=1e-7)
    with pytest.raises(ValueError, match="schedule must be one of .*received 'linear'"):
        train.learning_rate_schedule("linear", 0.1, 100)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resumed_fit_ends_with_the_same_params_as_an_uninterrupted_one(tmp_path, schedule):
    loss_fn, batches, params = problem()
    evaluate = lambda p: {"loss": float(loss_fn(p, batches(0)[0], None)[0])}  # noqa: E731
    learning_rate = train.learning_rate_schedule(schedule, 0.05, 30)  # cosine: resuming must continue its count
    kwargs = dict(
        steps=30, evaluation=train.Evaluation(evaluate, every=10), optimizer=train.default_optimizer(learning_rate)
    )
    hooks = lambda name: train.Checkpoints(tmp_path / name, every=10)  # noqa: E731
    whole = train.fit(loss_fn, params, batches, checkpoints=hooks("a"), **kwargs)
    train.fit(loss_fn, params, batches, checkpoints=hooks("b"), **(kwargs | {"steps": 20}))
    log = tmp_path / "b.jsonl"
    resumed = train.fit(loss_fn, params, batches, checkpoints=hooks("b"), on_log=train.jsonl_log(log), **kwargs)
    assert resumed.step == 30 and log.read_text().count('"step": 30') == 2  # metrics line + eval line
    chex.assert_trees_all_equal(whole.last_params, resumed.last_params)
    chex.assert_trees_all_equal(whole.opt_state, resumed.opt_state)
    # And it learned: the constant rate as before; the cosine one slows as it decays to 0 by step 30.
    assert whole.history[-1]["loss"] < {"constant": 0.2, "cosine": 0.7}[schedule] * whole.history[0]["loss"]


def test_early_stopping_keeps_the_best_params():
    loss_fn, batches, params = problem()
    scores = iter([3.0, 1.0, 2.0, 2.5, 0.5])
    seen = []

    def evaluate(p):
        seen.append(p)
        return {"score": next(scores)}

    evaluation = train.Evaluation(evaluate, every=5, monitor="score", patience=2)
    result = train.fit(loss_fn, params, batches, steps=50, evaluation=evaluation)
    assert result.stopped_early and result.step == 20 and len(result.history) == 4
    chex.assert_trees_all_equal(result.params, seen[1])


def test_tokenise_pad_and_bucket_invariants():
    ids = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [4, 4]]
    labels = np.array([0, 1, 0, 1])
    batches = data.padded_batches(ids, labels, batch_size=3, buckets=(2, 4, 8), seed=None)
    assert [b["tokens"].shape for b in batches] == [(3, 8), (3, 2)]  # widths come from the buckets only
    first = batches[0]
    np.testing.assert_array_equal(first["lengths"], [3, 1, 8])  # the long row is truncated to the top bucket
    np.testing.assert_array_equal(first["tokens"][0], [5, 6, 7, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(batches[1]["weights"], [1.0, 0.0, 0.0])  # filler rows weigh nothing
    shuffled = [data.padded_batches(ids, labels, batch_size=2, seed=3, epoch=e) for e in (0, 0, 1)]
    assert [b["labels"].tolist() for b in shuffled[0]] == [b["labels"].tolist() for b in shuffled[1]]
    rows = sorted(tuple(r[:n]) for b in shuffled[2] for r, n in zip(b["tokens"].tolist(), b["lengths"]))
    assert rows == sorted(tuple(r[:128]) for r in ids)  # every row exactly once (default buckets reach 128)
    vocab = data.Vocab.build(["the cat sat", "the dog"], min_freq=1, max_size=6)
    assert vocab.tokens[4:] == ["the", "cat"] and vocab.decode(vocab.encode("the cat ran")) == "the cat <unk>"


def test_stream_windows_are_contiguous_per_lane():
    stream = np.arange(1000)
    windows = data.stream_windows(stream, batch_size=4, window=10)
    for lane in range(4):
        joined = np.concatenate([windows[0, lane]] + [w[lane, 1:] for w in windows[1:]])
        np.testing.assert_array_equal(joined, np.arange(joined[0], joined[0] + len(joined)))
    with pytest.raises(ValueError, match="too short for batch_size=4 and window=500"):
        data.stream_windows(stream, batch_size=4, window=500)


def test_character_language_model_learns_on_a_shakespeare_slice():
    text = corpora.shakespeare()["text"][6][:60_000]  # Hamlet
    vocab = data.Vocab.build([text], level="char")
    ids = np.asarray(vocab.encode(text), np.int32)
    windows = data.stream_windows(ids[:50_000], batch_size=16, window=32)
    held_out = jnp.asarray(data.stream_windows(ids[50_000:], batch_size=8, window=32))
    model = models.language_model(rnnx.stacked(rnnx.gru(64)), len(vocab), 32)

    def loss_fn(params, batch, key, carry):
        logits, carry = model.apply(params, batch[:, :-1], carry)
        return losses.masked_cross_entropy(logits, batch[:, 1:]), ({}, carry)

    @jax.jit
    def bits(params):
        def body(carry, w):
            logits, carry = model.apply(params, w[:, :-1], carry)
            return carry, losses.masked_cross_entropy(logits, w[:, 1:])

        return jnp.mean(jax.lax.scan(body, model.net.default_carry(params["rnn"], (8,)), held_out)[1]) / math.log(2)

    params = model.init(jax.random.key(0))
    before = float(bits(params))
    result = train.fit(
        loss_fn,
        params,
        lambda epoch: windows,
        steps=150,
        optimizer=train.default_optimizer(learning_rate=3e-3),
        initial_carry=model.net.default_carry(params["rnn"], (16,)),
    )
    after = float(bits(result.params))
    assert before > 0.95 * math.log2(len(vocab)) and after < 3.6, (before, after)  # from ~uniform to well below


def test_simple_rnn_classifier_beats_the_majority_class_on_a_trec_slice():
    pytest.importorskip("datasets")
    try:
        dataset = corpora.trec()
    except data.DataUnavailable as why:
        pytest.skip(str(why))
    texts, names = dataset["text"][:1500], sorted(set(dataset["label"]))
    labels = np.array([names.index(lab) for lab in dataset["label"][:1500]], np.int32)
    vocab = data.Vocab.build(texts[:1200])
    ids = [vocab.encode(t) for t in texts]
    model = models.classifier(rnnx.stacked(rnnx.simple_rnn(64)), len(vocab), 64, len(names))

    def loss_fn(params, batch, key):
        logits = model.apply(params, batch["tokens"], batch["lengths"])
        return losses.cross_entropy(logits, batch["labels"], batch["weights"]), {}

    def train_batches(epoch):
        return data.padded_batches(
            ids[:1200], labels[:1200], batch_size=32, buckets=(32,), seed=0, epoch=epoch, drop_last=True
        )

    result = train.fit(
        loss_fn,
        model.init(jax.random.key(0)),
        train_batches,
        steps=400,
        optimizer=train.default_optimizer(learning_rate=3e-3),
    )
    test = data.padded_batches(ids[1200:], labels[1200:], batch_size=300, buckets=(32,))[0]
    accuracy = float(metrics.accuracy(model.apply(result.params, test["tokens"], test["lengths"]), test["labels"]))
    majority = baselines.majority_accuracy(labels[:1200], labels[1200:])
    assert accuracy > majority + 0.25, (accuracy, majority)


def _glove_or_skip():
    try:
        return corpora.glove50(["the", ",", "qwxzvq"])
    except data.DataUnavailable as why:
        pytest.skip(str(why))


def test_glove50_vectors_are_glove_6b_50d():
    vectors, found = _glove_or_skip()
    # The first numbers of "the" and "," in Stanford's glove.6B.50d.txt.
    np.testing.assert_allclose(vectors[0, :5], [0.418, 0.24968, -0.41242, 0.1217, 0.34527], rtol=1e-6)
    np.testing.assert_allclose(vectors[1, :3], [0.013441, 0.23682, -0.16899], rtol=1e-6)
    assert found.tolist() == [True, True, False] and not vectors[2].any()


def test_pretrained_embedding_fills_known_words_and_keeps_the_rest():
    from rnnx.apps.config import ClassifierConfig, ConfigError, validate
    from rnnx.apps.experiments import _initial_classifier_params

    _glove_or_skip()
    vocab = data.Vocab.build(["the film is qwxzvq"])
    model = models.classifier(rnnx.stacked(rnnx.lstm(4)), len(vocab), 50, 1)
    params, coverage = _initial_classifier_params(model, vocab, ClassifierConfig(embed=50, pretrained="glove50"))
    fresh = model.init(jax.random.key(0))
    vectors, found = corpora.glove50(vocab.tokens)
    np.testing.assert_array_equal(params["embed"][found], vectors[found])
    np.testing.assert_array_equal(params["embed"][~found], fresh["embed"][~found])  # specials, "qwxzvq"
    assert coverage == found.mean() and 0 < coverage < 1
    with pytest.raises(ConfigError, match="embed must be 50, received 128"):  # checked before any data is read
        validate(ClassifierConfig(embed=128, pretrained="glove50"))
    with pytest.raises(ConfigError, match="pretrained must be one of .*received 'word2vec'"):
        validate(ClassifierConfig(pretrained="word2vec"))
