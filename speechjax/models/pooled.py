"""Classifiers that learn side by side and predict together: a log-linear pool.

Each member sees the same input and is trained on its own cross-entropy, as if alone; the
prediction is the members' weighted geometric mean of probabilities,
softmax(sum_k w_k log p_k). Trained apart, a member that fits the training data easily
(a spectrogram CNN on synthetic speech) cannot starve one that learns more slowly but
carries further (a head on a pretrained speech embedding): pooled training would stop
teaching both once the sum is right. Pooling log-probabilities, not probabilities, lets a
confident member be overruled only by a confident other.

In training mode the module returns (pooled logits, member logits [B, K, classes]), which
`speechjax.train_state` reads as one loss per member; in inference mode only the pooled
logits, so evaluation, prediction and export see an ordinary classifier.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class InputView(nnx.Module):
    """`network` on part of the input: frequency bins from `first_bin` on, averaged over
    `time_pool` consecutive frames: [B, T, F, C] -> [B, T // time_pool, F - first_bin, C]."""

    def __init__(self, network: nnx.Module, *, first_bin: int, time_pool: int):
        self.network = network
        self.first_bin = first_bin
        self.time_pool = time_pool

    def __call__(self, x: jax.Array) -> jax.Array:
        window = (self.time_pool, 1)
        return self.network(nnx.avg_pool(x[:, :, self.first_bin :], window, window))


def pool_log_probabilities(member_logits: Sequence[jax.Array], weights: Sequence[float]):
    """K member logits [B, C] and K weights summing to 1 -> [B, C] logits of the pool."""
    return sum(
        w * jax.nn.log_softmax(z.astype(jnp.float32), axis=-1)
        for w, z in zip(weights, member_logits, strict=True)
    )


class LogLinearPool(nnx.Module):
    """Members [B, T, F, C] -> [B, classes] logits each; predicts with their log-linear pool."""

    def __init__(self, members: Sequence[nnx.Module], weights: Sequence[float]):
        if len(members) != len(weights) or not members:
            raise ValueError(f"{len(members)} members but {len(weights)} weights")
        if any(w <= 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"weights must be positive and sum to 1, got {tuple(weights)}")
        self.members = nnx.List(list(members))
        self.weights = tuple(float(w) for w in weights)
        # Set by Module.train() / Module.eval() like Dropout's flag of the same name: in
        # training the members' own logits come out too, for their own losses.
        self.deterministic = False

    def __call__(self, x: jax.Array):
        member_logits = [member(x).astype(jnp.float32) for member in self.members]
        pooled = pool_log_probabilities(member_logits, self.weights)
        if self.deterministic:
            # No stack here: jax2onnx 0.12.5 has no rule for it, and export runs this path.
            return pooled
        return pooled, jnp.stack(member_logits, axis=1)
