"""Data-parallel :func:`rnnx.training.fit` (``data_mesh=``) equals the one-device fit, and its checkpoints move
between topologies bit-exactly.

Several devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before jax starts, so every case
runs in ONE subprocess (never in this process) that prints its findings as JSON; the tests below read them.
The model is a stateful tiny GRU language model on random tokens (global batch 8), so the carry is split
over the ``data`` axis too.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from rnnx import training as train

pytestmark = pytest.mark.slow  # subprocesses or whole runs: the full tier only

DEVICES = (1, 2, 4, 8)

_SCRIPT = textwrap.dedent(
    """
    import json, pathlib, tempfile, time
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import rnnx
    from rnnx import training as train
    from rnnx.apps import models

    start = time.perf_counter()
    B, T, V, E, H, STEPS = 8, 6, 11, 5, 8, 5
    model = models.language_model(rnnx.stacked(rnnx.gru(H)), V, E)
    params = model.init(jax.random.key(0))
    carry0 = model.net.default_carry(params["rnn"], (B,))
    windows = np.random.default_rng(0).integers(0, V, size=(2, 4, B, T + 1)).astype(np.int32)
    held_out = np.random.default_rng(1).integers(0, V, size=(B, T + 1)).astype(np.int32)
    optimizer = optax.adam(3e-2)  # large enough that five steps move every parameter visibly

    def loss_fn(params, batch, key, carry):
        logits, carry = model.apply(params, batch[:, :-1], carry)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()
        return loss, ({}, carry)

    def batches(epoch):  # 4 windows an epoch: a stop at step 3 resumes mid-epoch, from the saved carry
        return list(windows[epoch % 2])

    evaluation = train.Evaluation(jax.jit(lambda p: {"loss": loss_fn(p, held_out, None, None)[0]}), every=STEPS)

    def mesh(k):
        return Mesh(np.array(jax.devices()[:k]), ("data",))

    def fit(**kwargs):
        kwargs = {"steps": STEPS, "optimizer": optimizer, "initial_carry": carry0, **kwargs}
        return train.fit(loss_fn, params, batches, **kwargs)

    def largest(a, b):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
                   zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    def bits(tree):
        return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]

    results = {}
    one = fit(evaluation=evaluation)
    results["moved"] = largest(one.last_params, params)
    results["scale"] = max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(one.last_params))
    for k in (1, 2, 4, 8):
        got = fit(data_mesh=mesh(k), evaluation=evaluation)
        leaves = jax.tree.leaves(got.last_params)
        results[f"k={k}"] = {
            "params": largest(got.last_params, one.last_params),
            "opt_state": largest(got.opt_state, one.opt_state),
            "eval": abs(got.history[-1]["loss"] - one.history[-1]["loss"]),
            "replicated": all(x.sharding.is_fully_replicated and len(x.sharding.device_set) == k for x in leaves),
        }

    traced = []
    def counting(params, batch, key):
        traced.append(1)
        return loss_fn(params, batch, key, None)[0], {}
    try:
        train.fit(counting, params, [windows[0, 0, :6]], steps=1, data_mesh=mesh(4))
    except ValueError as error:
        results["refused"], results["refused_traces"] = str(error), len(traced)
    try:
        fit(data_mesh=mesh(8), initial_carry=model.net.default_carry(params["rnn"], (4,)))
    except ValueError as error:
        results["refused_carry"] = str(error)

    # Checkpoints across topologies: saved on 4 devices, restored on 1 device and on a 2-device mesh.
    root = pathlib.Path(tempfile.mkdtemp())
    whole = fit(steps=6, data_mesh=mesh(4), checkpoints=train.Checkpoints(root / "whole"))
    step = train.make_train_step(loss_fn, optimizer)
    like = train.initial_state(step, params, carry0)  # on the default device
    on_one = train.checkpoint.restore(root / "whole" / "step_6", like)
    results["restore_1"] = {
        "bits": bits(on_one.train.params) == bits(whole.last_params),
        "devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(on_one)}),
    }
    two = mesh(2)
    split, copy = NamedSharding(two, P("data")), NamedSharding(two, P())
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=copy), like)
    carry = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=split), carry0)
    abstract = abstract._replace(train=abstract.train._replace(carry=carry))
    on_two = train.checkpoint.restore(root / "whole" / "step_6", abstract)
    results["restore_2"] = {
        "bits": bits(on_two) == bits(on_one),
        "carry_split": all(x.sharding == split for x in jax.tree.leaves(on_two.train.carry)),
        "devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(on_two)}),
    }
    resumed_two = fit(steps=6, data_mesh=two, checkpoints=train.Checkpoints(root / "whole"))  # nothing left to do
    results["fit_resume_2"] = bits(resumed_two.last_params) == bits(whole.last_params) and resumed_two.step == 6

    # Stopped at step 3 of 6 and resumed on the same 4-device topology, mid-epoch (the carry is restored).
    hooks = train.Checkpoints(root / "stopped")
    fit(steps=3, data_mesh=mesh(4), checkpoints=hooks)
    resumed = fit(steps=6, data_mesh=mesh(4), checkpoints=hooks)
    results["resume_4"] = {
        "params": bits(resumed.last_params) == bits(whole.last_params),
        "opt_state": bits(resumed.opt_state) == bits(whole.opt_state),
        "steps": sorted(p.name for p in (root / "stopped").iterdir()),
    }
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def found():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # compiling is nearly all of this test's time
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("devices", DEVICES)
def test_data_parallel_fit_equals_the_one_device_fit(found, devices):
    """Five Adam steps of a stateful GRU LM: params, optimiser state and evaluation agree to float32 round-off
    (the gradient's sums run in another order); params stay replicated on every device of the mesh."""
    assert found["moved"] > 0.05, found  # training changed the params, so agreement is not trivial
    case = found[f"k={devices}"]
    bound = 1e-5 * max(1.0, found["scale"])  # relative to the largest parameter
    assert case["params"] <= bound and case["opt_state"] <= bound, case
    assert case["eval"] <= 1e-5, case
    assert case["replicated"], case


