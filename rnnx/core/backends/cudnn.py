"""cuDNN's fused LSTM (``jax.experimental.rnn``) as a backend for ``rnnx.lstm`` stacks.

A whole :class:`rnnx.Stack` of LSTM cells (layers, directions, lengths, initial carry) runs as one
``jax.experimental.rnn.lstm`` call: one cuDNN kernel and its own backward pass, instead of a ``lax.scan``
that launches several kernels per time step.

Conversions (gate order i, f, g, o in both):

* params: rnnx keeps ``w_ih (d, 4h)``, ``w_hh (h, 4h)`` and the folded bias ``b = b_ih + b_hh``. cuDNN takes
  one packed float32 vector: for every pseudo-layer ``p = layer * num_directions + direction`` in turn,
  ``W_ih^p (4h, d_p)`` then ``W_hh^p (4h, h)`` (row-major), then for every pseudo-layer ``b_ih^p (4h,)``
  then ``b_hh^p (4h,)``. :func:`pack` stores ``b`` as ``b_ih`` and zeros as ``b_hh``, so
  ``unpack(pack(params))`` is bit-exact, and so is ``pack(unpack(w))`` for every ``w`` whose ``b_hh`` is zero.
* carry: cuDNN's ``h_n``, ``c_n (p, b, h)`` are rnnx's tuple of ``LSTMCarry(h, c)`` in the same order.
* lengths: cuDNN's ``seq_lengths`` right-padding semantics are rnnx's ``lengths``: each direction runs
  over the valid steps only (the reverse one from each sequence's last valid step back), and the final
  carry is the one after each sequence's last valid step. cuDNN zero-fills outputs past a length; we mask
  them to exact zeros anyway and treat length 0 (which cuDNN does not document) as 1 plus a select.

:func:`unsupported_reason` says when the result would not be rnnx's exactly (or cannot run).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import rnn as jrnn

from rnnx.core._common import check_stack_params, layout_hint
from rnnx.core.backends.call import Call, Options, is_vmapped
from rnnx.core.cells import LSTMCarry
from rnnx.core.typing import Params

__all__ = ["NAME", "apply", "pack", "reference_lstm", "run", "unpack", "unsupported", "unsupported_reason"]

NAME = "cudnn"


def pack(net, params) -> jax.Array:
    """rnnx stack params -> cuDNN's packed float32 weight vector, with ``b`` as ``b_ih`` and zero ``b_hh``.

    Args:
      net: an LSTM :class:`rnnx.Stack`.
      params: ``net.init(key, d)``. Learned initial carries (``h0``, ``c0``) are not weights and are left out.

    Returns:
      ``(jax.experimental.rnn.get_num_params_in_lstm(d, h, num_layers, bidirectional),)`` float32.

    >>> import jax, rnnx
    >>> net = rnnx.stacked(rnnx.lstm(6), 2, bidirectional=True)
    >>> pack(net, net.init(jax.random.key(0), 4)).shape
    (1536,)
    """
    _check_lstm(net)
    check_stack_params(net, params)
    return _pack(net.cell, params)


def _pack(cell, params) -> jax.Array:
    cells = [p for layer in params for p in layer]
    weights = [_f32(p[name]).T.ravel() for p in cells for name in ("w_ih", "w_hh")]
    biases = []
    for p in cells:
        b = _f32(p["b"]) if "b" in p else jnp.zeros(4 * cell.hidden_size, jnp.float32)
        biases += [b, jnp.zeros_like(b)]
    return jnp.concatenate(weights + biases)


def unpack(net, packed, input_size: int) -> list:
    """cuDNN's packed weight vector -> rnnx stack params: the inverse of :func:`pack`.

    The two biases fold into ``b = b_ih + b_hh`` (exactly ``b_ih`` where ``b_hh`` is zero, so that
    ``pack(net, unpack(net, w, d))`` is bit-exact for every ``w`` made by :func:`pack`). Params are cast to
    the cell's ``param_dtype``. A cell with ``use_bias=False`` needs zero biases (checked when ``packed`` is
    concrete); one with ``learn_initial_carry`` gets zero ``h0``, ``c0``, its initialisation.

    Args:
      net: an LSTM :class:`rnnx.Stack`.
      packed: ``(get_num_params_in_lstm(input_size, h, num_layers, bidirectional),)``.
      input_size: ``d``, the feature size of the stack's input.

    Returns:
      params shaped like ``net.init(key, input_size)``.

    >>> import jax, rnnx
    >>> net = rnnx.stacked(rnnx.lstm(6), 2)
    >>> params = net.init(jax.random.key(0), 4)
    >>> back = unpack(net, pack(net, params), 4)
    >>> all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)))
    True
    """
    _check_lstm(net)
    h, layers, bi = net.cell.hidden_size, net.num_layers, net.bidirectional
    size = jrnn.get_num_params_in_lstm(input_size, h, layers, bi)
    packed = jnp.asarray(packed)
    if packed.shape != (size,):
        raise ValueError(
            f"packed must have shape ({size},) for an LSTM with input_size={input_size}, hidden_size={h}, "
            f"num_layers={layers}, bidirectional={bi}; received shape {packed.shape}"
        )
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(packed, input_size, h, layers, bi)
    expected = _expected_params(net, input_size)
    params: list[list[dict]] = []
    index = 0
    for layer in expected:
        params.append([])
        for like in layer:
            p = {"w_ih": w_ih[index].T, "w_hh": w_hh[index].T}
            if "b" in like:
                # where, not +: b_ih + 0.0 would turn a -0.0 bias into +0.0 and break bit-exactness.
                p["b"] = jnp.where(b_hh[index] == 0, b_ih[index], b_ih[index] + b_hh[index])
            else:
                _check_zero_bias(b_ih[index], b_hh[index], index)
            p |= {k: jnp.zeros(like[k].shape) for k in ("h0", "c0") if k in like}
            params[-1].append({k: p[k].astype(like[k].dtype) for k in like})
            index += 1
    return params


def reference_lstm(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional,
                   precision=None):  # fmt: skip
    """``jax.experimental.rnn.lstm``'s signature over its pure-JAX ``lstm_ref``: runs anywhere, e.g. on CPU.

    Use it as ``apply(..., impl=reference_lstm)`` to run the packing and result conversion without a GPU.
    ``precision`` is ignored (``lstm_ref`` uses the default matmul precision).
    """
    del precision
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    return jrnn.lstm_ref(x, h_0, c_0, w_ih, w_hh, b_ih, b_hh, seq_lengths,
                         input_size, hidden_size, num_layers, dropout, bidirectional)  # fmt: skip


def apply(net, params, xs, *, lengths=None, initial_carry=None, precision=None, impl=None):
    """Run the LSTM stack ``net`` over ``xs`` in one cuDNN call; the same results as ``net.apply``.

    Only for configurations where :func:`unsupported_reason` returns None (this function does not check
    the platform, the dtype or the tracing context: call that first).

    Args:
      net: an LSTM :class:`rnnx.Stack`; ``net.time_major`` sets the layout of ``xs`` and ``ys``.
      params: ``net.init(key, d)``.
      xs: ``(*b, t, d)``, or ``(t, *b, d)`` if ``net.time_major``; any number of batch axes (flattened for
        cuDNN and restored). Cast to float32, as the scan casts it to the cell's float32 compute dtype.
      lengths: integer ``(*b,)`` in ``[0, t]``, right-padded sequences; None: all ``t`` steps.
      initial_carry: a tuple of ``num_layers * num_directions`` ``LSTMCarry`` ``(*b, h)``, as in
        :meth:`rnnx.Stack.apply`; None: the cells' initial carry (learned ``h0``, ``c0`` included).
      precision: passed to ``jax.experimental.rnn.lstm``: ``jax.lax.Precision.HIGHEST`` (or
        ``jax.default_matmul_precision("float32")``) forbids TF32 in cuDNN; None lets cuDNN use TF32 on
        GPUs that have it, as XLA's default matmuls do.
      impl: a function with ``jax.experimental.rnn.lstm``'s signature; None: that function (GPU only).
        :func:`reference_lstm` runs the same conversions anywhere.

    Returns:
      ``(carry, ys)`` as from ``net.apply``: ``carry`` a tuple of ``LSTMCarry(h (*b, h), c (*b, h))`` in
      PyTorch's ``h_n`` order, ``ys (*b, t, num_directions * h)`` with exact zeros past each length.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> net = rnnx.stacked(rnnx.lstm(6), 2, bidirectional=True)
    >>> params = net.init(jax.random.key(0), 4)
    >>> xs, lengths = jnp.ones((3, 5, 4)), jnp.array([5, 2, 1])
    >>> carry, ys = apply(net, params, xs, lengths=lengths, impl=reference_lstm)
    >>> scan_carry, scan_ys = net.apply(params, xs, lengths=lengths)
    >>> bool(jnp.allclose(ys, scan_ys, atol=1e-5)), float(jnp.abs(ys[2, 1:]).max())
    (True, 0.0)
    """
    _check_lstm(net)
    input_size = check_stack_params(net, params)
    xs = jnp.asarray(xs)
    if xs.ndim < 2 or xs.shape[-1] != input_size:
        raise ValueError(f"xs must have shape (*batch, time, {input_size}), received shape {xs.shape}")
    hint = layout_hint(xs.shape, net.time_major)
    if net.time_major:
        xs = jnp.moveaxis(xs, 0, -2)
    batch_shape, steps = xs.shape[:-2], xs.shape[-2]
    n = math.prod(batch_shape)
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if lengths.shape != tuple(batch_shape) or not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise ValueError(f"lengths must be integers of shape {tuple(batch_shape)}, received "
                             f"{lengths.dtype}{list(lengths.shape)}{hint}")  # fmt: skip
        if not isinstance(lengths, jax.core.Tracer) and lengths.size:
            # Through NumPy: jnp's min would be staged (not concrete) under jit.
            low, high = int(np.min(np.asarray(lengths))), int(np.max(np.asarray(lengths)))
            if low < 0 or high > steps:
                raise ValueError(f"lengths must lie in [0, {steps}] (the number of time steps), received min {low}, "
                                 f"max {high}")  # fmt: skip
        lengths = lengths.reshape(n)
    default = tuple(net.cell.default_carry(p, batch_shape) for layer in params for p in layer)
    carry0 = default if initial_carry is None else _check_carry(initial_carry, default, hint)
    flat = [jax.tree.map(lambda a: a.reshape(n, -1), c) for c in carry0]
    x = xs.reshape(n, steps, input_size)
    carries, y = _fused(net.cell, params, x, lengths, flat, net.num_layers, net.bidirectional, precision, impl)
    ys = y.reshape(*batch_shape, steps, y.shape[-1])
    ys = jnp.moveaxis(ys, -2, 0) if net.time_major else ys
    return tuple(jax.tree.map(lambda a: a.reshape(*batch_shape, -1), c) for c in carries), ys


def run(cell, params: Params, x_tm, carry, valid, reset, fresh, *, reverse: bool, options: Options):
    """The backend entry for one cell (``rnnx.unroll``): a one-layer forward stack, time-major arrays.

    Only where :func:`unsupported` returns None: no reset, forward; ``valid`` is then each sequence's
    prefix of ``length`` steps, so its column sums are the lengths.
    """
    del reset, fresh, reverse, options
    lengths = None if valid is None else valid.sum(axis=0)
    carries, y = _fused(cell, [[params]], jnp.moveaxis(x_tm, 0, 1), lengths, [carry], 1, False, None, None)
    return carries[0], jnp.moveaxis(y, 1, 0)


def _fused(cell, params, x, lengths, carry0, num_layers, bidirectional, precision, impl):
    """The cuDNN call over flat arrays: ``x (n, t, d)``, ``lengths (n,)`` or None, ``carry0`` a list of
    ``LSTMCarry (n, h)``; returns the list of final carries and ``y (n, t, directions * h)`` in the cells'
    dtype."""
    impl = jrnn.lstm if impl is None else impl
    n, steps, input_size = x.shape
    x = x.astype(jnp.float32)
    if lengths is None:
        lengths = jnp.full((n,), steps, jnp.int32)
    else:
        lengths = lengths.astype(jnp.int32)
        # Whatever the padding holds (NaN, inf) must reach neither the outputs nor the gradients: cuDNN's
        # backward pass multiplies through the padded inputs, so zero them first, as the scan does.
        x = jnp.where((jnp.arange(steps) < lengths[:, None])[..., None], x, 0.0)
    h_0 = jnp.stack([c.h for c in carry0]).astype(jnp.float32)
    c_0 = jnp.stack([c.c for c in carry0]).astype(jnp.float32)
    weights = _pack(cell, params)

    y, h_n, c_n = impl(
        x, h_0, c_0, weights, jnp.maximum(lengths, 1),
        input_size=input_size, hidden_size=cell.hidden_size, num_layers=num_layers,
        dropout=0.0, bidirectional=bidirectional, precision=precision,
    )  # fmt: skip
    # Length 0 runs one step in cuDNN (whose zero lengths are undocumented); selecting the initial carry
    # and zero outputs gives the scan's results and gradients exactly.
    valid = jnp.arange(steps) < lengths[:, None]
    y = jnp.where(valid[..., None], y, jnp.zeros((), y.dtype))
    empty = (lengths == 0)[:, None]
    h_n, c_n = jnp.where(empty, h_0, h_n), jnp.where(empty, c_0, c_n)
    dtype = carry0[0].h.dtype
    return [LSTMCarry(h.astype(dtype), c.astype(dtype)) for h, c in zip(h_n, c_n)], y.astype(dtype)


def unsupported(call: Call) -> str | None:
    """The backend hook: why cuDNN cannot run ``call`` exactly, or None (see :func:`unsupported_reason`)."""
    return _unsupported(call, precision=None)


def unsupported_reason(
    net, params, xs=None, *, mask=None, reset=None, initial_carry=None, key=None, platform=None, precision=None
) -> str | None:
    """Why :func:`apply` cannot give ``net.apply``'s results for this call, or None when it can.

    Arguments as in :meth:`rnnx.Stack.apply` (``xs`` and ``initial_carry`` are optional: they are checked
    for a ``jax.vmap`` trace, which cuDNN's primitive cannot batch), plus:

    Args:
      platform: where the call runs (``"gpu"``, ``"cuda"``, ``"cpu"``, ...). None: the platform of ``xs``
        when it is a concrete array, else ``jax.default_backend()``.
      precision: the ``precision`` that :func:`apply` would get.

    Returns:
      None, or one sentence naming the reason and what to change. Reasons: not a GPU; a cell other than
      ``rnnx.lstm``; params that do not fit the stack; a compute dtype other than float32; bfloat16 matmul
      precision; ``mask``; ``reset``; dropout between layers during training (``key`` given); an empty
      batch; a ``jax.vmap`` trace. Supported: 1 or more layers, uni- or bidirectional, ``lengths`` (0 to t),
      an initial carry (given or learned: ``learn_initial_carry=True``), ``use_bias=False``, any
      ``forget_bias``, ``time_major``, any number of batch axes, float32 compute over any storage dtype.

    >>> import jax, jax.numpy as jnp, rnnx
    >>> net = rnnx.stacked(rnnx.gru(6))
    >>> unsupported_reason(net, net.init(jax.random.key(0), 4), platform="gpu")
    "cuDNN's fused RNN in jax.experimental.rnn computes rnnx.lstm cells only, received a gru stack"
    """
    if not hasattr(net, "num_layers"):
        return f"cuDNN runs rnnx.Stack calls, received {type(net).__name__}"
    try:
        check_stack_params(net, params)
    except ValueError as error:
        return f"the params do not fit the stack: {error}"
    dropout = net.dropout if key is not None and net.num_layers > 1 else 0.0
    call = Call(net.cell, params, xs, net.time_major, net.num_layers, net.bidirectional, mask=mask is not None,
                reset=reset is not None, initial_carry=initial_carry, dropout=dropout, platform=platform)  # fmt: skip
    return _unsupported(call, precision)


def _unsupported(call: Call, precision) -> str | None:
    if call.cell.name != "lstm":
        name = call.cell.name
        return f"cuDNN's fused RNN in jax.experimental.rnn computes rnnx.lstm cells only, received a {name} stack"
    if call.reverse:
        return "reverse=True alone (a bidirectional stack runs its backward direction on cuDNN)"
    platform = call.where
    if platform not in ("gpu", "cuda"):
        return f"cuDNN runs on an NVIDIA GPU (platform 'gpu' or 'cuda'), but this call runs on {platform!r}"
    if call.dtype != jnp.float32:
        return (
            f"cuDNN's LSTM in jax.experimental.rnn computes in float32 only, but the cell computes in {call.dtype}; "
            "use rnnx.lstm(h, dtype=jnp.float32) (params may stay in their param_dtype) or backend='scan'"
        )
    try:
        jrnn._lstm_cudnn_allow_tf32(precision)  # raises for bfloat16 matmul precision
    except (NotImplementedError, ValueError) as error:
        return f"jax.experimental.rnn.lstm refuses this matmul precision ({error}); use float32 or tensorfloat32"
    if call.mask:
        return "cuDNN takes right-padded lengths only, not a mask (which may have gaps); pass lengths= instead"
    if call.reset:
        return "cuDNN cannot reset the carry within a sequence (reset=); split the sequences or use backend='scan'"
    if call.dropout:
        return (
            f"dropout={call.dropout} between layers is active (a key was given) and cuDNN draws its own masks; "
            "evaluate without a key (or deterministic=True) or use backend='scan' for training"
        )
    if call.xs is not None and 0 in call.batch_shape:
        return "cuDNN cannot run an empty batch; use backend='scan'"
    if is_vmapped((call.params, call.xs, call.initial_carry)):
        return "cuDNN's RNN primitive has no jax.vmap rule; fold the mapped axis into the batch axes instead"
    return None


def _f32(a):
    return jnp.asarray(a).astype(jnp.float32)


def _check_lstm(net) -> None:
    if not hasattr(net, "num_layers"):
        raise TypeError(f"net must be an rnnx.Stack (from rnnx.stacked), received {type(net).__name__}")
    if net.cell.name != "lstm":
        raise ValueError(f"cuDNN computes rnnx.lstm stacks only, received a {net.cell.name} stack")


def _expected_params(net, input_size: int):
    return jax.eval_shape(lambda: net.init(jax.random.key(0), input_size))


def _check_zero_bias(b_ih, b_hh, index) -> None:
    if isinstance(b_ih, jax.core.Tracer) or isinstance(b_hh, jax.core.Tracer):
        return
    if bool(jnp.any(b_ih != 0)) or bool(jnp.any(b_hh != 0)):
        raise ValueError(
            f"packed has non-zero biases in pseudo-layer {index}, but the cell has use_bias=False: "
            "unpacking would drop them; use rnnx.lstm(h, use_bias=True)"
        )


def _check_carry(carry, default, hint: str):
    if not isinstance(carry, (list, tuple)) or len(carry) != len(default):
        received = len(carry) if isinstance(carry, (list, tuple)) else type(carry).__name__
        raise ValueError(f"initial_carry must be a tuple of {len(default)} LSTMCarry (layers x directions), "
                         f"received {received}")  # fmt: skip
    want = [(tuple(c.h.shape), tuple(c.c.shape)) for c in default]
    got = [(tuple(jnp.shape(c[0])), tuple(jnp.shape(c[1]))) for c in carry]
    if want != got:
        raise ValueError(f"initial_carry must have (h, c) shapes {want}, received {got}{hint}")
    return [LSTMCarry(*c) for c in carry]
