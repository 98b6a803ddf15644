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

from rnnx.interop.keras import from_keras as from_keras
from rnnx.interop.keras import from_keras_weights as from_keras_weights
from rnnx.interop.keras import to_keras as to_keras
from rnnx.interop.keras import to_keras_weights as to_keras_weights
from rnnx.interop.linen import from_linen as from_linen
from rnnx.interop.linen import to_linen as to_linen
from rnnx.interop.torch import from_torch as from_torch
from rnnx.interop.torch import to_torch as to_torch

__all__ = [
    "from_keras",
    "from_keras_weights",
    "from_linen",
    "from_torch",
    "to_keras",
    "to_keras_weights",
    "to_linen",
    "to_torch",
]
