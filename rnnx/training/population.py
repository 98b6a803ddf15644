"""Population training with :func:`fit_population`: N members that differ by seed and hyper-parameters,
trained by one compiled, ``vmap``-ped step.

A sibling of :func:`rnnx.training.fit` rather than a ``population=`` argument of it: a population changes
the type of nearly every argument and result (params, optimiser state, keys and carries gain a leading
member axis; the evaluation returns one value per member; each member stops, fails and keeps its best
params on its own), so one signature for both would need a branch in every line of ``fit``. What the two
share is reused, not copied: :func:`rnnx.training.make_train_step` builds the step that is ``vmap``-ped
here, :func:`rnnx.training.initial_state` the per-member state, and ``fit``'s batch stream, records,
checkpoint manager, lock and verified resume serve both.

Per-member hyper-parameters go through ``optax.inject_hyperparams``, which keeps them in the optimiser
state: with a leading member axis on that state, member ``i`` reads its own learning rate, clip norm or
weight decay, and the one compiled step serves every choice of them. A member equals the solo ``fit`` with
its seed and hyper-parameters (``optimizer(**hyperparams_i)``, ``clip_norm_i``) up to float32 round-off:
the batched matmuls of ``vmap`` sum in another order (the tests bound the difference by 1e-6).

The host loop, with each member's evaluations, early stopping and failures, lives in
:mod:`rnnx.training.population_loop`.
"""

import inspect
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import numpy as np
import optax

from rnnx.training import resuming
from rnnx.training.hooks import Checkpoints, Evaluation
from rnnx.training.loop import Batches, OnLog, initial_state
from rnnx.training.population_loop import (
    MEMBER_AXIS,
    POPULATION_POLICIES,
    PopulationLoop,
    PopulationResult,
    PopulationState,
    population_step,
)
from rnnx.training.step import LossFn, make_train_step

OptimizerFactory = Callable[..., optax.GradientTransformation]
"""``optimizer(**hyperparams) -> optax.GradientTransformation``, e.g. ``optax.adam`` or ``optax.adamw``."""


