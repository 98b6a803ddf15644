"""rnnx: recurrent networks as pure functions for JAX.

>>> import jax, jax.numpy as jnp, rnnx
>>> cell = rnnx.lstm(16)
>>> params = cell.init(jax.random.key(0), 8)
>>> carry, ys = rnnx.unroll(cell, params, jnp.zeros((4, 10, 8)))
>>> ys.shape, carry.h.shape
((4, 10, 16), (4, 16))
"""

from rnnx import core as core
from rnnx import diagnostics as diagnostics
from rnnx import interop as interop
from rnnx import nnx_state as _nnx_state
from rnnx import training as training
from rnnx.core import CELLS as CELLS
from rnnx.core import Cell as Cell
from rnnx.core import LSTMCarry as LSTMCarry
from rnnx.core import MLSTMCarry as MLSTMCarry
from rnnx.core import SLSTMCarry as SLSTMCarry
from rnnx.core import Stack as Stack
from rnnx.core import count_params as count_params
from rnnx.core import default_hoist as default_hoist
from rnnx.core import gru as gru
from rnnx.core import linear_scan as linear_scan
from rnnx.core import lru as lru
from rnnx.core import lstm as lstm
from rnnx.core import make_cell as make_cell
from rnnx.core import min_gru as min_gru
from rnnx.core import min_lstm as min_lstm
from rnnx.core import mlstm as mlstm
from rnnx.core import rg_lru as rg_lru
from rnnx.core import simple_rnn as simple_rnn
from rnnx.core import slstm as slstm
from rnnx.core import stacked as stacked
from rnnx.core import tbptt as tbptt
from rnnx.core import torch_init as torch_init
from rnnx.core import unroll as unroll

__version__ = "0.1.0"

# rnnx.training builds on the core only, so flax.nnx objects reach its checkpoints through this converter,
# registered here, above both layers.
training.checkpoint.register_state_converter(_nnx_state.CONVERTER)


def __getattr__(name):
    # rnnx.nn imports flax.nnx and rnnx.apps imports the data pipeline; neither is needed to use the
    # functional core, so they load on first use: `rnnx.nn.LSTM` and `import rnnx.nn` both work.
    if name in ("nn", "apps"):
        import importlib

        return importlib.import_module(f"rnnx.{name}")
    raise AttributeError(f"module 'rnnx' has no attribute {name!r}")


__all__ = [
    "CELLS",
    "Cell",
    "LSTMCarry",
    "MLSTMCarry",
    "SLSTMCarry",
    "Stack",
    "apps",
    "core",
    "count_params",
    "default_hoist",
    "diagnostics",
    "gru",
    "interop",
    "linear_scan",
    "lru",
    "lstm",
    "make_cell",
    "min_gru",
    "min_lstm",
    "mlstm",
    "nn",
    "rg_lru",
    "simple_rnn",
    "slstm",
    "stacked",
    "tbptt",
    "torch_init",
    "training",
    "unroll",
]
