"""A small checkpointed fit that the fault-injection tests run, kill and resume.

``python -m tests.faulty_fit DIRECTORY FAULT`` trains it in ``DIRECTORY`` and SIGKILLs itself at ``FAULT``:

- ``step:N``: after the training record of step N (between checkpoints);
- ``save-start:N``: as orbax creates the temporary directory of ``step_N`` (nothing written yet);
- ``save-rename:N``: after every file of ``step_N`` is written, before orbax renames it into place;
- ``evaluate:N``: inside the evaluation of step N, after its checkpoint;
- ``none``: no fault.
"""

import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rnnx import training as train

STEPS, EVERY, EVAL_EVERY = 24, 5, 10


def problem():
    """``(loss_fn, batches, params)``: a linear regression over 8 fixed batches per epoch, shuffled by epoch."""
    xs = jax.random.normal(jax.random.key(0), (8, 16, 3))
    ys = xs @ jnp.array([1.0, -2.0, 0.5])

    def loss_fn(params, batch, key):
        del key
        x, y = batch
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2), {}

    def batches(epoch):
        order = np.random.default_rng((0, epoch)).permutation(8)
        return [(xs[i], ys[i]) for i in order]

    return loss_fn, batches, {"w": jnp.zeros(3), "b": jnp.zeros(())}


def run(directory, *, steps=STEPS, on_log=None, evaluate=None, learning_rate=0.05, **kwargs):
    """The fit, checkpointed every ``EVERY`` steps into ``directory`` (None: no checkpoints)."""
    loss_fn, batches, params = problem()
    evaluate = evaluate or (lambda p: {"loss": float(loss_fn(p, batches(0)[0], None)[0])})
    return train.fit(
        loss_fn,
        params,
        batches,
        steps=steps,
        optimizer=train.default_optimizer(learning_rate),
        evaluation=train.Evaluation(evaluate, every=EVAL_EVERY),
        checkpoints=None if directory is None else train.Checkpoints(directory, every=EVERY, max_to_keep=3),
        log_every=1,
        on_log=on_log,
        **kwargs,
    )


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _die_in_orbax(method: str, name: str) -> None:
    """SIGKILL this process when orbax's atomic directory for ``name`` reaches ``method``."""
    from orbax.checkpoint._src.path import atomicity

    original = getattr(atomicity.AtomicRenameTemporaryPath, method)

    async def patched(self, *args, **kwargs):
        if self.get_final().name == name:
            if method == "create":
                await original(self, *args, **kwargs)  # the temporary directory exists, empty
            _die()
        return await original(self, *args, **kwargs)

    setattr(atomicity.AtomicRenameTemporaryPath, method, patched)


def main(directory: str, fault: str) -> None:
    kind, _, at = fault.partition(":")
    at = int(at or 0)
    current = {"step": 0}

    def on_log(record):
        if "loss" in record:
            current["step"] = record["step"]
            if kind == "step" and record["step"] == at:
                _die()

    loss_fn, batches, _ = problem()

    def evaluate(params):
        if kind == "evaluate" and current["step"] == at:
            _die()
        return {"loss": float(loss_fn(params, batches(0)[0], None)[0])}

    if kind in ("save-start", "save-rename"):
        _die_in_orbax({"save-start": "create", "save-rename": "finalize"}[kind], f"step_{at}")
    run(directory, on_log=on_log, evaluate=evaluate)


if __name__ == "__main__":
    main(*sys.argv[1:])
