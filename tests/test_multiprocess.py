"""Multi-process :func:`rnnx.training.fit`: 2 processes x 2 CPU devices on localhost equal 1 process x 4
devices, and a process that dies makes the other exit with an error in bounded time.

Every JAX process here is a subprocess (``jax.distributed`` can be initialised once per process, and forced
devices need ``XLA_FLAGS`` before jax starts), with a free port, a timeout, and a ``finally`` that kills
whatever is still running. The model is a stateful tiny GRU language model (global batch 8): each process
feeds its half of every global batch and of the carry.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import optax
import pytest

import rnnx
from rnnx import training as train
from rnnx.apps import models
from rnnx.training import distributed

pytestmark = pytest.mark.slow  # subprocesses or whole runs: the full tier only

TIMEOUT = 120  # seconds for any one run of processes

_WORKER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    start = time.perf_counter()
    mode, count, index, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    from rnnx.training import distributed
    if count > 1:
        distributed.initialize(f"127.0.0.1:{port}", count, index, heartbeat_timeout_seconds=5,
                               shutdown_timeout_seconds=5, initialization_timeout=60)
    import jax, numpy as np, optax
    from jax.sharding import Mesh
    import rnnx
    from rnnx import training as train
    from rnnx.apps import models

    B, T, V, E, H, STEPS = 8, 6, 11, 5, 8, 4
    local = B // count
    rows = slice(index * local, (index + 1) * local)  # this process's slice of every global batch
    model = models.language_model(rnnx.stacked(rnnx.gru(H)), V, E)
    params = model.init(jax.random.key(0))
    windows = np.random.default_rng(0).integers(0, V, size=(2, 3, B, T + 1)).astype(np.int32)

    def loss_fn(params, batch, key, carry):
        logits, carry = model.apply(params, batch[:, :-1], carry)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()
        return loss, ({}, carry)

    def on_log(record):
        if index == 1 and record["step"] == 1 and mode == "exit":
            os._exit(1)  # dies without a word to the coordinator; its sockets close
        if index == 1 and record["step"] == 1 and mode == "freeze":
            os.kill(os.getpid(), signal.SIGSTOP)  # hangs with its sockets open, as a wedged host would

    carry = model.net.default_carry(params["rnn"], (local,))
    if mode != "train":  # the failure tests need any all-reduce, not the GRU: a linear model compiles at once
        params, windows, carry = {"w": np.ones(T + 1, np.float32)}, windows.astype(np.float32), None
        loss_fn = lambda params, batch, key: (((batch @ params["w"]) ** 2).mean(), {})
    mesh = Mesh(np.array(jax.devices()), ("data",))
    here = os.path.join(os.path.dirname(out), "train2.checkpoints")  # only the 2-process run writes one
    hooks = train.Checkpoints(here, net=model.net) if (mode, count) == ("train", 2) else None
    got = train.fit(
        loss_fn, params, lambda epoch: list(windows[epoch % 2, :, rows]), steps=STEPS, optimizer=optax.adam(3e-2),
        initial_carry=carry, data_mesh=mesh, log_every=1, on_log=on_log,
        checkpoints=hooks,
    )
    leaves = jax.tree.leaves(got.last_params)
    np.savez(out, *[np.asarray(x) for x in leaves])
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(leaves, jax.tree.leaves(params)))
    print(json.dumps({"devices": jax.device_count(), "moved": moved, "local": jax.local_device_count(),
                      "replicated": all(x.sharding.is_fully_replicated for x in leaves),
                      "seconds": round(time.perf_counter() - start, 1)}))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, count: int, devices: int, tmp_path, port: int) -> list[subprocess.Popen]:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # compiling is nearly all of these runs' time
    for name in distributed.ENVIRONMENT:
        env.pop(name, None)
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                mode,
                str(count),
                str(i),
                str(port),
                str(tmp_path / f"{mode}{count}_{i}.npz"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]


def _finish(processes: list[subprocess.Popen], deadline: float) -> list[tuple[int | None, str, str]]:
    """``(returncode, stdout, stderr)`` of each process, killing all at ``deadline`` (and on any error)."""
    done = []
    try:
        for p in processes:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            done.append((p.returncode, out, err))
    except subprocess.TimeoutExpired:
        pytest.fail(f"processes still running after {TIMEOUT} s: {[p.poll() for p in processes]}")
    finally:
        _kill(processes)
    return done


def _kill(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_two_processes_of_two_devices_equal_one_process_of_four(tmp_path):
    """Four Adam steps across an epoch boundary; both processes end with the one-process params, to float32
    round-off, and the checkpoint the two processes wrote together restores on one device bit-exactly."""
    deadline = time.monotonic() + TIMEOUT
    pair = _launch("train", 2, 2, tmp_path, _free_port())
    single = _launch("train", 1, 4, tmp_path, 0)
    results = _finish(pair + single, deadline)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert [(r["devices"], r["local"], r["replicated"]) for r in reports] == [(4, 2, True), (4, 2, True), (4, 4, True)]
    one = np.load(tmp_path / "train1_0.npz")
    largest = 0.0
    for i in range(2):
        got = np.load(tmp_path / f"train2_{i}.npz")
        assert got.files == one.files
        for name in one.files:
            np.testing.assert_allclose(got[name], one[name], rtol=0, atol=1e-5, err_msg=f"process {i}, {name}")
            largest = max(largest, float(np.max(np.abs(got[name] - one[name]))))
    print(f"largest difference {largest:.2e}; seconds {[r['seconds'] for r in reports]}")
    assert min(r["moved"] for r in reports) > 0.05  # training moved the params, so agreement is not trivial

    # The checkpoint both processes wrote (the carry in two halves) restores in this one-device process.
    model = models.language_model(rnnx.stacked(rnnx.gru(8)), 11, 5)
    params = model.init(jax.random.key(0))
    like = train.initial_state(
        train.make_train_step(None, optax.adam(3e-2)), params, model.net.default_carry(params["rnn"], (8,))
    )
    restored = train.checkpoint.restore(tmp_path / "train2.checkpoints" / "step_4", like, net=model.net)
    got = np.load(tmp_path / "train2_0.npz")
    for name, leaf in zip(got.files, jax.tree.leaves(restored.train.params)):
        np.testing.assert_array_equal(np.asarray(leaf), got[name])


def test_a_process_that_dies_or_freezes_stops_the_other_with_an_error_in_bounded_time(tmp_path):
    """Process 1 exits (or stops, SIGSTOP) after its first step. When it exits, gloo's all-reduce in process
    0 may raise at once ("Connection closed by peer"); when it freezes, the all-reduce would wait, but the
    coordinator misses its heartbeats for 5 s and terminates process 0. Either way process 0 ends with a
    non-zero status and an error that says why, well inside the timeout. Both pairs run at once."""
    start = time.monotonic()
    exits = _launch("exit", 2, 2, tmp_path, _free_port())
    freezes = _launch("freeze", 2, 2, tmp_path, _free_port())
    try:
        (code0, _, err0), (code1, *_) = _finish(exits, start + TIMEOUT)
        (frozen0, _, frozen_err0), *_ = _finish(freezes[:1], start + TIMEOUT)
    finally:
        _kill(exits + freezes)  # the stopped process 1 too
    assert code1 == 1 and code0 != 0 and frozen0 != 0
    # which of the two comes first is a race: a collective already waiting when the peer exits sees the
    # closed socket, else the heartbeat check ends it
    assert "Connection closed by peer" in err0 or "stopped sending heartbeats" in err0, err0[-3000:]
    assert "stopped sending heartbeats" in frozen_err0, frozen_err0[-3000:]
    assert "detected fatal errors" in frozen_err0, frozen_err0[-3000:]
    assert not list(tmp_path.glob("*.npz"))  # no process 0 finished training
    print(f"exit: {code0}, freeze: {frozen0}, both after {time.monotonic() - start:.1f} s")


@pytest.mark.parametrize("n", [0, 1, 7, 8, 101])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_process_shards_cover_every_example_exactly_once(n, count):
    shards = [distributed.process_shard(n, index=i, count=count) for i in range(count)]
    assert sorted(i for shard in shards for i in shard) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert all(shard.step == 1 for shard in shards)  # contiguous: one read per process


def test_process_shard_defaults_to_this_process_and_refuses_a_bad_index():
    assert distributed.process_shard(5) == range(5)  # one process here
    with pytest.raises(ValueError, match=r"index must be in \[0, count\), received index=2, count=2"):
        distributed.process_shard(5, index=2, count=2)


def test_a_setting_from_the_environment_that_is_not_an_integer_is_named(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(
        ValueError, match="JAX_NUM_PROCESSES must be an integer \\(for num_processes\\), received 'two'"
    ):
        distributed.initialize("127.0.0.1:1", None, 0)


def test_missing_settings_are_named_in_the_error(monkeypatch):
    """No settings and no cluster detection: JAX cannot know the coordinator, and the error says what to pass.
    (``cpu_collectives=None`` leaves this process's configuration alone.)"""
    for name in distributed.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match=r"could not join the distributed JAX job \(coordinator_address=None, "):
        distributed.initialize(cluster_detection_method="deactivate", cpu_collectives=None)
    assert not jax.distributed.is_initialized()
