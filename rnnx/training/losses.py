"""Losses from optax, with the masking and weighting that padded batches need. All return a scalar mean."""

import jax
import jax.numpy as jnp
import optax


def _weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.mean(values)
    weights = weights.astype(values.dtype)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy over the non-padding tokens, for language models.

    Args:
      logits: ``(*b, t, v)``; targets: integer ``(*b, t)``; mask: boolean ``(*b, t)``, True on real tokens.

    >>> import jax.numpy as jnp
    >>> float(masked_cross_entropy(jnp.zeros((1, 2, 4)), jnp.array([[1, 2]]), jnp.array([[True, False]])))  # ln 4
    1.386...
    """
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    return _weighted_mean(nll, mask)


def binary_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean sigmoid binary cross-entropy; ``logits (b,)``, ``labels (b,)`` in {0, 1}, optional row weights."""
    return _weighted_mean(
        optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels.astype(jnp.float32)), weights
    )


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy for multi-class labels; ``logits (b, c)``, integer ``labels (b,)``."""
    return _weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels), weights)


__all__ = ["binary_cross_entropy", "cross_entropy", "masked_cross_entropy"]
