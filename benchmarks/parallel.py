"""Parallel-scan cells against sequential recurrences: training-step time and memory against sequence length.

    python -m benchmarks.parallel [--batch 16 --input 64 --hidden 128 --steps 100 1000 10000]

Contenders, each a full training step (forward, mean-square loss of all outputs, gradient, Adam update):
``rnnx.min_gru`` in parallel mode (``jax.lax.associative_scan``) and in sequential mode (``lax.scan``),
``rnnx.gru``, and ``torch.nn.GRU`` (CPU, ``loss.backward()`` and ``torch.optim.Adam``; skipped without
torch). Memory is XLA's ``compiled.memory_analysis().temp_size_in_bytes`` (buffers live during the step,
beyond arguments and outputs); PyTorch's is not measured. A second table compares three ways to compute
the same minGRU recurrence at the longest length: rnnx's linear associative scan, an associative scan in
log space (``logaddexp`` combine) and the paper's log-space cumulative-sum form (Heinsen 2023), by time
(forward + gradient) and by the largest error against a float64 sequential loop.

Prints Markdown tables to stdout, progress to stderr, and writes JSON to ``--out``.
"""

import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnx
from benchmarks.timing import time_interleaved


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def jax_step(cell, input_size, xs, **unroll_kw):
    """A jitted Adam training step of ``cell`` on ``xs``; returns ``(call, temp_bytes)``."""
    params = cell.init(jax.random.key(1), input_size)
    opt = optax.adam(1e-3)
    state = opt.init(params)

    def step(params, state, xs):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(rnnx.unroll(cell, p, xs, **unroll_kw)[1] ** 2))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    compiled = jax.jit(step).lower(params, state, xs).compile()
    memory = compiled.memory_analysis()
    return (lambda: compiled(params, state, xs)), (memory.temp_size_in_bytes if memory is not None else None)


