"""The training loop: a train state, a jitted step with gradient clipping, and :func:`fit`, which composes
them with evaluation, early stopping and resumable orbax checkpoints.

A loss function has the signature ``loss_fn(params, batch, key) -> (loss, metrics)`` where ``metrics`` is
a dict of scalars; a *stateful* one (a language model carrying its state across windows) takes and returns
the carry too: ``loss_fn(params, batch, key, carry) -> (loss, (metrics, carry))``. ``key`` is the step's
PRNG key, for dropout.

Nothing here prints. :func:`fit` reports through ``on_log(record)``: progress bars and summaries belong to
the caller (``rnnx.apps``, the examples), and :func:`jsonl_log` writes the records to a file.
"""

import dataclasses
import functools
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnx.training import checkpoint

SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(name: str, learning_rate: float, steps: int):
    """``learning_rate`` itself (``"constant"``) or an ``optax`` cosine decay from it to 0 over ``steps``."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, received {name!r}")
    if name == "constant":
        return learning_rate
    if steps < 1:
        raise ValueError(f"a cosine schedule needs steps >= 1, received {steps!r}")
    return optax.cosine_decay_schedule(learning_rate, steps)


def default_optimizer(learning_rate: float | optax.Schedule = 3e-4) -> optax.GradientTransformation:
    """``optax.adam(learning_rate)``: :func:`fit`'s optimiser unless given another. Clipping is not part of
    it: :func:`make_train_step` puts ``optax.clip_by_global_norm(clip_norm)`` in front of any optimiser."""
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
    update: Callable[..., tuple[TrainState, dict]]


def make_train_step(
    loss_fn: Callable, optimizer: optax.GradientTransformation, *, clip_norm: float | None = 1.0
) -> TrainStep:
    """The train step for ``loss_fn`` with ``optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)``.

    ``update``'s metrics hold the loss, the loss function's own metrics, ``grad_norm`` (the global gradient
    norm before clipping) and, with a ``clip_norm``, ``clipped_grad_norm = min(grad_norm, clip_norm)``
    (after). It compiles once per batch shape. A state with a carry calls the stateful form of ``loss_fn``
    and stops the gradient of the carry it returns.

    Args:
      loss_fn: see the module docstring.
      optimizer: any ``optax.GradientTransformation``, e.g. :func:`default_optimizer`.
      clip_norm: the bound on the global gradient norm, configured here only; None for no clipping.
    """
    tx = optimizer if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)

    def init(params, carry=None) -> TrainState:
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), carry)

    @jax.jit
    def update(state: TrainState, batch, key):
        stateful = state.carry is not None  # the pytree structure, so known when tracing
        args = (batch, key, state.carry) if stateful else (batch, key)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *args)
        metrics, carry = aux if stateful else (aux, None)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        grad_norm = optax.tree.norm(grads)
        norms = {"grad_norm": grad_norm}
        if clip_norm is not None:
            norms["clipped_grad_norm"] = jnp.minimum(grad_norm, clip_norm)
        state = TrainState(
            state.step + 1, optax.apply_updates(state.params, updates), opt_state, jax.lax.stop_gradient(carry)
        )
        return state, {"loss": loss, **metrics, **norms}

    return TrainStep(init, update)


class FitState(NamedTuple):
    """What :func:`fit` checkpoints and resumes from."""

    train: TrainState
    best_params: Any  # the params of the best evaluation so far (the initial params before any)
    best: jax.Array  # () float32: the best monitored value so far, negated for mode="max"; inf before any
    bad_evals: jax.Array  # () int32: evaluations since the best one


def initial_state(train_step: TrainStep, params, initial_carry=None) -> FitState:
    """The state :func:`fit` starts from; also the ``like`` for restoring one of its checkpoints."""
    return FitState(train_step.init(params, initial_carry), params, jnp.full((), jnp.inf), jnp.zeros((), jnp.int32))


class Evaluation(NamedTuple):
    """:func:`fit`'s evaluation hook: ``evaluate(params) -> dict of floats`` every ``every`` steps and at the
    end; the best params by ``monitor`` (``mode`` ``"min"`` or ``"max"``) are kept, and training stops after
    ``patience`` evaluations without improvement (None: never)."""

    evaluate: Callable[[Any], dict]
    every: int = 200
    monitor: str = "loss"
    mode: str = "min"
    patience: int | None = None


class Checkpoints(NamedTuple):
    """:func:`fit`'s checkpoint hook: ``directory/step_<n>`` every ``every`` steps (None: only at the end),
    keeping the newest ``max_to_keep`` (None: all); ``net``, the :class:`rnnx.Stack` inside the params, is
    recorded and checked on resume."""

    directory: Any
    every: int | None = None
    max_to_keep: int | None = None
    net: Any = None


@dataclasses.dataclass
class FitResult:
    params: Any  # the best evaluated params (the last ones without evaluation)
    last_params: Any
    opt_state: Any
    step: int
    history: list  # one dict per evaluation
    stopped_early: bool  # by patience or by on_log


def fit(
    loss_fn: Callable,
    params,
    batches: Callable[[int], Sequence] | Iterable,
    *,
    steps: int,
    optimizer: optax.GradientTransformation | None = None,
    clip_norm: float | None = 1.0,
    seed: int = 0,
    initial_carry=None,
    evaluation: Evaluation | None = None,
    checkpoints: Checkpoints | None = None,
    log_every: int = 20,
    on_log: Callable[[dict], Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> FitResult:
    """Train for ``steps`` updates, resuming from the newest complete checkpoint in ``checkpoints.directory``.

    Args:
      loss_fn: see the module docstring.
      params: the initial params.
      batches: ``epoch -> sequence of batches``, deterministic for a given epoch (e.g. shuffled with
        ``(seed, epoch)``), so that a resumed run sees exactly the batches the uninterrupted run would; a
        stateful loss starts every epoch from ``initial_carry``. Or any iterable of batches: step ``s`` takes
        its ``s``-th item (a resumed run skips the ones already trained on), and training ends early if it
        runs out.
      steps: the number of updates.
      optimizer: default :func:`default_optimizer` (Adam 3e-4).
      clip_norm: the global gradient-norm bound in front of ``optimizer`` (None: no clipping).
      seed: the PRNG seed; step ``s`` uses ``jax.random.fold_in(key(seed), s)``.
      initial_carry: for a stateful ``loss_fn``: the carry at the start (and of every epoch).
      evaluation: an :class:`Evaluation` hook, for the best params and early stopping.
      checkpoints: a :class:`Checkpoints` hook, for resumable runs.
      log_every: steps between training records.
      on_log: called with each record: every ``log_every`` steps and at the last, ``{"time", "step",
        "epoch" (``epoch -> batches`` only), "loss", "grad_norm", "clipped_grad_norm" (with clipping), and the
        loss function's metrics}``, each the mean since the previous record; after each evaluation,
        ``{"time", "step", "eval": {name: value}}``. A true return value stops training after this step,
        which is then evaluated and checkpointed as the last.
      mesh: data-parallel training over the mesh axis ``"data"``: every batch leaf (and a stateful loss's
        carry) is split along its leading batch axis with ``NamedSharding(mesh, P("data"))``; params,
        optimiser state and the best params are replicated (``P()``). ``jit`` partitions the step, so XLA
        inserts the gradient all-reduce; the result equals the one-device run to float32 round-off (the
        order of the sums differs). A batch size that does not divide over the axis is refused with a
        ``ValueError``. Checkpoints hold the global arrays, so they restore on any mesh or on one device.
        ``evaluation.evaluate`` receives the replicated params, unchanged. Across processes (after
        :func:`rnnx.training.distributed.initialize`, with a mesh over ``jax.devices()`` of all of them)
        every process calls ``fit`` with the same arguments except the data: its batches and
        ``initial_carry`` are its own slice of the global batch (e.g. the examples of
        :func:`rnnx.training.distributed.process_shard`), all of the same size, and it must take as many
        batches per epoch as the others. The global batch is the processes' slices in mesh order.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, received {steps!r}")
    if evaluation is not None and evaluation.mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', received {evaluation.mode!r}")
    train_step = make_train_step(loss_fn, default_optimizer() if optimizer is None else optimizer, clip_norm=clip_norm)
    place = _Placement(mesh) if mesh is not None else None
    if place is not None:
        initial_carry = place.batch(initial_carry, "initial_carry")
    state = initial_state(train_step, params, initial_carry)
    if place is not None:  # the scalars too: every argument of the step then lives on the mesh
        state = place.state(state)
    loop = functools.partial(
        _loop,
        train_step,
        batches=batches,
        place=place,
        steps=steps,
        seed=seed,
        initial_carry=initial_carry,
        evaluation=evaluation,
        log_every=log_every,
        on_log=on_log,
    )
    if checkpoints is None:
        return loop(state)
    with checkpoint.manager(checkpoints.directory, max_to_keep=checkpoints.max_to_keep) as manager:
        if manager.latest_step() is not None:
            state = checkpoint.restore_step(manager, manager.latest_step(), state, net=checkpoints.net)

        def save(state: FitState) -> None:
            checkpoint.save_step(manager, int(state.train.step), state, net=checkpoints.net)

        return loop(state, save=save, save_every=checkpoints.every)


def jsonl_log(path) -> Callable[[dict], None]:
    """An ``on_log`` for :func:`fit` that appends each record to ``path`` as one line of JSON."""

    def write(record: dict) -> None:
        with open(path, "a") as log:
            log.write(json.dumps(record) + "\n")

    return write


class _Placement:
    """Where :func:`fit` puts things on a data-parallel ``mesh``: batches split over ``"data"``, the rest
    replicated. On a mesh over the devices of several processes, each batch is this process's slice of the
    global batch, assembled with ``jax.make_array_from_process_local_data``; on one process's devices the
    whole batch is put with ``jax.device_put``."""

    def __init__(self, mesh: jax.sharding.Mesh):
        if "data" not in mesh.axis_names:
            raise ValueError(f"mesh must have an axis named 'data', received axes {tuple(mesh.axis_names)}")
        self.devices = mesh.shape["data"]
        self.processes = len({d.process_index for d in mesh.devices.flat})  # that feed the mesh
        self.split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        self.copy = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def batch(self, tree, name: str = "batch"):
        """``tree`` split along its leading (batch) axis, after checking that it divides over the devices."""
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            size = jnp.shape(leaf)[0] if jnp.ndim(leaf) else None
            if size is None or (size * self.processes) % self.devices:
                where = f"{name}{jax.tree_util.keystr(path)}"
                received = "a scalar" if size is None else f"batch size {size}"
                if size is not None and self.processes > 1:
                    received += f" per process ({size * self.processes} in all over {self.processes} processes)"
                raise ValueError(
                    f"{received} does not divide over the {self.devices} devices of mesh axis 'data' (at {where})"
                )
        if self.processes == 1:
            return jax.device_put(tree, self.split)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.split, np.asarray(x)), tree)

    def replicated(self, tree):
        if self.processes == 1:
            return jax.device_put(tree, self.copy)
        # every process holds the same values (same seed); each puts them on its own devices of the mesh
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.copy, np.asarray(x)), tree)

    def state(self, state: FitState) -> FitState:
        train = state.train
        train = self.replicated(train._replace(carry=None))._replace(carry=train.carry)
        return FitState(train, *self.replicated(tuple(state[1:])))


