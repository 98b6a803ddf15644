"""``rnnx train`` on several devices and processes: ``--devices 2`` equals ``--devices 1``, two processes of one
device equal one process of two, a checkpoint written on two devices resumes on one, and device counts that
cannot work are refused before any data is read.

Every training run is a subprocess (forced CPU devices need ``XLA_FLAGS`` before jax starts, and
``jax.distributed`` initialises once per process) with a timeout: a tiny GRU on a generated text, a tiny
classifier on a generated CSV. The runs start together in one fixture and share the cores; the tests read
their ``results.json``.
"""

import json
import os
import random
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rnnx.apps import cli, data, experiments
from rnnx.apps.config import ConfigError
from rnnx.training import distributed

pytestmark = pytest.mark.slow  # subprocesses or whole runs: the full tier only

TIMEOUT = 300  # seconds for all the runs together

LM = (
    "--steps 6 --eval-every 3 --hidden 16 --embed 8 --layers 1 --batch-size 4 --window 20 --eval-chars 2000 "
    "--ngram-orders 2 --schedule constant --no-progress"
).split()
CLASSIFY = (
    "--task classify --steps 6 --eval-every 3 --test-size 16 --batch-size 8 --hidden 8 --embed 8 "
    "--learning-rate 0.01 --no-progress"
).split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # compiling is most of these runs' time
    for name in distributed.ENVIRONMENT:
        env.pop(name, None)
    return env


def _rnnx(args, devices: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rnnx", *map(str, args)]
    return subprocess.run(command, env=_env(devices), capture_output=True, text=True, timeout=TIMEOUT)


# Several runs one after another in one process (one start of jax for all): ``rnnx.apps.cli.main`` on each
# argument list, each run's exit code and results.json (as that run left it) written to a JSON file.
_SEQUENCE = textwrap.dedent(
    """
    import json, pathlib, sys
    from rnnx.apps.cli import main
    runs, found = json.loads(sys.argv[1]), {}
    for name, argv in runs:
        code = main(argv)
        results = pathlib.Path(argv[argv.index("--run-dir") + 1]) / "results.json"
        found[name] = [code, json.loads(results.read_text()) if code == 0 else None]
        pathlib.Path(sys.argv[2]).write_text(json.dumps(found))
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every training run: the one-process runs in order in one subprocess, beside the two processes of a
    job. Returns ``{name: (exit code, results.json)}``, the two processes' completed runs and the seconds."""
    root = tmp_path_factory.mktemp("scale")
    rng = random.Random(0)
    words = "the king and queen of a to my lord good thou art sir love night day".split()
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "." for _ in range(1500))
    (root / "text.txt").write_text(text)
    rows = ["text,label"] + [f"{'great fine good' if i % 2 else 'awful bad poor'} film {i},{i % 2}" for i in range(80)]
    (root / "reviews.csv").write_text("\n".join(rows))
    lm = ["train", "--dataset", str(root / "text.txt"), *LM]
    classify = ["train", "--dataset", str(root / "reviews.csv"), *CLASSIFY]
    sequence = [
        ("one", lm + ["--run-dir", str(root / "one"), "--devices", "1"]),
        ("two", lm + ["--run-dir", str(root / "two"), "--devices", "2"]),
        # the checkpoint of step 6 written on 2 devices, resumed on 1 device for 3 steps more
        ("two_resumed", lm + ["--run-dir", str(root / "two"), "--devices", "1", "--steps", "9"]),
        ("classify_one", classify + ["--run-dir", str(root / "c1"), "--devices", "1"]),
        ("classify_two", classify + ["--run-dir", str(root / "c2"), "--devices", "2"]),
    ]
    pair = ["--run-dir", root / "pair", "--coordinator-address", f"127.0.0.1:{_free_port()}", "--num-processes", 2]
    commands = [
        ([sys.executable, "-c", _SEQUENCE, json.dumps(sequence), str(root / "found.json")], 2),
        *(([sys.executable, "-m", "rnnx", *map(str, lm + pair + ["--process-id", i])], 1) for i in (0, 1)),
    ]
    start = time.monotonic()
    processes = [
        subprocess.Popen(command, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command, devices in commands
    ]
    done = []
    try:
        for p in processes:
            out, err = p.communicate(timeout=max(1.0, start + TIMEOUT - time.monotonic()))
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"runs still going after {TIMEOUT} s: {[p.poll() for p in processes]}")
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert done[0].returncode == 0, done[0].stderr[-3000:]
    found = {name: tuple(value) for name, value in json.loads((root / "found.json").read_text()).items()}
    pair_results = json.loads((root / "pair" / "results.json").read_text()) if done[1].returncode == 0 else None
    found["process0"], found["process1"] = (done[1].returncode, pair_results), (done[2].returncode, None)
    return {**found, "log": done[0].stderr, "pair": done[1:], "root": root, "seconds": time.monotonic() - start}


def _ok(runs, name) -> dict:
    code, results = runs[name]
    logs = [runs["log"]] + [f"process {i}: {p.stderr}" for i, p in enumerate(runs["pair"])]
    assert code == 0, f"{name} exited with {code}: " + "\n".join(log[-2000:] for log in logs)
    return results


def _same_metrics(got: dict, expected: dict, keys) -> None:
    for key in keys:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=key)
    assert [h["step"] for h in got["history"]] == [h["step"] for h in expected["history"]]
    for mine, theirs in zip(got["history"], expected["history"]):
        for name in mine.keys() - {"step"}:
            np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-5, err_msg=f"step {mine['step']}: {name}")


