"""The loop of :func:`rnnx.training.fit`: one pass over the steps from a state, with what it keeps on the
host (the evaluation history, the best step, the skipped updates, the last checkpoint written).

Each step runs the train step; every ``log_every`` steps the finite flags are read (one transfer for the
steps since the last read) and a record is emitted; evaluations keep the best params and count patience;
``save`` (from fit, with checkpoints) is called before each evaluation and at the end. Nothing here prints:
records go to ``on_log``.
"""

import dataclasses
import math
import pathlib
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnx.training.arguments import batch_stream, batches_ran_out, check_first_batch, evaluation_result
from rnnx.training.hooks import MAX_CONSECUTIVE_SKIPS, Evaluation, FitResult, Interrupted, NonFiniteError
from rnnx.training.step import TrainState, TrainStep, all_finite

if TYPE_CHECKING:
    from rnnx.training.placement import Placement


class FitState(NamedTuple):
    """What :func:`rnnx.training.fit` checkpoints and resumes from."""

    train: TrainState
    best_params: Any  # the params of the best evaluation so far (the initial params before any)
    best: jax.Array  # () float32: the best monitored value so far, negated for mode="max"; inf before any
    bad_evals: jax.Array  # () int32: evaluations since the best one


Metrics = dict[str, jax.Array]
"""One train step's metrics, as :func:`rnnx.training.make_train_step`'s ``update`` returns them."""

Record = dict[str, Any]
"""One record for ``on_log``: JSON-like values."""

OnLog = Callable[[Record], Any]
"""``on_log(record)``: a true return value from a training record stops training."""

EpochBatches = Sequence[Any] | np.ndarray
"""One epoch's batches: a list, or an array whose leading axis counts them."""

Batches = Callable[[int], EpochBatches] | Iterable[Any]
"""``epoch -> sequence of batches``, or an iterable of batches."""

Save = Callable[..., pathlib.Path]
"""``save(state, extra, replace=False) -> path of the checkpoint written``."""


def initial_state(train_step: TrainStep, params: Any, initial_carry: Any = None) -> FitState:
    """The state :func:`rnnx.training.fit` starts from; also the ``like`` for restoring one of its checkpoints."""
    return FitState(train_step.init(params, initial_carry), params, jnp.full((), jnp.inf), jnp.zeros((), jnp.int32))


