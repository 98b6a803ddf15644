"""Fault injection: divergence, NaN batches and NaN padding, processes killed mid-run and mid-save, damaged
checkpoints and two writers. Each case asserts a one-line message from rnnx naming the cause, and that
nothing is lost: the last good checkpoint is intact and a resumed run ends bit-identical to an
uninterrupted one."""

import errno
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import rnnx
from rnnx import training as train
from rnnx.training import checkpoint
from tests import faulty_fit
from tests.conftest import file_hashes

pytestmark = pytest.mark.slow  # subprocesses or whole runs: the full tier only

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A resumed process compiles its own kernels: on a GPU, XLA's autotuning may pick others than the killed
# process did, unless told to be deterministic (then the H100 gave bit-identical results too).
DETERMINISTIC = jax.default_backend() == "cpu" or "--xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", "")


@pytest.fixture(scope="module")
def uninterrupted():
    """The reference: the fault-free run, without checkpoints."""
    return faulty_fit.run(None)


def _one_line(error) -> str:
    message = str(error)
    assert "\n" not in message and len(message) < 600, message
    return message


def _steps(directory) -> list[int]:
    return sorted(
        int(p.name.removeprefix("step_")) for p in pathlib.Path(directory).glob("step_*") if "tmp" not in p.name
    )


def _assert_no_nonfinite_checkpoint(directory) -> None:
    """Every checkpoint in ``directory`` restores, verifies, and holds finite params and optimiser state
    (``best`` is inf until an evaluation)."""
    with checkpoint.manager(directory, read_only=True) as manager:
        for step in manager.all_steps():
            loss_fn, batches, params = faulty_fit.problem()
            like = train.initial_state(train.make_train_step(loss_fn, train.default_optimizer()), params)
            state = checkpoint.restore_step(manager, step, like)
            chex.assert_tree_all_finite((state.train, state.best_params))


# --------------------------------------------------------------------------------------- divergence


@pytest.mark.parametrize(("learning_rate", "quantity"), [(math.nan, "update"), (math.inf, "update"), (1e30, "loss")])
def test_a_nan_or_exploding_learning_rate_stops_with_one_line_and_saves_nothing_non_finite(
    tmp_path, learning_rate, quantity
):
    with pytest.raises(train.NonFiniteError) as caught:
        faulty_fit.run(tmp_path / "run", learning_rate=learning_rate)
    message = _one_line(caught.value)
    error = caught.value
    assert error.quantity == quantity and f"training stopped at step {error.step}:" in message
    assert "learning rate" in message
    _assert_no_nonfinite_checkpoint(tmp_path / "run")
    if error.step <= faulty_fit.EVERY:  # stopped before the first checkpoint: none written, none named
        assert _steps(tmp_path / "run") == [] and "No checkpoint was written yet" in message and not error.checkpoint
    else:
        assert f"The last good checkpoint is {error.checkpoint}" in message and error.checkpoint.is_dir()


def _nan_batch_at(step: int):
    """``faulty_fit.problem()`` with NaN in the inputs of the batch taken at ``step`` (1-based, epoch 0)."""
    loss_fn, batches, params = faulty_fit.problem()

    def poisoned(epoch):
        out = list(batches(epoch))
        if epoch == 0:
            x, y = out[step - 1]
            out[step - 1] = (x.at[3, 1].set(jnp.nan), y)
        return out

    return loss_fn, poisoned, params


def test_a_nan_batch_raises_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    loss_fn, batches, params = _nan_batch_at(7)
    hooks = train.Checkpoints(tmp_path / "run", every=5)
    with pytest.raises(train.NonFiniteError) as caught:
        train.fit(loss_fn, params, batches, steps=12, checkpoints=hooks, log_every=4)
    message = _one_line(caught.value)
    assert message.startswith("training stopped at step 7: the loss is nan")
    assert "non-finite values in the batch of step 7" in message
    assert caught.value.checkpoint == (tmp_path / "run" / "step_5").absolute() and _steps(tmp_path / "run") == [5]
    _assert_no_nonfinite_checkpoint(tmp_path / "run")


