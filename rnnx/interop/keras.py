"""Exact weight exchange with Keras 3 ``SimpleRNN``/``LSTM``/``GRU`` layers and their weight arrays."""

import jax.numpy as jnp
import numpy as np

from rnnx.core._common import check_params
from rnnx.core.registry import make_cell
from rnnx.interop._common import _blocks, _exportable, _np, _single

# Keras's gate orders: LSTM i, f, c, o (rnnx's i, f, g, o); GRU z, r, h (rnnx's r, z, n).
_KERAS_GRU = (1, 0, 2)  # both directions: swapping the first two blocks is its own inverse
_KERAS_KINDS = {"SimpleRNN": "simple_rnn", "LSTM": "lstm", "GRU": "gru"}  # Keras class -> rnnx.CELLS name


def to_keras_weights(cell, params) -> list[np.ndarray]:
    """The arrays for ``keras.layers.SimpleRNN``/``LSTM``/``GRU(...).set_weights``, exactly.

    ``[kernel (d, g*h), recurrent_kernel (h, g*h), bias]``, gates in Keras's order; no bias without
    ``use_bias``. The reset-after GRU's bias is ``(2, 3h)``: row 0 (input) the folded ``b``, row 1
    (recurrent) -0.0 for z and r and ``b_hn`` for h. The reset-before GRU's bias is ``(3h,)``.

    >>> import jax, rnnx
    >>> cell = rnnx.gru(4)
    >>> [w.shape for w in rnnx.interop.to_keras_weights(cell, cell.init(jax.random.key(0), 3))]
    [(3, 12), (4, 12), (2, 12)]
    """
    cell, params = _single(cell, params, "Keras")
    _exportable(cell, "Keras")
    order = _KERAS_GRU if cell.name == "gru" else tuple(range(cell.gates))
    weights = [_blocks(params["w_ih"], cell.gates, order), _blocks(params["w_hh"], cell.gates, order)]
    if cell.config["use_bias"]:
        bias = _blocks(params["b"], cell.gates, order)
        if cell.name == "gru" and cell.config["reset_after"]:
            recurrent = np.full_like(bias, -0.0)
            recurrent[2 * cell.hidden_size :] = _np(params["b_hn"])
            bias = np.stack([bias, recurrent])
        weights.append(bias)
    return weights


def from_keras_weights(kind: str, weights, *, activation: str = "tanh", reset_after: bool = True):
    """``(cell, params)`` from the arrays of a Keras ``SimpleRNN``/``LSTM``/``GRU`` layer's ``get_weights()``.

    Args:
      kind: ``"SimpleRNN"``, ``"LSTM"`` or ``"GRU"``.
      weights: ``[kernel, recurrent_kernel]`` plus ``bias`` if the layer uses one, as Keras documents them.
      activation: the SimpleRNN's activation, ``"tanh"`` or ``"relu"``.
      reset_after: the GRU's convention; ``False`` gives ``rnnx.gru(reset_after=False)``, the same function.

    Exact: the reset-after GRU's two bias rows fold as PyTorch's do (z and r summed, h's recurrent row
    kept as ``b_hn``).
    """
    if kind not in _KERAS_KINDS:
        raise ValueError(f"kind must be one of {sorted(_KERAS_KINDS)}, received {kind!r}")
    weights = [_np(w) for w in weights]
    if len(weights) not in (2, 3):
        raise ValueError(
            f"weights must be [kernel, recurrent_kernel] or [kernel, recurrent_kernel, bias], received {len(weights)} "
            "arrays"
        )
    h = weights[1].shape[0]
    use_bias = len(weights) == 3
    form = {"SimpleRNN": {"activation": activation}, "GRU": {"reset_after": reset_after}}.get(kind, {})
    cell = make_cell(_KERAS_KINDS[kind], h, use_bias=use_bias, **form)
    order = _KERAS_GRU if kind == "GRU" else tuple(range(cell.gates))
    params = {"w_ih": _blocks(weights[0], cell.gates, order), "w_hh": _blocks(weights[1], cell.gates, order)}
    if use_bias:
        bias = weights[2]
        expected = (2, cell.gates * h) if kind == "GRU" and reset_after else (cell.gates * h,)
        if bias.shape != expected:
            raise ValueError(
                f"bias must have shape {expected} for Keras {kind}"
                + (f"(reset_after={reset_after})" if kind == "GRU" else "")
                + f", received {bias.shape}"
            )
        if bias.ndim == 2:  # reset-after GRU: rows (input, recurrent), blocks z, r, h
            params["b"] = _blocks(np.concatenate([bias[0, : 2 * h] + bias[1, : 2 * h], bias[0, 2 * h :]]), 3, order)
            params["b_hn"] = bias[1, 2 * h :]
        else:
            params["b"] = _blocks(bias, cell.gates, order)
    params = {k: jnp.asarray(np.ascontiguousarray(v)) for k, v in params.items()}
    check_params(cell, params)
    return cell, params


def from_keras(layer):
    """``(cell, params)`` from a built ``keras.layers.SimpleRNN``/``LSTM``/``GRU``, exactly.

    Raises a ValueError for settings that change the function: an activation rnnx lacks, a recurrent
    activation other than sigmoid, ``go_backwards=True`` (run ``rnnx.unroll(..., reverse=True)`` instead).
    """
    kind = type(layer).__name__
    if kind not in _KERAS_KINDS:
        raise TypeError(f"layer must be a keras.layers.SimpleRNN, LSTM or GRU, received {kind}")
    config = layer.get_config()
    activation = config["activation"]
    allowed = ("tanh", "relu") if kind == "SimpleRNN" else ("tanh",)
    if activation not in allowed:
        raise ValueError(
            f"Keras {kind} activation must be one of {allowed} to convert exactly, received {activation!r}"
        )
    if config.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise ValueError(
            f"Keras {kind} recurrent_activation must be 'sigmoid' to convert exactly, "
            f"received {config['recurrent_activation']!r}"
        )
    if config.get("go_backwards"):
        raise ValueError("Keras go_backwards=True returns reversed outputs; expected go_backwards=False")
    return from_keras_weights(
        kind, layer.get_weights(), activation=activation, reset_after=config.get("reset_after", True)
    )


def to_keras(cell, params, **layer_kwargs):
    """A built ``keras.layers.SimpleRNN``/``LSTM``/``GRU`` holding ``params``, via :func:`to_keras_weights`.

    ``layer_kwargs`` go to the layer's constructor (e.g. ``return_sequences=True``); the settings that
    fix the function (units, activation, use_bias, reset_after) come from the cell.
    """
    import keras

    cell, params = _single(cell, params, "Keras")
    weights = to_keras_weights(cell, params)
    kind = {v: k for k, v in _KERAS_KINDS.items()}[cell.name]
    config = {"units": cell.hidden_size, "use_bias": cell.config["use_bias"]}
    if cell.name == "simple_rnn":
        config["activation"] = cell.config["activation"]
    if cell.name == "gru":
        config["reset_after"] = cell.config["reset_after"]
    layer = getattr(keras.layers, kind)(**config, **layer_kwargs)
    layer.build((None, None, weights[0].shape[0]))
    layer.set_weights(weights)
    return layer


__all__ = ["from_keras", "from_keras_weights", "to_keras", "to_keras_weights"]
