"""Weight exchange with PyTorch. ``torch`` is optional: it is only imported by the caller's module.

PyTorch keeps ``weight_ih_l{k}[_reverse] (g*h, d)``, ``weight_hh (g*h, h)``, ``bias_ih`` and ``bias_hh``
with gates in the same order as rnnx (i, f, g, o and r, z, n). rnnx stores the transposes and the exact
sum ``b = bias_ih + bias_hh``, except for the reset-after GRU's new-gate recurrent bias ``b_hn``, which
sits inside ``r * (W_hn h + b_hn)`` and so cannot be folded.
"""

import jax.numpy as jnp
import numpy as np

from rnnx.cells import gru, lstm, simple_rnn
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
            params["b"] = b_ih + np.concatenate([b_hh[: 2 * h], np.zeros_like(b_hh[2 * h :])])
            params["b_hn"] = b_hh[2 * h :]
        else:
            params["b"] = b_ih + b_hh
    return {k: jnp.asarray(np.ascontiguousarray(v)) for k, v in params.items()}
