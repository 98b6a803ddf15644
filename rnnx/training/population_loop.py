"""The loop of :func:`rnnx.training.fit_population`: the population's compiled step, and what the host keeps
per member (evaluation history, best step, stop, failure).

The step is :func:`rnnx.training.make_train_step`'s ``update`` under ``jax.vmap`` over the member axis,
jitted once for the whole population. A member that is no longer *active* (stopped by its patience, or
failed) keeps its state: the step computes it and ``jnp.where`` drops the result, so the shapes, and the
one compilation, never change. A failure is decided on the device (a non-finite step under ``"freeze"`` or
``"raise"``, ``MAX_CONSECUTIVE_SKIPS`` in a row under ``"skip_update"``), so no member takes another update
after its failure whatever ``log_every`` is; the host reads the flags at each record, evaluation or
checkpoint, as ``fit``'s loop does, and reports the failures then.
"""

import dataclasses
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnx.training.arguments import batch_stream, batches_ran_out, check_first_batch
from rnnx.training.hooks import MAX_CONSECUTIVE_SKIPS, Evaluation, FitResult, NonFiniteError
from rnnx.training.loop import Batches, FitState, Metrics, emit, warner
from rnnx.training.step import TrainStep

MEMBER_AXIS = "member"
POPULATION_POLICIES = ("freeze", "skip_update", "raise")


class PopulationState(NamedTuple):
    """What :func:`rnnx.training.fit_population` checkpoints and resumes from; every leaf has a leading
    member axis ``n``."""

    fit: FitState  # each member's fit state
    active: jax.Array  # (n,) bool: still training (not stopped, not failed)
    consecutive: jax.Array  # (n,) int32: non-finite steps in a row
    skipped: jax.Array  # (n,) int32: updates dropped

    @classmethod
    def start(cls, fit: FitState, n: int) -> "PopulationState":
        return cls(fit, jnp.ones(n, bool), jnp.zeros(n, jnp.int32), jnp.zeros(n, jnp.int32))


@dataclasses.dataclass
class PopulationResult:
    """What :func:`rnnx.training.fit_population` returns: arrays with a leading member axis, lists with one
    item per member."""

    params: Any  # each member's best evaluated params (its last ones without evaluation)
    last_params: Any
    opt_state: Any  # with the injected hyper-parameters in it
    steps: list[int]  # the updates each member took
    histories: list[list[dict[str, Any]]]
    stopped_early: list[bool]  # by its patience, by on_log for all, or the batches ran out
    skipped: list[int]
    failures: list[str | None]  # the one-line report of a failed (frozen) member
    seeds: list[int]
    hyperparams: dict[str, np.ndarray]  # (n,) each, clip_norm among them
    stop_reasons: list[str | None]  # as fit's stop_reason when the batches ran out (else None)

    def member(self, i: int) -> FitResult:
        """Member ``i`` as the :class:`rnnx.training.FitResult` of its solo :func:`rnnx.training.fit`."""
        take = lambda tree: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
        args = (self.steps[i], self.histories[i], self.stopped_early[i], self.skipped[i], self.stop_reasons[i])
        return FitResult(take(self.params), take(self.last_params), take(self.opt_state), *args)


def population_step(train_step: TrainStep, member_data: bool, policy: str, clipped: bool) -> Callable[..., Any]:
    """``step(state, batch, seeds) -> (state, metrics)``, jitted: every active member's update, its key
    ``fold_in(key(seed), its step)`` as in ``fit``; ``metrics`` gain ``"active"`` (whether it trained) and,
    if ``clipped`` (the optimiser state starts with the injected ``clip_by_global_norm``), ``fit``'s
    ``"clipped_grad_norm"``."""
    update = jax.vmap(train_step.update, in_axes=(0, 0 if member_data else None, 0))
    limit = MAX_CONSECUTIVE_SKIPS if policy == "skip_update" else 1

    @jax.jit
    def step(state: PopulationState, batch: Any, seeds: jax.Array) -> tuple[PopulationState, Metrics]:
        train, active = state.fit.train, state.active
        keys = jax.vmap(lambda s, n: jax.random.fold_in(jax.random.key(s), n))(seeds, train.step)
        new, metrics = update(train, batch, keys)
        if clipped:
            metrics["clipped_grad_norm"] = jnp.minimum(metrics["grad_norm"], train.opt_state[0].hyperparams["max_norm"])
        finite = metrics["finite"]
        consecutive = jnp.where(active, jnp.where(finite, 0, state.consecutive + 1), state.consecutive)
        skipped = state.skipped + (active & ~finite)
        train = _where(active, new, train)
        state = PopulationState(state.fit._replace(train=train), active & (consecutive < limit), consecutive, skipped)
        return state, {**metrics, "active": active}

    return step


