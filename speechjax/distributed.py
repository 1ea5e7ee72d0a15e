"""Joining a multi-process run: `jax.distributed` with JAX's own cluster detection or
explicit flags, and what changes for the processes after the first.

Each process runs the same command. Under SLURM (`srun`), Open MPI and the TPU/GKE
launchers JAX finds the coordinator, the process count and this process's id itself;
anywhere else (processes started by hand, `ssh`) they are given: `--coordinator_address`
(host:port of process 0, reachable from every process), `--num_processes`, `--process_id`.
On CPUs the processes exchange gradients over TCP with Gloo.
"""

import jax
from absl import logging

from speechjax.errors import UserError

# How long a process waits for all the others to join before giving up (JAX's default is
# 300 s; a misspelt address should not hang a terminal for five minutes).
JOIN_TIMEOUT_SECONDS = 120


def initialize(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Joins the run; afterwards jax.devices() lists every process's devices."""
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise UserError(
            "--coordinator_address, --num_processes and --process_id go together: give all "
            "three, or none to let JAX read them from the cluster (SLURM, Open MPI)."
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise UserError(
            f"--process_id={process_id} is outside 0..{num_processes - 1} "
            f"(--num_processes={num_processes})."
        )
    # Gloo is the CPU collectives implementation that needs nothing installed; GPUs use NCCL.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=JOIN_TIMEOUT_SECONDS,
        )
    except (RuntimeError, ValueError) as e:
        where = coordinator_address or "the address the cluster environment gives"
        raise UserError(
            f"--distributed: could not join the run at {where} within "
            f"{JOIN_TIMEOUT_SECONDS} s: start every process with the same "
            "--coordinator_address (process 0's host:port) and --num_processes, each with its "
            f"own --process_id, or run under SLURM. (JAX said: {str(e).splitlines()[0]})"
        ) from e
    if jax.process_index() != 0:
        # One process speaks for the run: the others keep warnings and errors only.
        logging.set_verbosity(logging.WARNING)
    logging.info(
        "Process %d of %d; %d devices here, %d in all.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
