"""Lossless weight exchange with PyTorch, Keras 3 and Flax linen.

None of those libraries is imported by ``import rnnx``: ``to_torch`` and ``to_keras`` import theirs when
called, ``from_torch``/``from_keras`` read the module they are given, and ``*_keras_weights`` work on plain
arrays.

PyTorch keeps ``weight_ih_l{k}[_reverse] (g*h, d)``, ``weight_hh (g*h, h)``, ``bias_ih`` and ``bias_hh``
with gates in the same order as rnnx (i, f, g, o and r, z, n). rnnx stores the transposes and the exact
sum ``b = bias_ih + bias_hh``, except for the reset-after GRU's new-gate recurrent bias ``b_hn``, which
sits inside ``r * (W_hn h + b_hn)`` and so cannot be folded.

Round trips: rnnx -> other -> rnnx is bit-exact (the folded bias goes to the input bias and the other bias
is filled with -0.0, since ``x + (-0.0) == x`` for every float ``x``, signed zeros included). Other -> rnnx
-> other is exact in outputs but not in the two biases separately: only their sum is kept.

Where no exact conversion exists it raises a ValueError that says why; nothing is approximated. The
reset-before GRU (``rnnx.gru(reset_after=False)``, Keras ``reset_after=False``) computes
``tanh(x W_n + (r * h) U_n)``; PyTorch's and linen's GRU compute ``tanh(x W_n + r * (h U_n + b_hn))``, a
different function of the same weights.
"""

import jax
import jax.numpy as jnp
import numpy as np

from rnnx.cells import Cell, check_params, gru, lstm, simple_rnn
from rnnx.stack import Stack, stacked

_CELLS = {
    "RNN_TANH": lambda h, bias: simple_rnn(h, activation="tanh", use_bias=bias),
    "RNN_RELU": lambda h, bias: simple_rnn(h, activation="relu", use_bias=bias),
    "LSTM": lambda h, bias: lstm(h, use_bias=bias),
    "GRU": lambda h, bias: gru(h, reset_after=True, use_bias=bias),
}


