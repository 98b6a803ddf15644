"""The selective-copying generator of ``examples.modern_study``: its invariants, checked row by row in NumPy."""

import jax
import numpy as np
import pytest

from examples.selective_copying import MARKER, NOISE, selective_copying_batch

LENGTH, TOKENS, VOCAB = 40, 6, 9
_batch = jax.jit(selective_copying_batch, static_argnums=(1, 2, 3, 4))


def test_layout_and_order():
    inputs, targets = map(np.asarray, _batch(jax.random.key(0), 64, LENGTH, TOKENS, VOCAB))
    assert inputs.shape == (64, LENGTH + TOKENS) and targets.shape == (64, TOKENS)
    assert inputs.dtype == targets.dtype == np.int32
    assert (inputs[:, LENGTH:] == MARKER).all()
    assert ((targets > MARKER) & (targets < VOCAB)).all()
    assert (inputs[:, :LENGTH] != MARKER).all()
    for row, target in zip(inputs[:, :LENGTH], targets):
        data = row[row != NOISE]
        np.testing.assert_array_equal(data, target)  # every data token once, in the order of the targets
    positions = [tuple(np.flatnonzero(row != NOISE)) for row in inputs[:, :LENGTH]]
    assert len(set(positions)) > 60  # the positions differ from row to row
    assert len(np.unique(targets)) == VOCAB - 2  # every data value occurs


def test_keys_give_independent_streams():
    a, _ = _batch(jax.random.key(0), 64, LENGTH, TOKENS, VOCAB)
    b, _ = _batch(jax.random.key(1), 64, LENGTH, TOKENS, VOCAB)
    c, _ = _batch(jax.random.key(0), 64, LENGTH, TOKENS, VOCAB)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_every_position_reachable():
    inputs, _ = _batch(jax.random.key(2), 64, LENGTH, TOKENS, VOCAB)
    used = (np.asarray(inputs)[:, :LENGTH] != NOISE).any(axis=0)
    assert used.all()  # 64 rows x 6 tokens cover all 40 positions with near certainty (fixed key)


@pytest.mark.parametrize(("tokens", "vocab", "match"), [(0, 16, "tokens"), (LENGTH + 1, 16, "tokens"), (2, 2, "vocab")])
def test_bad_arguments(tokens, vocab, match):
    with pytest.raises(ValueError, match=match):
        selective_copying_batch(jax.random.key(0), 2, LENGTH, tokens, vocab)
