"""Flax NNX modules shaped like ``torch.nn.RNN``/``LSTM``/``GRU``, wrapping :func:`rnnx.stacked`.

A module holds exactly the functional params pytree of its :class:`rnnx.Stack`, each array an
``nnx.Param`` (``model.params[layer][direction]["w_ih"]``), and the stack itself as a static attribute (a
stack hashes by its configuration); its ``__call__`` is ``net.apply``: no equation lives here.
:meth:`Recurrent.functional` and :meth:`Recurrent.from_functional` convert both ways without touching a bit.

Differences from PyTorch worth knowing when swapping ``torch.nn.LSTM`` for :class:`LSTM`:

* the layout is batch-major by default (``time_major=False``), PyTorch's ``batch_first=True``;
  ``time_major=True`` is PyTorch's default ``batch_first=False``;
* a call returns ``(ys, carry)`` where ``carry`` is a tuple of ``num_layers * num_directions`` cell
  carries in ``h_n`` order (``LSTMCarry(h, c)`` for the LSTM), rather than stacked ``h_n``/``c_n`` arrays;
* :func:`to_torch_state` and :func:`from_torch_state` convert that tuple to and from PyTorch's stacked
  ``h_n (L*D, b, h)`` (and ``c_n``);
* initialisation follows rnnx (Keras's defaults); pass ``kernel_init=rnnx.torch_init(h)`` etc. for
  PyTorch's, or bring a trained module along with :meth:`Recurrent.from_torch` (weights and train/eval mode);
* one bias ``b`` per gate block (PyTorch's ``b_ih + b_hh`` folded), ``use_bias=False`` for PyTorch's
  ``bias=False``; PyTorch-only arguments (``batch_first``, ``nonlinearity``, ...) are refused with the fix;
* ``rngs`` takes an int seed (``rngs=0`` is ``nnx.Rngs(0)``), as Flax's own modules do.

:class:`SimpleRNNCell`, :class:`LSTMCell`, :class:`GRUCell`, :class:`MinGRUCell`, :class:`MinLSTMCell`,
:class:`LRUCell`, :class:`RGLRUCell`, :class:`SLSTMCell` and :class:`MLSTMCell` are single steps,
``cell(carry, x) -> (carry, y)`` (Flax's cell order), for loops of one's own.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnnx.core._common import check_stack_params
from rnnx.core.cells import Cell, LSTMCarry
from rnnx.core.deprecation import CARRY_RENAME, warn_renamed
from rnnx.core.registry import CELLS
from rnnx.core.stack import Stack, stacked
from rnnx.core.typing import BatchShape, Carry, Inputs, Key, Lengths, Mask, Outputs, StackParams
from rnnx.interop import torch as torch_interop


def _is_param(x) -> bool:
    return isinstance(x, nnx.Variable)


# PyTorch constructor arguments that rnnx spells otherwise or does without: the fix for each.
_TORCH_ARGUMENTS = {
    "batch_first": lambda v: (
        "pass time_major=False (the default) for batch-first input"
        if v
        else "pass time_major=True for time-major input"
    ),
    "bias": lambda v: "pass use_bias=False for no biases (rnnx folds b_ih + b_hh into one b per gate block)",
    "nonlinearity": lambda v: f"pass activation={v!r} (simple_rnn's activation: 'tanh' or 'relu')",
    "proj_size": lambda v: "rnnx has no projected LSTM; project the outputs with nnx.Linear instead",
    "device": lambda v: "JAX places arrays itself; use jax.device_put or a sharding on the params",
}


def _reject_torch_arguments(owner: str, kwargs: dict) -> None:
    for name, value in kwargs.items():
        if name in _TORCH_ARGUMENTS:
            raise TypeError(f"rnnx.nn.{owner}: {name} is PyTorch's; {_TORCH_ARGUMENTS[name](value)}")


def _as_rngs(rngs: nnx.Rngs | int | Key | None) -> nnx.Rngs | None:
    """``nnx.Rngs`` from an int seed or a key, as Flax's modules accept (``rngs=0`` is ``nnx.Rngs(0)``)."""
    if rngs is None or isinstance(rngs, nnx.Rngs):
        return rngs
    return nnx.Rngs(rngs)


