"""rnnx: recurrent networks as pure functions for JAX.

>>> import jax, jax.numpy as jnp, rnnx
>>> cell = rnnx.lstm(16)
>>> params = cell.init(jax.random.key(0), 8)
>>> carry, ys = rnnx.unroll(cell, params, jnp.zeros((4, 10, 8)))
>>> ys.shape, carry.h.shape
((4, 10, 16), (4, 16))
"""

from rnnx import baselines as baselines
from rnnx import checkpoint as checkpoint
from rnnx import corpora as corpora
from rnnx import data as data
from rnnx import diagnostics as diagnostics
from rnnx import interop as interop
from rnnx import losses as losses
from rnnx import metrics as metrics
from rnnx import models as models
from rnnx import tbptt as tbptt
from rnnx import train as train
from rnnx.cells import Cell as Cell
from rnnx.cells import LSTMCarry as LSTMCarry
from rnnx.cells import count_params as count_params
from rnnx.cells import gru as gru
from rnnx.cells import lstm as lstm
from rnnx.cells import simple_rnn as simple_rnn
from rnnx.cells import torch_init as torch_init
from rnnx.parallel import linear_scan as linear_scan
from rnnx.parallel import min_gru as min_gru
from rnnx.parallel import min_lstm as min_lstm
from rnnx.stack import Stack as Stack
from rnnx.stack import stacked as stacked
from rnnx.unroll import default_hoist as default_hoist
from rnnx.unroll import unroll as unroll

__version__ = "0.1.0"


def __getattr__(name):
    # rnnx.nn imports flax.nnx, which adds about 0.3-0.45 s to `import rnnx` (measured on this 2-core
    # machine); load it on first use instead: `rnnx.nn.LSTM` and `import rnnx.nn` both work.
    if name == "nn":
        import importlib

        return importlib.import_module("rnnx.nn")
    raise AttributeError(f"module 'rnnx' has no attribute {name!r}")


__all__ = [
    "Cell",
    "LSTMCarry",
    "Stack",
    "baselines",
    "checkpoint",
    "corpora",
    "data",
    "diagnostics",
    "count_params",
    "default_hoist",
    "gru",
    "interop",
    "linear_scan",
    "losses",
    "lstm",
    "metrics",
    "min_gru",
    "min_lstm",
    "models",
    "nn",
    "simple_rnn",
    "stacked",
    "tbptt",
    "torch_init",
    "train",
    "unroll",
]