@jax.jit
def _keep_best(fit: FitState, improved: jax.Array, best: jax.Array, bad: jax.Array) -> FitState:
    return fit._replace(best_params=_where(improved, fit.train.params, fit.best_params), best=best, bad_evals=bad)


def _where(mask: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b), new, old)


@dataclasses.dataclass
class PopulationLoop:
    """The loop of :func:`rnnx.training.fit_population` (see the module docstring); calling it runs it."""

    step_fn: Callable[..., Any]
    batches: Batches
    seeds: Any  # (n,) int32, placed like the state
    hyperparams: dict[str, np.ndarray]
    steps: int
    initial_carry: Any  # stacked
    evaluation: Evaluation | None
    log_every: int
    on_log: Callable[[dict[str, Any]], Any] | None
    on_nonfinite: str
    place_batch: Callable[[Any], Any] | None = None
    saved: pathlib.Path | None = None

    def warn(self, event: str) -> Callable[[str], None]:
        return warner(self.on_log, event)

    def __call__(self, state: PopulationState, extra: dict[str, Any] | None = None, *, save: Any = None,
                 save_every: int | None = None) -> PopulationResult:  # fmt: skip
        n, extra = len(self.active_at_start(state)), extra or {}
        self.histories = extra.get("histories", [[] for _ in range(n)])
        self.best_step = extra.get("best_step", [None] * n)
        self.failures, self.stopped = extra.get("failures", [None] * n), extra.get("member_stopped", [False] * n)
        reasons: list[str | None] = [None] * n
        step, stop = int(np.max(np.asarray(state.fit.train.step))), extra.get("stopped", False)
        if extra.get("pending_evaluation"):
            state = self.evaluate(state, step)
        stream = batch_stream(self.batches, step)
        item = next(stream, None) if step < self.steps and not stop and self.active.any() else None
        if not stop and self.active.any():
            check_first_batch(item, step, self.steps)
        ran_out = item is None and step < self.steps and not stop
        pending: list[tuple[int, Metrics]] = []
        while item is not None:
            epoch, index, batch = item
            if self.initial_carry is not None and index == 0:
                state = state._replace(fit=state.fit._replace(train=state.fit.train._replace(carry=self.initial_carry)))
            batch = batch if self.place_batch is None else self.place_batch(batch)
            state, metrics = self.step_fn(state, batch, self.seeds)
            step += 1
            pending.append((step, metrics))
            item = next(stream, None) if step < self.steps else None
            last = item is None
            ran_out = last and step < self.steps
            log_due = step % self.log_every == 0 or last
            evaluate_due = self.evaluation is not None and (step % self.evaluation.every == 0 or last)
            save_due = save is not None and ((save_every and step % save_every == 0) or last)
            if not (log_due or evaluate_due or save_due):
                continue
            self.check(state, pending)
            if log_due:
                for record in self.records(step, epoch, pending):
                    stop = emit(self.on_log, record) or stop
                pending = []
            evaluate_due = bool((evaluate_due or stop) and self.evaluation is not None and self.active.any())
            if save is not None and (save_due or evaluate_due or stop):
                self.saved = save(state, step, self.extra(evaluate_due, stop))
            if evaluate_due:
                state = self.evaluate(state, step)
                if save is not None and (last or stop or not self.active.any()):
                    self.saved = save(state, step, self.extra(False, stop), replace=True)
            if stop or not self.active.any():
                self.stopped = [s or (stop and f is None) for s, f in zip(self.stopped, self.failures)]
                break
        if ran_out and self.active.any():  # as in fit; the members still training stop here
            reason = batches_ran_out(self.warn("batches_ran_out"), step, self.steps)
            reasons = [reason if a else None for a in self.active]
            self.stopped = [s or bool(a) for s, a in zip(self.stopped, self.active)]
        fit = state.fit
        best = fit.best_params if self.evaluation is not None else fit.train.params
        steps = [int(s) for s in np.asarray(fit.train.step)]
        skipped = [int(s) for s in np.asarray(state.skipped)]
        args = (self.histories, self.stopped, skipped, self.failures, [int(s) for s in np.asarray(self.seeds)])
        return PopulationResult(best, fit.train.params, fit.train.opt_state, steps, *args, self.hyperparams, reasons)

    def active_at_start(self, state: PopulationState) -> np.ndarray:
        self.active = np.asarray(state.active).copy()
        return self.active

    def hyperparams_row(self, i: int) -> str:
        return ", ".join(f"{k}={float(v[i]):.4g}" for k, v in self.hyperparams.items())

    def extra(self, pending_evaluation: bool, stopped: bool) -> dict[str, Any]:
        """What a checkpoint records beside the arrays, for an exact resume."""
        return {
            "histories": self.histories,
            "best_step": self.best_step,
            "failures": self.failures,
            "member_stopped": self.stopped,
            "pending_evaluation": pending_evaluation,
            "stopped": stopped,
        }

    def check(self, state: PopulationState, pending: Sequence[tuple[int, Metrics]]) -> None:
        """Report the members that failed in ``pending`` (one transfer), and raise as the policy says."""
        active = np.asarray(state.active)
        failed = [i for i in np.flatnonzero(self.active & ~active) if not self.stopped[i]]
        if not failed:  # every failure (under "raise" too) freezes the member on the device
            return
        host = jax.device_get([(s, {k: m[k] for k in ("loss", "grad_norm", "finite", "active")}) for s, m in pending])
        for i in range(len(active)):
            at = [(s, m) for s, m in host if m["active"][i] and not m["finite"][i]]
            if at and i in failed:
                s, m = at[-1] if self.on_nonfinite == "skip_update" else at[0]
                self.fail(i, s, float(m["loss"][i]), float(m["grad_norm"][i]), active)
        self.active = active.copy()

    def fail(self, i: int, step: int, loss: float, grad_norm: float, active: np.ndarray) -> None:
        """Member ``i`` failed at ``step``: report it in one line; raise if the policy or all failures say so."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            quantity, value = "update", math.nan
        else:
            quantity, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
        self.failed(i, step, quantity, value, f"(loss {loss}, gradient norm {grad_norm})", active)

    def failed(self, i: int, step: int, quantity: str, value: float, detail: str, active: np.ndarray) -> None:
        seeds = np.asarray(self.seeds)
        message = (
            f"member {i} (seed {int(seeds[i])}, {self.hyperparams_row(i)}) failed at step {step}: the {quantity} is "
            f"{value} {detail}; frozen at its last finite params, {int(active.sum())} of {len(active)} members "
            "train on"
        )
        error = NonFiniteError(message, step=step, quantity=quantity, value=value, checkpoint=self.saved)
        if self.on_nonfinite == "raise":
            raise error
        self.failures[i] = message
        self.warn("member_failed")(message)
        if all(f is not None for f in self.failures):
            raise NonFiniteError(
                f"every member failed; the last: {message}", step=step, quantity=quantity, value=value,
                checkpoint=self.saved,
            )  # fmt: skip

    def records(self, step: int, epoch: int | None, pending: Sequence[tuple[int, Metrics]]) -> list[dict[str, Any]]:
        """One training record per member that trained since the last: each metric's mean over its finite
        steps."""
        host = jax.device_get([m for _, m in pending])
        names = [k for k in host[0] if k not in ("finite", "active")]
        records = []
        for i in range(len(host[0]["active"])):
            trained = [m for m in host if m["active"][i]]
            if not trained:
                continue
            kept = [m for m in trained if m["finite"][i]]
            means: dict[str, Any] = {k: float(np.mean([m[k][i] for m in kept])) if kept else math.nan for k in names}
            skipped = {"skipped": len(trained) - len(kept)} if self.on_nonfinite == "skip_update" else {}
            records.append(
                {"step": step, "member": i, **({} if epoch is None else {"epoch": epoch}), **means, **skipped}
            )
        return records

    def evaluate(self, state: PopulationState, step: int) -> PopulationState:
        """Evaluate the active members; keep each one's best params, stop those whose patience ran out."""
        evaluation = self.evaluation
        assert evaluation is not None
        results = {k: np.asarray(v, np.float64) for k, v in evaluation.evaluate(state.fit.train.params).items()}
        n = len(self.active)
        for name, values in results.items():
            if values.shape != (n,):
                raise ValueError(
                    f"evaluation {name!r} must have one value per member, shape ({n},); got {values.shape}"
                )
        sign = 1.0 if evaluation.mode == "min" else -1.0
        best, bad = np.asarray(state.fit.best).copy(), np.asarray(state.fit.bad_evals).copy()
        improved = np.zeros(n, bool)
        for i in np.flatnonzero(self.active):
            result = {k: float(v[i]) for k, v in results.items()}
            self.histories[i].append({"step": step, **result})
            stop = emit(self.on_log, {"step": step, "member": int(i), "eval": result})
            value = sign * result[evaluation.monitor]
            if not math.isfinite(value):
                self.active[i] = False
                detail = "at its evaluation" + (
                    "" if self.best_step[i] is None else f"; its best at step {self.best_step[i]}"
                )
                self.failed(int(i), step, evaluation.monitor, result[evaluation.monitor], f"({detail})", self.active)
                continue
            if value < best[i]:
                self.best_step[i], best[i], bad[i], improved[i] = step, value, 0, True
            else:
                bad[i] += 1
            if stop or (evaluation.patience is not None and bad[i] >= evaluation.patience and not improved[i]):
                self.active[i], self.stopped[i] = False, True
        fit = _keep_best(state.fit, improved, best.astype(np.float32), bad.astype(np.int32))
        return state._replace(fit=fit, active=jnp.asarray(self.active) & state.active)


__all__ = ["MEMBER_AXIS", "POPULATION_POLICIES", "PopulationLoop", "PopulationResult", "PopulationState"]