def test_a_batch_that_does_not_divide_over_the_devices_is_refused_before_training(found):
    assert found["refused"].startswith("batch size 6 does not divide over the 4 devices of mesh axis 'data'")
    assert found["refused_traces"] == 0  # refused before the step was traced
    assert found["refused_carry"].startswith("batch size 4 does not divide over the 8 devices of mesh axis 'data'")
    assert "initial_carry" in found["refused_carry"]


def test_a_checkpoint_saved_on_4_devices_restores_on_1_and_on_2_bit_exactly(found):
    assert found["restore_1"] == {"bits": True, "devices": [1]}
    assert found["restore_2"] == {"bits": True, "carry_split": True, "devices": [2]}
    assert found["fit_resume_2"]


def test_resume_on_the_same_4_device_topology_is_bit_exact(found):
    assert found["resume_4"] == {"params": True, "opt_state": True, "steps": ["step_3", "step_6"]}


def test_a_mesh_without_a_data_axis_is_refused():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match=r"axis named 'data', received axes \('batch',\)"):
        train.fit(lambda p, b, k: (0.0, {}), {"w": np.zeros(2)}, [np.zeros((2, 1))], steps=1, data_mesh=mesh)


def test_a_one_device_mesh_runs_in_process_and_equals_no_mesh():
    """The in-process smoke test: a mesh over the one default device changes nothing, bit for bit."""

    def loss_fn(params, batch, key):
        return ((batch @ params["w"]) ** 2).mean(), {}

    batches = [np.arange(12.0, dtype=np.float32).reshape(4, 3) / (i + 1) for i in range(3)]
    params = {"w": np.ones(3, np.float32)}
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    plain = train.fit(loss_fn, params, batches, steps=3)
    meshed = train.fit(loss_fn, params, batches, steps=3, data_mesh=mesh)
    np.testing.assert_array_equal(np.asarray(meshed.last_params["w"]), np.asarray(plain.last_params["w"]))