class Recurrent(nnx.Module):
    """A stack of any rnnx cell as an NNX module; :class:`SimpleRNN`, :class:`LSTM` and :class:`GRU` build it.

    Attributes:
      net: the functional :class:`rnnx.Stack` this module runs (static: part of the graphdef).
      params: the functional params pytree of :attr:`net` (``[[fwd, bwd], ...]`` per layer), each array
        an ``nnx.Param``.
      deterministic: no dropout when True; ``model.eval()`` sets it, ``model.train()`` clears it.
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        time_major: bool = False,
        deterministic: bool = False,
        params: StackParams | None = None,
        rngs: nnx.Rngs | int | None = None,
    ):
        """Build the stack; draw params from ``rngs.params()`` unless ``params`` are given."""
        rngs = _as_rngs(rngs)
        net = stacked(cell, num_layers, bidirectional=bidirectional, dropout=dropout, time_major=time_major)
        if params is None:
            if rngs is None:
                raise ValueError("rngs is required to initialise the params, e.g. rngs=nnx.Rngs(0); received None")
            params = net.init(rngs.params(), input_size)
        else:
            check_stack_params(net, params, input_size)
        self.net = net
        self.params = nnx.data(jax.tree.map(nnx.Param, params))
        self.deterministic = bool(deterministic)
        # A forked stream, as nnx.Dropout keeps: its key and count are NNX state, updated under nnx.jit.
        self.rngs = rngs.dropout.fork() if rngs is not None and net.dropout > 0 else nnx.data(None)

    def __call__(
        self,
        xs: Inputs,
        *,
        lengths: Lengths | None = None,
        mask: Mask | None = None,
        reset: Mask | None = None,
        initial_carry: tuple[Carry, ...] | None = None,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | Key | None = None,
        **unroll_kwargs,
    ) -> tuple[Outputs, tuple[Carry, ...]]:
        """Run over ``xs (*b, t, d)`` (``(t, *b, d)`` if ``time_major``).

        Args:
          xs, lengths, mask, reset, initial_carry: as in :meth:`rnnx.Stack.apply`.
          deterministic: overrides :attr:`deterministic` for this call.
          rngs: an ``nnx.Rngs`` or a PRNG key for dropout, overriding the module's stream.
          **unroll_kwargs: ``unroll``, ``remat``, ``hoist``, as in :func:`rnnx.unroll`.

        Returns:
          ``(ys, carry)``: outputs ``(*b, t, num_directions * h)`` and a tuple of final cell carries in
          PyTorch's ``h_n`` order.
        """
        net = self.net
        _check_initial_carry(type(self).__name__, initial_carry, xs)
        deterministic = self.deterministic if deterministic is None else deterministic
        key = None if deterministic or net.dropout == 0 else self._dropout_key(rngs)
        carry, ys = net.apply(
            self.functional()[1], xs, lengths=lengths, mask=mask, reset=reset, initial_carry=initial_carry, key=key,
            **unroll_kwargs,
        )  # fmt: skip
        return ys, carry

    def default_carry(self, batch_shape: BatchShape = ()) -> tuple[Carry, ...]:
        """The carry a call starts from when none is given, a tuple shaped like a call's final carry."""
        return self.net.default_carry(self.functional()[1], batch_shape)

    def initial_carry(self, batch_shape: BatchShape = ()) -> tuple[Carry, ...]:
        """Deprecated alias of :meth:`default_carry`, removed in rnnx 0.3."""
        warn_renamed(f"rnnx.nn.{type(self).__name__}.initial_carry", "default_carry", CARRY_RENAME)
        return self.default_carry(batch_shape)

    @property
    def input_size(self) -> int:
        """``d``, the feature size of the inputs."""
        return self.params[0][0]["w_ih"].shape[0]

    @property
    def hidden_size(self) -> int:
        """``h``, each direction's hidden size."""
        return self.net.cell.hidden_size

    @property
    def num_layers(self) -> int:
        return self.net.num_layers

    @property
    def bidirectional(self) -> bool:
        return self.net.bidirectional

    def functional(self) -> tuple[Stack, StackParams]:
        """``(net, params)``, the functional view: ``net.apply(params, xs)`` returns ``(carry, ys)`` where
        ``self(xs)`` returns ``(ys, carry)``, with the same values (dropout aside)."""
        return self.net, jax.tree.map(lambda p: p[...], self.params, is_leaf=_is_param)

    @classmethod
    def from_functional(
        cls, net: Stack, params: StackParams, *, rngs: nnx.Rngs | int | None = None, deterministic: bool = False
    ) -> "Recurrent":
        """The module for ``(net, params)`` from :func:`rnnx.stacked` or :func:`rnnx.interop.from_torch`.

        Returns an instance of :class:`SimpleRNN`, :class:`LSTM` or :class:`GRU` when the cell is one of
        those (or ``cls`` itself when called on one of them), else a :class:`Recurrent`. The params are
        stored as they are, bit for bit. ``rngs`` is needed only for dropout.
        """
        if not isinstance(net, Stack):
            raise TypeError(f"net must be an rnnx.Stack (from rnnx.stacked), received {type(net).__name__}")
        kind: type[Recurrent] = _CLASSES.get(net.cell.name, Recurrent)
        if cls is not Recurrent and cls is not kind:
            raise TypeError(
                f"{cls.__name__}.from_functional needs a {cls.__name__} stack, received a {net.cell.name} one"
            )
        input_size = check_stack_params(net, params)
        options: dict[str, Any] = dict(bidirectional=net.bidirectional, dropout=net.dropout, time_major=net.time_major)
        options |= dict(deterministic=deterministic, params=params, rngs=rngs)
        if kind is Recurrent:
            return Recurrent(net.cell, input_size, net.num_layers, **options)
        config = {k: v for k, v in net.cell.config.items() if k != "hidden_size"}
        module = kind(input_size, net.cell.hidden_size, net.num_layers, **options, **config)  # type: ignore[arg-type]
        # The given net, not the rebuilt one: it keeps the cell's initialisers and dtypes.
        module.net = net
        return module

    @classmethod
    def from_torch(cls, module, *, rngs: nnx.Rngs | int | None = None) -> "Recurrent":
        """The module computing what the ``torch.nn.RNN``/``LSTM``/``GRU`` ``module`` computes, in its mode.

        The weights as :func:`rnnx.interop.from_torch` converts them, torch's layout (time-major unless
        ``batch_first``), and torch's mode: a module in eval mode gives ``deterministic=True`` (no dropout), one
        in training mode ``deterministic=False``. ``rngs`` is needed only to train with dropout.
        """
        net, params = torch_interop.from_torch(module)
        return cls.from_functional(net, params, rngs=rngs, deterministic=not module.training)

    def to_torch(self):
        """The ``torch.nn`` module with these weights, in this module's mode (``.eval()`` when deterministic)."""
        return torch_interop.to_torch(*self.functional()).train(not self.deterministic)

    def _dropout_key(self, rngs):
        if rngs is None:
            rngs = self.rngs
        if rngs is None:
            raise ValueError(
                f"dropout={self.net.dropout} needs random keys: build the module with rngs=nnx.Rngs(...), pass "
                "rngs= to the call, or call model.eval() (deterministic=True); received no rngs"
            )
        if isinstance(rngs, nnx.Rngs):
            return rngs.dropout()
        if isinstance(rngs, nnx.RngStream):
            return rngs()
        if isinstance(rngs, int):
            return jax.random.key(rngs)
        return rngs


