"""Evaluation metrics: accuracy, perplexity, bits per character."""

import math

import jax
import jax.numpy as jnp


def accuracy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Fraction correct: ``argmax`` for ``logits (b, c)``, ``logit > 0`` for binary ``logits (b,)``."""
    predicted = (logits > 0).astype(labels.dtype) if logits.ndim == labels.ndim else jnp.argmax(logits, -1)
    correct = (predicted == labels).astype(jnp.float32)
    if weights is None:
        return jnp.mean(correct)
    return jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def perplexity(mean_nll: float) -> float:
    """``exp`` of the mean negative log-likelihood (in nats) per token; ``inf`` where that overflows a float
    (a diverged model), never an exception.

    >>> perplexity(math.log(4.0)), perplexity(1e6)
    (4.0, inf)
    """
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf


def bits_per_token(mean_nll: float) -> float:
    """The mean negative log-likelihood in bits: bits per character for a character model.

    >>> bits_per_token(math.log(4.0))
    2.0
    """
    return mean_nll / math.log(2.0)


__all__ = ["accuracy", "bits_per_token", "perplexity"]
