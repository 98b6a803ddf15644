"""The train step: one clipped optimiser update of a loss, jitted, that never applies a non-finite update.

A loss function has the signature ``loss_fn(params, batch, key) -> (loss, metrics)`` where ``metrics`` is
a dict of scalars; a *stateful* one (a language model carrying its state across windows) takes and returns
the carry too: ``loss_fn(params, batch, key, carry) -> (loss, (metrics, carry))``. ``key`` is the step's
PRNG key, for dropout.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnx.core.typing import Key
from rnnx.training.arguments import checked_loss_output

SCHEDULES = ("constant", "cosine")

LossFn = Callable[..., tuple[jax.Array, Any]]
"""``loss_fn(params, batch, key) -> (loss, metrics)``, or the stateful ``loss_fn(params, batch, key, carry) ->
(loss, (metrics, carry))`` (see the module docstring)."""


def learning_rate_schedule(name: str, learning_rate: float, steps: int) -> float | optax.Schedule:
    """``learning_rate`` itself (``"constant"``) or an ``optax`` cosine decay from it to 0 over ``steps``."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, received {name!r}")
    if name == "constant":
        return learning_rate
    if steps < 1:
        raise ValueError(f"a cosine schedule needs steps >= 1, received {steps!r}")
    return optax.cosine_decay_schedule(learning_rate, steps)


def default_optimizer(learning_rate: float | optax.Schedule = 3e-4) -> optax.GradientTransformation:
    """``optax.adam(learning_rate)``: :func:`rnnx.training.fit`'s optimiser unless given another. Clipping is
    not part of it: :func:`make_train_step` puts ``optax.clip_by_global_norm(clip_norm)`` in front of any
    optimiser."""
    return optax.adam(learning_rate)


class TrainState(NamedTuple):
    """What one train step reads and returns."""

    step: jax.Array  # () int32: updates done
    params: Any
    opt_state: Any  # the state of the clipped optimiser
    carry: Any  # a stateful loss's carry, its gradient stopped; None for a stateless loss


class TrainStep(NamedTuple):
    """``init(params, carry=None) -> TrainState`` and the jitted ``update(state, batch, key) -> (state,
    metrics)``, both built by :func:`make_train_step` around one clipped optimiser."""

    init: Callable[..., TrainState]
    update: Callable[[TrainState, Any, Key], tuple[TrainState, dict[str, jax.Array]]]


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, *, clip_norm: float | None = 1.0
) -> TrainStep:
    """The train step for ``loss_fn`` with ``optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)``.

    ``update``'s metrics hold the loss, the loss function's own metrics, ``grad_norm`` (the global gradient
    norm before clipping), with a ``clip_norm`` ``clipped_grad_norm = min(grad_norm, clip_norm)`` (after),
    and ``finite``: whether the loss, the gradient norm and every element of the update are finite. A step
    where they are not changes nothing but the step count: params, optimiser state and carry stay as they
    were (as ``optax.apply_if_finite`` does), so a NaN never enters the params; :func:`rnnx.training.fit`
    decides what to do about it. It compiles once per batch shape. A state with a carry calls the stateful
    form of ``loss_fn`` and stops the gradient of the carry it returns.

    Args:
      loss_fn: see the module docstring.
      optimizer: any ``optax.GradientTransformation``, e.g. :func:`default_optimizer`.
      clip_norm: the bound on the global gradient norm, configured here only; None for no clipping.
    """
    tx = optimizer if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)

    def init(params: Any, carry: Any = None) -> TrainState:
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), carry)

    @jax.jit
    def update(state: TrainState, batch: Any, key: Key) -> tuple[TrainState, dict[str, jax.Array]]:
        stateful = state.carry is not None  # the pytree structure, so known when tracing
        args = (batch, key, state.carry) if stateful else (batch, key)
        checked = lambda params, *args: checked_loss_output(loss_fn(params, *args), stateful)  # noqa: E731
        (loss, aux), grads = jax.value_and_grad(checked, has_aux=True)(state.params, *args)
        metrics, carry = aux if stateful else (aux, None)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        grad_norm = optax.tree.norm(grads)
        norms = {"grad_norm": grad_norm}
        if clip_norm is not None:
            norms["clipped_grad_norm"] = jnp.minimum(grad_norm, clip_norm)
        # The update too, element by element (its norm may overflow while every element is finite): a NaN
        # learning rate makes a NaN update from a finite gradient.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(updates)
        updated = (optax.apply_updates(state.params, updates), opt_state, jax.lax.stop_gradient(carry))
        kept = (state.params, state.opt_state, state.carry)
        params, opt_state, carry = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
        state = TrainState(state.step + 1, params, opt_state, carry)
        return state, {"loss": loss, **metrics, **norms, "finite": finite}

    return TrainStep(init, update)


def all_finite(tree: Any) -> jax.Array:
    """() bool: whether every element of every array in ``tree`` is finite."""
    return jax.tree.reduce(jnp.logical_and, jax.tree.map(lambda x: jnp.isfinite(x).all(), tree), jnp.array(True))


__all__ = [
    "SCHEDULES",
    "TrainState",
    "TrainStep",
    "all_finite",
    "default_optimizer",
    "learning_rate_schedule",
    "make_train_step",
]
