"""Population training (:func:`rnnx.training.fit_population`): member ``i`` equals the solo :func:`fit` with its
seed and hyper-parameters; each member stops, fails and resumes on its own; one compilation serves all.

The oracle is ``fit`` itself. The quick tests use a linear model with dropout (cheap to compile); the slow
ones a stateful GRU language model and an LSTM classifier with dropout, and a member mesh over forced CPU
devices (in a subprocess). Float32 bound: the ``vmap``-ped step batches the matmuls, which sum in another
order than the solo step's, so members match to round-off that grows with the steps and the learning rate
(at most 3e-7 after the tests' 6-8 steps); ``TOL`` is the bound the tests check.
"""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnx
from rnnx import training as train
from rnnx.apps import models

TOL = 1e-6
D, STEPS = 5, 8
_rng = np.random.default_rng(0)
_X = _rng.normal(size=(4, 6, D)).astype(np.float32)  # 4 batches of 6 examples a epoch
_Y = (_X @ _rng.normal(size=D) + 0.1).astype(np.float32)
_HELD = (_rng.normal(size=(16, D)).astype(np.float32),)
_HELD = (_HELD[0], (_HELD[0] @ _rng.normal(size=D)).astype(np.float32))


def _init(seed):
    key = jax.random.key(seed)
    return {"w": jax.random.normal(key, (D,)), "b": jnp.zeros(())}


def _loss(params, batch, key):
    x, y = batch
    x = rnnx.core.stack.dropout(key, x, 0.2)  # so that the members' keys matter
    loss = jnp.mean((x @ params["w"] + params["b"] - y) ** 2)
    return loss, {"abs_w": jnp.abs(params["w"]).mean()}


def _batches(epoch):
    order = np.random.default_rng(epoch).permutation(len(_X))
    return [(_X[i], _Y[i]) for i in order]


def _held_loss(params):
    return jnp.mean((_HELD[0] @ params["w"] + params["b"] - _HELD[1]) ** 2)


_EVAL_ONE = jax.jit(lambda p: {"loss": _held_loss(p)})
_EVAL_ALL = jax.jit(jax.vmap(lambda p: {"loss": _held_loss(p)}))


def _leaves_close(a, b, tol=TOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=0)


def _solo(seed, lr, clip=1.0, batches=_batches, **kwargs):
    kwargs = {"steps": STEPS, "optimizer": optax.adam(lr), "clip_norm": clip, "seed": seed, **kwargs}
    return train.fit(_loss, _init(seed), batches, **kwargs)


@pytest.fixture(scope="module")
def early_stopping():
    """4 members, learning rates far apart, an evaluation every step with patience 1: they stop apart."""
    seeds, lrs = [0, 1, 2, 3], [3e-3, 0.3, 1.0, 3.0]
    evaluation = train.Evaluation(_EVAL_ALL, every=1, patience=1)
    records = []
    loss = chex.assert_max_traces(_loss, n=1)  # one trace for the population, whatever N and the steps
    result = train.fit_population(
        loss, _init, _batches, seeds=seeds, steps=STEPS, hyperparams={"learning_rate": lrs},
        evaluation=evaluation, log_every=2, on_log=records.append,
    )  # fmt: skip
    return seeds, lrs, result, records


def test_each_member_equals_its_solo_fit_with_early_stopping(early_stopping):
    seeds, lrs, result, _ = early_stopping
    assert len(set(result.steps)) > 1, f"the members should stop at different steps, got {result.steps}"
    for i, (seed, lr) in enumerate(zip(seeds, lrs)):
        solo = _solo(seed, lr, evaluation=train.Evaluation(_EVAL_ONE, every=1, patience=1))
        member = result.member(i)
        assert (member.step, member.stopped_early) == (solo.step, solo.stopped_early)
        assert [h["step"] for h in member.history] == [h["step"] for h in solo.history]
        np.testing.assert_allclose([h["loss"] for h in member.history], [h["loss"] for h in solo.history], rtol=1e-5)
        _leaves_close(member.params, solo.params)
        _leaves_close(member.last_params, solo.last_params)  # a stopped member stayed frozen


def test_records_carry_the_member_index(early_stopping):
    _, _, result, records = early_stopping
    train_records = [r for r in records if "loss" in r and "member" in r]
    assert {r["member"] for r in train_records} == {0, 1, 2, 3}
    assert {"grad_norm", "clipped_grad_norm", "abs_w"} <= set(train_records[0])
    for i, steps in enumerate(result.steps):  # no record of a member after it stopped
        assert max(r["step"] for r in records if r.get("member") == i) <= steps + (-steps % 2)
        assert [r["step"] for r in records if r.get("member") == i and "eval" in r] == list(range(1, steps + 1))


