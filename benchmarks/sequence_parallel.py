"""Memory per device of the sequence-parallel scan (``rnnx.core.backends.sharded``) against the one-device scan.

    python -m benchmarks.sequence_parallel [--steps 65536 --batch 8 --hidden 128 --input 128 --budget-gib 1]

Two training-style computations, each forward + backward at ``t`` steps: the raw scan (``jax.grad`` of a loss
of all states w.r.t. ``a``, ``b`` and ``h0``) and a minGRU layer (w.r.t. params, inputs and the initial
carry). Each is compiled on one device (``rnnx.linear_scan`` / ``rnnx.unroll``, the library's ordinary
path) and with time split over 2, 4 and 8 devices (``sharded_linear_scan`` / ``unroll_parallel_sharded``);
the figures are XLA's ``compiled.memory_analysis()``, which describes one device's share of the partitioned
program: arguments + outputs + temporaries. A row fits the budget when that total is within
``--budget-gib``. Then the 8-device minGRU step is run once, to show that it runs, and (``--check``)
compared with the one-device result.

The devices are forced CPU devices (``--xla_force_host_platform_device_count``), set here before jax
starts: they share this machine's cores and memory, so the wall time printed is no speed-up and not the
point; the per-device memory is what the sharding changes.

Prints a Markdown table to stdout, progress to stderr, and writes JSON to ``--out``.
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402  (after the flags above)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import rnnx  # noqa: E402
from rnnx.core.backends.sharded import sharded_linear_scan, unroll_parallel_sharded  # noqa: E402

GIB = 2**30


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def scan_grad(mesh):
    """``grad`` of a loss of all states w.r.t. ``(a, b, h0)``: one device when ``mesh`` is None."""

    def loss(a, b, h0):
        hs = rnnx.linear_scan(a, b, h0) if mesh is None else sharded_linear_scan(a, b, h0, mesh=mesh)
        return jnp.mean(jnp.sin(hs))

    return jax.grad(loss, argnums=(0, 1, 2))


def min_gru_grad(cell, mesh):
    """``grad`` of a loss of all outputs and the final carry w.r.t. ``(params, xs, h0)``."""

    def loss(params, xs, h0):
        if mesh is None:
            last, ys = rnnx.unroll(cell, params, xs, initial_carry=h0, time_major=True, parallel=True)
        else:
            last, ys = unroll_parallel_sharded(cell, params, xs, h0, None, None, None, reverse=False, mesh=mesh)
        return jnp.mean(jnp.sin(ys)) + jnp.mean(last**2)

    return jax.grad(loss, argnums=(0, 1, 2))


def memory(compiled):
    m = compiled.memory_analysis()
    sizes = {
        "argument": m.argument_size_in_bytes,
        "output": m.output_size_in_bytes,
        "temp": m.temp_size_in_bytes,
    }
    return sizes | {"total": sum(sizes.values())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=65536)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--input", type=int, default=128)
    parser.add_argument("--budget-gib", type=float, default=1.0, help="a per-device memory budget, for the table")
    parser.add_argument("--check", action="store_true", help="also run on one device and compare")
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "sequence_parallel-cpu.json")
    )
    args = parser.parse_args()
    if jax.device_count() < 8:
        raise SystemExit(
            f"needs 8 devices, found {jax.device_count()}: was jax started before this module set XLA_FLAGS?"
        )
    t, n, h, d = args.steps, args.batch, args.hidden, args.input
    env = {
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "forced_devices": jax.device_count(),
    }

    f32 = jax.ShapeDtypeStruct
    cell = rnnx.min_gru(h)
    params = cell.init(jax.random.key(0), d)
    computations = {
        "linear_scan": (
            scan_grad,
            (f32((t, n, h), jnp.float32), f32((t, n, h), jnp.float32), f32((n, h), jnp.float32)),
        ),
        "min_gru": (
            lambda mesh: min_gru_grad(cell, mesh),
            (params, f32((t, n, d), jnp.float32), f32((n, h), jnp.float32)),
        ),
    }
    rows, compiled = [], {}
    for name, (make, shapes) in computations.items():
        for devices in (1, 2, 4, 8):
            mesh = None if devices == 1 else jax.make_mesh((devices,), ("seq",), devices=jax.devices()[:devices])
            _log(f"compiling {name} on {devices} device(s)")
            compiled[name, devices] = jax.jit(make(mesh)).lower(*shapes).compile()
            sizes = memory(compiled[name, devices])
            rows.append(
                {"computation": name, "devices": devices, **sizes, "fits": sizes["total"] <= args.budget_gib * GIB}
            )

    print(f"{env}\nt={t:,} n={n} h={h} d={d} float32, forward + backward; per-device bytes from memory_analysis()\n")
    print(
        "| computation | devices | arguments (MiB) | outputs (MiB) | temporaries (MiB) | total per device (MiB) | vs 1 device | within budget |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        one = next(o["total"] for o in rows if o["computation"] == r["computation"] and o["devices"] == 1)
        mib = lambda k: f"{r[k] / 2**20:,.1f}"  # noqa: E731
        print(
            f"| {r['computation']} | {r['devices']} | {mib('argument')} | {mib('output')} | {mib('temp')} | "
            f"{mib('total')} | {r['total'] / one:.3f} | {'yes' if r['fits'] else 'no'} ({args.budget_gib:g} GiB) |"
        )

    # Run the 8-device minGRU step once: it runs, and (--check) equals the one-device result.
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(t, n, d)), jnp.float32)
    h0 = jnp.asarray(rng.normal(size=(n, h)), jnp.float32)
    start = time.perf_counter()
    grads = jax.block_until_ready(compiled["min_gru", 8](params, xs, h0))
    run = {
        "min_gru_8_devices_seconds": time.perf_counter() - start,
        "finite": bool(all(jnp.isfinite(g).all() for g in jax.tree.leaves(grads))),
    }
    if args.check:
        reference = compiled["min_gru", 1](params, xs, h0)
        run["max_relative_error_vs_1_device"] = max(  # per gradient: largest difference / largest magnitude
            float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
            for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference))
        )
    print(f"\nmin_gru on 8 forced CPU devices (shared cores: not a speed figure): {run}")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "shapes": dict(steps=t, batch=n, hidden=h, input=d),
                "env": env,
                "budget_gib": args.budget_gib,
                "memory": rows,
                "run": run,
            },
            f,
            indent=1,
        )
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
