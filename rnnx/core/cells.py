"""Recurrent cells as parameter pytrees plus pure functions.

Axis letters used throughout: ``b`` batch (any number of axes), ``t`` time, ``d`` input features,
``h`` hidden units, ``g`` gates (1 for the simple RNN, 3 for the GRU, 4 for the LSTM).

Every cell splits its update into two pure functions so that the sequence runner can choose where the
input projection happens without a second copy of any equation:

* ``project(params, x) -> xp``: the input projection ``x @ w_ih + b``, shape ``(*b, g*h)``. It has no
  recurrence, so it may run once over the whole sequence ("hoisted") or inside each step.
* ``step(params, carry, xp) -> (carry, y)``: the recurrence.

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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, jax.Array]
Initializer = Callable[..., jax.Array]


class LSTMCarry(NamedTuple):
    """The LSTM state: hidden ``h (*b, h)`` and cell ``c (*b, h)``."""

    h: jax.Array
    c: jax.Array


class Cell(NamedTuple):
    """A recurrent cell: configuration closed over by pure functions.

    Attributes:
      name: the factory's name, e.g. ``"lstm"``.
      hidden_size: ``h``.
      gates: ``g``, the number of gate blocks in ``w_ih`` and ``w_hh``.
      init: ``(key, input_size) -> params``.
      initial_carry: ``(params, batch_shape=()) -> carry``.
      project: ``(params, x (*b, d)) -> xp (*b, g*h)``.
      step: ``(params, carry, xp) -> (carry, y (*b, h))``.
      param_shapes: ``(input_size) -> {name: shape}``, what ``init`` returns.
      config: the factory's keyword arguments, for interop and error messages.
      coefficients: ``(params, xp) -> (a, b)``, each ``(*b, h)``, for cells whose step is the elementwise
        linear recurrence ``h_t = a_t * h_{t-1} + b_t`` (no recurrent matrix); ``rnnx.unroll`` then runs all
        steps at once with a parallel scan (:mod:`rnnx.core.parallel`). None for every other cell.
    """

    name: str
    hidden_size: int
    gates: int
    init: Callable[[jax.Array, int], Params]
    initial_carry: Callable[..., Any]
    project: Callable[[Params, jax.Array], jax.Array]
    step: Callable[[Params, Any, jax.Array], tuple[Any, jax.Array]]
    param_shapes: Callable[[int], dict[str, tuple[int, ...]]]
    config: dict
    coefficients: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]] | None = None

    def apply(self, params: Params, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One time step: ``(carry, x (*b, d)) -> (carry, y (*b, h))``."""
        return self.step(params, carry, self.project(params, x))


def torch_init(hidden_size: int) -> Initializer:
    """PyTorch's and Equinox's default: U(-1/sqrt(h), 1/sqrt(h)) for every weight and bias."""
    bound = 1.0 / np.sqrt(hidden_size)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def count_params(params) -> int:
    """Number of scalars in a params pytree.

    >>> import jax, rnnx
    >>> rnnx.count_params(rnnx.lstm(128).init(jax.random.key(0), 300))
    219648
    """
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def check_params(cell: Cell, params) -> int:
    """Raise a ValueError unless ``params`` were made by ``cell.init``; return their ``input_size``."""
    received = _shapes(params)
    w_ih = received.get("w_ih") if isinstance(received, dict) else None
    input_size = w_ih[0] if w_ih and len(w_ih) == 2 else None
    expected = cell.param_shapes(input_size) if input_size else None
    if expected != received:
        raise ValueError(
            f"params do not fit the cell {_describe(cell)}: expected arrays "
            f"{expected or cell.param_shapes('d')}, received {received}. "
            "Were they made by another cell's init?"
        )
    return input_size


def _shapes(params):
    if isinstance(params, dict) and all(hasattr(v, "shape") for v in params.values()):
        return {k: tuple(v.shape) for k, v in params.items()}
    return jax.tree.map(lambda v: tuple(getattr(v, "shape", ())), params)


def _describe(cell: Cell) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in cell.config.items())
    return f"{cell.name}({args})"


def _check_hidden_size(hidden_size) -> None:
    if not isinstance(hidden_size, (int, np.integer)) or isinstance(hidden_size, bool) or hidden_size <= 0:
        raise ValueError(f"hidden_size must be a positive integer, received {hidden_size!r}")


def check_input_size(input_size) -> None:
    if not isinstance(input_size, (int, np.integer)) or input_size <= 0:
        raise ValueError(f"input_size must be a positive integer, received {input_size!r}")


def draw(initializer, key, shape, param_dtype):
    """One initialiser draw, made in float32 and then cast: LAPACK's QR (orthogonal) has no bfloat16 kernel."""
    return initializer(key, shape, jnp.float32).astype(param_dtype)


def gate_blocks(initializer, key, rows: int, hidden: int, gates: int, param_dtype):
    """A ``(rows, gates * hidden)`` weight drawn one ``(rows, hidden)`` gate block at a time."""
    keys = jax.random.split(key, gates)
    return jnp.concatenate([draw(initializer, k, (rows, hidden), param_dtype) for k in keys], axis=-1)


def input_projection(params, x, dtype, use_bias: bool = True):
    """``x @ w_ih + b`` in the compute ``dtype`` (None: the params' dtype): every cell's ``project``."""
    w = params["w_ih"] if dtype is None else params["w_ih"].astype(dtype)
    xp = x.astype(w.dtype) @ w
    if not use_bias:
        return xp
    return xp + (params["b"] if dtype is None else params["b"].astype(dtype))


