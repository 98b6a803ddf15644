import functools
import hashlib
import os
import pathlib

# Most of a test's time on XLA's CPU backend is compilation, and most of that is LLVM's optimisation of code that
# then runs a few tiny steps. At level 0 the suite compiles far faster (tests/test_cudnn.py + tests/test_pallas.py:
# 248 s -> 144 s here). It changes how fast the compiled code runs, not what it computes. Set before JAX starts its
# CPU backend; subprocesses that the tests start inherit it unless they set XLA_FLAGS themselves.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402 - after XLA_FLAGS
import pytest  # noqa: E402

import rnnx  # noqa: E402
from tests import reference  # noqa: E402

# The test registry: every cell of rnnx.CELLS under its registry name, plus variants whose equations differ.
# Each entry: factory (hidden_size -> Cell), NumPy reference step. A cell added to rnnx.CELLS needs only a
# reference step here to get every test parametrised over this registry.
REFERENCES = {
    "simple_rnn": reference.simple_rnn_step,
    "lstm": reference.lstm_step,
    "gru": reference.gru_step,
    "min_gru": reference.min_gru_step,
    "min_lstm": reference.min_lstm_step,
    "lru": reference.lru_step,
    "rg_lru": reference.rg_lru_step,
    "slstm": reference.slstm_step,
    "mlstm": reference.mlstm_step,
}
VARIANTS = {
    "simple_rnn_relu": (
        functools.partial(rnnx.simple_rnn, activation="relu"),
        functools.partial(reference.simple_rnn_step, activation="relu"),
    ),
    "gru_reset_before": (
        functools.partial(rnnx.gru, reset_after=False),
        functools.partial(reference.gru_step, reset_after=False),
    ),
}
_missing = sorted(set(rnnx.CELLS) - set(REFERENCES))
if _missing:
    raise RuntimeError(f"rnnx.CELLS has {_missing} without a NumPy reference step: add one to tests/reference.py")
CELLS = {name: (factory, REFERENCES[name]) for name, factory in rnnx.CELLS.items()} | VARIANTS

B, T, D, H = 3, 6, 5, 7

# The two tiers: the quick one (`-m "not slow"`) runs the cell-parametrised invariants on one sequential cell and
# one parallel-scan cell, the full suite on every cell. Each cell's own equations (tests/test_cells.py) are checked
# in both tiers.
QUICK_CELLS = frozenset({"lstm", "min_gru"})


def tiered(names, quick=QUICK_CELLS):
    """pytest params over ``names`` (sorted), those outside ``quick`` marked ``slow``."""
    return [pytest.param(name, marks=() if name in quick else pytest.mark.slow) for name in sorted(names)]


@pytest.fixture(params=tiered(CELLS))
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


def file_hashes(directory) -> dict[str, str]:
    """Every file under ``directory`` by its content's hash, and every folder: a run directory before and
    after a command that must write nothing."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(pathlib.Path(directory).rglob("*"))
    }
