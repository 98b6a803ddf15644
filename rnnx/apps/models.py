"""Small complete models around a recurrent stack: token classifiers and language models.

Params are dicts ``{"embed": (v, e), "rnn": stack params, "out_w": (o, c), "out_b": (c,)}``; the
recurrent equations stay in :mod:`rnnx.core.cells`, the sequence logic in :func:`rnnx.unroll`.
"""

import functools
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnx.core.stack import Stack, dropout
from rnnx.core.typing import Carry, Key

ModelParams = dict[str, Any]
"""``{"embed": (v, e), "rnn": stack params, "out_w": (o, c), "out_b": (c,)}``."""


class Model(NamedTuple):
    """A model: its stack, ``init(key) -> params`` and ``apply(params, tokens, ...)`` (whose arguments and
    result are those of :func:`classifier` or :func:`language_model`)."""

    net: Stack
    init: Callable[[Key], ModelParams]
    apply: Callable[..., Any]


def _final_hidden(ys: jax.Array, lengths: jax.Array, net: Stack) -> jax.Array:
    """The last layer's final outputs, forward then backward: ``(b, num_directions * h)``.

    The forward direction's output at each sequence's last step and the backward direction's at step 0: the
    final hidden state for the classic cells (whose output is ``h``), and the final output for every cell,
    the LRU and mLSTM included, whose carries are not their outputs. Zeros for an empty sequence.
    """
    h = net.cell.hidden_size
    last = jnp.take_along_axis(ys[..., :h], jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)[:, 0]
    forward = jnp.where((lengths > 0)[:, None], last, jnp.zeros((), ys.dtype))
    return jnp.concatenate([forward, ys[:, 0, h:]], axis=-1) if net.bidirectional else forward


def _dense_init(key: Key, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    return {"out_w": jax.random.normal(key, (fan_in, fan_out)) / jnp.sqrt(fan_in), "out_b": jnp.zeros(fan_out)}


def classifier(net: Stack, vocab_size: int, embed_dim: int, num_classes: int, *, dropout_rate: float = 0.0) -> Model:
    """Embedding -> ``net`` -> Dense on the final hidden state (at each sequence's own length).

    ``apply(params, tokens (b, l), lengths (b,), key=None) -> logits``: ``(b,)`` for ``num_classes == 1``
    (binary, for sigmoid BCE), else ``(b, num_classes)``. With a ``key``, dropout at ``dropout_rate`` applies
    to the embedded inputs and the final hidden state, and the stack's own dropout between its layers.
    """

    def init(key: Key) -> ModelParams:
        k_embed, k_rnn, k_out = jax.random.split(key, 3)
        return {
            "embed": jax.random.normal(k_embed, (vocab_size, embed_dim)) * 0.1,
            "rnn": net.init(k_rnn, embed_dim),
            **_dense_init(k_out, net.output_size, num_classes),
        }

    def apply(params: ModelParams, tokens: jax.Array, lengths: jax.Array, key: Key | None = None) -> jax.Array:
        keys = None if key is None else jax.random.split(key, 3)  # the embedded inputs, the stack, the output
        embedded = params["embed"][tokens]
        if keys is not None and dropout_rate > 0:
            embedded = dropout(keys[0], embedded, dropout_rate)
        _, ys = net.apply(params["rnn"], embedded, lengths=lengths, key=None if keys is None else keys[1])
        final = _final_hidden(ys, lengths, net)
        if keys is not None and dropout_rate > 0:
            final = dropout(keys[2], final, dropout_rate)
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

    def init(key: Key) -> ModelParams:
        k_embed, k_rnn, k_out = jax.random.split(key, 3)
        return {
            "embed": jax.random.normal(k_embed, (vocab_size, embed_dim)) * 0.1,
            "rnn": net.init(k_rnn, embed_dim),
            **_dense_init(k_out, net.output_size, vocab_size),
        }

    def apply(
        params: ModelParams, tokens: jax.Array, carry: tuple[Carry, ...] | None = None, key: Key | None = None
    ) -> tuple[jax.Array, tuple[Carry, ...]]:
        final, ys = net.apply(params["rnn"], params["embed"][tokens], initial_carry=carry, key=key, unroll=unroll)
        return ys @ params["out_w"] + params["out_b"], final

    return Model(net, init, apply)


def sample(
    model: Model,
    params: ModelParams,
    prompt_ids: Iterable[int] | np.ndarray | jax.Array,
    *,
    length: int,
    key: Key,
    temperature: float = 1.0,
    exclude: Iterable[int] = (),
) -> list[int]:
    """Continue ``prompt_ids`` by ``length`` tokens drawn from ``softmax(logits / temperature)``: the
    tokens of :func:`sample_chunks`, joined. Returns the generated ids (without the prompt) as a list of ints."""
    chunks = sample_chunks(model, params, prompt_ids, length=length, key=key, temperature=temperature, exclude=exclude)
    return [token for chunk in chunks for token in chunk]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _draw(
    model: Model,
    chunk: int,
    params: ModelParams,
    state: tuple[jax.Array, tuple[Carry, ...]],
    start: int,
    key: Key,
    banned: jax.Array,
    temperature: float,
) -> tuple[tuple[jax.Array, tuple[Carry, ...]], jax.Array]:
    """``chunk`` tokens from ``state`` = (last logits, carry), token ``t`` drawn with ``fold_in(key, t)``;
    compiled once per model and chunk size."""

    def step(state: tuple[jax.Array, tuple[Carry, ...]], t: jax.Array) -> tuple[Any, jax.Array]:
        logits, carry = state
        token = jax.random.categorical(jax.random.fold_in(key, t), jnp.where(banned, -jnp.inf, logits / temperature))
        logits, carry = model.apply(params, token[:, None], carry)
        return (logits[:, -1], carry), token[0]

    return jax.lax.scan(step, state, start + jnp.arange(chunk))


def sample_chunks(
    model: Model,
    params: ModelParams,
    prompt_ids: Iterable[int] | np.ndarray | jax.Array,
    *,
    length: int | None,
    key: Key,
    temperature: float = 1.0,
    exclude: Iterable[int] = (),
    chunk: int = 100,
) -> Iterator[list[int]]:
    """Continue ``prompt_ids`` by ``length`` tokens (None: without end), yielded as they are drawn, ``chunk``
    at a time (one compiled scan for every chunk; memory does not grow with ``length``).

    ``exclude``: token ids never drawn (e.g. the vocabulary's special tokens). Token ``t`` is drawn with
    ``fold_in(key, t)``, so the tokens do not depend on ``chunk``.

    The prompt is folded into ``key``: with one key, two prompts would otherwise draw the same uniform
    numbers at every step (the Gumbel noise of ``categorical``), and once the model's distributions agree,
    as they soon do after a prompt, the two texts become identical.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, received {temperature!r}")
    key = jax.random.fold_in(key, zlib.crc32(np.asarray(prompt_ids, np.int32).tobytes()) & 0x7FFFFFFF)
    logits, carry = model.apply(params, jnp.asarray(prompt_ids, jnp.int32)[None])
    banned = jnp.zeros(logits.shape[-1], bool).at[jnp.asarray(list(exclude), jnp.int32)].set(True)

    state, done = (logits[:, -1], carry), 0
    while length is None or done < length:
        state, tokens = _draw(model, chunk, params, state, done, key, banned, temperature)
        take = chunk if length is None else min(chunk, length - done)
        yield [int(t) for t in tokens[:take]]
        done += take


__all__ = [
    "Model",
    "classifier",
    "language_model",
    "sample",
    "sample_chunks",
]