def _check_initial_carry(owner: str, initial_carry, xs) -> None:
    """Refuse PyTorch's stacked ``h_0`` / ``(h_0, c_0)``, whose leaves have one axis more than a carry."""
    leaves = jax.tree.leaves(initial_carry)
    if not isinstance(initial_carry, tuple | list) or isinstance(initial_carry, LSTMCarry):
        if leaves:
            raise TypeError(
                f"rnnx.nn.{owner}: initial_carry must be a tuple of num_layers * num_directions cell carries, "
                f"received {type(initial_carry).__name__}; for PyTorch's stacked h_0 (L*D, b, h) pass "
                "rnnx.nn.from_torch_state(h_0)"
            )
        return
    if leaves and all(jnp.ndim(leaf) == jnp.ndim(xs) for leaf in leaves):
        raise ValueError(
            f"rnnx.nn.{owner}: initial_carry holds arrays shaped {[jnp.shape(a) for a in leaves]}, PyTorch's "
            "stacked (L*D, b, h) layout; pass rnnx.nn.from_torch_state(h_0) (or (h_0, c_0) for an LSTM)"
        )


class _Named(Recurrent):
    """A :class:`Recurrent` whose cell is ``rnnx.CELLS[cell_name]``: the constructor the classes below share."""

    cell_name: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        time_major: bool = False,
        deterministic: bool = False,
        params: StackParams | None = None,
        rngs: nnx.Rngs | int | None = None,
        **cell_kwargs: Any,
    ):
        _reject_torch_arguments(type(self).__name__, cell_kwargs)
        super().__init__(
            CELLS[self.cell_name](hidden_size, **cell_kwargs),
            input_size,
            num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            time_major=time_major,
            deterministic=deterministic,
            params=params,
            rngs=rngs,
        )


