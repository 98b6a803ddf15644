"""The training loop: a train state, a jitted step with gradient clipping, and :func:`fit`, which composes
them with evaluation, early stopping and resumable orbax checkpoints.

A loss function has the signature ``loss_fn(params, batch, key) -> (loss, metrics)`` where ``metrics`` is
a dict of scalars; a *stateful* one (a language model carrying its state across windows) takes and returns
the carry too: ``loss_fn(params, batch, key, carry) -> (loss, (metrics, carry))``. ``key`` is the step's
PRNG key, for dropout.

Nothing here prints. :func:`fit` reports through ``on_log(record)``: progress bars and summaries belong to
the caller (``rnnx.apps``, the examples), and :func:`jsonl_log` writes the records to a file.
"""

import contextlib
import dataclasses
import itertools
import json
import math
import pathlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnx.training import checkpoint, distributed

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
    norm before clipping), with a ``clip_norm`` ``clipped_grad_norm = min(grad_norm, clip_norm)`` (after),
    and ``finite``: whether the loss, the gradient norm and every element of the update are finite. A step where they
    are not changes
    nothing but the step count: params, optimiser state and carry stay as they were (as
    ``optax.apply_if_finite`` does), so a NaN never enters the params; :func:`fit` decides what to do about
    it. It compiles once per batch shape. A state with a carry calls the stateful form of ``loss_fn`` and
    stops the gradient of the carry it returns.

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
        # The update too, element by element (its norm may overflow while every element is finite): a NaN
        # learning rate makes a NaN update from a finite gradient.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(updates)
        updated = (optax.apply_updates(state.params, updates), opt_state, jax.lax.stop_gradient(carry))
        kept = (state.params, state.opt_state, state.carry)
        params, opt_state, carry = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
        state = TrainState(state.step + 1, params, opt_state, carry)
        return state, {"loss": loss, **metrics, **norms, "finite": finite}

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
    """:func:`fit`'s checkpoint hook: ``directory/step_<n>`` every ``every`` steps, before every evaluation
    and at the end (``every`` None: only those), keeping the newest ``max_to_keep`` plus the one taken at
    the best evaluation (None: all); ``net``, the :class:`rnnx.Stack` inside the params, is recorded and
    checked on resume."""

    directory: Any
    every: int | None = 500
    max_to_keep: int | None = 3
    net: Any = None


