"""The sequence-parallel scan (:mod:`rnnx.core.backends.sharded`) equals the one-device scan, values and gradients.

Several devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before jax starts, so the
equivalence cases run in ONE subprocess (never in this process) that compiles each case once and prints the
largest errors as JSON; the tests below read that JSON. Meshes: 2, 4 and 8 of the 8 forced CPU devices, with
explicit axes (``jax.make_mesh``'s default) for 2 and 8 and automatic ones (``jax.sharding.Mesh``'s) for 4.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from rnnx.core.backends.sharded import sharded_linear_scan

DEVICES = (2, 4, 8)
CASES = ("linear_scan", "min_gru", "min_lstm", "lru", "rg_lru")

_SCRIPT = textwrap.dedent(
    """
    import functools, json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType
    import rnnx
    from rnnx.core.backends.sharded import sharded_linear_scan, unroll_parallel_sharded

    T, N, D, H = 16, 3, 4, 5  # T divides by 2, 4 and 8
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(T, N, D)), jnp.float32)
    h0 = jnp.asarray(rng.normal(size=(N, H)), jnp.float32)  # both signs
    a = jnp.asarray(rng.uniform(size=(T, N, H)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(T, N, H)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(T, N, H)), jnp.float32)
    lengths = jnp.array([T, 11, 3])  # sequence 2 ends in the first chunk of every mesh
    mask = jnp.asarray(rng.uniform(size=(T, N)) < 0.8)  # gaps
    reset = jnp.zeros((T, N), bool).at[5, 0].set(True).at[8, 1].set(True).at[12, 0].set(True)
    valid = (jnp.arange(T)[:, None] < lengths) & mask

    def loss(hs, last):  # weights every output, so that a wrong step cannot hide
        return jnp.sum(jnp.sin(hs) * weights) + jnp.sum(jnp.abs(last) ** 2), (hs, last)

    def scan_loss(scan, reverse):
        def f(a, b, h0):
            hs = scan(a, b, h0, reverse=reverse)
            return loss(hs, jnp.zeros(()))  # hs[-1] would slice a sharded axis, refused on explicit meshes
        return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)

    def cell_loss(cell, mesh, reverse):
        aligned = jnp.concatenate([reset[1:], jnp.zeros_like(reset[:1])]) if reverse else reset
        def f(params, xs, h0):
            h0 = h0.astype(cell.default_carry(params).dtype)  # complex for the LRU
            if mesh is None:  # the one-device reference: the public rnnx.unroll, parallel mode
                last, ys = rnnx.unroll(cell, params, xs, lengths=lengths, mask=mask, reset=reset,
                                       initial_carry=h0, reverse=reverse, time_major=True, parallel=True)
            else:
                fresh = cell.default_carry(params, (N,))
                last, ys = unroll_parallel_sharded(cell, params, xs, h0, valid, aligned, fresh,
                                                   reverse=reverse, mesh=mesh)
            return loss(ys, last)
        return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)

    cells = {name: getattr(rnnx, name)(H) for name in ("min_gru", "min_lstm", "lru", "rg_lru")}
    params = {name: jax.tree.map(lambda p: p + 0.3, cell.init(jax.random.key(0), D)) for name, cell in cells.items()}

    def everything(mesh):
        def run(a, b, h0, xs, params):
            out = {}
            for reverse in (False, True):
                scan = functools.partial(sharded_linear_scan, mesh=mesh) if mesh else rnnx.linear_scan
                out["linear_scan", reverse] = scan_loss(scan, reverse)(a, b, h0)
                for name, cell in cells.items():
                    out[name, reverse] = cell_loss(cell, mesh, reverse)(params[name], xs, h0)
            return out
        return jax.jit(run)(a, b, h0, xs, params)

    def max_error(x, y):
        return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)))

    reference = everything(None)
    results = {}
    for k, explicit in ((2, True), (4, False), (8, True)):
        kind = AxisType.Explicit if explicit else AxisType.Auto
        mesh = jax.make_mesh((k,), ("seq",), devices=jax.devices()[:k], axis_types=(kind,))
        sharded = everything(mesh)
        for (case, reverse), ((_, outputs), grads) in sharded.items():
            (_, ref_outputs), ref_grads = reference[case, reverse]
            results[f"{case} k={k} reverse={reverse}"] = {
                "outputs": max_error(outputs, ref_outputs),  # all states (ys), and the final carry
                "grads": max_error(grads, ref_grads),  # w.r.t. (a, b, h0) or (params, xs, initial carry)
                "scale": max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads)),
            }
    try:
        sharded_linear_scan(a[:15], b[:15], h0, mesh=mesh)
    except ValueError as e:
        results["error"] = str(e)
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def errors():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # halves XLA's compile time, which is all of this test's time
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a subprocess with 8 forced CPU devices
@pytest.mark.parametrize("devices", DEVICES)
@pytest.mark.parametrize("case", CASES)
def test_sharded_scan_equals_one_device_scan(errors, case, devices):
    """Lengths, gaps, resets and a non-zero initial carry in both directions; gradients w.r.t. everything."""
    for reverse in (False, True):
        found = errors[f"{case} k={devices} reverse={reverse}"]
        assert found["scale"] > 0.1, found  # the gradients are not trivially zero
        assert found["outputs"] < 1e-5, found
        assert found["grads"] < 1e-5, found


@pytest.mark.slow  # reads the subprocess's output
def test_time_that_does_not_divide_is_refused_with_both_numbers(errors):
    assert "15 time steps do not divide over the 8 devices of mesh axis 'seq'" in errors["error"]
    assert "16 steps" in errors["error"]


def test_a_mesh_without_the_axis_is_refused():
    mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
    with pytest.raises(ValueError, match=r"mesh has no axis named 'seq' to split time over; its axes are \('data',\)"):
        sharded_linear_scan(jnp.ones((2, 1, 1)), jnp.ones((2, 1, 1)), jnp.ones((1, 1)), mesh=mesh)