def _make_cell(
    name,
    hidden_size,
    gates,
    step,
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
    """Assemble the Cell functions shared by every gated layout ``w_ih, w_hh, b (+ extras)``."""
    _check_hidden_size(hidden_size)
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

    def initial_carry(params, batch_shape=()):
        carry_dtype = dtype or params["w_hh"].dtype
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

    return Cell(
        name=name,
        hidden_size=h,
        gates=gates,
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=lambda params, carry, xp: step(compute(params), carry, xp),
        param_shapes=param_shapes,
        config=config,
    )


def _defaults(kernel_init, recurrent_init, bias_init):
    return dict(
        kernel_init=kernel_init or jax.nn.initializers.glorot_uniform(),
        recurrent_init=recurrent_init or jax.nn.initializers.orthogonal(),
        bias_init=bias_init or jax.nn.initializers.zeros,
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
    dtype=None,
    param_dtype=jnp.float32,
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
    >>> carry, y = cell.apply(params, cell.initial_carry(params, (2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 4)
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, received {activation!r}")
    phi = _ACTIVATIONS[activation]

    def step(p, h, xp):
        h = phi(xp + h @ p["w_hh"])
        return h, h

    return _make_cell(
        "simple_rnn", hidden_size, 1, step,
        carry_names=("h",), use_bias=use_bias, extra_shapes=(), bias_fill=lambda h: 0.0,
        learn_initial_carry=learn_initial_carry, dtype=dtype, param_dtype=param_dtype,
        config=dict(hidden_size=hidden_size, activation=activation, use_bias=use_bias,
                    learn_initial_carry=learn_initial_carry),
        **_defaults(kernel_init, recurrent_init, bias_init),
    )  # fmt: skip


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    use_bias: bool = True,
    learn_initial_carry: bool = False,
    kernel_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """Long short-term memory cell (Hochreiter & Schmidhuber 1997), as ``torch.nn.LSTM``.

    .. math::
        [i, f, g, o] = x_t W_{ih} + h_{t-1} W_{hh} + b  \\quad\\text{(gate order i, f, g, o)}

        c_t = \\sigma(f) \\odot c_{t-1} + \\sigma(i) \\odot \\tanh(g)

        h_t = \\sigma(o) \\odot \\tanh(c_t), \\quad y_t = h_t

    Parameters ``4h (d + h + 1)``: 219,648 for d=300, h=128.

    Args:
      hidden_size: ``h``, a positive integer.
      forget_bias: added to the forget-gate slice of ``b`` at initialisation (1.0 by default;
        0.0 matches Flax's default).
      Other arguments as in :func:`simple_rnn`.

    Returns:
      A :class:`Cell` whose carry is ``LSTMCarry(h, c)``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> cell = rnnx.lstm(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, y = cell.apply(params, cell.initial_carry(params), jnp.ones(3))
    >>> carry.c.shape, y.shape
    ((4,), (4,))
    """

    def step(p, carry, xp):
        i, f, g, o = jnp.split(xp + carry.h @ p["w_hh"], 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return LSTMCarry(h, c), h

    return _make_cell(
        "lstm", hidden_size, 4, step,
        carry_names=("h", "c"), use_bias=use_bias, extra_shapes=(),
        bias_fill=lambda h: np.concatenate([np.zeros(h), np.full(h, forget_bias), np.zeros(2 * h)]),
        learn_initial_carry=learn_initial_carry, dtype=dtype, param_dtype=param_dtype,
        config=dict(hidden_size=hidden_size, forget_bias=forget_bias, use_bias=use_bias,
                    learn_initial_carry=learn_initial_carry),
        **_defaults(kernel_init, recurrent_init, bias_init),
    )  # fmt: skip


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    use_bias: bool = True,
    learn_initial_carry: bool = False,
    kernel_init: Initializer | None = None,
    recurrent_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    dtype=None,
    param_dtype=jnp.float32,
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

    Args:
      hidden_size: ``h``, a positive integer.
      reset_after: where the reset gate applies (see above). True matches ``torch.nn.GRU``.
      Other arguments as in :func:`simple_rnn`.

    Returns:
      A :class:`Cell` whose carry is ``h (*b, h)``.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> params = rnnx.gru(4, reset_after=False).init(jax.random.key(0), 3)
    >>> rnnx.count_params(params)
    96
    """
    h = hidden_size

    def step_after(p, hprev, xp):
        hh = hprev @ p["w_hh"]
        rz = jax.nn.sigmoid(xp[..., : 2 * h] + hh[..., : 2 * h])
        r, z = rz[..., :h], rz[..., h:]
        hn = hh[..., 2 * h :] + p["b_hn"] if use_bias else hh[..., 2 * h :]
        n = jnp.tanh(xp[..., 2 * h :] + r * hn)
        hnew = n + z * (hprev - n)
        return hnew, hnew

    def step_before(p, hprev, xp):
        rz = jax.nn.sigmoid(xp[..., : 2 * h] + hprev @ p["w_hh"][:, : 2 * h])
        r, z = rz[..., :h], rz[..., h:]
        n = jnp.tanh(xp[..., 2 * h :] + (r * hprev) @ p["w_hh"][:, 2 * h :])
        hnew = n + z * (hprev - n)
        return hnew, hnew

    return _make_cell(
        "gru", hidden_size, 3, step_after if reset_after else step_before,
        carry_names=("h",), use_bias=use_bias, extra_shapes=("b_hn",) if reset_after else (),
        bias_fill=lambda h: 0.0,
        learn_initial_carry=learn_initial_carry, dtype=dtype, param_dtype=param_dtype,
        config=dict(hidden_size=hidden_size, reset_after=reset_after, use_bias=use_bias,
                    learn_initial_carry=learn_initial_carry),
        **_defaults(kernel_init, recurrent_init, bias_init),
    )  # fmt: skip
