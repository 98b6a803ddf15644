"""What the classic cells (:mod:`rnnx.core.cells`) and the parallel-scan cells (:mod:`rnnx.core.parallel`)
share: argument checks, the per-gate-block initialiser draw and the input projection; and the checks of
params against a cell or a stack that the loops, the NNX modules and interop run before any compute.

Private to rnnx: nothing here is public API.
"""

import jax
import jax.numpy as jnp
import numpy as np


def check_hidden_size(hidden_size) -> None:
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


def check_params(cell, params) -> int:
    """Raise a ValueError unless ``params`` were made by ``cell.init``; return their ``input_size``."""
    received = _shapes(params)
    w_ih = received.get("w_ih") if isinstance(received, dict) else None
    input_size = w_ih[0] if w_ih and len(w_ih) == 2 else None
    expected = cell.param_shapes(input_size) if input_size else None
    if input_size is None or expected != received:
        raise ValueError(
            f"params do not fit the cell {cell!r}: expected arrays "
            f"{expected or cell.param_shapes('d')}, received {received}. "
            "Were they made by another cell's init?"
        )
    return input_size


def check_stack_params(net, params, input_size: int | None = None) -> int:
    """Raise a ValueError unless ``params`` fit the stack ``net`` (for ``input_size``, if given); return it."""
    if input_size is None:
        try:
            input_size = int(params[0][0]["w_ih"].shape[0])
        except (TypeError, KeyError, IndexError, AttributeError):
            raise ValueError(
                "params must be a Stack's params, a list over layers of lists over directions of cell params "
                f"with 'w_ih'; received {type(params).__name__}"
            ) from None
    expected = net.param_shapes(input_size)
    received = jax.tree.map(lambda a: tuple(getattr(a, "shape", ())), params)
    if received != expected:
        raise ValueError(
            f"params do not fit {net.cell.name} x {net.num_layers} layer(s) x {net.num_directions} direction(s) "
            f"with input_size={input_size}: expected shapes {expected}, received {received}"
        )
    return input_size


def layout_hint(xs_shape, time_major: bool) -> str:
    """Where the batch shape came from, for errors that a transposed ``xs`` causes (PyTorch's default layout is
    time-major, and :func:`rnnx.interop.from_torch` keeps it)."""
    layout = "(time, *batch, features)" if time_major else "(*batch, time, features)"
    other = "(*batch, time, features)" if time_major else "(time, *batch, features)"
    return (
        f"; the batch shape comes from xs of shape {tuple(xs_shape)} read as {layout} since time_major={time_major}."
        f" If xs is {other}, pass time_major={not time_major} (a torch module's batch_first={time_major})"
    )


def _shapes(params):
    if isinstance(params, dict) and all(hasattr(v, "shape") for v in params.values()):
        return {k: tuple(v.shape) for k, v in params.items()}
    return jax.tree.map(lambda v: tuple(getattr(v, "shape", ())), params)


__all__ = [
    "check_hidden_size",
    "check_input_size",
    "check_params",
    "check_stack_params",
    "draw",
    "gate_blocks",
    "input_projection",
    "layout_hint",
]
