"""Recurrent cells as parameter pytrees plus pure functions.

Axis letters as in :mod:`rnnx.core.typing`: ``b`` batch (any number of axes), ``t`` time, ``d`` input
features, ``h`` hidden units, ``g`` gate blocks (1 for the simple RNN, 3 for the GRU, 4 for the LSTM).

Every cell splits its update into two pure functions so that the sequence runner can choose where the
input projection happens without a second copy of any equation:

* ``project(params, x) -> xp``: the input projection ``x @ w_ih + b``, shape ``(*b, g*h)``. It has no
  recurrence, so it may run once over the whole sequence ("hoisted") or inside each step.
* ``step(params, carry, xp) -> (carry, y)``: the recurrence.

The classic cells write their equations once, as ``update(params, carry, x, rec) -> carry`` over lists of
gate blocks: ``x`` the ``g`` blocks of ``xp``, each ``(*b, h)``, and ``rec(v, gates)`` the blocks
``v @ w_hh[:, gate]`` for the gates asked for. ``step`` supplies ``rec`` as one matmul split into blocks;
the fused kernels (:mod:`rnnx.core.backends.pallas`) supply it as one matmul per block, read from on-chip
weights, and differentiate the same ``update``.

``apply(params, carry, x) = step(params, carry, project(params, x))`` is the usual
``(carry, x) -> (carry, y)`` contract of a ``jax.lax.scan`` step.

Parameters are stored as PyTorch does, gates concatenated in PyTorch's order, but transposed so a
batch of row vectors multiplies them: ``w_ih (d, g*h)``, ``w_hh (h, g*h)``, ``b (g*h,)``.
Where PyTorch keeps two biases (``b_ih + b_hh``) we keep their exact sum; the reset-after GRU also keeps
``b_hn`` because it sits inside the reset product.

Initialisation defaults (all overridable): input weights glorot-uniform and recurrent weights orthogonal,
each drawn per gate block, biases zero, LSTM forget-gate bias 1. Orthogonal recurrent blocks keep
``||dh_t/dh_0||`` near 1 at initialisation, and a forget bias of 1 (Gers et al. 2000; Jozefowicz et al.
2015) lets the cell state carry gradient from the first step. These are Keras's defaults. PyTorch and
Equinox instead draw everything from U(-1/sqrt(h), 1/sqrt(h)); pass ``torch_init(hidden_size)`` as
``kernel_init``, ``recurrent_init`` and ``bias_init`` (with ``forget_bias=0``) to reproduce that.
"""

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from rnnx.core._common import check_hidden_size, check_input_size, draw, gate_blocks, input_projection
from rnnx.core.deprecation import CARRY_RENAME, warn_renamed
from rnnx.core.typing import BatchShape, Carry, Hidden, Initializer, Key, Params, Projected, Recurrent, Step

# The factory arguments that say how a cell is initialised and in which dtypes it computes: part of
# Cell.spec (they change the results), but not of Cell.config, the architecture record.
_SETUP = frozenset({"kernel_init", "recurrent_init", "bias_init", "dtype", "param_dtype"})