class SimpleRNN(_Named):
    """``torch.nn.RNN`` as an NNX module: ``SimpleRNN(input_size, hidden_size, num_layers, ...)``.

    Args:
      input_size: ``d``. hidden_size: ``h``. num_layers: stacked layers.
      bidirectional, dropout, time_major: as in :func:`rnnx.stacked` (dropout between layers).
      deterministic: start with dropout off (``model.eval()`` / ``model.train()`` toggle it).
      params: functional params to hold instead of drawing new ones.
      rngs: ``nnx.Rngs`` (or an int seed): ``params`` draws the weights, ``dropout`` the dropout masks.
      **cell_kwargs: for :func:`rnnx.simple_rnn` (``activation``, ``use_bias``, initialisers, dtypes).

    >>> import jax.numpy as jnp, rnnx.nn
    >>> from flax import nnx
    >>> model = rnnx.nn.SimpleRNN(3, 8, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    >>> ys, carry = model(jnp.ones((4, 5, 3)))
    >>> ys.shape, len(carry)
    ((4, 5, 16), 4)
    """

    cell_name = "simple_rnn"


class LSTM(_Named):
    """``torch.nn.LSTM`` as an NNX module: ``LSTM(input_size, hidden_size, num_layers, ...)``.

    Arguments as in :class:`SimpleRNN`; ``**cell_kwargs`` go to :func:`rnnx.lstm` (``forget_bias``, ...).

    >>> import jax.numpy as jnp, rnnx.nn
    >>> from flax import nnx
    >>> model = rnnx.nn.LSTM(3, 8, rngs=nnx.Rngs(0))
    >>> xs, lengths = jnp.ones((4, 5, 3)), jnp.array([5, 4, 2, 1])
    >>> ys, carry = model(xs, lengths=lengths)
    >>> ys.shape, carry[0].c.shape
    ((4, 5, 8), (4, 8))
    >>> net, params = model.functional()
    >>> bool((net.apply(params, xs, lengths=lengths)[1] == ys).all())
    True
    """

    cell_name = "lstm"


class GRU(_Named):
    """``torch.nn.GRU`` as an NNX module: ``GRU(input_size, hidden_size, num_layers, ...)``.

    Arguments as in :class:`SimpleRNN`; ``**cell_kwargs`` go to :func:`rnnx.gru` (``reset_after``, ...).
    """

    cell_name = "gru"


# Keyed by the registry's names: the class from_functional returns for a stack of that cell.
_CLASSES: dict[str, type[SimpleRNN | LSTM | GRU]] = {cls.cell_name: cls for cls in (SimpleRNN, LSTM, GRU)}


class RecurrentCell(nnx.Module):
    """One step of any rnnx cell as an NNX module: ``cell(carry, x) -> (carry, y)`` is ``cell.apply``.

    Attributes:
      cell: the functional :class:`rnnx.Cell` (static).
      params: its params pytree, each array an ``nnx.Param``.
    """

    def __init__(self, cell: Cell, input_size: int, *, params=None, rngs: nnx.Rngs | int | None = None):
        rngs = _as_rngs(rngs)
        if params is None:
            if rngs is None:
                raise ValueError("rngs is required to initialise the params, e.g. rngs=0; received None")
            params = cell.init(rngs.params(), input_size)
        expected = cell.param_shapes(input_size)
        received = {k: tuple(jnp.shape(v)) for k, v in params.items()}
        if received != expected:
            raise ValueError(
                f"params do not fit {cell!r} at input_size={input_size}: expected shapes {expected}, "
                f"received {received}"
            )
        self.cell = cell
        self.params = nnx.data(jax.tree.map(nnx.Param, params))

    def __call__(self, carry: Carry, x) -> tuple[Carry, Any]:
        """One step: ``carry``, ``x (*b, d)`` -> ``(carry, y (*b, h))``."""
        return self.cell.apply(self.functional()[1], carry, x)

    def default_carry(self, batch_shape: BatchShape = ()) -> Carry:
        """The cell's default carry for ``batch_shape``: ``(*b, h)`` (``LSTMCarry`` for the LSTM)."""
        return self.cell.default_carry(self.functional()[1], batch_shape)

    def initial_carry(self, batch_shape: BatchShape = ()) -> Carry:
        """Deprecated alias of :meth:`default_carry`, removed in rnnx 0.3."""
        warn_renamed(f"rnnx.nn.{type(self).__name__}.initial_carry", "default_carry", CARRY_RENAME)
        return self.default_carry(batch_shape)

    def functional(self):
        """``(cell, params)``: ``cell.apply(params, carry, x)`` is ``self(carry, x)``."""
        return self.cell, jax.tree.map(lambda p: p[...], self.params, is_leaf=_is_param)

    @property
    def input_size(self) -> int:
        return self.params["w_ih"].shape[0]

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size


