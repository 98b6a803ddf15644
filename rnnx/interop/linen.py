"""Exact weight exchange with Flax linen's ``SimpleCell``, ``LSTMCell``/``OptimizedLSTMCell`` and ``GRUCell``."""

import jax
import jax.numpy as jnp
import numpy as np

from rnnx.core._common import check_params
from rnnx.core.registry import make_cell
from rnnx.interop._common import _exportable, _no_reset_before, _np, _single

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")


def to_linen(cell, params, *, optimized: bool = False):
    """``(linen_cell, variables)`` with ``linen_cell.apply(variables, carry, x)`` equal to ``cell.apply``.

    ``simple_rnn`` becomes ``nn.SimpleCell``, ``lstm`` ``nn.LSTMCell`` (``nn.OptimizedLSTMCell`` with
    ``optimized=True``; same params), reset-after ``gru`` ``nn.GRUCell``. linen's LSTM carry is ``(c, h)``,
    rnnx's ``LSTMCarry(h, c)``. A cell without bias gets zero biases (linen cells always have them),
    which is exact. The reset-before GRU raises a ValueError: linen's GRUCell is reset-after.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.gru(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> linen_cell, variables = rnnx.interop.to_linen(cell, params)
    >>> h, y = linen_cell.apply(variables, jnp.zeros(4), jnp.ones(3))
    >>> bool(jnp.allclose(y, cell.apply(params, jnp.zeros(4), jnp.ones(3))[1], atol=1e-6))
    True
    """
    from flax import linen as nn

    cell, params = _single(cell, params, "Flax linen")
    _exportable(cell, "Flax linen")
    _no_reset_before(cell, "Flax linen")
    h, dtype = cell.hidden_size, jnp.result_type(params["w_ih"])
    bias = params["b"] if cell.config["use_bias"] else jnp.zeros((cell.gates * h,), dtype)
    w_ih, w_hh, bias = (np.split(_np(a), cell.gates, axis=-1) for a in (params["w_ih"], params["w_hh"], bias))
    dense = lambda kernel, b=None: {"kernel": jnp.asarray(kernel)} | ({} if b is None else {"bias": jnp.asarray(b)})  # noqa: E731
    linen_cell: nn.RNNCellBase
    if cell.name == "simple_rnn":
        activation = {"tanh": nn.tanh, "relu": nn.relu}[cell.config["activation"]]
        linen_cell = nn.SimpleCell(h, activation_fn=activation, param_dtype=dtype)
        tree = {"i": dense(w_ih[0], bias[0]), "h": dense(w_hh[0])}
    elif cell.name == "lstm":
        linen_cell = (nn.OptimizedLSTMCell if optimized else nn.LSTMCell)(h, param_dtype=dtype)
        tree = {f"i{g}": dense(w_ih[k]) for k, g in enumerate(_LSTM_GATES)}
        tree |= {f"h{g}": dense(w_hh[k], bias[k]) for k, g in enumerate(_LSTM_GATES)}
    else:
        b_hn = params["b_hn"] if cell.config["use_bias"] else jnp.zeros((h,), dtype)
        linen_cell = nn.GRUCell(h, param_dtype=dtype)
        tree = {f"i{g}": dense(w_ih[k], bias[k]) for k, g in enumerate(_GRU_GATES)}
        tree |= {"hr": dense(w_hh[0]), "hz": dense(w_hh[1]), "hn": dense(w_hh[2], b_hn)}
    return linen_cell, {"params": tree}


def from_linen(linen_cell, variables):
    """``(cell, params)`` from a ``flax.linen`` ``SimpleCell``/``LSTMCell``/``OptimizedLSTMCell``/``GRUCell``.

    Args:
      linen_cell: the cell module (its type and activations decide the rnnx cell).
      variables: ``{"params": {...}}`` as ``linen_cell.init`` returns, or the inner params dict.

    Exact. Raises a ValueError for settings with no rnnx equivalent (other activations, ``residual=True``).
    """
    from flax import linen as nn

    tree = variables.get("params", variables) if isinstance(variables, dict) else variables
    # linen cell class -> rnnx.CELLS name
    kinds = {nn.SimpleCell: "simple_rnn", nn.LSTMCell: "lstm", nn.OptimizedLSTMCell: "lstm", nn.GRUCell: "gru"}
    if type(linen_cell) not in kinds:
        raise TypeError(
            "linen_cell must be a flax.linen SimpleCell, LSTMCell, OptimizedLSTMCell or GRUCell, "
            f"received {type(linen_cell).__name__}"
        )
    kind = kinds[type(linen_cell)]
    activations = {jnp.tanh: "tanh", jax.nn.relu: "relu"}
    activation = activations.get(linen_cell.activation_fn)
    if activation is None or (kind != "simple_rnn" and activation != "tanh"):
        raise ValueError(
            f"{type(linen_cell).__name__}.activation_fn must be tanh"
            + (" or relu" if kind == "simple_rnn" else "")
            + f" to convert exactly, received {linen_cell.activation_fn}"
        )
    if kind != "simple_rnn" and linen_cell.gate_fn is not jax.nn.sigmoid:
        raise ValueError(
            f"{type(linen_cell).__name__}.gate_fn must be sigmoid to convert exactly, received {linen_cell.gate_fn}"
        )
    if getattr(linen_cell, "residual", False):
        raise ValueError("SimpleCell(residual=True) adds h to the pre-activation; rnnx has no such cell")
    cat = lambda names, key="kernel": np.concatenate([_np(tree[n][key]) for n in names], axis=-1)  # noqa: E731
    form = {"simple_rnn": {"activation": activation}, "gru": {"reset_after": True}}.get(kind, {})
    cell = make_cell(kind, linen_cell.features, **form)
    if kind == "simple_rnn":
        params = {"w_ih": _np(tree["i"]["kernel"]), "w_hh": _np(tree["h"]["kernel"]), "b": _np(tree["i"]["bias"])}
    elif kind == "lstm":
        params = {
            "w_ih": cat([f"i{g}" for g in _LSTM_GATES]),
            "w_hh": cat([f"h{g}" for g in _LSTM_GATES]),
            "b": cat([f"h{g}" for g in _LSTM_GATES], "bias"),
        }
    else:
        params = {
            "w_ih": cat([f"i{g}" for g in _GRU_GATES]),
            "w_hh": cat([f"h{g}" for g in _GRU_GATES]),
            "b": cat([f"i{g}" for g in _GRU_GATES], "bias"),
            "b_hn": _np(tree["hn"]["bias"]),
        }
    params = {k: jnp.asarray(np.ascontiguousarray(v)) for k, v in params.items()}
    check_params(cell, params)
    return cell, params


__all__ = ["from_linen", "to_linen"]
