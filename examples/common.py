"""Shared by the adding-problem examples (gradient_study, long_range, long_range_classic): the task, the
model around a cell, the hidden size for a parameter budget, and training through ``rnnx.training.fit``."""

import itertools
import time

import jax
import jax.numpy as jnp
import optax

import rnnx


def adding_batch(key, batch, steps):
    """``xs (batch, steps, 2)`` and targets ``(batch,)`` of the adding problem."""
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (batch, steps))
    first = jax.random.randint(k_first, (batch,), 0, steps // 2)
    second = jax.random.randint(k_second, (batch,), steps // 2, steps)
    rows = jnp.arange(batch)
    markers = jnp.zeros((batch, steps)).at[rows, first].set(1.0).at[rows, second].set(1.0)
    return jnp.stack([values, markers], axis=-1), values[rows, first] + values[rows, second]


def readout(params, ys):
    """The linear readout of the last output: ``ys (b, t, h) -> (b,)``."""
    return ys[:, -1] @ params["w"] + params["b"]


def readout_model(cell, num_layers=None, parallel=None):
    """``(init, predict)``: ``cell`` over ``xs (b, t, 2)``, then :func:`readout`.

    ``num_layers=None`` runs the bare cell (params ``{"cell", "w", "b"}``) in ``rnnx.unroll``'s mode ``parallel``
    (None: the cell's default); a number runs an ``rnnx.stacked`` network of that many layers (params
    ``{"net", "w", "b"}``), as the results in ``examples/results`` were made.
    """
    net = None if num_layers is None else rnnx.stacked(cell, num_layers=num_layers)
    name = "cell" if net is None else "net"

    def init(key):
        k_core, k_out = jax.random.split(key)
        core = cell.init(k_core, 2) if net is None else net.init(k_core, 2)
        h = cell.hidden_size
        return {name: core, "w": jax.random.normal(k_out, (h,)) / h**0.5, "b": jnp.ones(())}

    def predict(params, xs):
        ys = (
            rnnx.unroll(cell, params["cell"], xs, parallel=parallel)[1]
            if net is None
            else net.apply(params["net"], xs)[1]
        )
        return readout(params, ys)

    return init, predict


def hidden_size_for(model_for, budget):
    """The largest hidden size ``h`` whose ``model_for(h)`` (an ``(init, predict)`` pair) has at most
    ``budget`` parameters, and that count."""
    count = lambda h: rnnx.count_params(jax.eval_shape(model_for(h)[0], jax.random.key(0)))  # noqa: E731
    h = 1
    while count(h + 1) <= budget:
        h += 1
    return h, count(h)


def fit_adding(
    predict,
    params,
    *,
    data_key,
    batch,
    steps,
    lr,
    updates,
    clip=True,
    evaluate=None,
    eval_every=100,
    max_seconds=float("inf"),
    on_update=None,
    on_eval=None,
):
    """Adam (``optax.adam(lr)``, the gradient norm clipped to 1 when ``clip``) on fresh adding batches with
    ``rnnx.training.fit``: update ``u`` trains on the batch drawn from ``fold_in(data_key, u)``.

    Training stops after ``updates`` or past ``max_seconds`` of training time: wall-clock between updates,
    without the first (compilation) and without evaluation. ``evaluate(params) -> dict`` (with ``mse``
    among its results) runs every ``eval_every`` updates and after the last; ``on_eval(record)`` gets its
    results with ``update``, ``seconds`` and ``train_loss``; ``on_update(record)`` gets every update's
    ``fit`` record.

    Returns ``(fit result, {"updates", "train_seconds", "compile_seconds"})``.
    """

    def loss_fn(params, batch_key, key):
        del key  # no dropout; the batch itself is random
        xs, ys = adding_batch(batch_key, batch, steps)
        return jnp.mean((predict(params, xs) - ys) ** 2), {}

    clock = {"start": time.perf_counter(), "last": None, "train": 0.0, "eval": 0.0, "compile": 0.0, "loss": None}

    def timed_evaluate(params):
        start = time.perf_counter()
        out = evaluate(params)
        clock["eval"] += time.perf_counter() - start
        return out

    def on_log(record):
        if "event" in record:  # a note (fit resumes from a checkpoint, ...): not an update
            return False
        if "eval" in record:
            if on_eval is not None:
                on_eval(
                    {
                        "update": record["step"],
                        "seconds": round(clock["train"], 2),
                        "train_loss": clock["loss"],
                        **record["eval"],
                    }
                )
            return False
        now = time.perf_counter()  # fit has read this update's loss, so the update is complete
        if clock["last"] is None:
            clock["compile"] = now - clock["start"]
        else:
            clock["train"] += now - clock["last"] - clock["eval"]
        clock["last"], clock["eval"], clock["loss"] = now, 0.0, record["loss"]
        if on_update is not None:
            on_update(record)
        return clock["train"] >= max_seconds

    keys = (jax.random.fold_in(data_key, u) for u in itertools.count())
    evaluation = None if evaluate is None else rnnx.training.Evaluation(timed_evaluate, every=eval_every, monitor="mse")
    result = rnnx.training.fit(
        loss_fn,
        params,
        keys,
        steps=updates,
        optimizer=optax.adam(lr),
        clip_norm=1.0 if clip else None,
        evaluation=evaluation,
        log_every=1,
        on_log=on_log,
    )
    timing = {"updates": result.step, "train_seconds": clock["train"], "compile_seconds": clock["compile"]}
    return result, timing
