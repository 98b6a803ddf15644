"""Timing helpers shared by the benchmark scripts: interleaved repeats, medians, spread."""

import random
import statistics
import time

import jax

__all__ = ["reason", "time_interleaved"]


def reason(error: BaseException) -> str:
    """An exception as one line for a results row: its type and the first line of its message, at most 300 characters."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def time_interleaved(fns: dict, repeats: int = 15, warmup: int = 2, errors: dict | None = None) -> dict:
    """Run each zero-argument function ``warmup`` times, then ``repeats`` rounds, one call of each per round.

    Interleaving spreads the noise of a shared machine over every contender alike; each round calls them in
    a new order (shuffled, seed 0), so that none always follows the same neighbour (a large call just before
    leaves a small one cold caches: in a fixed order that bias lands on one contender every round, as it did on
    ``benchmarks.population``'s solo step, always called after the 32-member Adam update).
    Each call is waited for
    with ``jax.block_until_ready`` (torch callables synchronise their own device before returning).
    With ``errors`` (a dict), a function that raises is dropped and ``errors[name]`` says why, so that one
    failing contender cannot stop the others; without it the exception propagates.
    Returns ``{name: {"median_ms", "min_ms", "max_ms", "samples_ms"}}``.
    """
    live = dict(fns)

    def call(name):
        try:
            jax.block_until_ready(live[name]())
            return True
        except Exception as error:
            if errors is None:
                raise
            errors[name] = reason(error)
            del live[name]
            return False

    for name in list(live):
        for _ in range(warmup):
            if not call(name):
                break
    samples = {name: [] for name in live}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(list(live), len(live)):
            start = time.perf_counter()
            if call(name):
                samples[name].append(1e3 * (time.perf_counter() - start))
    return {
        name: {"median_ms": statistics.median(s), "min_ms": min(s), "max_ms": max(s), "samples_ms": s}
        for name, s in samples.items()
        if name in live and s
    }
