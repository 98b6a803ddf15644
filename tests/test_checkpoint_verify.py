"""rnnx.training.checkpoint, verified: checksums recorded at save and checked at restore; each way of damaging
the newest step falls back to the older one, bit for bit, with one one-line message; the lock and prune."""

import gc
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnx
from rnnx.training import checkpoint

CheckpointError = checkpoint.CheckpointError
H, D = 4, 3


def _bits(tree):
    def raw(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        return np.asarray(a).tobytes(), np.asarray(a).dtype

    return jax.tree.map(raw, tree)


def _state(seed: int) -> dict:
    """``noise`` is incompressible, so zstd stores it raw and orbax cannot notice bytes overwritten in it."""
    keys = jax.random.split(jax.random.key(seed), 3)
    return {
        "noise": jax.random.bits(keys[0], (64, 64), jnp.uint32),
        "w": jax.random.normal(keys[1], (8, 8)).astype(jnp.bfloat16),
        "rng": keys[2],
        "step": jnp.int32(seed),
    }


@pytest.fixture
def two_steps(tmp_path):
    """``directory/step_1`` and ``directory/step_2``, of different values; returns the directory and states."""
    states = {1: _state(1), 2: _state(2)}
    with checkpoint.manager(tmp_path / "run") as manager:
        for step, state in states.items():
            checkpoint.save_step(manager, step, state, extra={"saved_at": step})
    return tmp_path / "run", states


def _data_files(step_dir):
    return [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"]


def _biggest(step_dir):
    return max(_data_files(step_dir), key=lambda f: f.stat().st_size)


def _overwrite_middle(step_dir):
    target = _biggest(step_dir)
    with open(target, "r+b") as file:
        file.seek(target.stat().st_size // 2 - 32)
        file.write(b"\xab" * 64)


CORRUPTIONS = {  # name: (damage(step_dir), what the message must say)
    "truncated_array_file": (lambda d: os.truncate(_biggest(d), _biggest(d).stat().st_size // 2), "OUT_OF_RANGE"),
    "deleted_array_file": (lambda d: _biggest(d).unlink(), "cannot read state"),
    "deleted_ocdbt_manifest": (lambda d: (d / "state" / "manifest.ocdbt").unlink(), "NOT_FOUND"),
    "bytes_overwritten_in_array_file": (_overwrite_middle, r"checksum mismatch in \['noise'\]: 1 of 4 arrays"),
    "deleted_commit_file": (lambda d: (d / "commit_success.txt").unlink(), "commit_success.txt missing"),
    "garbled_json_record": (lambda d: (d / "rnnx" / "metadata").write_text("{garbled"), "cannot read rnnx/metadata"),
    "deleted_state_item": (lambda d: shutil.rmtree(d / "state"), r"items \['state'\] missing"),
}


def test_a_saved_step_records_a_checksum_of_every_array_and_round_trips(two_steps):
    directory, states = two_steps
    record = json.loads((directory / "step_2" / "rnnx" / "metadata").read_text())
    assert record["format"] == "rnnx-checkpoint/2" and record["extra"] == {"saved_at": 2}
    raw = {"['noise']": states[2]["noise"], "['rng']": jax.random.key_data(states[2]["rng"])}
    for key, array in raw.items():
        assert record["checksums"][key] == hashlib.blake2b(np.asarray(array).tobytes(), digest_size=16).hexdigest()
    assert sorted(record["checksums"]) == sorted(record["arrays"]) == ["['noise']", "['rng']", "['step']", "['w']"]
    like = _state(7)
    with checkpoint.manager(directory, read_only=True) as manager:
        assert _bits(checkpoint.restore_step(manager, 2, like)) == _bits(states[2])
        step, state, extra = checkpoint.restore_latest(manager, like, on_damaged=pytest.fail)
        assert (step, extra, _bits(state)) == (2, {"saved_at": 2}, _bits(states[2]))
        assert checkpoint.read_extra(manager, 1) == {"saved_at": 1}


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # orbax's leftovers, printed late
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_damaged_newest_step_falls_back_to_the_older_one_bit_for_bit(two_steps, corruption, capfd, caplog):
    directory, states = two_steps
    damage, reason = CORRUPTIONS[corruption]
    damage(directory / "step_2")
    messages = []
    with checkpoint.manager(directory) as manager:
        step, state, extra = checkpoint.restore_latest(manager, _state(7), on_damaged=messages.append)
        with pytest.raises(CheckpointError, match=reason) as raised:
            checkpoint.restore_step(manager, 2, _state(7))
    assert (step, extra, _bits(state)) == (1, {"saved_at": 1}, _bits(states[1]))
    (message,) = messages
    assert "\n" not in message and len(message) < 500, message
    assert message.startswith(f"checkpoint {directory / 'step_2'} is damaged (")
    assert message.endswith("); falling back to an older one")
    assert re.search(reason, message)  # (which array fails first varies: orbax reads them concurrently)
    assert str(raised.value).startswith(message.split(" (")[0]) and "\n" not in str(raised.value)
    gc.collect()  # orbax's abandoned reads, if any were left, would print their tracebacks now
    printed = capfd.readouterr()
    assert not [word for word in ("Traceback", "tensorstore_spec", "Exception ignored") if word in printed.err]
    assert not [word for word in ("Traceback", "tensorstore_spec") if word in caplog.text]


def test_orbax_alone_misses_overwritten_bytes(two_steps):
    """Why the checksums: orbax reads the altered array back without complaint."""
    import orbax.checkpoint as ocp

    directory, states = two_steps
    _overwrite_middle(directory / "step_2")
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), states[2])
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as reader:
        noise = reader.restore(directory / "step_2" / "state", ocp.args.StandardRestore(target))["noise"]
    assert 1 <= int(jnp.sum(noise != states[2]["noise"])) <= 17  # 64 bytes: at most 17 uint32 values


def test_restore_of_one_directory_verifies_too(tmp_path):
    state = _state(3)
    path = checkpoint.save(tmp_path / "one", state)
    _overwrite_middle(path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {path} is damaged \(checksum mismatch in \['noise'\]"):
        checkpoint.restore(path, state)


def test_when_every_step_is_damaged_the_error_names_each_and_how_to_start_afresh(two_steps):
    directory, _ = two_steps
    _overwrite_middle(directory / "step_2")
    (directory / "step_1" / "commit_success.txt").unlink()
    messages = []
    with checkpoint.manager(directory) as manager:
        with pytest.raises(CheckpointError) as raised:
            checkpoint.restore_latest(manager, _state(7), on_damaged=messages.append)
    text = str(raised.value)
    assert "\n" not in text and text.startswith(f"no usable checkpoint in {directory}: ")
    assert "step_2 is damaged (checksum mismatch" in text  # the directory is named once, at the start
    assert "step_1 is damaged (commit_success.txt missing" in text
    assert text.endswith(f"delete {directory} to start afresh")
    assert len(messages) == 1 and "step_2" in messages[0]  # no "falling back" for the oldest


def test_a_damaged_step_is_never_passed_over_silently(two_steps):
    directory, states = two_steps
    (directory / "step_2" / "commit_success.txt").unlink()
    with checkpoint.manager(directory) as manager:
        with pytest.warns(UserWarning, match=r"step_2 is damaged .*; falling back to an older one"):
            step, state, _ = checkpoint.restore_latest(manager, _state(7))
    assert step == 1 and _bits(state) == _bits(states[1])


def test_another_architecture_is_a_value_error_without_fallback(tmp_path):
    net = rnnx.stacked(rnnx.lstm(H))
    params = net.init(jax.random.key(0), D)
    with checkpoint.manager(tmp_path / "run") as manager:
        checkpoint.save_step(manager, 1, params, net=net)
        checkpoint.save_step(manager, 2, params, net=net)
        gru = rnnx.stacked(rnnx.gru(H))
        with pytest.raises(ValueError, match=r"holds a different architecture: .*'cell': \('lstm', 'gru'\)"):
            checkpoint.restore_latest(manager, params, net=gru, on_damaged=pytest.fail)
        assert checkpoint.restore_latest(manager, params, net=net, on_damaged=pytest.fail)[0] == 2


def test_no_steps_gives_none_and_a_first_format_checkpoint_is_read_unverified(tmp_path, two_steps):
    with checkpoint.manager(tmp_path / "empty") as manager:
        assert checkpoint.restore_latest(manager, _state(7)) is None
    directory, states = two_steps
    record_file = directory / "step_2" / "rnnx" / "metadata"
    record = json.loads(record_file.read_text())
    record_file.write_text(
        json.dumps({"format": "rnnx-checkpoint/1", **{k: record[k] for k in ("architecture", "arrays")}})
    )
    (directory / "step_2" / "commit_success.txt").unlink()  # older orbax versions did not write it
    with checkpoint.manager(directory) as manager:
        step, state, extra = checkpoint.restore_latest(manager, _state(7), on_damaged=pytest.fail)
        assert (step, extra, _bits(state)) == (2, {}, _bits(states[2]))
        assert checkpoint.read_extra(manager, 2) == {}


def test_extra_must_be_a_json_serialisable_dict(tmp_path):
    with checkpoint.manager(tmp_path / "run") as manager:
        with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
            checkpoint.save_step(manager, 1, _state(1), extra={"when": object()})
        with pytest.raises(TypeError, match="extra must be a JSON-serialisable dict or None, received list"):
            checkpoint.save_step(manager, 1, _state(1), extra=[1])
        assert manager.all_steps() == []


def test_prune_keeps_the_newest_and_the_protected_steps(tmp_path):
    with checkpoint.manager(tmp_path / "run") as manager:
        for step in (10, 20, 30, 40, 50):
            checkpoint.save_step(manager, step, {"w": jnp.full(2, step)})
        assert checkpoint.prune(manager, keep=2, protect=[10, None]) == [20, 30]
        assert sorted(manager.all_steps()) == [10, 40, 50]
        assert checkpoint.prune(manager, keep=0, protect=(40,)) == [10, 50]
        with pytest.raises(ValueError, match="keep must be >= 0, received -1"):
            checkpoint.prune(manager, keep=-1)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_40"]


# -------------------------------------------------------------------------------------------------- lock


def _hold(directory, pid, host=None):
    directory.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "started": "2025-01-02T03:04:05+00:00"}
    (directory / "rnnx.lock").write_text(json.dumps(record))


def test_the_lock_is_held_for_the_block_and_released_after(tmp_path):
    directory = tmp_path / "new" / "run"
    with checkpoint.lock(directory, on_stale=pytest.fail) as path:
        assert path == directory / "rnnx.lock"
        held = json.loads(path.read_text())
        assert (held["pid"], held["host"]) == (os.getpid(), socket.gethostname()) and held["started"]
        with pytest.raises(CheckpointError, match=rf"in use by process {os.getpid()} .*wait for it to finish"):
            with checkpoint.lock(directory):  # one holder at a time, this process included
                pass
        with checkpoint.manager(directory) as manager:  # the lock file does not disturb orbax's step listing
            checkpoint.save_step(manager, 1, {"w": jnp.zeros(2)})
            assert manager.all_steps() == [1]
    assert sorted(p.name for p in directory.iterdir()) == ["step_1"]
    with checkpoint.lock(directory, enabled=False) as path:
        assert path is None and not (directory / "rnnx.lock").exists()


def test_a_live_holder_is_refused_naming_its_pid(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        _hold(tmp_path, sleeper.pid)
        with pytest.raises(CheckpointError) as raised:
            with checkpoint.lock(tmp_path, on_stale=pytest.fail):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    text = str(raised.value)
    assert "\n" not in text
    assert text == (
        f"{tmp_path} is in use by process {sleeper.pid} on {socket.gethostname()} since 2025-01-02T03:04:05+00:00 "
        f"(lock file {tmp_path / 'rnnx.lock'}); wait for it to finish or stop it"
    )
    assert json.loads((tmp_path / "rnnx.lock").read_text())["pid"] == sleeper.pid  # left alone


def test_a_dead_holders_lock_is_taken_over_and_reported(tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()  # reaped: its pid names no process
    _hold(tmp_path, finished.pid)
    stale = []
    with checkpoint.lock(tmp_path, on_stale=stale.append) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    (message,) = stale
    assert "\n" not in message and message.startswith(f"took over the stale lock of process {finished.pid} on ")
    assert not path.exists() and sorted(os.listdir(tmp_path)) == []  # nothing left behind
    with pytest.warns(UserWarning, match="took over the unreadable lock file"):
        (tmp_path / "rnnx.lock").write_text("{half a rec")
        with checkpoint.lock(tmp_path):
            pass


def test_a_holder_on_another_host_cannot_be_checked(tmp_path):
    _hold(tmp_path, 1, host="elsewhere.invalid")
    lock_file = tmp_path / "rnnx.lock"
    with pytest.raises(CheckpointError, match=rf"process 1 on elsewhere.invalid .*if it is gone, delete {lock_file}$"):
        with checkpoint.lock(tmp_path, on_stale=pytest.fail):
            pass


def test_the_lock_file_of_a_process_that_took_over_is_not_removed_on_exit(tmp_path):
    with checkpoint.lock(tmp_path) as path:
        _hold(tmp_path, 1)  # judged stale elsewhere and taken over meanwhile
    assert json.loads(path.read_text())["pid"] == 1