class LSTMCarry(NamedTuple):
    """The LSTM state: hidden ``h (*b, h)`` and cell ``c (*b, h)``."""

    h: jax.Array
    c: jax.Array


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True, repr=False)
class Cell:
    """A recurrent cell: static configuration and the pure functions a factory built from it.

    A cell compares and hashes by ``name`` and ``spec`` only. Two cells from equal factory calls are equal
    (``rnnx.lstm(8) == rnnx.lstm(8)``) and compute the same function, so a cell can be a static argument of
    ``jax.jit`` (``static_argnums``) or a static attribute of an NNX module, and equal cells share one
    compilation. JAX sees a cell as a pytree with no leaves, never as a pytree of functions.

    Attributes:
      name: the factory's name in :data:`rnnx.CELLS`, e.g. ``"lstm"``.
      spec: ``(argument, value)`` pairs of every factory argument that changes what the cell computes:
        the :attr:`config` items, then the initialisers as given (None for the defaults, which the factory
        applies) and the dtypes (``jnp.dtype``, None for a compute dtype that follows the params).
      gates: ``g``, the number of gate blocks in ``w_ih`` (and ``w_hh``).
      init: ``(key, input_size) -> params``.
      default_carry: ``(params, batch_shape=()) -> carry``: the carry a sequence starts from when none is
        given, zeros ``(*b, h)`` (an ``LSTMCarry`` of two for the LSTM), or the learned ``h0`` (and ``c0``)
        broadcast to ``batch_shape`` with ``learn_initial_carry=True``.
      project: ``(params, x (*b, d)) -> xp (*b, g*h)``.
      step: ``(params, carry, xp) -> (carry, y (*b, h))``.
      param_shapes: ``(input_size) -> {name: shape}``, what ``init`` returns.
      coefficients: ``(params, xp) -> (a, b)``, each ``(*b, h)``, for cells whose step is the elementwise
        linear recurrence ``h_t = a_t * h_{t-1} + b_t`` (no recurrent matrix); ``rnnx.unroll`` then runs all
        steps at once with a parallel scan (:mod:`rnnx.core.parallel`). None for every other cell.
      update: ``(params, carry, x, rec) -> carry``, the classic cells' equations over gate blocks (see the
        module docstring), with ``params`` already in the compute dtype; ``y`` is the new carry's ``h``.
        None for the parallel-scan cells and the modern cells (:mod:`rnnx.core.lru`, :mod:`rnnx.core.xlstm`).
      readout: ``(params, h, xp) -> y``, for a linear-recurrence cell whose output is not its state (the LRU's
        ``y = Re(C h) + D x``), applied by the parallel scan to every state; None where ``y`` is the state.
      parallel_form: ``(params, xs (t, n, d), carry, valid, reset, fresh, reverse) -> (carry, ys (t, n, h))``,
        a whole-sequence form with ``rnnx.unroll``'s semantics for a cell whose recurrence is linear but not
        elementwise (the mLSTM's chunkwise form); arguments as :mod:`rnnx.core.backends.scan` receives them.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> rnnx.lstm(8) == rnnx.lstm(8), rnnx.lstm(8) == rnnx.lstm(8, dtype=jnp.bfloat16)
    (True, False)
    >>> rnnx.gru(8, reset_after=False)
    gru(hidden_size=8, reset_after=False, use_bias=True, learn_initial_carry=False)
    """

    name: str
    spec: tuple[tuple[str, Hashable], ...]
    gates: int = dataclasses.field(compare=False)
    init: Callable[[Key, int], Params] = dataclasses.field(compare=False)
    default_carry: Callable[..., Carry] = dataclasses.field(compare=False)
    project: Callable[[Params, Step], Projected] = dataclasses.field(compare=False)
    step: Callable[[Params, Carry, Projected], tuple[Carry, Hidden]] = dataclasses.field(compare=False)
    param_shapes: Callable[[int], dict[str, tuple[int, ...]]] = dataclasses.field(compare=False)
    coefficients: Callable[[Params, Projected], tuple[Hidden, Hidden]] | None = dataclasses.field(
        default=None, compare=False
    )
    update: Callable[[Params, Carry, list, Recurrent], Carry] | None = dataclasses.field(default=None, compare=False)
    readout: Callable[[Params, Any, Projected], Hidden] | None = dataclasses.field(default=None, compare=False)
    parallel_form: Callable[..., tuple[Carry, Any]] | None = dataclasses.field(default=None, compare=False)

    @property
    def parallel(self) -> bool:
        """Whether ``rnnx.unroll(..., parallel=True)`` can run this cell: it has ``coefficients`` (a parallel
        scan) or a ``parallel_form``."""
        return self.coefficients is not None or self.parallel_form is not None

    @property
    def config(self) -> dict[str, Any]:
        """The factory's architecture arguments (``hidden_size``, ``activation``, ``use_bias``, ...), a new dict.

        What interop and checkpoint records read; :attr:`spec` without the initialisers and dtypes.
        """
        return {k: v for k, v in self.spec if k not in _SETUP}

    @property
    def hidden_size(self) -> int:
        """``h``."""
        return cast(int, dict(self.spec)["hidden_size"])

    def apply(self, params: Params, carry: Carry, x: Step) -> tuple[Carry, Hidden]:
        """One time step: ``(carry, x (*b, d)) -> (carry, y (*b, h))``."""
        return self.step(params, carry, self.project(params, x))

    def initial_carry(self, params: Params, batch_shape: BatchShape = ()) -> Carry:
        """Deprecated alias of :attr:`default_carry`, removed in rnnx 0.3."""
        warn_renamed("Cell.initial_carry(params, batch_shape)", "Cell.default_carry", CARRY_RENAME)
        return self.default_carry(params, batch_shape)

    def __repr__(self) -> str:
        shown = [(k, v) for k, v in self.spec if k not in _SETUP or not _is_default(k, v)]
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in shown)})"


