"""The scale-out flags of ``rnnx train``: how many devices (a data-parallel mesh over them) and joining a
multi-process JAX job, each checked before JAX starts or before any data is read.
"""

import argparse
import os
from typing import TYPE_CHECKING, Literal

from rnnx.apps import config
from rnnx.apps.config import ConfigError
from rnnx.training import distributed

if TYPE_CHECKING:
    import jax

Devices = int | Literal["all"] | None
"""``--devices`` read by :func:`device_flag`."""


def add_scale_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--devices",
        default=None,
        metavar="N|all",
        help="data-parallel over the first N devices of jax.devices() (all processes' devices); --batch-size is "
        "the global batch, split evenly over them; default 1 in one process (no mesh), all in several",
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process JAX job, its settings from the three flags below, else "
        f"{', '.join(distributed.ENVIRONMENT)}, else JAX's cluster detection (SLURM, Open MPI, TPU, Kubernetes); "
        "any of the three flags or variables implies it",
    )
    group.add_argument("--coordinator-address", default=None, metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int, default=None, help="the number of processes in the job")
    group.add_argument("--process-id", type=int, default=None, help="this process's index, from 0")


def device_flag(value: str | None) -> Devices:
    """``--devices`` read: a positive integer, ``"all"`` or None (not given), checked before JAX starts."""
    if value is None:
        return None
    if value == "all":
        return "all"
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"--devices must be a positive integer or 'all', received {value!r}")
    return number


def join(args: argparse.Namespace) -> None:
    """Join a multi-process job when asked (``--distributed``, one of its three settings as a flag or in the
    environment): the first thing ``rnnx train`` does with JAX, as ``jax.distributed`` requires."""
    settings = (args.coordinator_address, args.num_processes, args.process_id)
    given = any(s is not None for s in settings) or any(os.environ.get(n) for n in distributed.ENVIRONMENT)
    if not (args.distributed or given):
        return
    if args.num_processes is not None:
        config.positive_integer("--num-processes", args.num_processes)
    if args.process_id is not None and not 0 <= args.process_id < (args.num_processes or args.process_id + 1):
        bound = f"[0, --num-processes {args.num_processes})" if args.num_processes else ">= 0"
        raise ConfigError(f"--process-id must be in {bound}, received {args.process_id}")
    try:
        distributed.initialize(*settings)
    except (RuntimeError, ValueError) as error:  # the settings named, and JAX's reason
        flags = "--coordinator-address, --num-processes and --process-id"
        raise ConfigError(f"{error}; rnnx train takes the three settings as {flags}") from None


def device_count(devices: Devices, *, visible: int, processes: int, batch_size: int) -> int:
    """The number of devices ``--devices`` asks for, checked against the ``visible`` devices (of all
    ``processes``) and ``--batch-size``, or a :class:`ConfigError` naming the flag and both numbers.
    Default: 1 in one process, all in several (each must feed the mesh).

    >>> device_count("all", visible=8, processes=2, batch_size=64)
    8
    """
    if devices == "all" or (devices is None and processes > 1):
        n = visible
    elif isinstance(devices, int):
        n = devices or 1
    elif devices is None:
        n = 1
    else:
        raise ConfigError(f"--devices must be a positive integer or 'all', received {devices!r}")
    if n > visible:
        where = f" (over {processes} processes)" if processes > 1 else ""
        raise ConfigError(f"--devices must be at most {visible}, the devices JAX sees{where}, received {n}")
    if n % processes:
        raise ConfigError(
            f"--devices must be a multiple of the {processes} processes (each gives the mesh as many devices), "
            f"received {n}"
        )
    if batch_size % processes:
        raise ConfigError(
            f"--batch-size must be a multiple of the {processes} processes (each feeds an equal slice of the "
            f"global batch), received {batch_size}"
        )
    if batch_size % n:
        raise ConfigError(
            f"--batch-size must be a multiple of --devices {n} (the global batch is split evenly over the "
            f"devices), received {batch_size}"
        )
    return n


def data_mesh(devices: Devices, batch_size: int) -> "jax.sharding.Mesh | None":
    """The data-parallel mesh ``--devices`` asks for (None: one device): the first devices of each process,
    as many from each, grouped by process in process order."""
    import jax
    import numpy as np

    processes = jax.process_count()
    n = device_count(devices, visible=jax.device_count(), processes=processes, batch_size=batch_size)
    if n == 1:
        return None
    per_process = n // processes
    chosen = [d for p in range(processes) for d in [d for d in jax.devices() if d.process_index == p][:per_process]]
    return jax.sharding.Mesh(np.array(chosen), ("data",))


def check_backend() -> None:
    """Start JAX's backend, or a :class:`ConfigError` saying which platform could not start (JAX itself
    raises a bare ``AssertionError`` when ``JAX_PLATFORMS`` names only platforms it cannot start)."""
    import jax

    try:
        jax.devices()
    except (RuntimeError, AssertionError) as error:
        platforms = os.environ.get("JAX_PLATFORMS")
        asked = f"JAX_PLATFORMS={platforms}" if platforms else "its default platform"
        reason = f": {str(error).splitlines()[0]}" if str(error) else ""
        raise ConfigError(
            f"JAX could not start {asked}{reason}; is that device present, and the jax build for it (e.g. "
            '"jax[cuda12]") installed? Unset JAX_PLATFORMS to run on the CPU'
        ) from None


__all__ = ["add_scale_flags", "check_backend", "data_mesh", "device_count", "device_flag", "join"]
