"""Exact weight exchange with Keras 3 ``SimpleRNN``/``LSTM``/``GRU`` layers (alone or in ``Bidirectional``) and
their weight arrays."""

from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnx.core._common import check_params, check_stack_params
from rnnx.core.registry import make_cell
from rnnx.core.stack import Stack, stacked
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
    forms: dict[str, dict[str, Any]] = {"SimpleRNN": {"activation": activation}, "GRU": {"reset_after": reset_after}}
    form = forms.get(kind, {})
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
    """The rnnx form of a built Keras 3 recurrent layer, exactly.

    A ``keras.layers.SimpleRNN``/``LSTM``/``GRU`` gives ``(cell, params)``. A ``keras.layers.Bidirectional``
    around one (``merge_mode="concat"``, the default) gives ``(net, params)``: a one-layer bidirectional
    :class:`rnnx.Stack` whose ``net.apply(params, xs)`` returns Keras's outputs, forward half then backward
    half, and ``params == [[forward, backward]]``. Its backward layer is the one with ``go_backwards=True``,
    Keras's own or one passed as ``backward_layer=``.

    Keras is batch-major, as rnnx's default. At masked steps Keras repeats the last output unless the layer
    has ``zero_output_for_mask=True`` (which ``Bidirectional`` sets when it returns sequences); rnnx writes
    zeros there, so compare outputs at valid steps, or build the Keras layer with ``zero_output_for_mask=True``.

    Raises a ValueError for a layer that is not built yet (build it, or call it once, first) and for
    settings that change the function: an activation rnnx lacks, a recurrent activation other than sigmoid,
    a ``merge_mode`` other than ``"concat"``, or ``go_backwards=True`` outside a ``Bidirectional``.
    """
    kind = type(layer).__name__
    if kind == "Bidirectional":
        return _from_bidirectional(layer)
    return _from_layer(layer, backwards=False)


def _from_bidirectional(layer):
    _check_built(layer, "Bidirectional")
    if layer.merge_mode != "concat":
        raise ValueError(
            f"Keras Bidirectional merge_mode must be 'concat' to convert exactly (rnnx concatenates the forward "
            f"and backward outputs), received {layer.merge_mode!r}"
        )
    if layer.forward_layer.go_backwards or not layer.backward_layer.go_backwards:
        raise ValueError(
            "Keras Bidirectional's forward layer must have go_backwards=False and its backward layer True, "
            f"received {layer.forward_layer.go_backwards} and {layer.backward_layer.go_backwards}"
        )
    cell, forward = _from_layer(layer.forward_layer, backwards=False)
    backward_cell, backward = _from_layer(layer.backward_layer, backwards=True)
    if backward_cell != cell:
        raise ValueError(
            "Keras Bidirectional's forward and backward layers must compute the same cell to form one rnnx stack; "
            f"received {cell.name} {dict(cell.config)} and {backward_cell.name} {dict(backward_cell.config)}"
        )
    return stacked(cell, bidirectional=True), [[forward, backward]]


def _check_built(layer, kind: str) -> None:
    if not layer.built or not layer.get_weights():
        raise ValueError(
            f"the Keras {kind} layer {layer.name!r} has no weights yet: build it first, e.g. "
            "layer.build((None, None, input_size)), or call it on a batch"
        )


def _from_layer(layer, *, backwards: bool):
    """``(cell, params)`` of one Keras recurrent layer; ``backwards``: it is a Bidirectional's backward half."""
    kind = type(layer).__name__
    if kind not in _KERAS_KINDS:
        raise TypeError(f"layer must be a keras.layers.SimpleRNN, LSTM, GRU or Bidirectional, received {kind}")
    _check_built(layer, kind)
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
    if config.get("go_backwards") and not backwards:
        raise ValueError(
            "a Keras layer with go_backwards=True reads the sequence backwards and returns its outputs in reversed "
            "time order, which no rnnx cell holds; convert the keras.layers.Bidirectional that holds it (a "
            "bidirectional rnnx stack), or convert its weights with from_keras_weights and run rnnx.unroll(..., "
            "reverse=True), whose outputs are Keras's flipped along time"
        )
    return from_keras_weights(
        kind, layer.get_weights(), activation=activation, reset_after=config.get("reset_after", True)
    )


def to_keras(cell, params, **layer_kwargs):
    """A built Keras layer holding ``params``, via :func:`to_keras_weights`; the inverse of :func:`from_keras`.

    A cell or a one-layer, one-direction stack gives a ``keras.layers.SimpleRNN``/``LSTM``/``GRU``; a
    one-layer bidirectional stack gives a ``keras.layers.Bidirectional`` around one (``merge_mode="concat"``)
    with the backward direction's params in its ``go_backwards=True`` layer. ``layer_kwargs`` go to the
    recurrent layer's constructor (e.g. ``return_sequences=True``); the settings that fix the function (units,
    activation, use_bias, reset_after) come from the cell. Keras layers are batch-major.
    """
    import keras

    if isinstance(cell, Stack) and cell.bidirectional and cell.num_layers == 1:
        check_stack_params(cell, params)
        (forward, backward), cell = params[0], cell.cell
        layer = keras.layers.Bidirectional(_keras_layer(keras, cell, layer_kwargs))
        layer.build((None, None, forward["w_ih"].shape[0]))
        layer.forward_layer.set_weights(to_keras_weights(cell, forward))
        layer.backward_layer.set_weights(to_keras_weights(cell, backward))
        return layer
    cell, params = _single(cell, params, "Keras")
    weights = to_keras_weights(cell, params)
    layer = _keras_layer(keras, cell, layer_kwargs)
    layer.build((None, None, weights[0].shape[0]))
    layer.set_weights(weights)
    return layer


def _keras_layer(keras, cell, layer_kwargs):
    """An unbuilt Keras layer computing ``cell``'s function."""
    _exportable(cell, "Keras")
    kind = {v: k for k, v in _KERAS_KINDS.items()}[cell.name]
    config = {"units": cell.hidden_size, "use_bias": cell.config["use_bias"]}
    if cell.name == "simple_rnn":
        config["activation"] = cell.config["activation"]
    if cell.name == "gru":
        config["reset_after"] = cell.config["reset_after"]
    return getattr(keras.layers, kind)(**config, **layer_kwargs)


__all__ = ["from_keras", "from_keras_weights", "to_keras", "to_keras_weights"]