def fit_population(
    loss_fn: LossFn,
    init: Callable[[int], Any],
    batches: Batches | Callable[[int, int], Any],
    *,
    seeds: Sequence[int],
    steps: int,
    optimizer: OptimizerFactory = optax.adam,
    hyperparams: Mapping[str, float | Sequence[float]] | None = None,
    clip_norm: float | Sequence[float] | None = 1.0,
    member_data: bool = False,
    initial_carry: Any = None,
    evaluation: Evaluation | None = None,
    checkpoints: Checkpoints | None = None,
    log_every: int = 20,
    on_log: OnLog | None = None,
    on_nonfinite: str = "freeze",
    member_mesh: jax.sharding.Mesh | None = None,
) -> PopulationResult:
    """Train ``len(seeds)`` members at once, member ``i`` as ``fit(loss_fn, init(seeds[i]), batches,
    seed=seeds[i], optimizer=optimizer(**hyperparams_i), clip_norm=clip_norm_i)`` would train it.

    Args:
      loss_fn: as for :func:`rnnx.training.fit` (see :mod:`rnnx.training.step`), for one member.
      init: ``seed -> params`` of one member, called once per seed; the results are stacked.
      batches: as for ``fit``, shared by every member; with ``member_data``, ``(epoch, seed) -> sequence of
        batches``, each member its own data order (the same number of batches for every seed).
      seeds: one per member, each in ``[0, 2**31)``: a member's initialisation and its step keys
        (``fold_in(key(seed), step)``, for dropout), as in ``fit``.
      steps: the number of updates of each member (fewer for one that stops early or fails).
      optimizer: a factory of optax transforms, called with ``hyperparams`` through
        ``optax.inject_hyperparams`` (default ``optax.adam``; ``optax.adamw`` takes a ``weight_decay``).
      hyperparams: the factory's numeric arguments, each a float (all members) or one float per member;
        default ``{"learning_rate": 3e-4}``, ``fit``'s default optimiser.
      clip_norm: the global gradient-norm bound, a float or one per member (None: no clipping).
      member_data: see ``batches``.
      initial_carry: for a stateful ``loss_fn``: one member's carry at the start of every epoch.
      evaluation: ``evaluate(params)`` receives the stacked params of all members and returns ``{name: (n,)
        values}``, e.g. ``jax.jit(jax.vmap(evaluate_one))``, or :func:`each_member` around any ``fit``
        evaluation. Each member keeps its own best params and patience; a member whose patience runs out is
        frozen (its params no longer change) while the others train on.
      checkpoints: as for ``fit``: the whole population is saved, and resumes bit-exactly.
      log_every: steps between training records.
      on_log: ``fit``'s records, one per member, each with ``"member": i``; after each evaluation one
        ``{"step", "member", "eval"}`` record per member still training; notes as in ``fit``, and
        ``"event": "member_failed"`` with a one-line ``"message"`` naming the member, its seed and
        hyper-parameters (without ``on_log``, a warning).
      on_nonfinite: ``"freeze"`` (default): a member with a non-finite loss, gradient norm, update or
        evaluation is frozen at its last finite params and reported, and the others go on;
        :class:`rnnx.training.NonFiniteError` only when every member has failed. ``"skip_update"``: as in
        ``fit``, per member: a member is frozen after ``MAX_CONSECUTIVE_SKIPS`` skips in a row.
        ``"raise"``: the first non-finite step of any member raises.
      member_mesh: shard the member axis over the mesh axis ``"member"`` (member-parallel: each device
        trains its share of the members; batches shared by all members are replicated). ``len(seeds)`` must
        divide over the axis.

    Returns:
      a :class:`PopulationResult`; ``result.member(i)`` is member ``i``'s :class:`rnnx.training.FitResult`.
    """
    n = len(seeds)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, received {steps!r}")
    if n < 1 or any(not isinstance(s, int | np.integer) or not 0 <= s < 2**31 for s in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of integers in [0, 2**31), received {seeds!r}")
    if on_nonfinite not in POPULATION_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {POPULATION_POLICIES}, received {on_nonfinite!r}")
    if evaluation is not None and evaluation.mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', received {evaluation.mode!r}")
    step_fn, state, hyper = population(
        loss_fn, init, seeds, optimizer=optimizer, hyperparams=hyperparams, clip_norm=clip_norm,
        member_data=member_data, initial_carry=initial_carry, on_nonfinite=on_nonfinite,
    )  # fmt: skip
    carry = None if initial_carry is None else jax.tree.map(lambda x: np.stack([x] * n), initial_carry)
    seeds_array = np.asarray(seeds, np.int32)
    stream = cast(Batches, MemberBatches(cast(Any, batches), [int(s) for s in seeds]) if member_data else batches)
    place = _member_placement(member_mesh, n) if member_mesh is not None else None
    if place is not None:
        state, seeds_array = place(state), place(seeds_array)
        carry = None if carry is None else place(carry)
    loop = PopulationLoop(
        step_fn,
        batches=stream,
        seeds=seeds_array,
        hyperparams=hyper,
        steps=steps,
        initial_carry=carry,
        evaluation=evaluation,
        log_every=log_every,
        on_log=on_log,
        on_nonfinite=on_nonfinite,
        place_batch=None if place is None or member_data else _replicated(member_mesh),
    )
    if checkpoints is None:
        return loop(state)
    return _with_checkpoints(loop, state, checkpoints, steps)


def population(
    loss_fn: LossFn,
    init: Callable[[int], Any],
    seeds: Sequence[int],
    *,
    optimizer: OptimizerFactory = optax.adam,
    hyperparams: Mapping[str, float | Sequence[float]] | None = None,
    clip_norm: float | Sequence[float] | None = 1.0,
    member_data: bool = False,
    initial_carry: Any = None,
    on_nonfinite: str = "freeze",
) -> tuple[Callable[..., Any], PopulationState, dict[str, np.ndarray]]:
    """``(step, state, hyperparams)``: :func:`fit_population`'s compiled step ``step(state, batch, seeds) ->
    (state, metrics)``, its initial state and each hyper-parameter per member (the arguments as there); for
    a loop of one's own, or a benchmark."""
    n = len(seeds)
    values = per_member({"learning_rate": 3e-4} if hyperparams is None else hyperparams, n)
    clip = None if clip_norm is None else per_member({"clip_norm": clip_norm}, n)["clip_norm"]
    tx = injected(optimizer, values, clip)
    params = jax.tree.map(lambda *xs: np.stack(xs), *[init(int(s)) for s in seeds])
    carry = None if initial_carry is None else jax.tree.map(lambda x: np.stack([x] * n), initial_carry)

    def init_member(p: Any, hp: dict[str, jax.Array], c: jax.Array | None, carry: Any) -> Any:
        return initial_state(make_train_step(loss_fn, tx(hp, c), clip_norm=None), p, carry)

    state = PopulationState.start(jax.jit(jax.vmap(init_member))(params, values, clip, carry), n)
    train_step = make_train_step(loss_fn, tx(values, clip), clip_norm=None)
    hyper = {**values, **({} if clip is None else {"clip_norm": clip})}
    return population_step(train_step, member_data, on_nonfinite, clip is not None), state, hyper


def per_member(values: Mapping[str, float | Sequence[float]], n: int) -> dict[str, np.ndarray]:
    """Each value as a float32 array of ``n``: a float repeated, or a sequence of exactly ``n`` floats."""
    out = {}
    for name, value in values.items():
        array = np.asarray(value, np.float32)
        if array.ndim == 0:
            array = np.full(n, array, np.float32)
        if array.shape != (n,):
            raise ValueError(f"{name} must be a float or {n} floats (one per seed), received shape {array.shape}")
        out[name] = array
    return out


def injected(
    optimizer: OptimizerFactory, values: Mapping[str, Any], clip: Any
) -> Callable[[Mapping[str, Any], Any], optax.GradientTransformation]:
    """``(hyperparams, clip_norm) -> optax.chain(clip_by_global_norm, optimizer)`` with both injected, so
    that the values live in the optimiser state (checked here: a name the factory does not take).

    Only the names in ``values`` are injected; the factory's other arguments stay static Python values, as
    in a solo run: injected, its defaults would become float32 arrays (``optax.adam``'s ``b2 ** count``
    then differs from the solo optimiser's by about 1e-5, relative)."""
    static = tuple(name for name in inspect.signature(optimizer).parameters if name not in values)
    try:
        optax.inject_hyperparams(optimizer, static_args=static)(**{k: 0.0 for k in values})
    except TypeError as error:
        raise ValueError(f"hyperparams {sorted(values)} do not fit the optimizer factory: {error}") from None

    def tx(hp: Mapping[str, Any], c: Any) -> optax.GradientTransformation:
        inner = optax.inject_hyperparams(optimizer, static_args=static)(**hp)
        return inner if clip is None else optax.chain(optax.inject_hyperparams(optax.clip_by_global_norm)(c), inner)

    return tx


def each_member(evaluate: Callable[[Any], Mapping[str, Any]]) -> Callable[[Any], Mapping[str, Any]]:
    """A population evaluation from a one-member one (as ``fit`` takes): it is called with each member's
    params in turn, and its values are stacked. (``jax.vmap`` of a traceable one is faster.)"""

    def evaluate_all(params: Any) -> dict[str, np.ndarray]:
        n = len(jax.tree.leaves(params)[0])
        results = [evaluate(jax.tree.map(lambda x: x[i], params)) for i in range(n)]
        return {k: np.asarray([float(r[k]) for r in results]) for k in results[0]}

    return evaluate_all


class MemberBatches:
    """``epoch -> batches`` from ``(epoch, seed) -> batches``: its ``i``-th batch stacks every member's."""

    def __init__(self, batches: Callable[[int, int], Any], seeds: Sequence[int]) -> None:
        self.batches, self.seeds = batches, seeds

    def __call__(self, epoch: int) -> "_StackedEpoch":
        epochs = [self.batches(epoch, s) for s in self.seeds]
        if len({len(e) for e in epochs}) != 1:
            counts = [len(e) for e in epochs]
            raise ValueError(f"batches(epoch={epoch}, seed) must give every seed as many batches, received {counts}")
        return _StackedEpoch(epochs)


class _StackedEpoch(Sequence[Any]):
    def __init__(self, epochs: list[Any]) -> None:
        self.epochs = epochs

    def __len__(self) -> int:
        return len(self.epochs[0])

    def __getitem__(self, i: Any) -> Any:
        return jax.tree.map(lambda *xs: np.stack(xs), *[e[i] for e in self.epochs])


def _member_placement(mesh: jax.sharding.Mesh, n: int) -> Callable[[Any], Any]:
    if MEMBER_AXIS not in mesh.axis_names:
        raise ValueError(f"member_mesh must have an axis named {MEMBER_AXIS!r}, received {tuple(mesh.axis_names)}")
    if n % mesh.shape[MEMBER_AXIS]:
        raise ValueError(f"{n} seeds do not divide over the {mesh.shape[MEMBER_AXIS]} devices of {MEMBER_AXIS!r}")
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(MEMBER_AXIS))
    return lambda tree: jax.device_put(tree, split)


def _replicated(mesh: Any) -> Callable[[Any], Any]:
    copy = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return lambda tree: jax.device_put(tree, copy)


def _with_checkpoints(
    loop: PopulationLoop, state: PopulationState, checkpoints: Checkpoints, steps: int
) -> PopulationResult:
    """``loop`` run from the newest checkpoint that verifies, saving as it goes (as in ``fit``)."""

    def run(manager: Any, state: PopulationState, extra: dict[str, Any], saved: Any) -> PopulationResult:
        loop.saved = saved

        def save(state: PopulationState, step: int, extra: dict, replace: bool = False) -> pathlib.Path:
            protect = {s for s in extra["best_step"] if s is not None}
            return resuming.save_step(manager, checkpoints, step, state, extra, protect, replace)

        return loop(state, extra, save=save, save_every=checkpoints.every)

    return resuming.resumable(checkpoints, state, steps, loop.warn, loop.on_log, run)


__all__ = ["OptimizerFactory", "each_member", "fit_population", "per_member", "population"]