def test_skip_update_drops_exactly_the_non_finite_steps():
    # Skipping step 7's update leaves everything but the step count as it was, so the result equals a run
    # that never saw that batch (the loss ignores its key).
    loss_fn, batches, params = _nan_batch_at(7)
    records = []
    skipped = train.fit(
        loss_fn, params, batches, steps=12, on_nonfinite="skip_update", log_every=4, on_log=records.append
    )
    clean = faulty_fit.problem()[1]
    without = [b for i, b in enumerate(clean(0)) if i != 6] + clean(1)[:4]
    reference = train.fit(loss_fn, params, iter(without), steps=11)
    assert skipped.skipped == 1 and [r["skipped"] for r in records] == [0, 1, 0]
    assert all(math.isfinite(r["loss"]) for r in records)  # the mean over the finite steps only
    chex.assert_trees_all_equal(skipped.last_params, reference.last_params)
    chex.assert_trees_all_equal(skipped.opt_state, reference.opt_state)


def test_skip_update_gives_up_after_too_many_skips_in_a_row():
    loss_fn, _, params = faulty_fit.problem()
    nan_batch = (jnp.full((16, 3), jnp.nan), jnp.zeros(16))
    with pytest.raises(train.NonFiniteError, match=f"{train.MAX_CONSECUTIVE_SKIPS} updates in a row"):
        train.fit(loss_fn, params, lambda epoch: [nan_batch], steps=100, on_nonfinite="skip_update")


def test_a_diverged_evaluation_is_never_kept_as_the_best():
    loss_fn, batches, params = faulty_fit.problem()
    scores = iter([1.0, math.inf])
    evaluation = train.Evaluation(lambda p: {"loss": next(scores)}, every=5)
    with pytest.raises(train.NonFiniteError) as caught:
        train.fit(loss_fn, params, batches, steps=10, evaluation=evaluation)
    assert _one_line(caught.value).startswith("evaluation at step 10 gave loss = inf: the model diverged")
    assert "the best was at step 5" in str(caught.value)
    with pytest.raises(train.NonFiniteError, match="no evaluation was finite"):
        train.fit(loss_fn, params, batches, steps=5, evaluation=train.Evaluation(lambda p: {"loss": math.nan}, 5))


def test_the_policy_is_checked():
    loss_fn, batches, params = faulty_fit.problem()
    with pytest.raises(ValueError, match=r"on_nonfinite must be one of \('raise', 'skip_update'\), received 'ignore'"):
        train.fit(loss_fn, params, batches, steps=1, on_nonfinite="ignore")


def test_nan_in_padding_reaches_neither_the_loss_nor_a_gradient_of_a_fit():
    cell = rnnx.lstm(4)
    params = cell.init(jax.random.key(0), 2)
    xs = jax.random.normal(jax.random.key(1), (3, 5, 2))
    lengths = jnp.array([5, 2, 0])
    padded = jnp.where((jnp.arange(5) < lengths[:, None])[..., None], xs, jnp.nan)

    def loss_fn(params, batch, key):
        xs, lengths = batch
        _, ys = rnnx.unroll(cell, params, xs, lengths=lengths)
        return jnp.sum(ys**2), {}

    clean = train.fit(loss_fn, params, [(xs, lengths)] * 3, steps=3, optimizer=optax.sgd(0.1))
    poisoned = train.fit(loss_fn, params, [(padded, lengths)] * 3, steps=3, optimizer=optax.sgd(0.1))
    chex.assert_tree_all_finite(poisoned.last_params)
    chex.assert_trees_all_equal(poisoned.last_params, clean.last_params)


# ------------------------------------------------------------------------------------- killed processes


