"""The device mesh and how arrays are laid out on it.

Every device joins one mesh axis, 'data': batches are split along it and the train state
is replicated. One `jax.jit` per step then runs unchanged on one CPU, several virtual CPU
devices, one GPU or many hosts.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from speechjax.errors import UserError

DATA_AXIS = "data"


def create_mesh() -> Mesh:
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, key: str) -> int:
    """Returns the per-process batch size, or says which config key to change."""
    devices, processes = jax.device_count(), jax.process_count()
    if batch_size % devices:
        raise UserError(
            f"config.{key}={batch_size} must be a multiple of the number of devices "
            f"({devices}); set --config.{key} to e.g. {devices * max(1, batch_size // devices)}."
        )
    return batch_size // processes


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles the global batch from this process's share, split over 'data'."""
    sharding = batch_sharded(mesh)
    return {
        name: jax.make_array_from_process_local_data(sharding, value)
        for name, value in batch.items()
    }


def put_replicated(tree, mesh: Mesh):
    """Copies `tree` (the same on every process) onto every device of the mesh."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    # device_put cannot reach other processes' devices: each process supplies its copy.
    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(put, tree)
