"""Data parallelism over one `data` mesh axis, on one or many hosts.

Batches are sharded along their first axis; params, optimiser state and the
frozen CLIP are replicated. Each host feeds only its own rows; the global array
is assembled with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

DATA_AXIS = "data"

# INFO lines here are the run's own (cli_errors.set_verbosity shows them by default).
log = logging.getLogger(__name__)


def initialize_distributed() -> None:
    """`jax.distributed.initialize()` when launched as several processes.

    Cloud TPU pods and SLURM are detected by JAX itself; elsewhere set
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
    """
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env:
        jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=int(env["JAX_NUM_PROCESSES"]),
                                   process_id=int(env["JAX_PROCESS_ID"]))
    elif "TPU_WORKER_HOSTNAMES" in env or "SLURM_JOB_ID" in env:
        jax.distributed.initialize()
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """This host's rows -> global arrays sharded along the batch axis."""
    sharding = batch_sharding(mesh)
    n = jax.device_count()
    global_rows = next(iter(local.values())).shape[0] * jax.process_count()
    if global_rows % n:
        raise ValueError(f"global batch of {global_rows} rows does not split over {n} devices; "
                         "choose a batch size divisible by the device count")
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