def _kill(directory, fault: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.faulty_fit", str(directory), fault],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


@pytest.mark.parametrize(
    ("fault", "resumed_from"),
    [("step:12", 10), ("save-start:15", 10), ("save-rename:10", 5), ("evaluate:20", 20)],
)
def test_a_run_killed_anywhere_resumes_bit_identical(tmp_path, uninterrupted, fault, resumed_from, caplog):
    directory = tmp_path / "run"
    _kill(directory, fault)
    kind, at = fault.split(":")
    if kind.startswith("save"):  # killed mid-save: the temporary directory is there, the step is not
        assert list(directory.glob(f"step_{at}.orbax-checkpoint-tmp*")) and int(at) not in _steps(directory)
    records = []
    resumed = faulty_fit.run(directory, on_log=records.append)
    events = [(r["event"], r["message"]) for r in records if "event" in r]
    assert events[0][0] == "stale_lock" and "took over the stale lock of process" in events[0][1]  # it was killed
    where = f"checkpoint {directory.absolute()}/step_{resumed_from}"
    assert events[1] == ("resume", f"resuming from step {resumed_from} of {faulty_fit.STEPS} ({where})")
    assert len(events) == 2
    assert "not finalized" not in caplog.text  # orbax's warning on replacing the interrupted save's directory
    if DETERMINISTIC:
        chex.assert_trees_all_equal(resumed.last_params, uninterrupted.last_params)
        chex.assert_trees_all_equal(resumed.opt_state, uninterrupted.opt_state)
        chex.assert_trees_all_equal(resumed.params, uninterrupted.params)
        assert resumed.history == uninterrupted.history  # the evaluation pending at the kill was done again
    else:  # measured on an H100: 1 ulp (6e-8) apart
        chex.assert_trees_all_close(
            (resumed.last_params, resumed.params), (uninterrupted.last_params, uninterrupted.params), rtol=1e-6
        )
    if kind == "evaluate":
        assert [r["step"] for r in records if "eval" in r] == [20, 24]


def test_a_finished_run_says_so_and_returns_its_history(tmp_path, uninterrupted):
    faulty_fit.run(tmp_path / "run")
    records = []
    again = faulty_fit.run(tmp_path / "run", on_log=records.append)
    assert [r["event"] for r in records] == ["finished"] and records[0]["message"].startswith(
        f"already finished at step {faulty_fit.STEPS} of {faulty_fit.STEPS}"
    )
    assert again.history == uninterrupted.history and again.step == faulty_fit.STEPS
    chex.assert_trees_all_equal(again.params, uninterrupted.params)


# ------------------------------------------------------------------------------------ damaged checkpoints


def _biggest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
    """The largest of ``state/d/*``: this problem's arrays are so small that OCDBT stores them inline in those
    b-tree nodes, the files a restore reads (measured: 64 bytes overwritten in any file under
    ``state/ocdbt.process_0`` changes nothing that is loaded; ``tests/test_checkpoint_verify.py`` damages
    the data files of larger arrays)."""
    return max((step_dir / "state" / "d").iterdir(), key=lambda p: (p.stat().st_size, p.name))


def _overwrite_64_bytes(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    middle = max(0, len(data) // 2 - 32)
    data[middle : middle + 64] = bytes(range(64))[: len(data) - middle]
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated array file": lambda d: os.truncate(f := _biggest_data_file(d), f.stat().st_size // 2),
    "deleted array file": lambda d: _biggest_data_file(d).unlink(),
    "deleted manifest": lambda d: (d / "state" / "manifest.ocdbt").unlink(),
    "64 bytes overwritten": lambda d: _overwrite_64_bytes(_biggest_data_file(d)),
    "deleted commit_success.txt": lambda d: (d / "commit_success.txt").unlink(),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_damaged_newest_checkpoint_is_reported_and_the_run_falls_back(tmp_path, uninterrupted, corruption):
    directory = tmp_path / "run"
    faulty_fit.run(directory, steps=10)  # checkpoints 5 and 10
    CORRUPTIONS[corruption](directory / "step_10")
    records = []
    resumed = faulty_fit.run(directory, on_log=records.append)  # writes step 10 again on its way
    events = [(r["event"], r["message"]) for r in records if "event" in r]
    damaged, aside = directory.absolute() / "step_10", directory.absolute() / "damaged.step_10"
    assert events == [
        ("damaged", events[0][1]),
        ("damaged", f"moved the damaged {damaged} aside to {aside}; the run writes step 10 anew"),
        ("resume", f"resuming from step 5 of 24 (checkpoint {directory.absolute()}/step_5)"),
    ]
    assert events[0][1].startswith(f"checkpoint {damaged} is damaged (")
    assert events[0][1].endswith("falling back to an older one") and "\n" not in events[0][1]
    chex.assert_trees_all_equal(resumed.last_params, uninterrupted.last_params)
    assert resumed.history == uninterrupted.history and aside.is_dir()


def test_no_checkpoint_that_verifies_stops_with_one_line_naming_them(tmp_path):
    directory = tmp_path / "run"
    faulty_fit.run(directory, steps=12)
    for step in _steps(directory):
        (directory / f"step_{step}" / "commit_success.txt").unlink()
    with pytest.raises(checkpoint.CheckpointError) as caught:
        faulty_fit.run(directory, on_log=[].append)
    message = _one_line(caught.value)
    assert message.startswith(f"no usable checkpoint in {directory.absolute()}: step_12 is damaged (commit_success")
    assert all(f"step_{s} is damaged" in message for s in (5, 10, 12)) and f"delete {directory.absolute()}" in message


# -------------------------------------------------------------------------------------------- two writers


def test_a_second_writer_is_refused_while_the_first_lives_and_a_dead_ones_lock_is_taken_over(tmp_path):
    directory = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from rnnx.training import checkpoint\n"
            "with checkpoint.lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)",
            str(directory),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(checkpoint.CheckpointError) as caught:
            faulty_fit.run(directory)
        assert f"is in use by process {holder.pid}" in _one_line(caught.value)
        assert _steps(directory) == []  # the refused writer wrote nothing
    finally:
        holder.kill()
        holder.wait(timeout=30)
    records = []
    faulty_fit.run(directory, steps=5, on_log=records.append)
    assert [r["event"] for r in records if "event" in r] == ["stale_lock"] and _steps(directory) == [5]
    assert not (directory / "rnnx.lock").exists()  # released at the end


# ------------------------------------------------------------------------------------------- the CLI run

TINY_LM = ["--hidden", "16", "--embed", "8", "--layers", "1", "--window", "16", "--batch-size", "4"]
TINY_LM += ["--ngram-orders", "2", "--eval-chars", "500", "--eval-every", "10", "--checkpoint-every", "5"]
TINY_LM += ["--schedule", "constant", "--no-progress"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("to be or not to be, that is the question.\n" * 200)
    return path


def _train(text_file, run_dir, steps, *extra):
    from rnnx.apps.cli import main

    argv = ["train", "--dataset", str(text_file), "--steps", str(steps), "--run-dir", str(run_dir)]
    return main([*argv, *TINY_LM, *extra])


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_cli_divergence_is_one_line_with_the_rate_and_exit_code_1(tmp_path, text_file, capsys):
    assert _train(text_file, tmp_path / "run", 20, "--learning-rate", "3e38") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rnnx train: error: training stopped at step ")
    assert err[-1].endswith("(this run: --learning-rate 3e+38, --clip-norm 1.0, --schedule constant)")
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "run" / "results.json").exists()
    # A rate that saturates the gates instead: finite but useless; the run says so after its results, and
    # exits with code 3, so that a script does not take it for a success.
    assert _train(text_file, tmp_path / "saturated", 10, "--learning-rate", "1e6") == 3
    out, err = capsys.readouterr()
    assert "Results in" in out and err.splitlines()[-1].startswith("rnnx train: error: held-out ")
    assert "bits/char is no better than a uniform guess" in err.splitlines()[-1]


def test_cli_resume_says_so_and_keeps_each_record_once_and_a_finished_run_keeps_its_results(
    tmp_path, text_file, capsys
):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _train(text_file, whole, 30) == 0
    results, log = (whole / "results.json").read_text(), (whole / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert _train(text_file, whole, 30) == 0  # finished: says so, and changes nothing
    assert f"{whole} holds a finished run (30 of 30 steps)" in capsys.readouterr().err
    assert (whole / "results.json").read_text() == results and (whole / "metrics.jsonl").read_text() == log
    # The same run as if killed after step 27: its log goes on past the newest checkpoint, step 25.
    shutil.copytree(whole, cut)
    for step in _steps(cut / "checkpoints"):
        if step > 25:
            shutil.rmtree(cut / "checkpoints" / f"step_{step}")
    (cut / "results.json").unlink()
    assert _train(text_file, cut, 30) == 0
    assert f"resuming from step 25 of 30 (checkpoint {cut.absolute()}/checkpoints/step_25)" in capsys.readouterr().err
    steps = [(r["step"], "eval" in r) for r in _records(cut) if "event" not in r]
    assert steps == [(r["step"], "eval" in r) for r in _records(whole)]  # each step once, none lost
    resumed, reference = (json.loads((d / "results.json").read_text()) for d in (cut, whole))
    assert resumed["history"] == reference["history"]  # the whole run's, not only what ran after the resume
    assert resumed["test_bits_per_char"] == reference["test_bits_per_char"]  # bit for bit


# As a training process holds them: each run directory's lock and its checkpoints'.
HOLD_BOTH = "import contextlib, sys, time; from rnnx.training import checkpoint\n"
HOLD_BOTH += "with contextlib.ExitStack() as stack:\n"
HOLD_BOTH += "    for run in sys.argv[1:]:\n"
HOLD_BOTH += "        for directory in (run, run + '/checkpoints'):\n"
HOLD_BOTH += "            stack.enter_context(checkpoint.lock(directory))\n"
HOLD_BOTH += "    print('locked', flush=True); time.sleep(120)"


def test_a_refused_writer_leaves_every_byte_of_the_run_as_it_was(tmp_path, text_file, capsys, monkeypatch):
    """A second ``rnnx train`` on a run directory in use, with other settings or the same ones, is refused
    before it writes a byte: the run's config, vocabulary, log and checkpoints stay as they were, so the
    first run's rerun and ``rnnx generate`` still work. A finished run rewrites nothing, so that its rerun
    prints its results on a read-only disk."""
    run, starting = tmp_path / "run", tmp_path / "starting"
    assert _train(text_file, run, 10) == 0
    starting.mkdir()
    shutil.copy(run / "config.json", starting / "config.json")  # a run that has not checkpointed yet
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_BOTH, str(run), str(starting)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {d: file_hashes(d) for d in (run, starting)}
        capsys.readouterr()
        assert _train(text_file, run, 10, "--cell", "lstm", "--hidden", "32") == 2  # the settings differ
        assert "holds checkpoints of a run with other settings" in capsys.readouterr().err
        assert _train(text_file, run, 20) == 1  # the same settings, training on: the lock is held
        assert _train(text_file, starting, 10, "--cell", "lstm", "--hidden", "32") == 1
        refusals = capsys.readouterr().err.strip().splitlines()
        assert {d: file_hashes(d) for d in (run, starting)} == before
        assert refusals[-1].startswith(f"rnnx train: error: {starting.absolute()} is in use by process {holder.pid}")
        assert f"{run.absolute()} is in use by process {holder.pid}" in refusals[-2]
    finally:
        holder.kill()
        holder.wait(timeout=30)
    from rnnx.apps.cli import main

    assert main(["generate", "--run-dir", str(run), "--length", "5", "--prompt", "to bé€"]) == 0
    assert "warning: --prompt characters ['é', '€'] are not in the run's vocabulary" in capsys.readouterr().err
    finished = file_hashes(run)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(run))

    monkeypatch.setattr(checkpoint, "lock", read_only)  # any attempt to write would meet a read-only disk
    assert _train(text_file, run, 10) == 0
    out = capsys.readouterr()
    assert f"{run} holds a finished run (10 of 10 steps)" in out.err and "Results in" in out.out
    assert file_hashes(run) == finished


def _failing_save(fail_at: int, error: BaseException):
    """orbax's ``CheckpointManager.save``, raising ``error`` for step ``fail_at`` as TensorStore does."""
    import orbax.checkpoint as ocp

    original = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == fail_at:
            raise error
        return original(self, step, *args, **kwargs)

    return save


FULL = "RESOURCE_EXHAUSTED: Error writing local file \"{path}/_sharding\": No space left on device [os_error_code='28']"


def test_an_os_error_is_one_line_with_the_path_and_reason_and_the_checkpoints_stay(
    tmp_path, text_file, capsys, monkeypatch
):
    """A full disk mid-save (as TensorStore reports it through orbax), a read-only run directory and the
    checkpoints of another cell: one line each, exit code 1, and the checkpoints written before are intact, so
    the rerun resumes from them. (A real full disk, a 300 KiB tmpfs, gave the same line.)"""
    import orbax.checkpoint as ocp

    run = tmp_path / "run"
    step_10 = run.absolute() / "checkpoints" / "step_10"
    monkeypatch.setattr(ocp.CheckpointManager, "save", _failing_save(10, ValueError(FULL.format(path=step_10))))
    assert _train(text_file, run, 10) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"rnnx train: error: {step_10}: No space left on device"
    assert "Traceback" not in err and _steps(run / "checkpoints") == [5]
    monkeypatch.undo()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(run / "rnnx.lock.os"))

    monkeypatch.setattr(checkpoint, "lock", read_only)
    before = file_hashes(run)
    assert _train(text_file, run, 10) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"rnnx train: error: {run}/rnnx.lock.os: Read-only file system"
    assert file_hashes(run) == before
    monkeypatch.undo()
    assert _train(text_file, run, 10) == 0
    assert f"resuming from step 5 of 10 (checkpoint {run.absolute()}/checkpoints/step_5)" in capsys.readouterr().err
    # Checkpoints of another cell: config.json rewritten for an lstm (as a refused writer once did).
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(saved | {"cell": "lstm"}))
    (run / "results.json").unlink()
    assert _train(text_file, run, 10, "--cell", "lstm") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith(
        f"rnnx train: error: {run.absolute()}/checkpoints/step_10 holds a different architecture"
    )
    assert err.splitlines()[-1].endswith("Pass another --run-dir, or delete that one to start afresh")


def test_jax_platforms_naming_a_missing_device_is_one_line():
    platform = "cuda" if jax.default_backend() == "cpu" else "tpu"
    done = subprocess.run(
        [sys.executable, "-m", "rnnx", "gradients", "--length", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"JAX_PLATFORMS": platform},
    )
    assert done.returncode == 2 and done.stderr.startswith(
        f"rnnx gradients: error: JAX could not start JAX_PLATFORMS={platform}"
    ), done.stderr[-2000:]
    assert len(done.stderr.splitlines()) == 1


def test_a_run_that_did_not_learn_exits_3_after_its_results_and_a_tie_is_a_tie(capsys):
    from rnnx.apps import summary
    from rnnx.apps.config import LanguageModelConfig

    result = {
        "test_bits_per_char": 2.3601,
        "ngram_test_bits_per_char": 2.3604,
        "uniform_bits_per_char": 6.443,
        "test_perplexity": 5.13,
        "steps": 10,
        "train_seconds": 1.0,
        "ngram_order": 5,
        "plot": None,
        "sample": {"temperature": 0.8, "prompt": "a", "text": "b"},
    }
    summary.language_model(LanguageModelConfig(), result)
    tie = "held-out 2.360 bits/char (perplexity 5.13), level with the 5-gram baseline's 2.360"
    assert tie in capsys.readouterr().out
    diverged = result | {"test_bits_per_char": 3.2996e32, "test_perplexity": math.inf}
    with pytest.raises(summary.DidNotLearn, match=r"held-out 3\.300e\+32 bits/char is no better than a uniform"):
        summary.language_model(LanguageModelConfig(), diverged)
    assert "held-out 3.300e+32 bits/char (perplexity inf), 3.300e+32 behind" in capsys.readouterr().out


def _interrupted_run(run_dir, text_file, signals: int):
    """``rnnx train`` in a subprocess, sent ``signals`` SIGINTs once it trains; returns (exit code, stderr)."""
    argv = ["train", "--dataset", str(text_file), "--steps", "100000", "--run-dir", str(run_dir), *TINY_LM]
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnx", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = run_dir / "metrics.jsonl"
    for _ in range(600):
        if log.exists() and log.stat().st_size:  # training: its first record is written
            break
        time.sleep(0.1)
    for _ in range(signals):
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def test_ctrl_c_finishes_the_step_checkpoints_it_and_a_rerun_resumes_from_there(tmp_path, text_file, capsys):
    code, err = _interrupted_run(tmp_path / "run", text_file, 1)
    last = err.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in err, err[-2000:]
    step = int(re.fullmatch(r"rnnx train: interrupted at step (\d+); rerun the same command to resume", last)[1])
    assert _steps(tmp_path / "run" / "checkpoints")[-1] == step
    from rnnx.apps.cli import main

    argv = ["train", "--dataset", str(text_file), "--run-dir", str(tmp_path / "run"), *TINY_LM]
    assert main([*argv, "--steps", str(step + 2)]) == 0
    assert f"resuming from step {step} of {step + 2}" in capsys.readouterr().err


def test_a_second_ctrl_c_stops_at_once_and_one_outside_training_raises(monkeypatch, capsys):
    """The handler itself (two signals sent at once may reach Python as one, so a subprocess cannot tell)."""
    from rnnx.apps import interrupts

    handler = interrupts.CtrlC("rnnx train")
    with pytest.raises(KeyboardInterrupt):  # before the loop runs: nothing to finish
        handler.handle(signal.SIGINT, None)
    assert handler() is False  # fit asks after a step: from now on a step can be finished
    handler.handle(signal.SIGINT, None)
    assert handler() is True and "stopping after this step" in capsys.readouterr().err

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    with pytest.raises(SystemExit) as stopped:
        handler.handle(signal.SIGINT, None)
    assert stopped.value.code == 130 and capsys.readouterr().err == "rnnx train: interrupted again: stopping now\n"
    after = interrupts.CtrlC("rnnx train")
    after()
    after.watch(lambda record: None)({"event": "trained", "step": 5, "message": "trained"})
    with pytest.raises(KeyboardInterrupt):  # scoring the baselines: nothing to finish either
        after.handle(signal.SIGINT, None)


def test_a_step_pruned_while_it_is_read_is_not_damaged_and_the_newest_is_read(tmp_path, monkeypatch):
    """As ``rnnx generate`` beside a run that trains: the step it reads is pruned meanwhile, and a newer one
    written; it reads the newer one without calling anything damaged."""
    directory = tmp_path / "run"
    faulty_fit.run(directory, steps=10)  # steps 5 and 10
    original, calls = checkpoint._restore_step, []

    def pruned_meanwhile(manager, step, like, net):
        calls.append(step)
        if len(calls) == 1:  # the trainer writes step 15 and prunes step 10 while it is read
            shutil.copytree(directory / "step_10", directory / "step_15")
            shutil.rmtree(directory / "step_10")
        return original(manager, step, like, net)

    monkeypatch.setattr(checkpoint, "_restore_step", pruned_meanwhile)
    loss_fn, _, params = faulty_fit.problem()
    like = train.initial_state(train.make_train_step(loss_fn, train.default_optimizer()), params)
    with checkpoint.manager(directory, read_only=True) as manager:
        step, _, _ = checkpoint.restore_latest(manager, like, on_damaged=pytest.fail)
    assert (calls, step) == ([10, 15], 15)


def test_generate_streams_its_text_in_chunks_that_join_to_one_sample():
    from rnnx.apps import models

    model = models.language_model(rnnx.stacked(rnnx.gru(8)), 12, 4)
    params = model.init(jax.random.key(0))
    key = jax.random.key(1)
    chunks = list(models.sample_chunks(model, params, [5, 6], length=250, key=key, chunk=100))
    assert [len(c) for c in chunks] == [100, 100, 50]
    whole = models.sample(model, params, [5, 6], length=250, key=key)
    assert [t for c in chunks for t in c] == whole  # the tokens do not depend on the chunk size
    endless = models.sample_chunks(model, params, [5, 6], length=None, key=key, chunk=50)
    assert [t for _ in range(5) for t in next(endless)] == whole  # --length without bound streams on


def test_pruning_keeps_the_newest_checkpoints_and_the_best_one(tmp_path):
    loss_fn, batches, params = faulty_fit.problem()
    scores = iter([3.0, 1.0, 2.0, 2.5])  # the best evaluation is the second, at step 10
    evaluation = train.Evaluation(lambda p: {"loss": next(scores)}, every=5)
    hooks = train.Checkpoints(tmp_path / "run", every=5, max_to_keep=1)
    train.fit(loss_fn, params, batches, steps=20, evaluation=evaluation, checkpoints=hooks)
    assert _steps(tmp_path / "run") == [10, 20]
    with checkpoint.manager(tmp_path / "run", read_only=True) as manager:
        assert checkpoint.read_extra(manager, 20)["best_step"] == 10


# ------------------------------------------------------------------------------------- fit's arguments

_EVAL = train.Evaluation(lambda p: {"loss": 1.0}, every=5)
BAD_ARGUMENTS = [
    ({"clip_norm": -1.0}, "clip_norm must be a finite number >= 0, or None for no clipping; received -1.0"),
    ({"clip_norm": math.inf}, "clip_norm must be a finite number >= 0, or None for no clipping; received inf"),
    ({"clip_norm": math.nan}, "clip_norm must be a finite number >= 0, or None for no clipping; received nan"),
    ({"clip_norm": "1"}, "clip_norm must be a finite number >= 0, or None for no clipping; received '1'"),
    ({"log_every": 0}, "log_every must be a positive integer, received 0"),
    ({"steps": 0}, "steps must be a positive integer, received 0"),
    ({"steps": True}, "steps must be a positive integer, received True"),
    ({"steps": 2.0}, "steps must be a positive integer, received 2.0"),
    ({"evaluation": _EVAL._replace(every=0)}, "Evaluation.every must be a positive integer, received 0"),
    ({"evaluation": _EVAL._replace(patience=0)}, "Evaluation.patience must be a positive integer, received 0"),
    ({"evaluation": _EVAL._replace(mode="low")}, "mode must be 'min' or 'max', received 'low'"),
    ({"on_nonfinite": "ignore"}, "on_nonfinite must be one of ('raise', 'skip_update'), received 'ignore'"),
    ({"params": None}, "params must hold at least one array to train, received None"),
    ({"params": {"w": {}}}, "params must hold at least one array to train, received {'w': {}}"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_ARGUMENTS, ids=[m[:40] for _, m in BAD_ARGUMENTS])
def test_fit_refuses_an_argument_that_would_silently_go_wrong(kwargs, message):
    loss_fn, batches, params = faulty_fit.problem()
    with pytest.raises(ValueError) as caught:
        train.fit(loss_fn, **({"params": params, "batches": batches, "steps": 5} | kwargs))
    assert str(caught.value) == message


def test_fit_refuses_batches_that_yield_none_and_says_when_they_run_out():
    loss_fn, batches, params = faulty_fit.problem()
    for empty in ([], iter([]), lambda epoch: []):
        with pytest.raises(ValueError, match=r"batches(\(0\) returned no batches| yielded no batch)"):
            train.fit(loss_fn, params, empty, steps=5)
    with pytest.warns(UserWarning, match=r"training ended early: the batches ran out after 3 of 5 steps"):
        short = train.fit(loss_fn, params, batches(0)[:3], steps=5)
    assert (short.step, short.stopped_early, short.stop_reason) == (3, True, "the batches ran out after 3 of 5 steps")


WRONG_RETURNS = [
    ("evaluate", lambda p: 0.5, "Evaluation.evaluate must return a dict of scalars such as {'loss': 0.5}, received"),
    ("evaluate", lambda p: {"acc": 0.5}, "Evaluation.monitor is 'loss', but evaluate returned only ['acc']"),
    ("evaluate", lambda p: {"loss": jnp.ones(3)}, "Evaluation.evaluate must return scalars, but 'loss' is ArrayImpl"),
    ("loss_fn", lambda p, b, k: jnp.sum(p["w"]), "loss_fn must return (loss, metrics), received an array of shape ()"),
    ("loss_fn", lambda p, b, k: (p["w"], {}), "loss_fn must return a scalar loss in (loss, metrics), received shape"),
]


@pytest.mark.parametrize(("which", "function", "message"), WRONG_RETURNS, ids=[m[:40] for *_, m in WRONG_RETURNS])
def test_a_loss_or_evaluation_of_the_wrong_form_is_named_in_one_line(which, function, message):
    loss_fn, batches, params = faulty_fit.problem()
    if which == "loss_fn":
        loss_fn, evaluation = function, None
    else:
        evaluation = train.Evaluation(function, every=1)
    with pytest.raises((TypeError, ValueError)) as caught:
        train.fit(loss_fn, params, batches, steps=1, evaluation=evaluation)
    assert str(caught.value).splitlines()[0].startswith(message)