def test_batches_that_run_out_stop_every_member_with_fits_note_and_reason():
    """An iterable of 5 batches for 8 steps: as ``fit`` does, a ``"batches_ran_out"`` note, ``stopped_early``
    and the same stop reason, for each member still training; the members equal their solo fits."""
    seeds, lrs = [0, 1], [1e-2, 3e-2]
    batches = [(_X[i % 4], _Y[i % 4]) for i in range(5)]
    records = []
    result = train.fit_population(
        _loss, _init, iter(batches), seeds=seeds, steps=STEPS, hyperparams={"learning_rate": lrs},
        on_log=records.append,
    )  # fmt: skip
    solo_records = []
    solo = _solo(0, lrs[0], batches=iter(batches), on_log=solo_records.append)
    assert solo.stop_reason == "the batches ran out after 5 of 8 steps" and solo.stopped_early  # the oracle
    notes = [r for r in records if r.get("event") == "batches_ran_out"]
    assert [n["message"] for n in notes] == [r["message"] for r in solo_records if r.get("event") == "batches_ran_out"]
    for i, seed in enumerate(seeds):
        member = result.member(i)
        assert (member.step, member.stopped_early, member.stop_reason) == (5, True, solo.stop_reason)
        other = solo if i == 0 else _solo(seed, lrs[i], batches=iter(batches), on_log=solo_records.append)
        _leaves_close(member.params, other.params)
    for empty in ([], iter([]), lambda epoch: []):  # no batch at all: an error, as in fit
        with pytest.raises(ValueError, match=r"batches(\(0\) returned no batches| yielded no batch)"):
            train.fit_population(_loss, _init, empty, seeds=seeds, steps=STEPS)


def test_hyperparameters_per_member_weight_decay_and_clip_norm():
    """adamw with per-member weight decay and clip norm, and per-member data order."""
    seeds, lrs, wds, clips = [5, 6, 7], [1e-2, 3e-2, 1e-1], [0.0, 1e-2, 0.1], [0.5, 1.0, 1e9]

    def member_batches(epoch, seed):
        return _batches(epoch * 100 + seed)

    result = train.fit_population(
        _loss, _init, member_batches, seeds=seeds, steps=STEPS, optimizer=optax.adamw,
        hyperparams={"learning_rate": lrs, "weight_decay": wds}, clip_norm=clips, member_data=True,
    )  # fmt: skip
    for i in range(3):
        solo = train.fit(
            _loss, _init(seeds[i]), lambda e, s=seeds[i]: member_batches(e, s), steps=STEPS,
            optimizer=optax.adamw(lrs[i], weight_decay=wds[i]), clip_norm=clips[i], seed=seeds[i],
        )  # fmt: skip
        _leaves_close(result.member(i).params, solo.params)
    np.testing.assert_array_equal(result.hyperparams["weight_decay"], np.float32(wds))


def test_diverging_member_is_frozen_and_reported_others_go_on():
    records = []
    lrs = [1e-2, float("nan"), 1e-2]
    result = train.fit_population(
        _loss, _init, _batches, seeds=[0, 1, 0], steps=STEPS, hyperparams={"learning_rate": lrs},
        log_every=3, on_log=records.append,
    )  # fmt: skip
    failed = [r for r in records if r.get("event") == "member_failed"]
    assert len(failed) == 1 and "\n" not in failed[0]["message"]
    assert "member 1 (seed 1, learning_rate=nan, clip_norm=1)" in failed[0]["message"]
    assert "failed at step 1" in failed[0]["message"]
    assert result.failures[0] is None and result.failures[1] == failed[0]["message"]
    assert result.steps == [STEPS, 1, STEPS]  # its failed step counts, as in fit
    _leaves_close(result.member(1).params, _init(1), tol=0)  # frozen before its first (NaN) update
    _leaves_close(result.member(0).params, result.member(2).params, tol=0)  # the same seed and rate
    _leaves_close(result.member(0).params, _solo(0, 1e-2).params)

    with pytest.raises(train.NonFiniteError, match="member 1 .*learning_rate=nan"):
        train.fit_population(_loss, _init, _batches, seeds=[0, 1, 0], steps=4, hyperparams={"learning_rate": lrs},
                             on_nonfinite="raise")  # fmt: skip
    with pytest.raises(train.NonFiniteError, match="every member failed"), pytest.warns(UserWarning, match="member"):
        train.fit_population(_loss, _init, _batches, seeds=[0, 1], steps=4, hyperparams={"learning_rate": np.nan})


