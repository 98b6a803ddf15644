"""The selective-copying task (Gu & Dao 2023, "Mamba", one of its synthetic tasks): data tokens scattered
among noise tokens at random positions are to be reproduced, in order, after a run of marker tokens.

Gu & Dao's setup: sequences of length 4,096, a vocabulary of 16, 16 data tokens to memorise. Here the lengths are
arguments (``examples.modern_study`` scales them down to fit a CPU). Token ``NOISE = 0`` fills the context,
``MARKER = 1`` fills the last ``tokens`` steps, and the data tokens are drawn uniformly from the other
``vocab - 2`` values, so guessing scores ``1 / (vocab - 2)`` per copied token. Positions differ from sequence to
sequence, which is what defeats a time-invariant (convolutional or linear) recurrence: where to look depends on
the content, not on a fixed lag.
"""

import jax
import jax.numpy as jnp

NOISE, MARKER = 0, 1


def selective_copying_batch(key, batch, length, tokens, vocab=16):
    """``(inputs (batch, length + tokens), targets (batch, tokens))``, both int32.

    ``inputs[:, :length]`` holds ``tokens`` data tokens at distinct random positions, in the order of
    ``targets``, and ``NOISE`` elsewhere; ``inputs[:, length:]`` is ``MARKER``. The model's outputs at the marker
    steps are to be ``targets``.
    """
    if not 0 < tokens <= length:
        raise ValueError(f"tokens must be between 1 and length={length}, received {tokens!r}")
    if vocab < 3:
        raise ValueError(f"vocab must be at least 3 (noise, marker and one data token), received {vocab!r}")
    k_positions, k_values = jax.random.split(key)
    # ``tokens`` distinct positions: the first of a random permutation of each row, then in increasing order
    order = jnp.argsort(jax.random.uniform(k_positions, (batch, length)), axis=-1)
    positions = jnp.sort(order[:, :tokens], axis=-1)
    values = jax.random.randint(k_values, (batch, tokens), MARKER + 1, vocab, dtype=jnp.int32)
    context = jnp.full((batch, length), NOISE, jnp.int32).at[jnp.arange(batch)[:, None], positions].set(values)
    markers = jnp.full((batch, tokens), MARKER, jnp.int32)
    return jnp.concatenate([context, markers], axis=1), values


__all__ = ["MARKER", "NOISE", "selective_copying_batch"]
