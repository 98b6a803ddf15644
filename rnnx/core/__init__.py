"""The functional core: cells as parameter pytrees plus pure functions, and the loops that run them.

Pure JAX; nothing here imports flax, optax, orbax or ``datasets``, and nothing prints.

- :mod:`rnnx.core.cells`: ``Cell``, ``simple_rnn``, ``lstm``, ``gru`` (the classic equations);
- :mod:`rnnx.core.parallel`: ``min_gru``, ``min_lstm`` and ``linear_scan`` (parallel-scan cells);
- :mod:`rnnx.core.lru`: ``lru``, ``rg_lru`` (diagonal linear recurrences, complex for the LRU);
- :mod:`rnnx.core.xlstm`: ``slstm``, ``mlstm`` (xLSTM's exponentially gated cells; the mLSTM's chunkwise
  parallel form in :mod:`rnnx.core.matrix_memory`);
- :mod:`rnnx.core.registry`: ``CELLS``, the one name -> factory mapping, and ``make_cell``;
- :mod:`rnnx.core.unroll`: ``unroll``, one cell over a sequence (lengths, masks, resets, reverse);
- :mod:`rnnx.core.stack`: ``stacked``, layers and directions with dropout between them;
- :mod:`rnnx.core.tbptt`: windows of a long sequence, for truncated backpropagation through time;
- :mod:`rnnx.core.typing`: the array types of the signatures, with the axis letters defined once.

Cells and stacks are static configuration: they compare and hash by their factory arguments, so they can be
static arguments of ``jax.jit``.
"""

from rnnx.core import tbptt as tbptt
from rnnx.core.cells import Cell as Cell
from rnnx.core.cells import LSTMCarry as LSTMCarry
from rnnx.core.cells import count_params as count_params
from rnnx.core.cells import gru as gru
from rnnx.core.cells import lstm as lstm
from rnnx.core.cells import simple_rnn as simple_rnn
from rnnx.core.cells import torch_init as torch_init
from rnnx.core.lru import lru as lru
from rnnx.core.lru import rg_lru as rg_lru
from rnnx.core.matrix_memory import MLSTMCarry as MLSTMCarry
from rnnx.core.parallel import linear_scan as linear_scan
from rnnx.core.parallel import min_gru as min_gru
from rnnx.core.parallel import min_lstm as min_lstm
from rnnx.core.registry import CELLS as CELLS
from rnnx.core.registry import make_cell as make_cell
from rnnx.core.stack import Stack as Stack
from rnnx.core.stack import stacked as stacked
from rnnx.core.unroll import default_hoist as default_hoist
from rnnx.core.unroll import unroll as unroll
from rnnx.core.xlstm import SLSTMCarry as SLSTMCarry
from rnnx.core.xlstm import mlstm as mlstm
from rnnx.core.xlstm import slstm as slstm

__all__ = [
    "CELLS",
    "Cell",
    "LSTMCarry",
    "MLSTMCarry",
    "SLSTMCarry",
    "Stack",
    "count_params",
    "default_hoist",
    "gru",
    "linear_scan",
    "lru",
    "lstm",
    "make_cell",
    "min_gru",
    "min_lstm",
    "mlstm",
    "rg_lru",
    "simple_rnn",
    "slstm",
    "stacked",
    "tbptt",
    "torch_init",
    "unroll",
]