def _loop(
    train_step,
    state,
    *,
    batches,
    place,
    steps,
    seed,
    initial_carry,
    evaluation,
    log_every,
    on_log,
    save=None,
    save_every=None,
):
    """The loop of :func:`fit`: one update per batch, then the log, evaluation and checkpoint hooks."""
    history, pending, stop, base_key = [], [], False, jax.random.key(seed)
    step = int(state.train.step)
    stream = _batches(batches, step)
    item = next(stream, None) if step < steps else None
    while item is not None:
        epoch, index, batch = item
        train = state.train
        if initial_carry is not None and index == 0:
            train = train._replace(carry=initial_carry)
        if place is not None:  # as each batch is taken: a resumed run does not copy the skipped ones
            batch = place.batch(batch)
        train, metrics = train_step.update(train, batch, jax.random.fold_in(base_key, step))
        state, step = state._replace(train=train), step + 1
        pending.append(metrics)
        item = next(stream, None) if step < steps else None  # looked ahead, so the last step is known
        last = item is None
        if step % log_every == 0 or last:
            record = {"step": step, **({} if epoch is None else {"epoch": epoch}), **_mean(pending)}
            stop = _emit(on_log, record) or stop
            pending = []
        if evaluation is not None and (step % evaluation.every == 0 or last or stop):
            state, patience_over, result = _evaluate(evaluation, state)
            history.append({"step": step, **result})
            stop = _emit(on_log, {"step": step, "eval": result}) or patience_over or stop
        if save is not None and ((save_every and step % save_every == 0) or last or stop):
            save(state)
        if stop:
            break
    best = state.best_params if evaluation is not None else state.train.params
    return FitResult(best, state.train.params, state.train.opt_state, step, history, stop)


