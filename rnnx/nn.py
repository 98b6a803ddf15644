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
* initialisation follows rnnx (Keras's defaults); pass ``kernel_init=rnnx.torch_init(h)`` etc. for
  PyTorch's, or bring trained weights along with :func:`rnnx.interop.from_torch` and
  :meth:`Recurrent.from_functional`.
"""

from typing import Any

import jax
from flax import nnx

from rnnx.core._common import check_stack_params
from rnnx.core.cells import Cell
from rnnx.core.registry import CELLS
from rnnx.core.stack import Stack, stacked
from rnnx.core.typing import BatchShape, Carry, Inputs, Key, Lengths, Mask, Outputs, StackParams


def _is_param(x) -> bool:
    return isinstance(x, nnx.Variable)


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
        rngs: nnx.Rngs | None = None,
    ):
        """Build the stack; draw params from ``rngs.params()`` unless ``params`` are given."""
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
        deterministic = self.deterministic if deterministic is None else deterministic
        key = None if deterministic or net.dropout == 0 else self._dropout_key(rngs)
        options = dict(lengths=lengths, mask=mask, reset=reset, initial_carry=initial_carry, key=key)
        carry, ys = net.apply(self.functional()[1], xs, **options, **unroll_kwargs)
        return ys, carry

    def initial_carry(self, batch_shape: BatchShape = ()) -> tuple[Carry, ...]:
        """The default initial carry, a tuple shaped like a call's final carry."""
        return self.net.initial_carry(self.functional()[1], batch_shape)

    def functional(self) -> tuple[Stack, StackParams]:
        """``(net, params)``, the functional view: ``net.apply(params, xs)`` returns ``(carry, ys)`` where
        ``self(xs)`` returns ``(ys, carry)``, with the same values (dropout aside)."""
        return self.net, jax.tree.map(lambda p: p[...], self.params, is_leaf=_is_param)

    @classmethod
    def from_functional(
        cls, net: Stack, params: StackParams, *, rngs: nnx.Rngs | None = None, deterministic: bool = False
    ) -> "Recurrent":
        """The module for ``(net, params)`` from :func:`rnnx.stacked` or :func:`rnnx.interop.from_torch`.

        Returns an instance of :class:`SimpleRNN`, :class:`LSTM` or :class:`GRU` when the cell is one of
        those (or ``cls`` itself when called on one of them), else a :class:`Recurrent`. The params are
        stored as they are, bit for bit. ``rngs`` is needed only for dropout.
        """
        if not isinstance(net, Stack):
            raise TypeError(f"net must be an rnnx.Stack (from rnnx.stacked), received {type(net).__name__}")
        kind = _CLASSES.get(net.cell.name, Recurrent)
        if cls is not Recurrent and cls is not kind:
            raise TypeError(
                f"{cls.__name__}.from_functional needs a {cls.__name__} stack, received a {net.cell.name} one"
            )
        input_size = check_stack_params(net, params)
        options = dict(bidirectional=net.bidirectional, dropout=net.dropout, time_major=net.time_major)
        options |= dict(deterministic=deterministic, params=params, rngs=rngs)
        if kind is Recurrent:
            return Recurrent(net.cell, input_size, net.num_layers, **options)
        config = {k: v for k, v in net.cell.config.items() if k != "hidden_size"}
        module = kind(input_size, net.cell.hidden_size, net.num_layers, **options, **config)
        # The given net, not the rebuilt one: it keeps the cell's initialisers and dtypes.
        module.net = net
        return module

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
        return rngs


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
        rngs: nnx.Rngs | None = None,
        **cell_kwargs: Any,
    ):
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
      rngs: ``nnx.Rngs``: ``params`` draws the weights, ``dropout`` the dropout masks.
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
_CLASSES = {cls.cell_name: cls for cls in (SimpleRNN, LSTM, GRU)}

__all__ = ["GRU", "LSTM", "Recurrent", "SimpleRNN"]
