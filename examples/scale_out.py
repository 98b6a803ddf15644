"""Data-parallel training on every visible device, in one process or several.

    python -m examples.scale_out                      # one process, the batch split over every device
    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu python -m examples.scale_out

Several processes join through ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (or a
SLURM allocation, which JAX detects); see docs/scale-out.md. Each process loads only its shard
of the data and feeds its slice of every global batch; params are replicated, batches split over ``data``.
"""

import argparse
import os

import numpy as np

from rnnx.training import distributed

if "JAX_NUM_PROCESSES" in os.environ or "SLURM_JOB_ID" in os.environ:
    distributed.initialize()  # before any other JAX computation

import jax  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

import rnnx  # noqa: E402
from rnnx import training as train  # noqa: E402
from rnnx.apps import models  # noqa: E402

VOCAB, WINDOW = 64, 32


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch, over all processes")
    args = parser.parse_args(argv)
    if args.batch_size % jax.process_count():
        raise SystemExit(f"--batch-size {args.batch_size} does not divide over {jax.process_count()} processes")
    data = np.random.default_rng(0).integers(0, VOCAB, size=(4096, WINDOW + 1)).astype(np.int32)
    shard = data[distributed.process_shard(len(data))]  # this process's examples only
    local = args.batch_size // jax.process_count()  # this process's slice of every global batch
    per_epoch = len(data) // jax.process_count() // local  # the same in every process

    def batches(epoch):
        order = np.random.default_rng(epoch).permutation(len(shard))
        return [shard[order[i * local : (i + 1) * local]] for i in range(per_epoch)]

    model = models.language_model(rnnx.stacked(rnnx.gru(64)), VOCAB, 16)

    def loss_fn(params, batch, key):
        logits, _ = model.apply(params, batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean(), {}

    mesh = Mesh(np.array(jax.devices()), ("data",))  # every device of every process
    lead = jax.process_index() == 0
    if lead:
        print(f"{jax.process_count()} process(es), {len(jax.devices())} {jax.default_backend()} device(s)", flush=True)
    result = train.fit(
        loss_fn,
        model.init(jax.random.key(0)),
        batches,
        steps=args.steps,
        data_mesh=mesh,
        log_every=10,
        on_log=(lambda r: print(f"step {r['step']}: loss {r['loss']:.4f}", flush=True)) if lead else None,
    )
    return result


if __name__ == "__main__":
    main()