def _batches(batches, start: int) -> Iterator[tuple]:
    """``(epoch, index in the epoch, batch)`` from step ``start`` on; epoch and index are None for an iterable."""
    if not callable(batches):
        yield from ((None, None, batch) for batch in itertools.islice(batches, start, None))
        return
    first = batches(0)
    per_epoch = len(first)
    if per_epoch == 0:
        raise ValueError("batches(0) returned no batches; expected at least one")
    epoch, index = divmod(start, per_epoch)
    while True:
        current = first if epoch == 0 else batches(epoch)
        yield from ((epoch, i, current[i]) for i in range(index, per_epoch))
        epoch, index = epoch + 1, 0


def _evaluate(evaluation: Evaluation, state: FitState):
    """Evaluate, keep the best params; returns ``(state, whether patience ran out, the results)``."""
    result = {k: float(v) for k, v in evaluation.evaluate(state.train.params).items()}
    value = (1.0 if evaluation.mode == "min" else -1.0) * result[evaluation.monitor]
    if value < float(state.best):
        state = state._replace(
            best_params=state.train.params, best=jnp.asarray(value, jnp.float32), bad_evals=jnp.zeros((), jnp.int32)
        )
        return state, False, result
    state = state._replace(bad_evals=state.bad_evals + 1)
    return state, evaluation.patience is not None and int(state.bad_evals) >= evaluation.patience, result


def _mean(metrics: list[dict]) -> dict:
    return {k: float(jnp.mean(jnp.stack([m[k] for m in metrics]))) for k in metrics[0]}


def _emit(on_log, record: dict) -> bool:
    return bool(on_log is not None and on_log({"time": round(time.time(), 3), **record}))


__all__ = [
    "SCHEDULES",
    "Checkpoints",
    "Evaluation",
    "FitResult",
    "FitState",
    "TrainState",
    "TrainStep",
    "default_optimizer",
    "fit",
    "initial_state",
    "jsonl_log",
    "learning_rate_schedule",
    "make_train_step",
]
