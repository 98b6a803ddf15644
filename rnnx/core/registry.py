"""The one mapping from cell name to cell factory.

Everything that picks a cell by name (the CLI, the NNX classes, interop, checkpoint records, benchmarks,
examples and the tests) goes through :data:`CELLS` and :func:`make_cell`, with these names. Foreign names
(PyTorch's ``"RNN_TANH"``, Keras class names) are translated in :mod:`rnnx.interop` only.

>>> import rnnx
>>> sorted(rnnx.CELLS)
['gru', 'lru', 'lstm', 'min_gru', 'min_lstm', 'mlstm', 'rg_lru', 'simple_rnn', 'slstm']
>>> rnnx.make_cell("gru", 8) == rnnx.gru(8)
True
"""

from collections.abc import Callable, Mapping
from types import MappingProxyType

from rnnx.core.cells import Cell, gru, lstm, simple_rnn
from rnnx.core.lru import lru, rg_lru
from rnnx.core.parallel import min_gru, min_lstm
from rnnx.core.xlstm import mlstm, slstm

CELLS: Mapping[str, Callable[..., Cell]] = MappingProxyType(
    {
        "simple_rnn": simple_rnn,
        "lstm": lstm,
        "gru": gru,
        "min_gru": min_gru,
        "min_lstm": min_lstm,
        "lru": lru,
        "rg_lru": rg_lru,
        "slstm": slstm,
        "mlstm": mlstm,
    }
)


def make_cell(name: str, hidden_size: int, **kwargs) -> Cell:
    """``CELLS[name](hidden_size, **kwargs)``, with an error that lists the names when ``name`` is unknown."""
    if name not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, received {name!r}")
    return CELLS[name](hidden_size, **kwargs)


__all__ = ["CELLS", "make_cell"]
