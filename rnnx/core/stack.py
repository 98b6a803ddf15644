"""Multi-layer, optionally bidirectional recurrent stacks: ``rnnx.stacked``."""

import dataclasses

import jax
import jax.numpy as jnp

from rnnx.core.backends import cudnn, resolver
from rnnx.core.backends.call import Call
from rnnx.core.cells import Cell
from rnnx.core.deprecation import CARRY_RENAME, warn_renamed
from rnnx.core.typing import BatchShape, Carry, Inputs, Key, Lengths, Mask, Outputs, StackParams
from rnnx.core.unroll import unroll


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Stack:
    """``num_layers`` layers of ``cell``, as ``torch.nn.LSTM(..., num_layers, bidirectional, dropout)``.

    Params are a list over layers of lists over directions (forward, then backward) of cell params.
    The carry is a tuple of ``num_layers * num_directions`` cell carries in PyTorch's ``h_n`` order:
    layer 0 forward, layer 0 backward, layer 1 forward, ...

    Like a :class:`rnnx.Cell`, a stack is static configuration: it compares and hashes by its fields, so it
    can be a static argument of ``jax.jit``, and JAX sees it as a pytree with no leaves.

    >>> import rnnx
    >>> rnnx.stacked(rnnx.gru(8), 2) == rnnx.stacked(rnnx.gru(8), 2) != rnnx.stacked(rnnx.gru(8), 3)
    True
    """

    cell: Cell
    num_layers: int
    bidirectional: bool
    dropout: float
    time_major: bool

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.num_directions * self.cell.hidden_size

    def init(self, key: Key, input_size: int) -> StackParams:
        """Params for input size ``d``: layer 0 reads ``d`` features, later layers ``output_size``."""
        keys = jax.random.split(key, (self.num_layers, self.num_directions))
        sizes = [input_size] + [self.output_size] * (self.num_layers - 1)
        return [[self.cell.init(k, size) for k in layer_keys] for layer_keys, size in zip(keys, sizes)]

    def param_shapes(self, input_size: int) -> list[list[dict[str, tuple[int, ...]]]]:
        """What :meth:`init` returns, as shapes: ``[[cell.param_shapes(size)] * num_directions, ...]``."""
        sizes = [input_size] + [self.output_size] * (self.num_layers - 1)
        return [[self.cell.param_shapes(size)] * self.num_directions for size in sizes]

    def default_carry(self, params: StackParams, batch_shape: BatchShape = ()) -> tuple[Carry, ...]:
        """The carry a call starts from when none is given: each cell's :attr:`rnnx.Cell.default_carry`, in
        ``h_n`` order."""
        return tuple(self.cell.default_carry(p, batch_shape) for layer in params for p in layer)

    def initial_carry(self, params: StackParams, batch_shape: BatchShape = ()) -> tuple[Carry, ...]:
        """Deprecated alias of :meth:`default_carry`, removed in rnnx 0.3."""
        warn_renamed("Stack.initial_carry(params, batch_shape)", "Stack.default_carry", CARRY_RENAME)
        return self.default_carry(params, batch_shape)

    def apply(
        self,
        params: StackParams,
        xs: Inputs,
        *,
        lengths: Lengths | None = None,
        mask: Mask | None = None,
        reset: Mask | None = None,
        initial_carry: tuple[Carry, ...] | None = None,
        key: Key | None = None,
        backend: str = "auto",
        **kwargs,
    ) -> tuple[tuple[Carry, ...], Outputs]:
        """Run the stack over ``xs (*b, t, d)``.

        Args:
          params: from :meth:`init`.
          xs, lengths, mask, reset: as in :func:`rnnx.unroll`; they apply to every layer and direction.
          initial_carry: a tuple shaped like :meth:`initial_carry`, or None for the cell's default.
          key: a PRNG key for dropout between layers. No key means no dropout (evaluation).
          backend: asked of the resolver once for the whole stack (:mod:`rnnx.core.backends.resolver`).
            ``"scan"`` and ``"pallas"`` run every layer and direction through :func:`rnnx.unroll` with that
            backend; ``"cudnn"`` runs the whole stack in one cuDNN call (:mod:`rnnx.core.backends.cudnn`: LSTM
            on a GPU, float32 compute, no ``mask``, ``reset`` or active dropout); an explicit backend that
            cannot run the call raises a ValueError naming the reason. ``"auto"`` (default): what was measured
            fastest on this device kind and shape, the scan where nothing was measured.
          **kwargs: ``unroll``, ``remat`` and ``hoist``, passed to :func:`rnnx.unroll` (the scan backend).

        Returns:
          ``(carry, ys)`` with ``ys (*b, t, num_directions * h)``: directions concatenated, forward first.
        """
        self._check(params, initial_carry)
        dropout_rate = self.dropout if key is not None and self.num_layers > 1 else 0.0
        call = Call(self.cell, params, xs, self.time_major, self.num_layers, self.bidirectional, mask=mask is not None,
                    reset=reset is not None, initial_carry=initial_carry, dropout=dropout_rate)  # fmt: skip
        name = resolver.choose(call, backend)
        if name in resolver.WHOLE_STACK:
            return cudnn.apply(self, params, xs, lengths=lengths, initial_carry=initial_carry)
        keys = [None] * self.num_layers if key is None else list(jax.random.split(key, self.num_layers))
        backend = resolver.family(name)
        options = dict(lengths=lengths, mask=mask, reset=reset, time_major=self.time_major, backend=backend, **kwargs)
        carries, ys = [], jnp.asarray(xs)
        for layer, (layer_params, layer_key) in enumerate(zip(params, keys)):
            if layer > 0 and self.dropout > 0 and layer_key is not None:
                ys = dropout(layer_key, ys, self.dropout)
            outputs = []
            for direction, cell_params in enumerate(layer_params):
                index = layer * self.num_directions + direction
                start = None if initial_carry is None else initial_carry[index]
                carry, y = unroll(self.cell, cell_params, ys, initial_carry=start, reverse=direction == 1, **options)
                carries.append(carry)
                outputs.append(y)
            ys = jnp.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        return tuple(carries), ys

    def _check(self, params, initial_carry):
        shape = [len(layer) for layer in params] if isinstance(params, (list, tuple)) else None
        if shape != [self.num_directions] * self.num_layers:
            raise ValueError(
                f"params must be a list of {self.num_layers} layers of {self.num_directions} direction(s), "
                f"received {shape if shape is not None else type(params).__name__}"
            )
        n = self.num_layers * self.num_directions
        if initial_carry is not None and (not isinstance(initial_carry, (list, tuple)) or len(initial_carry) != n):
            got = len(initial_carry) if isinstance(initial_carry, (list, tuple)) else type(initial_carry).__name__
            raise ValueError(f"initial_carry must be a tuple of {n} cell carries (layers x directions), received {got}")


def dropout(key: Key, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: zero each element with probability ``rate``, scale the rest by ``1 / (1 - rate)``."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)


def stacked(
    cell: Cell, num_layers: int = 1, *, bidirectional: bool = False, dropout: float = 0.0, time_major: bool = False
) -> Stack:
    """Stack ``num_layers`` copies of ``cell``, with dropout on the outputs of every layer but the last.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> net = rnnx.stacked(rnnx.gru(8), num_layers=2, bidirectional=True, dropout=0.1)
    >>> params = net.init(jax.random.key(1), 3)
    >>> carry, ys = net.apply(params, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 3]))
    >>> ys.shape, len(carry)
    ((2, 5, 16), 4)
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnx.Cell (e.g. rnnx.lstm(128)), received {type(cell).__name__}")
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, received {num_layers!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), received {dropout!r}")
    return Stack(cell, num_layers, bool(bidirectional), float(dropout), bool(time_major))


__all__ = ["Stack", "dropout", "stacked"]