def torch_step(batch, steps, input_size, hidden_size):
    """The same step with ``torch.nn.GRU``, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    gru = torch.nn.GRU(input_size, hidden_size, batch_first=True)
    opt = torch.optim.Adam(gru.parameters(), lr=1e-3)
    xs = torch.randn(batch, steps, input_size)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = gru(xs)[0].pow(2).mean()
        loss.backward()
        opt.step()
        return loss.detach().numpy()

    return step


def scan_forms(batch, steps, hidden_size, repeats):
    """Linear associative scan vs log-space associative scan vs the paper's log cumsum form."""
    keys = jax.random.split(jax.random.key(3), 2)
    k = jax.random.normal(keys[0], (steps, batch, hidden_size))
    candidate = jax.random.normal(keys[1], (steps, batch, hidden_size))
    h0 = jnp.full((batch, hidden_size), 0.5)  # positive: the log forms need log(h0)

    def linear(k, candidate):
        return rnnx.linear_scan(jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * rnnx.core.parallel._g(candidate), h0)

    def log_g(x):
        return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))

    def log_associative(k, candidate):
        def combine(e1, e2):
            return e1[0] + e2[0], jnp.logaddexp(e2[0] + e1[1], e2[1])

        log_a, log_b = -jax.nn.softplus(k), -jax.nn.softplus(-k) + log_g(candidate)
        log_b = log_b.at[0].set(jnp.logaddexp(log_b[0], log_a[0] + jnp.log(h0)))
        return jnp.exp(jax.lax.associative_scan(combine, (log_a, log_b))[1])

    def log_cumsum(k, candidate):  # the paper's parallel_scan_log
        log_a = -jax.nn.softplus(k)
        log_values = jnp.concatenate([jnp.log(h0)[None], -jax.nn.softplus(-k) + log_g(candidate)])
        a_star = jnp.concatenate([jnp.zeros_like(h0)[None], jnp.cumsum(log_a, axis=0)])
        return jnp.exp(a_star + jax.lax.cumlogsumexp(log_values - a_star, axis=0))[1:]

    # float64 sequential reference in NumPy
    k64, c64 = np.asarray(k, np.float64), np.asarray(candidate, np.float64)
    z = 1.0 / (1.0 + np.exp(-k64))
    b64 = z * np.where(c64 >= 0, c64 + 0.5, 1.0 / (1.0 + np.exp(-c64)))
    h, expected = np.asarray(h0, np.float64), np.empty_like(k64)
    for t in range(steps):
        h = (1.0 - z[t]) * h + b64[t]
        expected[t] = h

    forms = {
        "linear associative (rnnx)": linear,
        "log-space associative": log_associative,
        "log-space cumsum (paper)": log_cumsum,
    }
    calls, errors = {}, {}
    for name, fn in forms.items():
        got = np.asarray(jax.jit(fn)(k, candidate), np.float64)
        errors[name] = float(np.abs(got - expected).max())  # NaN if any output is NaN
        grad = jax.jit(jax.value_and_grad(lambda k, c, fn=fn: jnp.sum(fn(k, c))))
        calls[name] = lambda grad=grad: grad(k, candidate)
    _log(f"timing scan forms at T={steps} ...")
    times = time_interleaved(calls, repeats=repeats)
    return {name: {"max_abs_error": errors[name], **times[name]} for name in forms}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=10, help="interleaved rounds (half that at T >= 5000)")
    # One torch thread: interleaved with XLA's thread pool, torch's OpenMP threads wait at barriers for a
    # descheduled thread, which slowed torch far more than its own parallelism gains on a small CPU.
    parser.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "parallel_cpu.json"))
    args = parser.parse_args(argv)
    b, d, h = args.batch, args.input, args.hidden
    env = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
    }
    try:
        import torch

        torch.set_num_threads(args.torch_threads)
        env |= {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    except ImportError:
        pass
    results = {"shapes": dict(batch=b, input=d, hidden=h), "env": env, "train_step": {}}
    print(f"{env}; B={b} I={d} H={h}; float32; medians of interleaved rounds\n")
    print(
        "| T | min_gru parallel ms | min_gru sequential ms | rnnx gru ms | torch gru ms | "
        "parallel vs rnnx gru | parallel vs torch gru | temp MiB: parallel / sequential / gru |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for steps in args.steps:
        xs = jax.random.normal(jax.random.key(0), (b, steps, d))
        _log(f"compiling T={steps} ...")
        calls, temp = {}, {}
        calls["min_gru parallel"], temp["min_gru parallel"] = jax_step(rnnx.min_gru(h), d, xs, parallel=True)
        calls["min_gru sequential"], temp["min_gru sequential"] = jax_step(rnnx.min_gru(h), d, xs, parallel=False)
        calls["rnnx gru"], temp["rnnx gru"] = jax_step(rnnx.gru(h), d, xs)
        torch_call = torch_step(b, steps, d, h)
        if torch_call is not None:
            calls["torch gru"] = torch_call
        repeats = args.repeats if steps < 5000 else max(3, args.repeats // 2)
        _log(f"timing T={steps} ({repeats} rounds) ...")
        times = time_interleaved(calls, repeats=repeats)
        results["train_step"][steps] = {n: {"temp_bytes": temp.get(n), **t} for n, t in times.items()}
        ms = {n: t["median_ms"] for n, t in times.items()}
        mib = " / ".join(f"{temp[n] / 2**20:.1f}" for n in ("min_gru parallel", "min_gru sequential", "rnnx gru"))
        torch_ms = f"{ms['torch gru']:.1f}" if "torch gru" in ms else "n/a"
        vs_torch = f"{ms['torch gru'] / ms['min_gru parallel']:.1f}x" if "torch gru" in ms else "n/a"
        print(
            f"| {steps} | {ms['min_gru parallel']:.1f} | {ms['min_gru sequential']:.1f} | {ms['rnnx gru']:.1f} | "
            f"{torch_ms} | {ms['rnnx gru'] / ms['min_gru parallel']:.1f}x | {vs_torch} | {mib} |",
            flush=True,
        )

    longest = max(args.steps)
    forms = scan_forms(b, longest, h, repeats=max(3, args.repeats // 2))
    results["scan_forms"] = {"steps": longest, **forms}
    print(f"\nThe minGRU recurrence alone (B={b}, H={h}, T={longest}, float32, h0 = 0.5): forward + gradient\n")
    print("| scan form | ms | max abs error vs float64 |")
    print("|---|---|---|")
    for name, r in forms.items():
        print(f"| {name} | {r['median_ms']:.1f} | {r['max_abs_error']:.1e} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