def test_two_devices_give_the_one_device_metrics(runs):
    """Six Adam steps of a GRU language model, the global batch of 4 split over 2 devices: held-out
    bits/char and every evaluation equal the one-device run's to float32 round-off."""
    one, two = _ok(runs, "one"), _ok(runs, "two")
    _same_metrics(two, one, ["test_bits_per_char", "test_perplexity"])
    assert one["history"][-1]["bits_per_char"] < one["history"][0]["bits_per_char"]  # it trained
    print(f"all runs: {runs['seconds']:.1f} s")


def test_a_checkpoint_from_two_devices_resumes_on_one(runs):
    """The run of 6 steps on 2 devices goes on to 9 steps on 1 device, from its checkpoint of step 6."""
    before, after = _ok(runs, "two"), _ok(runs, "two_resumed")
    assert after["steps"] == 9 and [h["step"] for h in after["history"]] == [3, 6, 9]
    assert after["history"][:2] == before["history"]
    assert after["history"][2]["bits_per_char"] < after["history"][1]["bits_per_char"]  # it trained on
    assert "resuming from step 6" in (runs["root"] / "two" / "metrics.jsonl").read_text()


def test_two_processes_of_one_device_equal_one_process_of_two(runs):
    """Each process holds its half of the lanes; only process 0 prints and writes the run's files."""
    together, alone = _ok(runs, "process0"), _ok(runs, "two")
    _ok(runs, "process1")
    _same_metrics(together, alone, ["test_bits_per_char", "test_perplexity", "ngram_test_bits_per_char"])
    assert together["characters"] == alone["characters"]
    first, second = runs["pair"]
    assert "Results in" in first.stdout and "baseline:" in first.stderr
    assert "Results in" not in second.stdout and "baseline:" not in second.stderr, second.stderr[-2000:]
    records = (runs["root"] / "pair" / "metrics.jsonl").read_text().splitlines()
    assert sum('"eval"' in line for line in records) == 2  # one writer: each evaluation logged once


def test_a_classifier_on_two_devices_gives_the_one_device_metrics(runs):
    one, two = _ok(runs, "classify_one"), _ok(runs, "classify_two")
    _same_metrics(two, one, ["test_accuracy", "test_loss"])


def test_a_batch_that_does_not_divide_over_the_devices_is_refused_in_one_line(tmp_path):
    done = _rnnx(["train", "--batch-size", "3", "--devices", "2", "--run-dir", tmp_path / "run"], devices=2)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "rnnx train: error: --batch-size must be a multiple of --devices 2 (the global batch is split evenly over "
        "the devices), received 3"
    ]
    assert not (tmp_path / "run").exists()  # refused before anything was read or written


def test_bad_scale_flags_are_refused_before_jax_starts(capsys):
    assert cli.main(["train", "--devices", "0"]) == 2
    assert "--devices must be a positive integer or 'all', received '0'" in capsys.readouterr().err
    assert cli.main(["train", "--devices", "many"]) == 2
    assert "--devices must be a positive integer or 'all', received 'many'" in capsys.readouterr().err
    assert cli.main(["train", "--num-processes", "2", "--process-id", "2"]) == 2
    assert "--process-id must be in [0, --num-processes 2), received 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "devices, visible, processes, batch_size, message",
    [
        (4, 2, 1, 8, "--devices must be at most 2, the devices JAX sees, received 4"),
        (3, 4, 2, 12, "--devices must be a multiple of the 2 processes (each gives the mesh as many devices)"),
        ("all", 4, 2, 6, "--batch-size must be a multiple of --devices 4 (the global batch is split evenly"),
        (None, 2, 2, 3, "--batch-size must be a multiple of the 2 processes (each feeds an equal slice"),
    ],
)
def test_device_counts_that_cannot_work_name_both_numbers(devices, visible, processes, batch_size, message):
    with pytest.raises(ConfigError) as error:
        cli.device_count(devices, visible=visible, processes=processes, batch_size=batch_size)
    assert str(error.value).startswith(message)


def test_device_count_defaults_to_one_device_in_one_process_and_every_device_in_several():
    assert cli.device_count(None, visible=8, processes=1, batch_size=4) == 1
    assert cli.device_count(None, visible=8, processes=2, batch_size=8) == 8
    assert cli.device_count("all", visible=8, processes=1, batch_size=16) == 8
    assert cli.device_count(2, visible=8, processes=1, batch_size=6) == 2


@pytest.mark.parametrize("count", [1, 2, 4])
def test_each_process_cuts_exactly_its_lanes_from_its_part_of_the_stream(count):
    ids = np.arange(1003, dtype=np.int32)
    whole = data.stream_windows(ids, batch_size=8, window=7)
    parts = []
    for index in range(count):
        rows = distributed.process_shard(8, index=index, count=count)
        lanes = slice(rows.start, rows.stop)
        parts.append(experiments._process_windows(ids, 8, 7, lanes))
        np.testing.assert_array_equal(parts[-1], whole[:, lanes])
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)  # every lane once
