"""Where an LSTM training step's time goes on a GPU: JAX's cuDNN binding alone, rnnx's cuDNN path, rnnx's scan
and torch's cuDNN, forward and forward+backward, side by side in one process (medians of interleaved runs).

    python -m benchmarks.cudnn_split [--steps 100 1000] [--out DIR]

``jax-cudnn-raw`` calls ``jax.experimental.rnn.lstm`` on weights packed once, with full-length ``seq_lengths``:
the gap between it and ``rnnx-cudnn`` is rnnx's conversion (packing, masks, carry layout); the gap between it
and ``torch`` is JAX's binding of the same cuDNN kernels. On a CPU only the scan and torch rows run.
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

import rnnx
from benchmarks.timing import time_interleaved
from rnnx.core.backends import cudnn


def jax_fns(steps, batch=64, inputs=300, hidden=128):
    net = rnnx.stacked(rnnx.lstm(hidden))
    params = net.init(jax.random.key(0), inputs)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, inputs))
    fns = {}
    backends = ("scan", "cudnn") if jax.default_backend() == "gpu" else ("scan",)
    for backend in backends:
        fwd = jax.jit(lambda p, x, b=backend: net.apply(p, x, backend=b)[1])
        grad = jax.jit(jax.grad(lambda p, x, b=backend: jnp.mean(net.apply(p, x, backend=b)[1] ** 2)))
        fns[f"rnnx-{backend} forward"] = lambda f=fwd: f(params, xs)
        fns[f"rnnx-{backend} grad"] = lambda g=grad: g(params, xs)
    if jax.default_backend() == "gpu":
        from jax.experimental import rnn as jrnn

        weights = cudnn.pack(net, params)
        zeros = jnp.zeros((1, batch, hidden))
        lengths = jnp.full((batch,), steps, jnp.int32)

        def raw(w, x):
            return jrnn.lstm(x, zeros, zeros, w, lengths, inputs, hidden, 1, 0.0, False)[0]

        raw_fwd = jax.jit(raw)
        raw_grad = jax.jit(jax.grad(lambda w, x: jnp.mean(raw(w, x) ** 2)))
        fns["jax-cudnn-raw forward"] = lambda: raw_fwd(weights, xs)
        fns["jax-cudnn-raw grad"] = lambda: raw_grad(weights, xs)
    return {k: (lambda f=f: jax.block_until_ready(f())) for k, f in fns.items()}


def torch_fns(steps, batch=64, inputs=300, hidden=128):
    try:
        import torch
    except ImportError:
        return {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = torch.nn.LSTM(inputs, hidden, batch_first=True).to(device)
    xs = torch.randn(batch, steps, inputs, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            module(xs)
        sync()

    def grad():
        module.zero_grad()
        (module(xs)[0] ** 2).mean().backward()
        sync()

    return {"torch forward": forward, "torch grad": grad}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args(argv)
    device = jax.devices()[0].device_kind
    rows = []
    for steps in args.steps:
        fns = jax_fns(steps) | torch_fns(steps)
        errors = {}
        medians = time_interleaved(fns, repeats=args.repeats, errors=errors)
        for name, stats in medians.items():
            rows.append({"T": steps, "case": name, "ms": stats["median_ms"]})
            print(f"| {steps} | {name} | {rows[-1]['ms']:.3f} |", flush=True)
        for name, why in errors.items():
            rows.append({"T": steps, "case": name, "error": why})
            print(f"| {steps} | {name} | failed: {why} |", flush=True)
    with open(os.path.join(args.out, "cudnn_split.json"), "w") as f:
        json.dump({"device": device, "jax": jax.__version__, "B": 64, "I": 300, "H": 128, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
