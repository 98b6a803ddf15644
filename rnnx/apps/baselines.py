"""Baselines that every reported result sits beside: majority class, bag-of-words logistic regression,
and a smoothed character n-gram language model."""

import collections
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

TokenIds = Sequence[Sequence[int]]
"""One list of token ids per example."""

Labels = Sequence[int] | np.ndarray
"""One integer class per example."""


def majority_accuracy(train_labels: Labels, test_labels: Labels) -> float:
    """Accuracy of always predicting the most frequent training label."""
    majority = collections.Counter(np.asarray(train_labels).tolist()).most_common(1)[0][0]
    return float(np.mean(np.asarray(test_labels) == majority))


def _bag_of_words(ids: TokenIds, vocab_size: int) -> np.ndarray:
    counts = np.zeros((len(ids), vocab_size), np.float32)
    for row, tokens in enumerate(ids):
        np.add.at(counts[row], np.asarray(tokens, int), 1.0)
    return np.log1p(counts)


def bow_logistic_regression(
    train_ids: TokenIds,
    train_labels: Labels,
    test_ids: TokenIds,
    test_labels: Labels,
    *,
    vocab_size: int,
    num_classes: int,
    l2: float = 1e-4,
    steps: int = 300,
    learning_rate: float = 0.05,
) -> float:
    """Test accuracy of multinomial logistic regression on log(1 + token counts), trained full-batch with Adam."""
    x_train, x_test = _bag_of_words(train_ids, vocab_size), _bag_of_words(test_ids, vocab_size)
    y_train = jnp.asarray(train_labels)
    params = {"w": jnp.zeros((vocab_size, num_classes)), "b": jnp.zeros(num_classes)}
    optimizer = optax.adam(learning_rate)

    def loss(p: dict[str, jax.Array]) -> jax.Array:
        logits = x_train @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y_train).mean() + l2 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def step(p: dict[str, jax.Array], s: optax.OptState) -> tuple[dict[str, jax.Array], optax.OptState]:
        grads = jax.grad(loss)(p)
        updates, s = optimizer.update(grads, s)
        return optax.apply_updates(p, updates), s

    state = optimizer.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    predicted = np.asarray(jnp.argmax(x_test @ params["w"] + params["b"], -1))
    return float(np.mean(predicted == np.asarray(test_labels)))


class CharNGram:
    """An interpolated Witten-Bell smoothed character n-gram model.

    ``P(c | h) = (count(h, c) + T(h) P(c | h')) / (count(h) + T(h))`` where ``h'`` drops the oldest
    character of ``h`` and ``T(h)`` is the number of distinct characters seen after ``h``; the recursion
    ends in the add-one unigram distribution over the alphabet (training characters plus one unknown).
    """

    def __init__(self, text: str, order: int = 5) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, received {order}")
        self.order = order
        self.alphabet = sorted(set(text))
        # One C-speed pass counts the longest n-grams; each shorter table sums the one above over its oldest
        # character, plus the one n-gram at the very start that has no character before it.
        grams = collections.Counter(text[i : i + order] for i in range(len(text) - order + 1))
        # counts[n][context of length n][next char]; totals[n][context]: the sum over the next chars
        self.counts: list[dict[str, collections.Counter[str]]] = [{} for _ in range(order)]
        for n in reversed(range(order)):  # context length n: (n + 1)-grams
            table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
            for gram, count in grams.items():
                table[gram[:-1]][gram[-1]] += count
            self.counts[n] = table
            if n:
                shorter: collections.Counter[str] = collections.Counter()
                for gram, count in grams.items():
                    shorter[gram[1:]] += count
                if len(text) >= n:
                    shorter[text[:n]] += 1
                grams = shorter
        self.totals = [{h: sum(c.values()) for h, c in t.items()} for t in self.counts]

    def with_order(self, order: int) -> "CharNGram":
        """The model of a lower ``order`` from the same counts, without counting again."""
        if not 1 <= order <= self.order:
            raise ValueError(f"order must be in [1, {self.order}], received {order}")
        lower = object.__new__(CharNGram)
        lower.order, lower.alphabet = order, self.alphabet
        lower.counts, lower.totals = self.counts[:order], self.totals[:order]
        return lower

    def _prob(self, context: str, char: str) -> float:
        unigram = self.counts[0][""]
        p = (unigram.get(char, 0) + 1) / (self.totals[0][""] + len(self.alphabet) + 1)
        for n in range(1, self.order):
            if len(context) < n:
                break
            h = context[-n:]
            following = self.counts[n].get(h)
            if following is None:
                break
            types = len(following)
            p = (following.get(char, 0) + types * p) / (self.totals[n][h] + types)
        return p

    def bits_per_char(self, text: str) -> float:
        """Mean ``-log2 P(c_i | c_{i-order+1} .. c_{i-1})`` over ``text`` (its first ``order - 1`` chars as context)."""
        start = self.order - 1
        total = sum(-math.log2(self._prob(text[i - start : i], text[i])) for i in range(start, len(text)))
        return total / (len(text) - start)


__all__ = [
    "CharNGram",
    "bow_logistic_regression",
    "majority_accuracy",
]
