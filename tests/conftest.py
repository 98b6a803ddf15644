import os

import jax
import pytest

import rnnx
from tests import reference

# One registry of cells: every cell gets every test. Each entry: factory, NumPy reference step.
CELLS = {
    "rnn_tanh": (lambda h: rnnx.simple_rnn(h), reference.simple_rnn_step),
    "rnn_relu": (lambda h: rnnx.simple_rnn(h, activation="relu"),
                 lambda p, h, x: reference.simple_rnn_step(p, h, x, "relu")),
    "lstm": (lambda h: rnnx.lstm(h), reference.lstm_step),
    "gru": (lambda h: rnnx.gru(h), reference.gru_step),
    "gru_reset_before": (lambda h: rnnx.gru(h, reset_after=False),
                         lambda p, h, x: reference.gru_step(p, h, x, reset_after=False)),
    "min_gru": (lambda h: rnnx.min_gru(h), reference.min_gru_step),
    "min_lstm": (lambda h: rnnx.min_lstm(h), reference.min_lstm_step),
}  # fmt: skip

B, T, D, H = 3, 6, 5, 7


@pytest.fixture(params=sorted(CELLS))
def cell_name(request):
    return request.param


@pytest.fixture
def cell(cell_name):
    return CELLS[cell_name][0](H)


@pytest.fixture
def params(cell):
    # Non-zero biases everywhere, so that a dropped bias term would show.
    p = cell.init(jax.random.key(0), D)
    return {k: v + 0.1 * jax.random.normal(jax.random.key(7), v.shape) for k, v in p.items()}


@pytest.fixture
def xs():
    return jax.random.normal(jax.random.key(1), (B, T, D))


def require_torch():
    """Import torch, or skip with the reason; with RNNX_REQUIRE_TORCH=1 (CI) a missing torch fails."""
    if os.environ.get("RNNX_REQUIRE_TORCH") == "1":
        import torch

        return torch
    return pytest.importorskip("torch", reason="PyTorch oracle tests need torch: pip install torch==2.13.0")
