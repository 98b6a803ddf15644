"""The run lock (rnnx.training.run_lock) is filelock's OS lock, which the kernel releases when its holder dies:
a live holder refuses a second writer in one line naming its pid, host and start time; a SIGKILLed holder's lock
is taken over whatever its recorded pid names now (nothing, init, this very process, another live process)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from rnnx.training import checkpoint

pytestmark = pytest.mark.slow  # subprocesses or whole runs: the full tier only

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from rnnx.training import checkpoint\nwith checkpoint.lock(sys.argv[1]):\n"
HOLD += "    print('locked', flush=True); time.sleep(120)"


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of ``tmp_path/run``, started and waited for; killed at the end."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "run")], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait(timeout=30)


def test_a_live_holder_refuses_a_second_writer_naming_its_pid_host_and_start(tmp_path, holder):
    directory = tmp_path / "run"
    record = json.loads((directory / "rnnx.lock").read_text())
    assert (record["pid"], record["host"], record["os_lock"]) == (holder.pid, socket.gethostname(), "rnnx.lock.os")
    with pytest.raises(checkpoint.CheckpointError) as refused:
        with checkpoint.lock(directory, on_stale=pytest.fail):
            pass
    assert str(refused.value) == (
        f"{directory} is in use by process {holder.pid} on {socket.gethostname()} since {record['started']} "
        f"(lock file {directory / 'rnnx.lock'}); wait for it to finish or stop it"
    )
    assert json.loads((directory / "rnnx.lock").read_text()) == record  # the refused writer touched nothing


def _kill(holder) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)


@pytest.mark.parametrize("recorded", ["dead", "init", "this process", "another live process"])
def test_a_sigkilled_holders_lock_is_taken_over_whatever_its_pid_names_now(tmp_path, holder, recorded):
    directory = tmp_path / "run"
    _kill(holder)  # the kernel releases its OS lock; its record stays
    path = directory / "rnnx.lock"
    record = json.loads(path.read_text())
    with subprocess.Popen(["sleep", "60"]) as other:
        pid = {"dead": holder.pid, "init": 1, "this process": os.getpid(), "another live process": other.pid}[recorded]
        path.write_text(json.dumps(record | {"pid": pid}))  # as if the pid were reused (a container's pid 1)
        stale = []
        with checkpoint.lock(directory, on_stale=stale.append) as held:
            assert json.loads(held.read_text())["pid"] == os.getpid()
        other.kill()
    (message,) = stale
    assert message == (
        f"took over the stale lock of process {pid} on {socket.gethostname()}, started {record['started']}, which "
        f"ended without releasing it ({path})"
    )
    assert sorted(os.listdir(directory)) == []  # the record and the OS lock file are gone


def test_a_record_of_rnnx_0_1_naming_this_process_is_stale(tmp_path):
    """rnnx 0.1.0's lock took no OS lock, so its records (without "os_lock") are judged by their pid; this
    process's own pid there (rerun as pid 1 in a fresh container) is a reused one."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2025-01-02T03:04:05+00:00"}
    (tmp_path / "rnnx.lock").write_text(json.dumps(record))
    stale = []
    with checkpoint.lock(tmp_path, on_stale=stale.append):
        pass
    assert stale == [
        f"took over the stale lock of process {os.getpid()} on {socket.gethostname()}, started "
        f"2025-01-02T03:04:05+00:00 and no longer running ({tmp_path / 'rnnx.lock'})"
    ]