class _NamedCell(RecurrentCell):
    cell_name: str

    def __init__(self, input_size: int, hidden_size: int, *, params=None, rngs=None, **cell_kwargs: Any):
        _reject_torch_arguments(type(self).__name__, cell_kwargs)
        super().__init__(CELLS[self.cell_name](hidden_size, **cell_kwargs), input_size, params=params, rngs=rngs)


class SimpleRNNCell(_NamedCell):
    """``torch.nn.RNNCell`` as an NNX module, in Flax's order: ``cell(carry, x) -> (carry, y)``.

    >>> import jax.numpy as jnp, rnnx.nn
    >>> cell = rnnx.nn.SimpleRNNCell(3, 8, rngs=0)
    >>> carry, y = cell(cell.default_carry((4,)), jnp.ones((4, 3)))
    >>> y.shape
    (4, 8)
    """

    cell_name = "simple_rnn"


class LSTMCell(_NamedCell):
    """``torch.nn.LSTMCell`` as an NNX module; the carry is ``LSTMCarry(h, c)``."""

    cell_name = "lstm"


class GRUCell(_NamedCell):
    """``torch.nn.GRUCell`` as an NNX module."""

    cell_name = "gru"


class MinGRUCell(_NamedCell):
    """One step of :func:`rnnx.min_gru` as an NNX module."""

    cell_name = "min_gru"


class MinLSTMCell(_NamedCell):
    """One step of :func:`rnnx.min_lstm` as an NNX module."""

    cell_name = "min_lstm"


class LRUCell(_NamedCell):
    """One step of :func:`rnnx.lru` as an NNX module; the carry is the complex state."""

    cell_name = "lru"


class RGLRUCell(_NamedCell):
    """One step of :func:`rnnx.rg_lru` (Griffin's recurrence) as an NNX module."""

    cell_name = "rg_lru"


class SLSTMCell(_NamedCell):
    """One step of :func:`rnnx.slstm` as an NNX module; the carry is ``SLSTMCarry(h, c, n, m)``."""

    cell_name = "slstm"


class MLSTMCell(_NamedCell):
    """One step of :func:`rnnx.mlstm` as an NNX module; the carry is ``MLSTMCarry(c, n, m)``."""

    cell_name = "mlstm"


def to_torch_state(carry: tuple[Carry, ...]):
    """A module's final carry as PyTorch's stacked state: ``h_n (L*D, *b, h)``, or ``(h_n, c_n)`` for LSTM
    carries, the layers and directions in the same order.

    >>> import jax.numpy as jnp, rnnx.nn
    >>> model = rnnx.nn.LSTM(3, 8, num_layers=2, rngs=0)
    >>> h_n, c_n = rnnx.nn.to_torch_state(model(jnp.ones((4, 5, 3)))[1])
    >>> h_n.shape, len(rnnx.nn.from_torch_state(h_n, c_n))
    ((2, 4, 8), 2)
    """
    if not isinstance(carry, tuple | list) or isinstance(carry, LSTMCarry) or not carry:
        raise TypeError(f"carry must be a module's tuple of per-layer carries, received {type(carry).__name__}")
    if all(isinstance(c, LSTMCarry) for c in carry):
        return jnp.stack([c.h for c in carry]), jnp.stack([c.c for c in carry])
    return jnp.stack(carry)


def from_torch_state(h_n, c_n=None) -> tuple[Carry, ...]:
    """PyTorch's stacked ``h_n (L*D, *b, h)`` (and an LSTM's ``c_n``) as a module's tuple of carries, for
    ``initial_carry``: ``LSTMCarry(h_n[i], c_n[i])`` with ``c_n``, else ``h_n[i]``."""
    h_n = jnp.asarray(h_n)
    if h_n.ndim < 2:
        raise ValueError(f"h_n must be stacked (L*D, *b, h), received shape {h_n.shape}")
    if c_n is None:
        return tuple(h_n)
    c_n = jnp.asarray(c_n)
    if c_n.shape != h_n.shape:
        raise ValueError(f"c_n must have h_n's shape {h_n.shape}, received {c_n.shape}")
    return tuple(LSTMCarry(h, c) for h, c in zip(h_n, c_n))


__all__ = [
    "GRU",
    "LSTM",
    "GRUCell",
    "LRUCell",
    "LSTMCell",
    "MLSTMCell",
    "MinGRUCell",
    "MinLSTMCell",
    "Recurrent",
    "RGLRUCell",
    "RecurrentCell",
    "SLSTMCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "from_torch_state",
    "to_torch_state",
]