NONFINITE_POLICIES = ("raise", "skip_update")
MAX_CONSECUTIVE_SKIPS = 25  # with on_nonfinite="skip_update": a run that cannot take a finite step stops


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss, gradient norm or evaluation. The message is one line: the step, the
    quantity, the last good checkpoint and a hint. Attributes: ``step``, ``quantity``, ``value`` and
    ``checkpoint`` (the path of the last good checkpoint, or None)."""

    def __init__(self, message: str, *, step: int, quantity: str, value: float, checkpoint):
        super().__init__(message)
        self.step, self.quantity, self.value, self.checkpoint = step, quantity, value, checkpoint


@dataclasses.dataclass
class FitResult:
    params: Any  # the best evaluated params (the last ones without evaluation)
    last_params: Any
    opt_state: Any
    step: int
    history: list  # one dict per evaluation, of the whole run (a resumed run's too)
    stopped_early: bool  # by patience or by on_log
    skipped: int = 0  # updates dropped for a non-finite loss or gradient (on_nonfinite="skip_update")


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
    on_nonfinite: str = "raise",
    mesh: jax.sharding.Mesh | None = None,
) -> FitResult:
    """Train for ``steps`` updates, resuming from the newest checkpoint in ``checkpoints.directory`` that
    verifies.

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
      checkpoints: a :class:`Checkpoints` hook, for resumable runs. A checkpoint is written before each
        evaluation, so a crash in evaluation loses no update; one evaluation pending when a run stopped is
        done first on resume. Each array's checksum is verified on resume: a damaged newest checkpoint is
        reported (an ``"event": "damaged"`` record) and the newest one that verifies is used; if none does,
        :class:`rnnx.training.checkpoint.CheckpointError`. A lock file (``rnnx.lock``) refuses a second
        writer while the first lives; a dead writer's lock is taken over.
      log_every: steps between training records.
      on_log: called with each record: every ``log_every`` steps and at the last, ``{"time", "step",
        "epoch" (``epoch -> batches`` only), "loss", "grad_norm", "clipped_grad_norm" (with clipping), and the
        loss function's metrics}``, each the mean since the previous record over the steps whose loss and
        gradient were finite (with ``"skipped"``, the count of the others, under ``"skip_update"``); after
        each evaluation, ``{"time", "step", "eval": {name: value}}``; and notes, ``{"time", "step", "event",
        "message"}`` with ``event`` one of ``"resume"``, ``"finished"`` (both with ``"pending_evaluation"``:
        whether the checkpoint's own evaluation is done again), ``"damaged"``, ``"stale_lock"`` (without
        ``on_log``, the last two are ``warnings``). A true return value from a training record
        stops training after this step, which is then checkpointed and evaluated as the last.
      on_nonfinite: what a step with a non-finite loss or gradient norm does (its update is never applied,
        see :func:`make_train_step`): ``"raise"`` stops with :class:`NonFiniteError` at the next record,
        checkpoint or evaluation, whichever comes first (the flags stay on the device until then, so there is
        no host sync per step); ``"skip_update"`` drops the update, counts it (``FitResult.skipped``, the
        records' ``"skipped"``) and goes on, stopping with :class:`NonFiniteError` after
        ``MAX_CONSECUTIVE_SKIPS`` skips in a row. A non-finite monitored evaluation always raises: a diverged
        model is never kept as the best, and the initial params are never returned as a result.
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

    Raises:
      NonFiniteError: see ``on_nonfinite``; nothing non-finite was saved, and the last checkpoint is intact.
      rnnx.training.checkpoint.CheckpointError: no checkpoint verifies, or another live process holds the
        directory's lock.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, received {steps!r}")
    if evaluation is not None and evaluation.mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', received {evaluation.mode!r}")
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, received {on_nonfinite!r}")
    train_step = make_train_step(loss_fn, default_optimizer() if optimizer is None else optimizer, clip_norm=clip_norm)
    place = _Placement(mesh) if mesh is not None else None
    if place is not None:
        initial_carry = place.batch(initial_carry, "initial_carry")
    state = initial_state(train_step, params, initial_carry)
    if place is not None:  # the scalars too: every argument of the step then lives on the mesh
        state = place.state(state)
    run = _Run(
        train_step,
        batches=batches,
        place=place,
        steps=steps,
        seed=seed,
        initial_carry=initial_carry,
        evaluation=evaluation,
        log_every=log_every,
        on_log=on_log,
        on_nonfinite=on_nonfinite,
    )
    if checkpoints is None:
        return run(state)
    directory = pathlib.Path(checkpoints.directory).absolute()
    run.checkpointing = True
    lead = distributed.is_lead()  # one lock per job, held by its first process
    with (
        checkpoint.lock(directory, on_stale=run.warn("stale_lock")) if lead else contextlib.nullcontext(),
        checkpoint.manager(directory) as manager,
    ):
        found = checkpoint.restore_latest(manager, state, net=checkpoints.net, on_damaged=run.warn("damaged"))
        extra = {}
        if found is not None:
            step, state, extra = found
            _set_aside_damaged(manager, step, lead, run.warn("damaged"))
            done = step >= steps or extra.get("stopped", False)
            run.saved = directory / f"step_{step}"
            message = f"step {step} of {steps} (checkpoint {run.saved})"
            event, message = (
                ("finished", f"already finished at {message}") if done else ("resume", f"resuming from {message}")
            )
            _emit(on_log, {"step": step, "event": event, "message": message, **_pending(extra)})

        def save(state: FitState, extra: dict, replace: bool = False) -> pathlib.Path:
            step = int(state.train.step)
            if replace:  # a crash before the new one is complete resumes from the one before: nothing lost
                manager.delete(step)
            checkpoint.save_step(manager, step, state, net=checkpoints.net, extra=extra)
            if checkpoints.max_to_keep is not None:
                protect = () if extra["best_step"] is None else (extra["best_step"],)
                checkpoint.prune(manager, keep=checkpoints.max_to_keep, protect=protect)
            return directory / f"step_{step}"

        return run(state, extra, save=save, save_every=checkpoints.every)


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


@dataclasses.dataclass
class _Run:
    """The loop of :func:`fit`, with what it keeps on the host: the evaluation history, the best step, the
    skipped updates and the last checkpoint written."""

    train_step: TrainStep
    batches: Any
    place: "_Placement | None"
    steps: int
    seed: int
    initial_carry: Any
    evaluation: Evaluation | None
    log_every: int
    on_log: Callable | None
    on_nonfinite: str
    history: list = dataclasses.field(default_factory=list)
    best_step: int | None = None
    skipped: int = 0
    consecutive: int = 0  # non-finite steps in a row
    saved: pathlib.Path | None = None  # the last checkpoint written or restored
    checkpointing: bool = False

    def warn(self, event: str) -> Callable[[str], None]:
        """A callback for a note that must not pass unseen: a record with ``on_log``, else a warning."""
        if self.on_log is None:
            return lambda message: warnings.warn(message, stacklevel=4)
        return lambda message: _emit(self.on_log, {"step": None, "event": event, "message": message})

    def __call__(self, state: FitState, extra: dict | None = None, *, save=None, save_every=None) -> FitResult:
        extra = extra or {}
        self.history = list(extra.get("history", []))
        self.best_step, self.skipped = extra.get("best_step"), extra.get("skipped", 0)
        step, stop = int(state.train.step), extra.get("stopped", False)
        if extra.get("pending_evaluation"):  # the checkpoint was written just before an evaluation
            state, patience_over = self.evaluate(state, step)
            stop = stop or patience_over
        base_key, stream = jax.random.key(self.seed), _batches(self.batches, step)
        item = next(stream, None) if step < self.steps and not stop else None
        pending, flags = [], []  # (step, metrics) since the last record; the finite flags read of them so far
        while item is not None:
            epoch, index, batch = item
            train = state.train
            if self.initial_carry is not None and index == 0:
                train = train._replace(carry=self.initial_carry)
            if self.place is not None:  # as each batch is taken: a resumed run does not copy the skipped ones
                batch = self.place.batch(batch)
            train, metrics = self.train_step.update(train, batch, jax.random.fold_in(base_key, step))
            state, step = state._replace(train=train), step + 1
            pending.append((step, metrics))
            item = next(stream, None) if step < self.steps else None  # looked ahead, so the last step is known
            last = item is None
            log_due = step % self.log_every == 0 or last
            evaluate_due = self.evaluation is not None and (step % self.evaluation.every == 0 or last)
            save_due = save is not None and ((save_every and step % save_every == 0) or last)
            if log_due or evaluate_due or save_due:
                self.check(pending, flags)
            if log_due:
                record = {"step": step, **({} if epoch is None else {"epoch": epoch}), **self.mean(pending, flags)}
                stop = _emit(self.on_log, record) or stop
                pending, flags = [], []
            evaluate_due = evaluate_due or (self.evaluation is not None and stop)
            # Saved before evaluating: a crash there loses nothing.
            if save is not None and (save_due or evaluate_due or stop):
                self.saved = save(_checked_finite(state, step), self.extra(evaluate_due, stop))
            if evaluate_due:
                state, patience_over = self.evaluate(state, step)
                stop = stop or patience_over
                if save is not None and (last or stop):  # the final checkpoint holds its evaluation too
                    self.saved = save(state, self.extra(False, stop), replace=True)
            if stop:
                break
        best = state.best_params if self.evaluation is not None else state.train.params
        return FitResult(best, state.train.params, state.train.opt_state, step, self.history, stop, self.skipped)

    def extra(self, pending_evaluation: bool, stopped: bool) -> dict:
        """What a checkpoint records beside the arrays, for an exact resume."""
        return {
            "history": self.history,
            "best_step": self.best_step,
            "pending_evaluation": pending_evaluation,
            "stopped": stopped,
            "skipped": self.skipped,
        }

    def check(self, pending: list, flags: list) -> None:
        """Read the finite flags of the steps of ``pending`` past ``flags`` (appended to it), count the
        dropped updates and raise as the policy says."""
        if len(flags) == len(pending):
            return
        new = np.asarray(jnp.stack([m["finite"] for _, m in pending[len(flags) :]]))  # one transfer
        for (step, metrics), finite in zip(pending[len(flags) :], new):
            self.consecutive = 0 if finite else self.consecutive + 1
            self.skipped += int(not finite)
            if not finite and (self.on_nonfinite == "raise" or self.consecutive >= MAX_CONSECUTIVE_SKIPS):
                raise self.nonfinite_step(step, metrics)
        flags.extend(bool(f) for f in new)

    def nonfinite_step(self, step: int, metrics: dict) -> NonFiniteError:
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        in_a_row = f" ({self.consecutive} updates in a row)" if self.on_nonfinite == "skip_update" else ""
        if math.isfinite(loss) and math.isfinite(grad_norm):  # then the optimiser made the update non-finite
            quantity, value = "update", math.nan
            what = f"the update is not finite although the loss ({loss}) and gradient norm ({grad_norm}) are"
            hint = "check the optimiser's learning rate (NaN or inf?)"
        else:
            quantity, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
            what = f"the {quantity} is {value} (loss {loss}, gradient norm {grad_norm})"
            hint = f"lower the learning rate, or look for non-finite values in the batch of step {step}"
        return NonFiniteError(
            f"training stopped at step {step}: {what}{in_a_row}; the update was not applied. {self.where()}. "
            f"Hint: {hint}",
            step=step,
            quantity=quantity,
            value=value,
            checkpoint=self.saved,
        )

    def where(self) -> str:
        if self.saved is not None:
            return f"The last good checkpoint is {self.saved}"
        return "No checkpoint was written yet" if self.checkpointing else "Checkpoints are off: nothing was saved"

    def mean(self, pending: list, flags: list) -> dict:
        """The mean of each metric over the steps with a finite loss and gradient (``flags``, read by
        :meth:`check`)."""
        kept = [m for (_, m), ok in zip(pending, flags) if ok]
        names = [k for k in pending[0][1] if k != "finite"]
        means = {k: float(jnp.mean(jnp.stack([m[k] for m in kept]))) if kept else math.nan for k in names}
        return means | ({"skipped": flags.count(False)} if self.on_nonfinite == "skip_update" else {})

    def evaluate(self, state: FitState, step: int):
        """Evaluate, keep the best params; returns ``(state, whether patience ran out)``."""
        evaluation = self.evaluation
        result = {k: float(v) for k, v in evaluation.evaluate(state.train.params).items()}
        self.history.append({"step": step, **result})
        patience_over = _emit(self.on_log, {"step": step, "eval": result})
        value = (1.0 if evaluation.mode == "min" else -1.0) * result[evaluation.monitor]
        if not math.isfinite(value):
            best = "no evaluation was finite" if self.best_step is None else f"the best was at step {self.best_step}"
            raise NonFiniteError(
                f"evaluation at step {step} gave {evaluation.monitor} = {result[evaluation.monitor]}: the model "
                f"diverged ({best}). {self.where()}. Hint: lower the learning rate",
                step=step,
                quantity=evaluation.monitor,
                value=result[evaluation.monitor],
                checkpoint=self.saved,
            )
        if value < float(state.best):
            self.best_step = step
            best, bad = jnp.asarray(value, jnp.float32), jnp.zeros((), jnp.int32)
            if self.place is not None:  # on the mesh like the rest of the state, or orbax cannot save it
                best, bad = self.place.replicated((best, bad))
            state = state._replace(best_params=state.train.params, best=best, bad_evals=bad)
            return state, patience_over
        state = state._replace(bad_evals=state.bad_evals + 1)
        return state, patience_over or (evaluation.patience is not None and int(state.bad_evals) >= evaluation.patience)


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


def _set_aside_damaged(manager, step: int, lead: bool, note: Callable[[str], None]) -> None:
    """Rename the checkpoints newer than ``step`` (damaged ones that were passed over) to ``damaged.step_<n>``,
    which orbax does not take for a step: the run writes those steps anew, and the damaged data is kept for
    a look."""
    directory = pathlib.Path(manager.directory)
    damaged = [s for s in manager.all_steps() if s > step]
    if lead:
        for newer in damaged:
            source, target = directory / f"step_{newer}", directory / f"damaged.step_{newer}"
            suffix = 1
            while target.exists():
                target, suffix = directory / f"damaged.step_{newer}.{suffix}", suffix + 1
            source.rename(target)
            note(f"moved the damaged {source} aside to {target}; the run writes step {newer} anew")
    if damaged:
        distributed.barrier("rnnx: damaged checkpoints set aside")
        manager.reload()


def _pending(extra: dict) -> dict:
    return {"pending_evaluation": bool(extra.get("pending_evaluation"))}


def _all_finite(tree) -> jax.Array:
    """() bool: whether every element of every array in ``tree`` is finite."""
    return jax.tree.reduce(jnp.logical_and, jax.tree.map(lambda x: jnp.isfinite(x).all(), tree), jnp.array(True))


def _checked_finite(state: FitState, step: int) -> FitState:
    """``state``, after checking that its params are finite: a checkpoint never holds a non-finite value.
    (The train step never applies a non-finite update, so only non-finite initial params fail here.)"""
    if not bool(_all_finite(state.train.params)):
        raise NonFiniteError(
            f"the params hold non-finite values at step {step}; no checkpoint was written",
            step=step,
            quantity="params",
            value=math.nan,
            checkpoint=None,
        )
    return state


def _emit(on_log, record: dict) -> bool:
    return bool(on_log is not None and on_log({"time": round(time.time(), 3), **record}))


__all__ = [
    "MAX_CONSECUTIVE_SKIPS",
    "NONFINITE_POLICIES",
    "SCHEDULES",
    "Checkpoints",
    "Evaluation",
    "FitResult",
    "FitState",
    "NonFiniteError",
    "TrainState",
    "TrainStep",
    "default_optimizer",
    "fit",
    "initial_state",
    "jsonl_log",
    "learning_rate_schedule",
    "make_train_step",
]