@pytest.mark.slow  # orbax: a few seconds
def test_resume_of_the_whole_population_is_bit_exact(tmp_path):
    evaluation = train.Evaluation(_EVAL_ALL, every=2, patience=1)
    kwargs = dict(seeds=[0, 1, 2], hyperparams={"learning_rate": [1e-2, 0.3, 3.0]}, evaluation=evaluation, log_every=1)
    whole = train.fit_population(_loss, _init, _batches, steps=STEPS, **kwargs)

    def crash(record):
        if record.get("step") == 5:
            raise KeyboardInterrupt

    checkpoints = train.Checkpoints(tmp_path, every=2)
    with pytest.raises(KeyboardInterrupt):
        train.fit_population(_loss, _init, _batches, steps=STEPS, checkpoints=checkpoints, on_log=crash, **kwargs)
    records = []
    resumed = train.fit_population(
        _loss, _init, _batches, steps=STEPS, checkpoints=checkpoints, on_log=records.append, **kwargs
    )
    assert records[0]["event"] == "resume" and records[0]["step"] == 4
    for name in ("params", "last_params", "opt_state"):
        _leaves_close(getattr(resumed, name), getattr(whole, name), tol=0)
    assert (resumed.steps, resumed.histories, resumed.stopped_early) == (
        whole.steps,
        whole.histories,
        whole.stopped_early,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hyperparams": {"learning_rate": [1e-3, 1e-2]}}, "learning_rate must be a float or 3 floats"),
        ({"hyperparams": {"learning_rat": 1e-3}}, "do not fit the optimizer factory"),
        ({"clip_norm": [1.0]}, "clip_norm must be a float or 3 floats"),
        ({"seeds": [0, -1, 2]}, "seeds must be"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train.fit_population(_loss, _init, _batches, **{"seeds": [0, 1, 2], "steps": 2, **kwargs})


def _model_members_equal_solo(model, loss_fn, batches, seeds, lrs, **kwargs):
    init = lambda seed: model.init(jax.random.key(seed))  # noqa: E731
    steps = 6
    result = train.fit_population(
        loss_fn, init, batches, seeds=seeds, steps=steps, hyperparams={"learning_rate": lrs}, **kwargs
    )
    for i in (1, 3):  # two of the four solo fits (each compiles its own step): a middle and the largest rate
        seed, lr = seeds[i], lrs[i]
        solo = train.fit(loss_fn, init(seed), batches, steps=steps, optimizer=optax.adam(lr), seed=seed, **kwargs)
        _leaves_close(result.member(i).params, solo.params)
        assert not np.allclose(np.asarray(solo.params["out_w"]), np.asarray(init(seed)["out_w"]))  # it trained


@pytest.mark.slow
def test_stateful_language_model_members_equal_solo_fits():
    B, T, V, E, H = 4, 5, 7, 4, 6
    model = models.language_model(rnnx.stacked(rnnx.gru(H)), V, E)
    carry0 = model.net.default_carry(model.init(jax.random.key(0))["rnn"], (B,))
    windows = np.random.default_rng(0).integers(0, V, size=(2, 3, B, T + 1)).astype(np.int32)

    def loss_fn(params, batch, key, carry):
        logits, carry = model.apply(params, batch[:, :-1], carry)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean(), ({}, carry)

    batches = lambda epoch: list(windows[epoch % 2])  # noqa: E731
    _model_members_equal_solo(model, loss_fn, batches, [0, 1, 2, 3], [1e-3, 1e-2, 3e-2, 1e-1], initial_carry=carry0)


@pytest.mark.slow
def test_classifier_with_dropout_members_equal_solo_fits():
    B, L, V, E, H = 4, 5, 9, 4, 6
    model = models.classifier(rnnx.stacked(rnnx.lstm(H)), V, E, 3, dropout_rate=0.3)
    rng = np.random.default_rng(1)
    tokens, lengths = rng.integers(0, V, size=(3, B, L)).astype(np.int32), rng.integers(1, L + 1, size=(3, B))
    labels = rng.integers(0, 3, size=(3, B))

    def loss_fn(params, batch, key):
        logits = model.apply(params, batch[0], batch[1], key=key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[2]).mean(), {}

    batches = lambda epoch: [(tokens[i], lengths[i], labels[i]) for i in range(3)]  # noqa: E731
    _model_members_equal_solo(model, loss_fn, batches, [0, 1, 2, 3], [1e-3, 1e-2, 3e-2, 1e-1])


_SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, TESTS)
    import test_population as t
    from rnnx import training as train
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("member",))
    kwargs = dict(seeds=[0, 1, 2, 3], steps=t.STEPS, hyperparams={"learning_rate": [1e-3, 1e-2, 1e-1, 1.0]},
                  evaluation=train.Evaluation(t._EVAL_ALL, every=2, patience=1))
    one = train.fit_population(t._loss, t._init, t._batches, **kwargs)
    four = train.fit_population(t._loss, t._init, t._batches, member_mesh=mesh, **kwargs)
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(one.last_params), jax.tree.leaves(four.last_params)))
    devices = len(four.last_params["w"].sharding.device_set)
    print(json.dumps({"diff": diff, "devices": devices, "steps": [one.steps, four.steps]}))
    """
)


@pytest.mark.slow
def test_member_axis_sharded_over_forced_cpu_devices_equals_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    script = _SHARDED.replace("TESTS", repr(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["devices"] == 4
    assert found["steps"][0] == found["steps"][1]
    assert found["diff"] <= TOL
