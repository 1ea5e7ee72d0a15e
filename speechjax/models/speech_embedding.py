"""A classifier on Google's pretrained speech embedding: frozen network, trained head.

Input: the `speech_embedding` front end's [B, T, 32, 1] (`speechjax.pretrained_embedding`).
The frozen network runs over the whole clip at once rather than window by window: its
convolutions are unpadded along time and its poolings stride 8 frames in all, so output
step w is exactly the embedding of frames [8w, 8w + 76), as openWakeWord computes it one
window at a time, for a ninth of the work on a one-second clip.

The head: BatchNorm of the embeddings (they reach +-70; the head needs them near unit
scale) -> the W embeddings of a clip concatenated -> Dropout -> Dense(`head_units`) -> ReLU
-> Dropout -> Dense(classes).

By default only the head is trained: the network's weights are `Pretrained` variables, not
`nnx.Param`, so no gradient or optimiser reaches them, and checkpoints keep them like
BatchNorm statistics. With `tuned_convs` = N, the last N convolutions and the layers after
them are parameters fine-tuned with the head (the network's top adapts to the training
speech), and the backward pass stops where the frozen layers begin.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from speechjax import pretrained_embedding
from speechjax.models import layers

# The whole network is one window: 76 frames at least; the bins must be its 32.
SIZE_OPS = layers.AxisSizeOps(
    time=((pretrained_embedding.WINDOW_FRAMES, pretrained_embedding.EMBEDDING_STRIDE, 0),),
    freq=((pretrained_embedding.N_MELS, 1, 0),),
)


class Pretrained(nnx.Variable):
    """A weight of the frozen network: model state, never trained."""


class _PretrainedLayer(nnx.Module):
    """One `pretrained_embedding.Layer`, its weights held as `variable` (frozen or trained)."""

    def __init__(self, layer: pretrained_embedding.Layer, variable: type[nnx.Variable]):
        self.kind = layer.kind
        self.pads = layer.pads
        self.value = layer.value
        self.window = layer.window
        self.kernel = None if layer.kernel is None else variable(jnp.asarray(layer.kernel))
        self.bias = None if layer.bias is None else variable(jnp.asarray(layer.bias))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "pad":
            return jnp.pad(x, self.pads)
        if self.kind == "conv":
            y = layers.conv_general_dilated(
                x,
                self.kernel[...],
                (1, 1),
                self.pads,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=jax.lax.Precision.HIGHEST,
            )
            return y + self.bias[...]
        if self.kind == "affine":
            return x * self.kernel[...] + self.bias[...]
        if self.kind == "relu":
            return jax.nn.relu(x)
        if self.kind == "leaky_relu":
            return jax.nn.leaky_relu(x, self.value)
        if self.kind == "floor":
            return jnp.maximum(x, self.value)
        if self.kind == "max_pool":
            return nnx.max_pool(x, self.window, self.window, "VALID")
        raise ValueError(f"unknown layer kind {self.kind!r}")


def conv_count() -> int:
    """Convolutions in the pretrained network (the most `tuned_convs` can be)."""
    return sum(layer.kind == "conv" for layer in pretrained_embedding.embedding_layers())


def first_tuned_layer(network: tuple[pretrained_embedding.Layer, ...], tuned_convs: int) -> int:
    """Index of the first layer fine-tuned when the last `tuned_convs` convolutions are
    (len(network) when none is): that convolution, and everything after it."""
    convs = [i for i, layer in enumerate(network) if layer.kind == "conv"]
    if not 0 <= tuned_convs <= len(convs):
        raise ValueError(f"tuned_convs={tuned_convs} outside 0..{len(convs)}")
    return convs[len(convs) - tuned_convs] if tuned_convs else len(network)


class SpeechEmbeddingClassifier(nnx.Module):
    """[B, T, F, 1] log-mel (the speech_embedding front end; the network reads bins 0-31)
    -> [B, num_classes] logits."""

    def __init__(
        self,
        num_frames: int,
        num_classes: int,
        *,
        head_units: int,
        tuned_convs: int,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
    ):
        network = pretrained_embedding.embedding_layers()
        self.frozen_layers = first_tuned_layer(network, tuned_convs)
        self.pretrained = nnx.List(
            [
                _PretrainedLayer(layer, Pretrained if i < self.frozen_layers else nnx.Param)
                for i, layer in enumerate(network)
            ]
        )
        embeddings = pretrained_embedding.num_embeddings(num_frames)
        self.norm = layers.batch_norm(pretrained_embedding.EMBEDDING_DIM, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.hidden = nnx.Linear(
            embeddings * pretrained_embedding.EMBEDDING_DIM,
            head_units,
            kernel_init=layers.torch_default_init,
            bias_init=jax.nn.initializers.zeros,
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
        self.head = layers.Head(head_units, num_classes, dropout, rngs=rngs)

    def embed(self, x: jax.Array) -> jax.Array:
        """[B, T, F >= 32, 1] -> [B, W, 96]: the pretrained network's embeddings of the first
        32 bins (its own; more follow for a CNN branch), float32."""
        x = x[:, :, : pretrained_embedding.N_MELS].astype(jnp.float32)
        for i, layer in enumerate(self.pretrained):
            if i == self.frozen_layers:
                x = jax.lax.stop_gradient(x)  # no backward pass through the frozen layers
            x = layer(x)
        if self.frozen_layers == len(self.pretrained):
            x = jax.lax.stop_gradient(x)
        return x[:, :, 0, :]

    def __call__(self, x: jax.Array) -> jax.Array:
        embeddings = self.norm(self.embed(x))
        flat = embeddings.reshape(embeddings.shape[0], -1)
        return self.head(jax.nn.relu(self.hidden(self.dropout(flat))))
