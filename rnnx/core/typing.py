"""Array types for rnnx's public signatures, with the axis letters defined once.

=====  ==========================================================================
``b``  batch: any number of leading axes, including none (written ``*b``)
``t``  time steps
``d``  input features (``input_size``)
``h``  hidden units (``hidden_size``)
``g``  gate blocks: 1 for the simple RNN, 2 for minGRU, 3 for the GRU and minLSTM, 4 for the LSTM
=====  ==========================================================================

Sequences are batch-major, ``(*b, t, ...)``; with ``time_major=True`` the same arrays are ``(t, *b, ...)``.
The aliases are annotations for readers and type checkers (``jaxtyping``); rnnx checks shapes itself, at
trace time, with errors that name the argument.

>>> from rnnx.core.typing import Hidden, Projected
>>> Hidden.dim_str, Projected.dim_str
('*b h', '*b g*h')
"""

from collections.abc import Callable

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree

Key = PRNGKeyArray
"""A JAX PRNG key, e.g. ``jax.random.key(0)``."""

Params = dict[str, Float[Array, "..."]]
"""One cell's parameters: ``w_ih (d, g*h)``, ``w_hh (h, g*h)``, ``b (g*h,)`` and the cell's extras."""

StackParams = list[list[Params]]
"""A :class:`rnnx.Stack`'s parameters: a list over layers of lists over directions of cell params."""

Initializer = Callable[..., Array]
"""A ``jax.nn.initializers``-style function ``(key, shape, dtype) -> array``."""

Step = Float[ArrayLike, "*b d"]
"""One step's inputs."""

Inputs = Float[ArrayLike, "*b t d"]
"""A sequence of inputs (``(t, *b, d)`` when time-major)."""

Projected = Float[Array, "*b g*h"]
"""Input projections ``x @ w_ih + b``, the gate blocks concatenated (with a time axis where ``x`` has one)."""

Hidden = Float[Array, "*b h"]
"""A hidden state or one step's output."""

Outputs = Float[Array, "*b t h"]
"""A sequence of outputs (``(t, *b, h)`` when time-major; ``h`` is ``num_directions * h`` for a stack)."""

Carry = PyTree[Float[Array, "*b h"]]
"""A cell's state: ``h (*b, h)``, or ``LSTMCarry(h, c)``, each ``(*b, h)``."""

Lengths = Int[ArrayLike, "*b"]
"""Valid steps per sequence, for right-padded batches."""

Mask = Bool[ArrayLike, "*b t"]
"""Per-step booleans (``(t, *b)`` when time-major): which steps run (``mask``), or where a sequence starts
(``reset``)."""

Coefficients = Float[Array, "t *b h"]
"""The ``a_t`` or ``b_t`` of the linear recurrence ``h_t = a_t * h_{t-1} + b_t``, time first."""

Recurrent = Callable[[Hidden, tuple[int, ...]], list[Hidden]]
"""``rec(v, gates) -> [v @ w_hh[:, gate block] for gate in gates]``: the recurrent matmul, block by block,
as a classic cell's ``update`` asks for it (:mod:`rnnx.core.cells`)."""

BatchShape = tuple[int, ...]
"""The ``*b`` axes' sizes, e.g. ``()`` or ``(32,)``."""

__all__ = [
    "BatchShape",
    "Carry",
    "Coefficients",
    "Hidden",
    "Initializer",
    "Inputs",
    "Key",
    "Lengths",
    "Mask",
    "Outputs",
    "Params",
    "Projected",
    "Recurrent",
    "StackParams",
    "Step",
]
