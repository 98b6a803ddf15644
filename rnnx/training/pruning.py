"""Which checkpoints a run keeps: the newest ``keep`` and the protected steps, by orbax's preservation policies."""

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import orbax.checkpoint as ocp


def prune(manager: "ocp.CheckpointManager", *, keep: int, protect: Iterable[int] = ()) -> list[int]:
    """Delete every step of ``manager`` but the newest ``keep`` and those in ``protect``; return those deleted.

    >>> import tempfile, jax.numpy as jnp, rnnx
    >>> with rnnx.training.checkpoint.manager(tempfile.mkdtemp()) as m:
    ...     for step in (1, 2, 3, 4):
    ...         rnnx.training.checkpoint.save_step(m, step, {"w": jnp.zeros(2)})
    ...     rnnx.training.checkpoint.prune(m, keep=2, protect=[1]), m.all_steps()
    ([2], [1, 3, 4])
    """
    import orbax.checkpoint as ocp

    if keep < 0:
        raise ValueError(f"keep must be >= 0, received {keep}")
    # orbax's preservation policies decide: the newest `keep` (LatestN) or a protected step (CustomSteps).
    # Not BestN for "the best": fit writes a checkpoint before its evaluation (so that a crash there loses
    # no update), so the metrics BestN ranks by do not exist when the step is saved, and BestN keeps the
    # newest of equal values where fit's best is the first to reach it. The best step fit tracks is
    # protected instead. The policy is applied here after each save rather than given to the manager
    # (CheckpointManagerOptions.preservation_policy), because the protected step moves during a run.
    policies = ocp.checkpoint_managers
    policy = policies.AnyPreservationPolicy([policies.LatestN(keep), policies.CustomSteps(list(protect))])
    steps = sorted(manager.all_steps())  # oldest first, as LatestN expects
    kept = policy.should_preserve([_Step(step) for step in steps], context=policies.PreservationContext())
    doomed = [step for step, keep_it in zip(steps, kept) if not keep_it]
    for step in doomed:
        manager.delete(step)
    return doomed


class _Step(NamedTuple):
    """A step as orbax's policies see it (its ``PolicyCheckpointInfo``); LatestN and CustomSteps read only
    ``step``, so neither metrics nor a time are looked up."""

    step: int
    metrics: dict | None = None
    time: None = None


__all__ = ["prune"]
