"""Several processes (and hosts) as one JAX job: :func:`initialize` and each process's data shard.

rnnx has no engine of its own: :func:`initialize` is ``jax.distributed.initialize`` with the settings read
from arguments or the usual environment, short timeouts and a clear error; :func:`process_shard` splits a
dataset's indices so that each process loads only its own. After :func:`initialize`, ``jax.devices()``
lists the devices of every process, and :func:`rnnx.training.fit` with a ``mesh`` over them takes each
process's batches as its slice of the global batch.

>>> from rnnx.training import distributed
>>> [distributed.process_shard(10, index=i, count=3) for i in range(3)]
[range(0, 3), range(3, 6), range(6, 10)]
"""

import os

import jax

ENVIRONMENT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 60,
    heartbeat_timeout_seconds: int = 20,
    shutdown_timeout_seconds: int = 30,
    cluster_detection_method: str | None = None,
    cpu_collectives: str | None = "gloo",
) -> None:
    """Join this process to a multi-process JAX job, before any other JAX computation.

    Each setting comes from its argument, else from the environment (``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), else from JAX's own cluster detection (SLURM, Open MPI,
    TPU pods, Kubernetes), which ``jax.distributed.initialize()`` does when settings are missing.

    This is the one place in rnnx that changes JAX's configuration: with ``cpu_collectives`` (default
    ``"gloo"``) it calls ``jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)``
    first, because without it computations on CPU devices of several processes cannot communicate. Only the
    CPU backend reads that setting; GPUs keep NCCL. None leaves the configuration alone.

    Args:
      coordinator_address: ``"host:port"`` of process 0, where it serves the coordinator.
      num_processes: the number of processes in the job.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      initialization_timeout: seconds to wait for every process to connect before failing.
      heartbeat_timeout_seconds: seconds without a heartbeat after which a process counts as dead: the
        others then stop with an error instead of waiting for it forever.
      shutdown_timeout_seconds: seconds an exiting process waits for the others to exit too.
      cluster_detection_method: passed to ``jax.distributed.initialize``: None tries every detector JAX
        has, ``"mpi4py"`` uses mpi4py, ``"deactivate"`` none.
      cpu_collectives: see above.

    Raises:
      ValueError: a setting from the environment is not an integer.
      RuntimeError: the settings are missing or invalid; the message names those used and JAX's reason.
        A coordinator that does not answer within ``initialization_timeout`` is not an exception: JAX
        itself ends the process, logging ``DEADLINE_EXCEEDED`` from ``RegisterTask``.
    """
    num_processes = _integer(num_processes, "num_processes", "JAX_NUM_PROCESSES")
    process_id = _integer(process_id, "process_id", "JAX_PROCESS_ID")
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialized; call initialize once per process")
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=initialization_timeout,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
            shutdown_timeout_seconds=shutdown_timeout_seconds,
            cluster_detection_method=cluster_detection_method,
        )
    except Exception as error:  # jax raises ValueError, RuntimeError or XlaRuntimeError, by cause
        settings = f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, " + (
            f"process_id={process_id!r}"
        )
        raise RuntimeError(
            f"could not join the distributed JAX job ({settings}): {str(error).rstrip('.')}. Pass the three "
            f"settings (or set {', '.join(ENVIRONMENT)}) unless JAX detects a cluster that provides them "
            "(SLURM, Open MPI, TPU, Kubernetes)"
        ) from error


def process_shard(n_examples: int, *, index: int | None = None, count: int | None = None) -> range:
    """The indices of the examples process ``index`` of ``count`` loads: a contiguous block, the blocks of
    all processes cover ``range(n_examples)`` exactly once and differ in size by at most one.

    Args:
      n_examples: the size of the whole dataset.
      index: this process's index; default ``jax.process_index()``.
      count: the number of processes; default ``jax.process_count()``.

    For training, every process must then take the same number of batches of the same size per epoch
    (each is its slice of the global batch), or the others wait for it in vain: with ``local_batch =
    global_batch // count``, take ``n_examples // count // local_batch`` batches from each shard (shards
    differ by one example, so ``len(shard) // local_batch`` may differ between processes).
    """
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"index must be in [0, count), received index={index!r}, count={count!r}")
    if n_examples < 0:
        raise ValueError(f"n_examples must be >= 0, received {n_examples!r}")
    return range(index * n_examples // count, (index + 1) * n_examples // count)


def is_lead() -> bool:
    """Whether this is process 0 of the job: the one that prints, writes run files and holds locks."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of the job reaches this point (``name`` tells the barriers apart); nothing
    with one process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _integer(value, name: str, variable: str) -> int | None:
    if value is not None:
        return value
    text = os.environ.get(variable)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{variable} must be an integer (for {name}), received {text!r}") from None


__all__ = [
    "ENVIRONMENT",
    "barrier",
    "initialize",
    "is_lead",
    "process_shard",
]
