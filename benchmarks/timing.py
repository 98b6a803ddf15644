"""Timing helpers shared by the benchmark scripts: interleaved repeats, medians, spread."""

import statistics
import time

import jax


def time_interleaved(fns: dict, repeats: int = 15, warmup: int = 2) -> dict:
    """Run each zero-argument function ``warmup`` times, then ``repeats`` rounds, one call of each per round.

    Interleaving spreads the noise of a shared machine over every contender alike.
    Returns ``{name: {"median_ms", "min_ms", "max_ms", "samples_ms"}}``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(1e3 * (time.perf_counter() - start))
    return {
        name: {"median_ms": statistics.median(s), "min_ms": min(s), "max_ms": max(s), "samples_ms": s}
        for name, s in samples.items()
    }
