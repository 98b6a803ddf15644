"""Training with Optax: the default optimiser, a jitted train step, and a loop with evaluation, early
stopping, a progress bar, a JSONL metrics log and resumable orbax checkpoints.

A loss function has the signature ``loss_fn(params, batch, key) -> (loss, metrics)`` where ``metrics`` is
a dict of scalars; a *stateful* one (a language model carrying its state across windows) takes and returns
the carry too: ``loss_fn(params, batch, key, carry) -> (loss, (metrics, carry))``. ``key`` is the step's
PRNG key, for dropout.

For truncated backpropagation through time outside :func:`fit`, :func:`rnnx.core.tbptt.windows` and
:func:`rnnx.core.tbptt.scan_windows` are re-exported here (``rnnx.training.windows``, ``rnnx.training.scan_windows``).
"""

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnx.core.tbptt import detach, scan_windows, windows  # noqa: F401 (the truncated-BPTT helpers, re-exported)
from rnnx.training import checkpoint


class ClipState(NamedTuple):
    """The last update's global gradient norm before (``grad_norm``) and after (``clipped_norm``) clipping."""

    grad_norm: jax.Array  # () float32
    clipped_norm: jax.Array  # () float32


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` that also records both norms in its state, for the metrics."""

    def init(params):
        del params
        return ClipState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))

    def update(updates, state, params=None):
        del state, params
        norm = optax.tree.norm(updates)
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))
        clipped = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
        return clipped, ClipState(norm.astype(jnp.float32), (norm * scale).astype(jnp.float32))

    return optax.GradientTransformation(init, update)


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


def default_optimizer(learning_rate: float | optax.Schedule = 3e-4, clip_norm: float | None = 1.0, optimizer=None):
    """``optax.chain(clip_by_global_norm(clip_norm), optax.adam(learning_rate))``, each part replaceable.

    Args:
      learning_rate: Adam's step size, a float or an optax schedule (ignored when ``optimizer`` is given).
      clip_norm: the global gradient-norm bound; None for no clipping.
      optimizer: any ``optax.GradientTransformation`` to use instead of Adam.
    """
    inner = optimizer if optimizer is not None else optax.adam(learning_rate)
    return inner if clip_norm is None else optax.chain(clip_by_global_norm(clip_norm), inner)


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, *, stateful: bool = False):
    """A jitted ``step(params, opt_state, batch, key[, carry]) -> (params, opt_state, metrics[, carry])``.

    ``metrics`` holds the loss, the loss function's own metrics, and ``grad_norm`` (before clipping) and
    ``clipped_grad_norm`` (after, when the optimiser contains :func:`clip_by_global_norm`). The step
    compiles once per batch shape; the carry of a stateful loss comes back with its gradient stopped.
    """

    def step(params, opt_state, batch, key, carry=None):
        args = (batch, key, carry) if stateful else (batch, key)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
        metrics, carry = aux if stateful else (aux, None)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        clip = optax.tree_utils.tree_get(opt_state, "ClipState")
        norms = {"grad_norm": optax.tree.norm(grads)}
        if clip is not None:
            norms["clipped_grad_norm"] = clip.clipped_norm
        metrics = {"loss": loss, **metrics, **norms}
        return (params, opt_state, metrics, detach(carry)) if stateful else (params, opt_state, metrics)

    return jax.jit(step)


@dataclasses.dataclass
class FitResult:
    params: Any  # the best evaluated params (the last ones without evaluation)
    last_params: Any
    opt_state: Any
    step: int
    history: list  # one dict per evaluation
    stopped_early: bool


def initial_state(params, optimizer, initial_carry=None) -> dict:
    """What :func:`fit` checkpoints: step, params, optimiser state, best params and early-stopping state."""
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params),
             "best_params": params, "best": jnp.full((), jnp.inf), "bad_evals": jnp.zeros((), jnp.int32)}  # fmt: skip
    if initial_carry is not None:
        state["carry"] = initial_carry
    return state


def latest_checkpoint(directory) -> Path | None:
    """The newest complete ``step_<n>`` checkpoint in ``directory``, or None."""
    directory = Path(directory)
    steps = sorted((int(m.group(1)), p) for p in directory.glob("step_*") if (m := re.fullmatch(r"step_(\d+)", p.name)))
    for _, path in reversed(steps):
        if (path / "commit_success.txt").exists():
            return path
    return None


def fit(
    loss_fn: Callable,
    params,
    batches: Callable[[int], Sequence],
    *,
    steps: int,
    optimizer: optax.GradientTransformation | None = None,
    seed: int = 0,
    evaluate: Callable | None = None,
    eval_every: int = 200,
    monitor: str = "loss",
    mode: str = "min",
    patience: int | None = None,
    initial_carry=None,
    log_path=None,
    log_every: int = 20,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    net=None,
    progress: bool = True,
) -> FitResult:
    """Train for ``steps`` updates, resuming from the newest complete checkpoint in ``checkpoint_dir``.

    Args:
      loss_fn: see the module docstring.
      params: the initial params.
      batches: ``epoch -> list of batches``, deterministic for a given epoch (e.g. shuffled with
        ``(seed, epoch)``), so that a resumed run sees exactly the batches the uninterrupted run would.
      steps: the number of updates.
      optimizer: default :func:`default_optimizer` (Adam 3e-4, clipping at global norm 1).
      seed: the PRNG seed; step ``s`` uses ``jax.random.fold_in(key(seed), s)``.
      evaluate: ``params -> dict of floats``, run every ``eval_every`` steps and at the end.
      monitor, mode: the evaluation metric that decides the best params, ``"min"`` or ``"max"``.
      patience: stop after this many evaluations without improvement (None: never).
      initial_carry: for a stateful ``loss_fn``: the carry at the start of every epoch.
      log_path: a JSONL file; one line per ``log_every`` steps of training metrics and per evaluation.
      checkpoint_dir, checkpoint_every: write ``checkpoint_dir/step_<n>`` every ``checkpoint_every``
        steps and at the end; an existing checkpoint there is resumed.
      net: the :class:`rnnx.Stack` inside ``params``, recorded in checkpoints and checked on resume.
      progress: show a tqdm progress bar with the loss and the monitored metric.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', received {mode!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, received {steps!r}")
    optimizer = default_optimizer() if optimizer is None else optimizer
    stateful = initial_carry is not None
    train_step = make_train_step(loss_fn, optimizer, stateful=stateful)
    sign = 1.0 if mode == "min" else -1.0
    state = initial_state(params, optimizer, initial_carry)
    checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if checkpoint_dir is not None and (latest := latest_checkpoint(checkpoint_dir)) is not None:
        state = checkpoint.restore(latest, state, net=net)
    log = None if log_path is None else open(log_path, "a")  # noqa: SIM115 (closed below)
    history, stopped_early, base_key = [], False, jax.random.key(seed)
    step = int(state["step"])
    epoch_cache: dict[int, Sequence] = {}
    per_epoch = len(batches(0))
    if per_epoch == 0:
        raise ValueError("batches(0) returned no batches; expected at least one")
    bar = _progress(steps, step, progress)
    pending = []
    try:
        while step < steps and not stopped_early:
            epoch, index = divmod(step, per_epoch)
            if epoch not in epoch_cache:
                epoch_cache = {epoch: batches(epoch)}
            if stateful and index == 0:
                state["carry"] = initial_carry
            key = jax.random.fold_in(base_key, step)
            batch = epoch_cache[epoch][index]
            if stateful:
                state["params"], state["opt_state"], metrics, state["carry"] = train_step(
                    state["params"], state["opt_state"], batch, key, state["carry"])  # fmt: skip
            else:
                state["params"], state["opt_state"], metrics = train_step(
                    state["params"], state["opt_state"], batch, key
                )
            step += 1
            state["step"] = jnp.asarray(step, jnp.int32)
            pending.append(metrics)
            if step % log_every == 0 or step == steps:
                _write(log, {"step": step, "epoch": epoch, **_mean(pending)}, bar)
                pending = []
            if evaluate is not None and (step % eval_every == 0 or step == steps):
                result = {k: float(v) for k, v in evaluate(state["params"]).items()}
                history.append({"step": step, **result})
                _write(log, {"step": step, "eval": result}, bar, monitor)
                value = sign * result[monitor]
                if value < float(state["best"]):
                    state["best"], state["best_params"] = jnp.asarray(value, jnp.float32), state["params"]
                    state["bad_evals"] = jnp.zeros((), jnp.int32)
                else:
                    state["bad_evals"] = state["bad_evals"] + 1
                    stopped_early = patience is not None and int(state["bad_evals"]) >= patience
            if checkpoint_dir is not None and ((checkpoint_every and step % checkpoint_every == 0) or step == steps
                                               or stopped_early):  # fmt: skip
                checkpoint.save(checkpoint_dir / f"step_{step}", state, net=net, force=True)
            bar.update(1)
    finally:
        bar.close()
        if log is not None:
            log.close()
    best = state["best_params"] if evaluate is not None else state["params"]
    return FitResult(best, state["params"], state["opt_state"], step, history, stopped_early)


def _mean(metrics: list[dict]) -> dict:
    return {k: float(jnp.mean(jnp.stack([m[k] for m in metrics]))) for k in metrics[0]}


def _write(log, record: dict, bar, monitor=None) -> None:
    record = {"time": round(time.time(), 3), **record}
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
    shown = bar.__dict__.setdefault("rnnx_postfix", {})  # the latest training loss and evaluation, together
    if "eval" in record:
        shown[f"eval {monitor}"] = f"{record['eval'].get(monitor, float('nan')):.4g}"
    else:
        shown |= {"loss": f"{record['loss']:.4f}", "|g|": f"{record['grad_norm']:.3g}"}
    bar.set_postfix(shown)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="training", unit="step", dynamic_ncols=True)
