"""Training with :func:`fit`: the arguments checked, the train step built once and placed, and the loop run
from the newest checkpoint that verifies, saving and pruning as it goes.

Nothing here prints. :func:`fit` reports through ``on_log(record)``: progress bars and summaries belong to
the caller (``rnnx.apps``, the examples), and :func:`rnnx.training.jsonl_log` writes the records to a file.
The loss function's signature is described in :mod:`rnnx.training.step`.
"""

import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import optax

from rnnx.core.deprecation import MESH_RENAME, renamed_argument
from rnnx.training import resuming
from rnnx.training.arguments import check_fit_arguments
from rnnx.training.hooks import Checkpoints, Evaluation, FitResult
from rnnx.training.loop import Batches, FitState, Loop, OnLog, initial_state
from rnnx.training.placement import Placement
from rnnx.training.step import LossFn, default_optimizer, make_train_step

if TYPE_CHECKING:
    import orbax.checkpoint as ocp


def fit(
    loss_fn: LossFn,
    params: Any,
    batches: Batches,
    *,
    steps: int,
    optimizer: optax.GradientTransformation | None = None,
    clip_norm: float | None = 1.0,
    seed: int = 0,
    initial_carry: Any = None,
    evaluation: Evaluation | None = None,
    checkpoints: Checkpoints | None = None,
    log_every: int = 20,
    on_log: OnLog | None = None,
    on_nonfinite: str = "raise",
    data_mesh: jax.sharding.Mesh | None = None,
    mesh: jax.sharding.Mesh | None = None,
    interrupt: Callable[[], bool] | None = None,
) -> FitResult:
    """Train for ``steps`` updates, resuming from the newest checkpoint in ``checkpoints.directory`` that
    verifies.

    Args:
      loss_fn: see :mod:`rnnx.training.step`.
      params: the initial params.
      batches: ``epoch -> sequence of batches``, deterministic for a given epoch (e.g. shuffled with
        ``(seed, epoch)``), so that a resumed run sees exactly the batches the uninterrupted run would; a
        stateful loss starts every epoch from ``initial_carry``. Or any iterable of batches: step ``s`` takes
        its ``s``-th item (a resumed run skips the ones already trained on); if it runs out, training ends
        early with a ``"batches_ran_out"`` note (a warning without ``on_log``) and ``FitResult.stopped_early``
        and ``stop_reason`` say so. Either form yielding no batch at all is a ``ValueError``.
      steps: the number of updates, a positive int.
      optimizer: default :func:`rnnx.training.default_optimizer` (Adam 3e-4).
      clip_norm: the global gradient-norm bound in front of ``optimizer``, finite and >= 0 (None: no clipping).
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
        see :func:`rnnx.training.make_train_step`): ``"raise"`` stops with :class:`NonFiniteError` at the next record,
        checkpoint or evaluation, whichever comes first (the flags stay on the device until then, so there is
        no host sync per step); ``"skip_update"`` drops the update, counts it (``FitResult.skipped``, the
        records' ``"skipped"``) and goes on, stopping with :class:`NonFiniteError` after
        ``MAX_CONSECUTIVE_SKIPS`` skips in a row. A non-finite monitored evaluation always raises: a diverged
        model is never kept as the best, and the initial params are never returned as a result.
      data_mesh: data-parallel training over the mesh axis ``"data"``: every batch leaf (and a stateful
        loss's carry) is split along its leading batch axis with ``NamedSharding(data_mesh, P("data"))``; params,
        optimiser state and the best params are replicated (``P()``). ``jit`` partitions the step, so XLA
        inserts the gradient all-reduce; the result equals the one-device run to float32 round-off (the
        order of the sums differs). A batch size that does not divide over the axis is refused with a
        ``ValueError``. Checkpoints hold the global arrays, so they restore on any mesh or on one device.
        ``evaluation.evaluate`` receives the replicated params, unchanged. Across processes (after
        :func:`rnnx.training.distributed.initialize`, with a mesh over ``jax.devices()`` of all of them)
        every process calls ``fit`` with the same arguments except the data: its batches and
        ``initial_carry`` are its own slice of the global batch (e.g. the examples of
        :func:`rnnx.training.distributed.process_shard`), all of the same size, and it must take as many
        batches per epoch as the others. The global batch is the processes' slices in mesh order. (Not
        ``rnnx.unroll``'s ``seq_mesh``, which splits time.)
      mesh: deprecated alias of ``data_mesh``, removed in rnnx 0.3.
      interrupt: asked after every step whether to stop there (e.g. a Ctrl-C handler's flag): then that step is
        checkpointed, unfinished, so that a rerun resumes from it, and :class:`Interrupted` is raised.

    Raises:
      ValueError, TypeError: an argument no run could use (``steps``, ``clip_norm``, ``log_every``, the
        evaluation's ``every``, ``patience`` or ``mode``), or a loss or evaluation function whose return value
        has the wrong form; the message says what was expected.
      Interrupted: ``interrupt`` asked to stop.
      NonFiniteError: see ``on_nonfinite``; nothing non-finite was saved, and the last checkpoint is intact.
      rnnx.training.checkpoint.CheckpointError: no checkpoint verifies, or another live process holds the
        directory's lock.
    """
    check_fit_arguments(
        params=params,
        steps=steps,
        clip_norm=clip_norm,
        log_every=log_every,
        evaluation=evaluation,
        on_nonfinite=on_nonfinite,
    )
    data_mesh = renamed_argument("rnnx.training.fit", "mesh", mesh, "data_mesh", data_mesh, MESH_RENAME)
    train_step = make_train_step(loss_fn, default_optimizer() if optimizer is None else optimizer, clip_norm=clip_norm)
    place = Placement(data_mesh) if data_mesh is not None else None
    if place is not None:
        initial_carry = place.batch(initial_carry, "initial_carry")
    state = initial_state(train_step, params, initial_carry)
    if place is not None:  # the scalars too: every argument of the step then lives on the mesh
        state = place.state(state)
    loop = Loop(
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
        interrupt=interrupt,
    )
    if checkpoints is None:
        return loop(state)
    loop.checkpointing = True

    def run(manager: "ocp.CheckpointManager", state: FitState, extra: dict[str, Any], saved: Any) -> FitResult:
        loop.saved = saved

        def save(state: FitState, extra: dict, replace: bool = False) -> pathlib.Path:
            protect = () if extra["best_step"] is None else (extra["best_step"],)
            return resuming.save_step(manager, checkpoints, int(state.train.step), state, extra, protect, replace)

        return loop(state, extra, save=save, save_every=checkpoints.every)

    return resuming.resumable(checkpoints, state, steps, loop.warn, on_log, run)


__all__ = ["fit"]