def _is_default(name: str, value) -> bool:
    return value is None or (name == "param_dtype" and value == jnp.dtype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class _TorchInit:
    """U(-1/sqrt(h), 1/sqrt(h)); a frozen dataclass, so equal bounds give equal, hashable initialisers."""

    hidden_size: int

    def __call__(self, key: Key, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        bound = 1.0 / np.sqrt(self.hidden_size)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    def __repr__(self) -> str:
        return f"torch_init({self.hidden_size!r})"


def torch_init(hidden_size: int) -> Initializer:
    """PyTorch's and Equinox's default: U(-1/sqrt(h), 1/sqrt(h)) for every weight and bias.

    Initialisers compare by value, so cells built with them do too:

    >>> import rnnx
    >>> rnnx.torch_init(8) == rnnx.torch_init(8), rnnx.lstm(8, bias_init=rnnx.torch_init(8)) == rnnx.lstm(8)
    (True, False)
    """
    return _TorchInit(hidden_size)


def recurrent(w_hh: jax.Array, gates: int) -> Recurrent:
    """``rec(v, wanted) -> [v @ w_hh[:, block] for block in wanted]`` as one matmul over the wanted blocks.

    ``w_hh (h, gates * h)``; ``wanted`` is a tuple of consecutive block indices, e.g. ``(0, 1)``.
    """
    size = w_hh.shape[-1] // gates

    def rec(v, wanted):
        lo, hi = wanted[0] * size, (wanted[-1] + 1) * size
        return jnp.split(v @ w_hh[:, lo:hi], len(wanted), axis=-1)

    return rec


def output(carry: Carry) -> Hidden:
    """``y_t`` of a classic cell: the new carry's ``h``."""
    return carry.h if isinstance(carry, LSTMCarry) else carry


def as_step(update: Callable, params: Params, rec: Recurrent) -> Callable[[Carry, list], tuple[Carry, Hidden]]:
    """``(carry, x) -> (carry, y)`` from a classic cell's ``update`` with this ``rec``: ``y`` is the new ``h``.

    ``cell.step`` and the fused kernels (:mod:`rnnx.core.backends.pallas`) build their steps with it.
    """

    def step(carry, x):
        new = update(params, carry, x, rec)
        return new, output(new)

    return step


def count_params(params) -> int:
    """Number of scalars in a params pytree.

    >>> import jax, rnnx
    >>> rnnx.count_params(rnnx.lstm(128).init(jax.random.key(0), 300))
    219648
    """
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def _make_cell(
    name,
    hidden_size,
    gates,
    update,
    *,
    carry_names,
    use_bias,
    extra_shapes,
    bias_fill,
    kernel_init,
    recurrent_init,
    bias_init,
    learn_initial_carry,
    dtype,
    param_dtype,
    config,
):
    """Assemble the Cell functions shared by every gated layout ``w_ih, w_hh, b (+ extras)``.

    The initialisers arrive as the user gave them (None for the defaults), so that ``Cell.spec`` records
    them as given; the defaults are applied here.
    """
    check_hidden_size(hidden_size)
    dtype = None if dtype is None else jnp.dtype(dtype)
    param_dtype = jnp.dtype(param_dtype)
    setup = dict(
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=param_dtype,
    )
    kernel_init = kernel_init or jax.nn.initializers.glorot_uniform()
    recurrent_init = recurrent_init or jax.nn.initializers.orthogonal()
    bias_init = bias_init or jax.nn.initializers.zeros
    h, gh = hidden_size, gates * hidden_size

    def param_shapes(input_size):
        shapes = {"w_ih": (input_size, gh), "w_hh": (h, gh)}
        if use_bias:
            shapes |= {"b": (gh,), **{k: (h,) for k in extra_shapes}}
        if learn_initial_carry:
            shapes |= {f"{n}0": (h,) for n in carry_names}
        return shapes

    def init(key, input_size):
        check_input_size(input_size)
        k_ih, k_hh, k_b = jax.random.split(key, 3)
        params = {
            "w_ih": gate_blocks(kernel_init, k_ih, input_size, h, gates, param_dtype),
            "w_hh": gate_blocks(recurrent_init, k_hh, h, h, gates, param_dtype),
        }
        if use_bias:
            kb = jax.random.split(k_b, 1 + len(extra_shapes))
            b = draw(bias_init, kb[0], (gh,), param_dtype) + jnp.asarray(bias_fill(h), jnp.float32)
            params["b"] = b.astype(param_dtype)
            params |= {n: draw(bias_init, k, (h,), param_dtype) for n, k in zip(extra_shapes, kb[1:])}
        if learn_initial_carry:
            params |= {f"{n}0": jnp.zeros((h,), param_dtype) for n in carry_names}
        return params

    def compute(params):
        return params if dtype is None else jax.tree.map(lambda p: p.astype(dtype), params)

    def default_carry(params, batch_shape: BatchShape = ()):
        carry_dtype = params["w_hh"].dtype if dtype is None else dtype
        shape = (*tuple(batch_shape), h)
        states = [
            jnp.broadcast_to(params[f"{n}0"].astype(carry_dtype), shape)
            if learn_initial_carry
            else jnp.zeros(shape, carry_dtype)
            for n in carry_names
        ]
        return LSTMCarry(*states) if len(states) == 2 else states[0]

    def project(params, x):
        return input_projection(params, x, dtype, use_bias)

    def step(params, carry, xp):
        p = compute(params)
        return as_step(update, p, recurrent(p["w_hh"], gates))(carry, jnp.split(xp, gates, axis=-1))

    return Cell(
        name=name,
        spec=(*config.items(), *setup.items()),
        gates=gates,
        init=init,
        default_carry=default_carry,
        project=project,
        step=step,
        param_shapes=param_shapes,
        update=update,
    )


_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def simple_rnn(
    hidden_size: int,
    *,
    activation: str = "tanh",
    use_bias: bool = True,
    learn_initial_carry: bool = False,
    kernel_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """Elman RNN cell, as ``torch.nn.RNN``.

    .. math::  h_t = \\phi(x_t W_{ih} + h_{t-1} W_{hh} + b), \\quad y_t = h_t

    with ``phi`` tanh or relu. Parameters ``h (d + h + 1)``: 54,912 for d=300, h=128.

    Args:
      hidden_size: ``h``, a positive integer.
      activation: ``"tanh"`` or ``"relu"``.
      use_bias: keep ``b``; without it the cell matches ``torch.nn.RNN(bias=False)``.
      learn_initial_carry: add a trained initial state ``h0 (h,)`` to the params.
      kernel_init, recurrent_init, bias_init: ``jax.nn.initializers``-style functions, applied per gate block.
      dtype: compute dtype (``None``: the params' dtype). ``param_dtype``: storage dtype.

    Returns:
      A :class:`Cell` whose carry is ``h (*b, h)``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.simple_rnn(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.default_carry(params, (2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 4)
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, received {activation!r}")
    phi = _ACTIVATIONS[activation]

    def update(p, h, x, rec):
        return phi(x[0] + rec(h, (0,))[0])

    return _make_cell(
        "simple_rnn",
        hidden_size,
        1,
        update,
        carry_names=("h",),
        use_bias=use_bias,
        extra_shapes=(),
        bias_fill=lambda h: 0.0,
        learn_initial_carry=learn_initial_carry,
        dtype=dtype,
        param_dtype=param_dtype,
        config=dict(
            hidden_size=hidden_size, activation=activation, use_bias=use_bias, learn_initial_carry=learn_initial_carry
        ),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    use_bias: bool = True,
    learn_initial_carry: bool = False,
    kernel_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """Long short-term memory cell (Hochreiter & Schmidhuber 1997), as ``torch.nn.LSTM``.

    .. math::
        [i, f, g, o] = x_t W_{ih} + h_{t-1} W_{hh} + b  \\quad\\text{(gate order i, f, g, o)}

        c_t = \\sigma(f) \\odot c_{t-1} + \\sigma(i) \\odot \\tanh(g)

        h_t = \\sigma(o) \\odot \\tanh(c_t), \\quad y_t = h_t

    Parameters ``4h (d + h + 1)``: 219,648 for d=300, h=128.

    Arguments not listed below are as in :func:`simple_rnn`.

    Args:
      hidden_size: ``h``, a positive integer.
      forget_bias: added to the forget-gate slice of ``b`` at initialisation (1.0 by default;
        0.0 matches Flax's default).

    Returns:
      A :class:`Cell` whose carry is ``LSTMCarry(h, c)``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.lstm(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.default_carry(params), jnp.ones(3))
    >>> carry.c.shape, y.shape
    ((4,), (4,))
    """

    def update(p, carry, x, rec):
        i, f, g, o = (a + b for a, b in zip(x, rec(carry.h, (0, 1, 2, 3))))
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return LSTMCarry(jax.nn.sigmoid(o) * jnp.tanh(c), c)

    return _make_cell(
        "lstm",
        hidden_size,
        4,
        update,
        carry_names=("h", "c"),
        use_bias=use_bias,
        extra_shapes=(),
        bias_fill=lambda h: np.concatenate([np.zeros(h), np.full(h, forget_bias), np.zeros(2 * h)]),
        learn_initial_carry=learn_initial_carry,
        dtype=dtype,
        param_dtype=param_dtype,
        config=dict(
            hidden_size=hidden_size, forget_bias=forget_bias, use_bias=use_bias, learn_initial_carry=learn_initial_carry
        ),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    use_bias: bool = True,
    learn_initial_carry: bool = False,
    kernel_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype: DTypeLike | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Cell:
    """Gated recurrent unit (Cho et al. 2014), in either placement of the reset gate.

    Gate order r, z, n. With ``[x_r, x_z, x_n] = x_t W_{ih} + b`` and ``U = W_{hh}``:

    .. math::
        r = \\sigma(x_r + h_{t-1} U_r), \\quad z = \\sigma(x_z + h_{t-1} U_z)

        n = \\tanh(x_n + r \\odot (h_{t-1} U_n + b_{hn}))   \\quad\\text{reset_after=True (PyTorch, cuDNN)}

        n = \\tanh(x_n + (r \\odot h_{t-1}) U_n)            \\quad\\text{reset_after=False (Cho et al.)}

        h_t = (1 - z) \\odot n + z \\odot h_{t-1}, \\quad y_t = h_t

    Parameters ``3h (d + h + 1)``: 164,736 for d=300, h=128; reset-after adds ``b_hn (h,)``: 164,864.
    The two conventions are different functions: neither converts exactly into the other.

    Arguments not listed below are as in :func:`simple_rnn`.

    Args:
      hidden_size: ``h``, a positive integer.
      reset_after: where the reset gate applies (see above). True matches ``torch.nn.GRU``.

    Returns:
      A :class:`Cell` whose carry is ``h (*b, h)``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> params = rnnx.gru(4, reset_after=False).init(jax.random.key(0), 3)
    >>> rnnx.count_params(params)
    96
    """

    def update_after(p, hprev, x, rec):
        hr, hz, hn = rec(hprev, (0, 1, 2))
        r, z = jax.nn.sigmoid(x[0] + hr), jax.nn.sigmoid(x[1] + hz)
        n = jnp.tanh(x[2] + r * (hn + p["b_hn"] if use_bias else hn))
        return n + z * (hprev - n)

    def update_before(p, hprev, x, rec):
        hr, hz = rec(hprev, (0, 1))
        r, z = jax.nn.sigmoid(x[0] + hr), jax.nn.sigmoid(x[1] + hz)
        n = jnp.tanh(x[2] + rec(r * hprev, (2,))[0])
        return n + z * (hprev - n)

    return _make_cell(
        "gru",
        hidden_size,
        3,
        update_after if reset_after else update_before,
        carry_names=("h",),
        use_bias=use_bias,
        extra_shapes=("b_hn",) if reset_after else (),
        bias_fill=lambda h: 0.0,
        learn_initial_carry=learn_initial_carry,
        dtype=dtype,
        param_dtype=param_dtype,
        config=dict(
            hidden_size=hidden_size, reset_after=reset_after, use_bias=use_bias, learn_initial_carry=learn_initial_carry
        ),
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )


__all__ = [
    "Cell",
    "LSTMCarry",
    "as_step",
    "count_params",
    "gru",
    "lstm",
    "output",
    "recurrent",
    "simple_rnn",
    "torch_init",
]
