"""rnnx: recurrent networks as pure functions for JAX.

>>> import jax, jax.numpy as jnp, rnnx
>>> cell = rnnx.lstm(16)
>>> params = cell.init(jax.random.key(0), 8)
>>> carry, ys = rnnx.unroll(cell, params, jnp.zeros((4, 10, 8)))
>>> ys.shape, carry.h.shape
((4, 10, 16), (4, 16))
"""

from rnnx import interop as interop
from rnnx.cells import Cell as Cell
from rnnx.cells import LSTMCarry as LSTMCarry
from rnnx.cells import count_params as count_params
from rnnx.cells import gru as gru
from rnnx.cells import lstm as lstm
from rnnx.cells import simple_rnn as simple_rnn
from rnnx.cells import torch_init as torch_init
from rnnx.stack import Stack as Stack
from rnnx.stack import stacked as stacked
from rnnx.unroll import default_hoist as default_hoist
from rnnx.unroll import unroll as unroll

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "LSTMCarry",
    "Stack",
    "count_params",
    "default_hoist",
    "gru",
    "interop",
    "lstm",
    "simple_rnn",
    "stacked",
    "torch_init",
    "unroll",
]
