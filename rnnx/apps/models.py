"""Small complete models around a recurrent stack: token classifiers and language models.

Params are dicts ``{"embed": (v, e), "rnn": stack params, "out_w": (o, c), "out_b": (c,)}``; the
recurrent equations stay in :mod:`rnnx.core.cells`, the sequence logic in :func:`rnnx.unroll`.
"""

import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnx.core.cells import LSTMCarry
from rnnx.core.stack import Stack, dropout


class Model(NamedTuple):
    net: Stack
    init: callable
    apply: callable


def _final_hidden(carry, net: Stack):
    """The last layer's final hidden state(s), forward then backward: ``(b, num_directions * h)``."""
    last = carry[-net.num_directions :]
    return jnp.concatenate([c.h if isinstance(c, LSTMCarry) else c for c in last], axis=-1)


def _dense_init(key, fan_in, fan_out):
    return {"out_w": jax.random.normal(key, (fan_in, fan_out)) / jnp.sqrt(fan_in), "out_b": jnp.zeros(fan_out)}


def classifier(net: Stack, vocab_size: int, embed_dim: int, num_classes: int, *, dropout_rate: float = 0.0) -> Model:
    """Embedding -> ``net`` -> Dense on the final hidden state (at each sequence's own length).

    ``apply(params, tokens (b, l), lengths (b,), key=None) -> logits``: ``(b,)`` for ``num_classes == 1``
    (binary, for sigmoid BCE), else ``(b, num_classes)``. With a ``key``, dropout at ``dropout_rate`` applies
    to the embedded inputs and the final hidden state, and the stack's own dropout between its layers.
    """

    def init(key):
        k_embed, k_rnn, k_out = jax.random.split(key, 3)
        return {
            "embed": jax.random.normal(k_embed, (vocab_size, embed_dim)) * 0.1,
            "rnn": net.init(k_rnn, embed_dim),
            **_dense_init(k_out, net.output_size, num_classes),
        }

    def apply(params, tokens, lengths, key=None):
        k_in, k_rnn, k_out = (None,) * 3 if key is None else jax.random.split(key, 3)
        embedded = params["embed"][tokens]
        if key is not None and dropout_rate > 0:
            embedded = dropout(k_in, embedded, dropout_rate)
        carry, _ = net.apply(params["rnn"], embedded, lengths=lengths, key=k_rnn)
        final = _final_hidden(carry, net)
        if key is not None and dropout_rate > 0:
            final = dropout(k_out, final, dropout_rate)
        logits = final @ params["out_w"] + params["out_b"]
        return logits[:, 0] if num_classes == 1 else logits

    return Model(net, init, apply)


def language_model(net: Stack, vocab_size: int, embed_dim: int, *, unroll: int = 1) -> Model:
    """Embedding -> ``net`` -> Dense over the vocabulary at every step.

    ``unroll``: time steps per ``lax.scan`` iteration (as in :func:`rnnx.unroll`); the results are the same.

    ``apply(params, tokens (b, t), carry=None, key=None) -> (logits (b, t, v), carry)``: pass the returned
    carry back in to continue the text (truncated BPTT, or sampling one token at a time).
    """
    if net.bidirectional:
        raise ValueError("a language model predicts the next token, so net must not be bidirectional")

    def init(key):
        k_embed, k_rnn, k_out = jax.random.split(key, 3)
        return {
            "embed": jax.random.normal(k_embed, (vocab_size, embed_dim)) * 0.1,
            "rnn": net.init(k_rnn, embed_dim),
            **_dense_init(k_out, net.output_size, vocab_size),
        }

    def apply(params, tokens, carry=None, key=None):
        carry, ys = net.apply(params["rnn"], params["embed"][tokens], initial_carry=carry, key=key, unroll=unroll)
        return ys @ params["out_w"] + params["out_b"], carry

    return Model(net, init, apply)


def sample(model: Model, params, prompt_ids, *, length: int, key, temperature: float = 1.0, exclude=()):
    """Continue ``prompt_ids`` by ``length`` tokens drawn from ``softmax(logits / temperature)``.

    ``exclude``: token ids never drawn (e.g. the vocabulary's special tokens).
    Returns the generated ids (without the prompt) as a list of ints.

    The prompt is folded into ``key``: with one key, two prompts would otherwise draw the same uniform
    numbers at every step (the Gumbel noise of ``categorical``), and once the model's distributions agree,
    as they soon do after a prompt, the two texts become identical.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, received {temperature!r}")
    key = jax.random.fold_in(key, zlib.crc32(np.asarray(prompt_ids, np.int32).tobytes()) & 0x7FFFFFFF)
    logits, carry = model.apply(params, jnp.asarray(prompt_ids, jnp.int32)[None])
    banned = jnp.zeros(logits.shape[-1], bool).at[jnp.asarray(list(exclude), jnp.int32)].set(True)

    def step(state, key):
        logits, carry = state
        token = jax.random.categorical(key, jnp.where(banned, -jnp.inf, logits / temperature))
        logits, carry = model.apply(params, token[:, None], carry)
        return (logits[:, -1], carry), token[0]

    _, tokens = jax.lax.scan(step, (logits[:, -1], carry), jax.random.split(key, length))
    return [int(t) for t in tokens]


__all__ = [
    "Model",
    "classifier",
    "language_model",
    "sample",
]
