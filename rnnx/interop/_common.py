"""What the converters share: cell and stack checks, and gate-block reordering."""

import numpy as np

from rnnx.core._common import check_params
from rnnx.core.cells import Cell
from rnnx.core.stack import Stack


def _single(cell, params, target: str):
    """``(cell, cell_params)`` from a Cell or a one-layer, one-direction Stack."""
    if isinstance(cell, Stack):
        if cell.num_layers != 1 or cell.bidirectional:
            raise ValueError(
                f"{target} converts one layer in one direction; received a stack of {cell.num_layers} layer(s) x "
                f"{cell.num_directions} direction(s): convert each net.cell, params[layer][direction] in turn"
            )
        return cell.cell, params[0][0]
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnx.Cell or rnnx.Stack, received {type(cell).__name__}")
    check_params(cell, params)
    return cell, params


def _exportable(cell: Cell, target: str) -> None:
    if cell.name not in ("simple_rnn", "lstm", "gru"):
        raise ValueError(f"{target} converts simple_rnn, lstm and gru cells; received a {cell.name!r} cell")
    if cell.config.get("learn_initial_carry"):
        raise ValueError(
            f"{target}: the cell has a learned initial carry (learn_initial_carry=True), which {target}'s layers "
            "do not hold as a weight; convert a cell without it and pass the initial state at call time"
        )


def _no_reset_before(cell: Cell, target: str) -> None:
    if cell.name == "gru" and not cell.config["reset_after"]:
        raise ValueError(
            f"{target} has only the reset-after GRU, tanh(x W_n + r * (h U_n + b_hn)); this cell is "
            "rnnx.gru(reset_after=False), tanh(x W_n + (r * h) U_n), a different function with no exact "
            f"conversion. Train with rnnx.gru(reset_after=True) to export to {target}, or use Keras "
            "(GRU(reset_after=False) is this cell)"
        )


def _np(a) -> np.ndarray:
    return np.asarray(a)


def _blocks(a, gates: int, order):
    """Reorder the gate blocks along the last axis."""
    parts = np.split(_np(a), gates, axis=-1)
    return np.concatenate([parts[k] for k in order], axis=-1)


# A private module: its helpers keep their underscores, and it exports nothing.
__all__: list[str] = []
