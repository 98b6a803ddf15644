"""Data-parallel training (``rnnx.training.fit(..., data_mesh=)``): step time and bytes communicated per step
against the device count, and the on-paper all-reduce cost of the seed's GRU language model on 8 GPUs.

    python -m benchmarks.data_parallel [--batch 64 --window 100 --hidden 128 --layers 2 --embed 300 --vocab 100]

The model is the seed's character language model (``rnnx.apps.models.language_model`` over a 2-layer
GRU(128), embedding 300, vocabulary ~100, batch 64, window 100). For 1, 2, 4 and 8 devices it places the
train step's arguments as ``fit`` does (the batch and carry split over ``data``, the rest replicated), and
reports

- the median step time (the devices are forced CPU devices, ``--xla_force_host_platform_device_count``,
  set here before jax starts: they SHARE THIS MACHINE'S CORES, so the time shows the cost of partitioning,
  not a speed-up; the speed-up is not the point);
- the all-reduces in XLA's compiled program (``.compile().as_text()``): how many, and their operand bytes;
- the ring all-reduce volume each device sends per step, ``2 (k - 1) / k * gradient bytes``.

Then the on-paper model: that volume for k = 8 over NVLink (~450 GB/s per GPU, one direction) and over
100 Gb/s Ethernet (12.5 GB/s), as time per step: bandwidth only; the ring's 2 (k - 1) hops each add a
latency (microseconds) that matters as much at these small sizes, and overlap with the backward pass is
ignored. Prints Markdown to stdout and writes JSON to ``--out``.
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402  (after the flags above)
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import rnnx  # noqa: E402
from rnnx import training as train  # noqa: E402
from rnnx.apps import models  # noqa: E402

LINKS = {"NVLink (~450 GB/s)": 450e9, "100 Gb/s Ethernet (12.5 GB/s)": 12.5e9}
_BYTES = {"f64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s8": 1, "u8": 1, "pred": 1, "s64": 8}
_ALL_REDUCE = re.compile(r"=\s*(.*?)\s+all-reduce(?:-start)?\(")
_SHAPE = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([\d,]*)\]")


def all_reduces(hlo: str) -> tuple[int, int]:
    """``(number of all-reduce ops, bytes of their results)`` in a compiled HLO text (an all-reduce's result
    has the shape of its operand; a combined one has a tuple of them)."""
    count, total = 0, 0
    for match in _ALL_REDUCE.finditer(hlo):
        count += 1
        for dtype, dims in _SHAPE.findall(match.group(1)):
            total += _BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d]))
    return count, total


def ring_bytes(param_bytes: int, k: int) -> float:
    """Bytes each device sends (and receives) in a ring all-reduce of ``param_bytes`` over ``k`` devices."""
    return 2 * (k - 1) / k * param_bytes


def measure(args, k: int) -> dict:
    model = models.language_model(rnnx.stacked(rnnx.gru(args.hidden), args.layers), args.vocab, args.embed)
    params = model.init(jax.random.key(0))

    def loss_fn(params, batch, key, carry):
        logits, carry = model.apply(params, batch[:, :-1], carry)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean(), ({}, carry)

    step = train.make_train_step(loss_fn, optax.adam(2e-3))
    mesh = Mesh(np.array(jax.devices()[:k]), ("data",))
    split, copy = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    carry = jax.device_put(model.net.default_carry(params["rnn"], (args.batch,)), split)
    state = jax.device_put(step.init(params)._replace(carry=None), copy)._replace(carry=carry)
    tokens = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.window + 1)).astype(np.int32)
    batch, key = jax.device_put(tokens, split), jax.random.key(0)
    started = time.perf_counter()
    compiled = step.update.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - started
    ops, hlo_bytes = all_reduces(compiled.as_text())
    times = []
    for i in range(args.warmup + args.repeats):
        started = time.perf_counter()
        state, metrics = step.update(state, batch, key)
        jax.block_until_ready((state, metrics))
        if i >= args.warmup:
            times.append(time.perf_counter() - started)
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    return {
        "devices": k,
        "step_ms": 1e3 * statistics.median(times),
        "compile_s": compile_s,
        "all_reduce_ops": ops,
        "all_reduce_bytes": hlo_bytes,
        "param_count": sum(x.size for x in jax.tree.leaves(params)),
        "param_bytes": param_bytes,
        "ring_bytes_per_device": ring_bytes(param_bytes, k),
        "params_replicated": all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state.params)),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embed", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=100)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--out", default=os.path.join(os.environ.get("OUT", "benchmarks/results"), "data_parallel-cpu.json")
    )
    args = parser.parse_args(argv)
    rows = []
    for k in (int(d) for d in args.devices.split(",")):
        print(f"{k} device(s) ...", file=sys.stderr)
        rows.append(measure(args, k))
    base = rows[0]["step_ms"]
    print(
        f"GRU LM: {args.layers}x GRU({args.hidden}), embed {args.embed}, vocab {args.vocab}, "
        f"batch {args.batch}, window {args.window}; {rows[0]['param_count']:,} params = "
        f"{rows[0]['param_bytes']:,} bytes (float32)\n"
    )
    print(
        f"Forced CPU devices on {os.cpu_count()} shared cores ({platform.processor() or platform.machine()}): "
        "step times show the cost of partitioning, not a speed-up.\n"
    )
    print(
        "| devices | step ms (median) | vs 1 | compile s | all-reduce ops (HLO) | all-reduce bytes (HLO) "
        "| ring bytes sent per device |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['step_ms']:.1f} | {r['step_ms'] / base:.2f}x | {r['compile_s']:.1f} "
            f"| {r['all_reduce_ops']} | {r['all_reduce_bytes']:,} | {r['ring_bytes_per_device']:,.0f} |"
        )
    param_bytes = rows[0]["param_bytes"]
    volume = ring_bytes(param_bytes, 8)
    paper = {name: {"bytes": volume, "ms": 1e3 * volume / bandwidth} for name, bandwidth in LINKS.items()}
    print(
        f"\nOn paper, 8 GPUs, ring all-reduce of the float32 gradient ({param_bytes:,} bytes): "
        f"each GPU sends {volume:,.0f} bytes per step.\n"
    )
    print("| link | all-reduce time per step |\n|---|---|")
    for name, figure in paper.items():
        print(f"| {name} | {figure['ms']:.3f} ms |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": vars(args), "rows": rows, "on_paper_8_gpus": paper, "jax": jax.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
