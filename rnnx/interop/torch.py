"""Exact weight exchange with ``torch.nn.RNN``/``LSTM``/``GRU``.

PyTorch keeps ``weight_ih_l{k}[_reverse] (g*h, d)``, ``weight_hh (g*h, h)``, ``bias_ih`` and ``bias_hh``
with gates in the same order as rnnx (i, f, g, o and r, z, n). rnnx stores the transposes and the exact
sum ``b = bias_ih + bias_hh``, except for the reset-after GRU's new-gate recurrent bias ``b_hn``, which
sits inside ``r * (W_hn h + b_hn)`` and so cannot be folded.
"""

from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnx.core._common import check_stack_params
from rnnx.core.registry import make_cell
from rnnx.core.stack import Stack, stacked
from rnnx.interop._common import _exportable, _no_reset_before, _np

# torch's module.mode -> (rnnx.CELLS name, the factory arguments that give torch's function)
_TORCH_MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "RNN_TANH": ("simple_rnn", {"activation": "tanh"}),
    "RNN_RELU": ("simple_rnn", {"activation": "relu"}),
    "LSTM": ("lstm", {}),
    "GRU": ("gru", {"reset_after": True}),
}
_TORCH_CLASSES = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}  # rnnx.CELLS name -> torch.nn class


def from_torch(module) -> tuple[Stack, list]:
    """Convert a ``torch.nn.RNN``/``LSTM``/``GRU`` into ``(net, params)``, exactly.

    Any ``num_layers``, ``bidirectional``, ``bias`` and ``batch_first``. The stack keeps torch's layout:
    ``batch_first=False``, torch's default, gives a time-major stack (``net.time_major``), which reads
    ``xs (t, *b, d)``; batch-major arrays need ``batch_first=True`` or ``dataclasses.replace(net,
    time_major=False)``. ``net.apply(params, xs)`` then matches ``module(xs)``; the carry tuple is ``h_n``
    (and ``c_n``) split along its first axis.

    ``(net, params)`` has no train/eval mode: ``net.apply`` drops out between layers only when given a
    ``key``. :meth:`rnnx.nn.Recurrent.from_torch` gives an NNX module in the torch module's mode.

    >>> import torch, rnnx  # doctest: +SKIP
    >>> net, params = rnnx.interop.from_torch(torch.nn.GRU(300, 128, num_layers=2, batch_first=True))  # doctest: +SKIP
    """
    mode = getattr(module, "mode", None)
    if mode not in _TORCH_MODES:
        raise TypeError(
            f"module must be a torch.nn.RNN, LSTM or GRU, received {type(module).__name__}"
            + (f" with mode {mode!r}" if mode else "")
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(f"LSTM with proj_size={module.proj_size} has no rnnx equivalent; expected proj_size=0")
    h = module.hidden_size
    name, form = _TORCH_MODES[mode]
    net = stacked(
        make_cell(name, h, use_bias=module.bias, **form),
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
    input_size = check_stack_params(net, params)
    kind = _TORCH_CLASSES[cell.name]
    kwargs = {"nonlinearity": cell.config["activation"]} if kind == "RNN" else {}
    dtype = jnp.result_type(params[0][0]["w_ih"])
    torch_dtype = getattr(torch, jnp.dtype(dtype).name)
    layout = dict(batch_first=not net.time_major, dropout=net.dropout, bidirectional=net.bidirectional)
    module = getattr(torch.nn, kind)(
        input_size,
        cell.hidden_size,
        net.num_layers,
        bias=cell.config["use_bias"],
        dtype=torch_dtype,
        **layout,
        **kwargs,
    )
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


__all__ = ["from_torch", "to_torch"]