@dataclasses.dataclass
class Loop:
    """The loop of :func:`rnnx.training.fit` (see the module docstring); calling it runs the steps."""

    train_step: TrainStep
    batches: Batches
    place: "Placement | None"  # None off a mesh
    steps: int
    seed: int
    initial_carry: Any
    evaluation: Evaluation | None
    log_every: int
    on_log: OnLog | None
    on_nonfinite: str
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_step: int | None = None
    skipped: int = 0
    consecutive: int = 0  # non-finite steps in a row
    saved: pathlib.Path | None = None  # the last checkpoint written or restored
    checkpointing: bool = False
    interrupt: Callable[[], bool] | None = None  # asked after every step: stop there (fit's ``interrupt``)
    stop_reason: str | None = None

    def warn(self, event: str) -> Callable[[str], None]:
        """A callback for a note that must not pass unseen: a record with ``on_log``, else a warning."""
        return warner(self.on_log, event)

    def __call__(
        self,
        state: FitState,
        extra: dict[str, Any] | None = None,
        *,
        save: Save | None = None,
        save_every: int | None = None,
    ) -> FitResult:
        extra = extra or {}
        self.history = list(extra.get("history", []))
        self.best_step, self.skipped = extra.get("best_step"), extra.get("skipped", 0)
        step, stop = int(state.train.step), extra.get("stopped", False)
        if stop:
            self.stop_reason = f"it had stopped early at step {step}"
        if extra.get("pending_evaluation"):  # the checkpoint was written just before an evaluation
            state, patience_over = self.evaluate(state, step)
            stop = stop or patience_over
        base_key, stream = jax.random.key(self.seed), batch_stream(self.batches, step)
        item = next(stream, None) if step < self.steps and not stop else None
        if not stop:
            check_first_batch(item, step, self.steps)
        ran_out = item is None and step < self.steps and not stop
        # (step, metrics) since the last record; the finite flags read of them so far
        pending: list[tuple[int, Metrics]] = []
        flags: list[bool] = []
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
            ran_out = last and step < self.steps
            log_due = step % self.log_every == 0 or last
            evaluate_due = self.evaluation is not None and (step % self.evaluation.every == 0 or last)
            save_due = save is not None and ((save_every and step % save_every == 0) or last)
            interrupted = not last and self.interrupt is not None and self.interrupt()
            if log_due or evaluate_due or save_due or interrupted:
                self.check(pending, flags)
            if log_due:
                record = {"step": step, **({} if epoch is None else {"epoch": epoch}), **self.mean(pending, flags)}
                if emit(self.on_log, record) and not stop:
                    stop, self.stop_reason = True, f"on_log asked to stop at step {step}"
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
            if interrupted:  # this step checkpointed, unfinished: a rerun resumes here
                if save is not None and not (save_due or evaluate_due):
                    self.saved = save(_checked_finite(state, step), self.extra(False, False))
                raise Interrupted(step, self.saved)
        if ran_out:
            self.stop_reason = batches_ran_out(self.warn("batches_ran_out"), step, self.steps)
        best = state.best_params if self.evaluation is not None else state.train.params
        return FitResult(
            best,
            state.train.params,
            state.train.opt_state,
            step,
            self.history,
            stop or ran_out,
            self.skipped,
            self.stop_reason,
        )

    def extra(self, pending_evaluation: bool, stopped: bool) -> dict[str, Any]:
        """What a checkpoint records beside the arrays, for an exact resume."""
        return {
            "history": self.history,
            "best_step": self.best_step,
            "pending_evaluation": pending_evaluation,
            "stopped": stopped,
            "skipped": self.skipped,
        }

    def check(self, pending: list[tuple[int, Metrics]], flags: list[bool]) -> None:
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

    def nonfinite_step(self, step: int, metrics: Metrics) -> NonFiniteError:
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

    def mean(self, pending: list[tuple[int, Metrics]], flags: list[bool]) -> dict[str, float]:
        """The mean of each metric over the steps with a finite loss and gradient (``flags``, read by
        :meth:`check`)."""
        kept = [m for (_, m), ok in zip(pending, flags) if ok]
        names = [k for k in pending[0][1] if k != "finite"]
        means = {k: float(jnp.mean(jnp.stack([m[k] for m in kept]))) if kept else math.nan for k in names}
        return means | ({"skipped": flags.count(False)} if self.on_nonfinite == "skip_update" else {})

    def evaluate(self, state: FitState, step: int) -> tuple[FitState, bool]:
        """Evaluate, keep the best params; returns ``(state, whether patience ran out)``."""
        evaluation = self.evaluation
        if evaluation is None:
            raise ValueError("Loop.evaluate needs an evaluation hook")
        result = evaluation_result(evaluation.evaluate(state.train.params), evaluation.monitor)
        self.history.append({"step": step, **result})
        asked = emit(self.on_log, {"step": step, "eval": result})
        if asked and self.stop_reason is None:
            self.stop_reason = f"on_log asked to stop at step {step}"
        value = (1.0 if evaluation.mode == "min" else -1.0) * result[evaluation.monitor]
        if not math.isfinite(value):
            so_far = "no evaluation was finite" if self.best_step is None else f"the best was at step {self.best_step}"
            raise NonFiniteError(
                f"evaluation at step {step} gave {evaluation.monitor} = {result[evaluation.monitor]}: the model "
                f"diverged ({so_far}). {self.where()}. Hint: lower the learning rate",
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
            return state, asked
        state = state._replace(bad_evals=state.bad_evals + 1)
        if evaluation.patience is not None and int(state.bad_evals) >= evaluation.patience:
            if self.stop_reason is None:
                self.stop_reason = f"{evaluation.patience} evaluations in a row without a better {evaluation.monitor}"
            return state, True
        return state, asked


def _checked_finite(state: FitState, step: int) -> FitState:
    """``state``, after checking that its params are finite: a checkpoint never holds a non-finite value.
    (The train step never applies a non-finite update, so only non-finite initial params fail here.)"""
    if not bool(all_finite(state.train.params)):
        raise NonFiniteError(
            f"the params hold non-finite values at step {step}; no checkpoint was written",
            step=step,
            quantity="params",
            value=math.nan,
            checkpoint=None,
        )
    return state


def warner(on_log: OnLog | None, event: str) -> Callable[[str], None]:
    """A callback for a note that must not pass unseen: a record with ``on_log``, else a warning."""
    if on_log is None:
        return lambda message: warnings.warn(message, stacklevel=4)

    def note(message: str) -> None:
        emit(on_log, {"step": None, "event": event, "message": message})

    return note


def emit(on_log: OnLog | None, record: Record) -> bool:
    return bool(on_log is not None and on_log({"time": round(time.time(), 3), **record}))


__all__ = ["FitState", "Loop", "emit", "initial_state", "warner"]