def from_torch(module) -> tuple[Stack, list]:
    """Convert a ``torch.nn.RNN``/``LSTM``/``GRU`` into ``(net, params)``, exactly.

    Any ``num_layers``, ``bidirectional``, ``bias`` and ``batch_first`` (``batch_first=False`` gives a
    time-major stack). ``net.apply(params, xs)`` then matches ``module(xs)``; the carry tuple is
    ``h_n`` (and ``c_n``) split along its first axis.

    >>> import torch, rnnx  # doctest: +SKIP
    >>> net, params = rnnx.interop.from_torch(torch.nn.GRU(300, 128, num_layers=2, batch_first=True))  # doctest: +SKIP
    """
    mode = getattr(module, "mode", None)
    if mode not in _CELLS:
        raise TypeError(
            f"module must be a torch.nn.RNN, LSTM or GRU, received {type(module).__name__}"
            + (f" with mode {mode!r}" if mode else "")
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(f"LSTM with proj_size={module.proj_size} has no rnnx equivalent; expected proj_size=0")
    h = module.hidden_size
    net = stacked(
        _CELLS[mode](h, module.bias),
        module.num_layers,
        bidirectional=module.bidirectional,
        dropout=float(module.dropout),
        time_major=not module.batch_first,
    )
    params = [
        [
            _layer_params(module, f"_l{layer}{'_reverse' if direction else ''}", mode, h)
            for direction in range(net.num_directions)
        ]
        for layer in range(module.num_layers)
    ]
    return net, params


def _layer_params(module, suffix, mode, h):
    get = lambda name: getattr(module, name + suffix).detach().cpu().numpy()  # noqa: E731
    params = {"w_ih": get("weight_ih").T, "w_hh": get("weight_hh").T}
    if module.bias:
        b_ih, b_hh = get("bias_ih"), get("bias_hh")
        if mode == "GRU":
            # Only the r and z slices fold; the n slice of b_ih is kept as it is (adding +0.0 would
            # turn a -0.0 into +0.0 and break bit-exact round trips).
            params["b"] = np.concatenate([b_ih[: 2 * h] + b_hh[: 2 * h], b_ih[2 * h :]])
            params["b_hn"] = b_hh[2 * h :]
        else:
            params["b"] = b_ih + b_hh
    return {k: jnp.asarray(np.ascontiguousarray(v)) for k, v in params.items()}


# ----------------------------------------------------------------------------------------------- helpers


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


# ----------------------------------------------------------------------------------------------- PyTorch


def to_torch(net: Stack, params):
    """The ``torch.nn.RNN``/``LSTM``/``GRU`` that computes what ``net.apply(params, ...)`` computes.

    The inverse of :func:`from_torch`. ``bias_ih`` gets the folded bias ``b`` and ``bias_hh`` is -0.0,
    except the reset-after GRU's n slice, which gets ``b_hn``; outputs are exact, and
    ``from_torch(to_torch(net, params))`` returns ``params`` bit for bit. Raises a ValueError for the
    reset-before GRU (PyTorch has none) and for a learned initial carry.

    >>> import torch, jax, rnnx  # doctest: +SKIP
    >>> net = rnnx.stacked(rnnx.lstm(128), num_layers=2)  # doctest: +SKIP
    >>> module = rnnx.interop.to_torch(net, net.init(jax.random.key(0), 300))  # doctest: +SKIP
    """
    import torch

    if not isinstance(net, Stack):
        raise TypeError(f"net must be an rnnx.Stack (rnnx.stacked(cell)), received {type(net).__name__}")
    cell = net.cell
    _exportable(cell, "PyTorch")
    _no_reset_before(cell, "PyTorch")
    net._check(params, None)
    input_size = check_params(cell, params[0][0])
    for layer in params[1:]:
        for p in layer:
            check_params(cell, p)
    kind = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell.name]
    kwargs = {"nonlinearity": cell.config["activation"]} if kind == "RNN" else {}
    dtype = jnp.result_type(params[0][0]["w_ih"])
    torch_dtype = getattr(torch, jnp.dtype(dtype).name)
    module = getattr(torch.nn, kind)(
        input_size, cell.hidden_size, net.num_layers,
        bias=cell.config["use_bias"], batch_first=not net.time_major, dropout=net.dropout,
        bidirectional=net.bidirectional, dtype=torch_dtype, **kwargs,
    )  # fmt: skip
    h = cell.hidden_size
    with torch.no_grad():
        for layer, layer_params in enumerate(params):
            for direction, p in enumerate(layer_params):
                suffix = f"_l{layer}{'_reverse' if direction else ''}"
                tensors = {"weight_ih": _np(p["w_ih"]).T, "weight_hh": _np(p["w_hh"]).T}
                if cell.config["use_bias"]:
                    tensors["bias_ih"] = _np(p["b"])
                    bias_hh = np.full_like(_np(p["b"]), -0.0)
                    if kind == "GRU":
                        bias_hh[2 * h :] = _np(p["b_hn"])
                    tensors["bias_hh"] = bias_hh
                for name, value in tensors.items():
                    target = getattr(module, name + suffix)
                    target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64)).to(torch_dtype))
    return module


# ----------------------------------------------------------------------------------------------- Keras 3

# Keras's gate orders: LSTM i, f, c, o (rnnx's i, f, g, o); GRU z, r, h (rnnx's r, z, n).
_KERAS_GRU = (1, 0, 2)  # both directions: swapping the first two blocks is its own inverse
_KERAS_KINDS = {"SimpleRNN": "simple_rnn", "LSTM": "lstm", "GRU": "gru"}


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
    if kind == "SimpleRNN":
        cell = simple_rnn(h, activation=activation, use_bias=use_bias)
    elif kind == "LSTM":
        cell = lstm(h, use_bias=use_bias)
    else:
        cell = gru(h, reset_after=reset_after, use_bias=use_bias)
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


# ----------------------------------------------------------------------------------------------- Flax linen

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
    if kind == "simple_rnn":
        cell = simple_rnn(linen_cell.features, activation=activation)
        params = {"w_ih": _np(tree["i"]["kernel"]), "w_hh": _np(tree["h"]["kernel"]), "b": _np(tree["i"]["bias"])}
    elif kind == "lstm":
        cell = lstm(linen_cell.features)
        params = {
            "w_ih": cat([f"i{g}" for g in _LSTM_GATES]),
            "w_hh": cat([f"h{g}" for g in _LSTM_GATES]),
            "b": cat([f"h{g}" for g in _LSTM_GATES], "bias"),
        }
    else:
        cell = gru(linen_cell.features, reset_after=True)
        params = {
            "w_ih": cat([f"i{g}" for g in _GRU_GATES]),
            "w_hh": cat([f"h{g}" for g in _GRU_GATES]),
            "b": cat([f"i{g}" for g in _GRU_GATES], "bias"),
            "b_hn": _np(tree["hn"]["bias"]),
        }
    params = {k: jnp.asarray(np.ascontiguousarray(v)) for k, v in params.items()}
    check_params(cell, params)
    return cell, params
