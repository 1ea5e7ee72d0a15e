"""torchvision's DenseNet (the defaults give DenseNet121): growth rate 32, blocks of 6-12-24-16
layers, bn_size 4, compression 0.5 (transitions halve the channels), 64-filter 7x7/2 stem
and 3x3/2 max-pool.

Each dense layer is BN-ReLU-Conv1x1(bn_size * growth)-BN-ReLU-Conv3x3(growth) and its
output is concatenated to its input; transitions are BN-ReLU-Conv1x1-AvgPool(2, 2). A final
BN and ReLU precede global average pooling -> Dropout(model.dropout) -> Dense(num_classes).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from speechjax.models import layers

# The stem's 7/2/3 conv and 3/2/1 max-pool, and DenseNet121's three unpadded 2x2 average pools.
SIZE_OPS = ((7, 2, 3), (3, 2, 1), (2, 2, 0), (2, 2, 0), (2, 2, 0))

# torchvision: kaiming_normal_ (fan_in) on every convolution.
_INIT = layers.he_normal_fan_in


class DenseLayer(nnx.Module):
    def __init__(self, in_features: int, growth_rate: int, bn_size: int, *, dtype, rngs):
        bottleneck = bn_size * growth_rate
        self.bn1 = layers.batch_norm(in_features, dtype=dtype, rngs=rngs)
        self.conv1 = layers.conv(
            in_features, bottleneck, 1, kernel_init=_INIT, dtype=dtype, rngs=rngs
        )
        self.bn2 = layers.batch_norm(bottleneck, dtype=dtype, rngs=rngs)
        self.conv2 = layers.conv(
            bottleneck, growth_rate, 3, padding=1, kernel_init=_INIT, dtype=dtype, rngs=rngs
        )

    def __call__(self, x):
        y = self.conv1(nnx.relu(self.bn1(x)))
        y = self.conv2(nnx.relu(self.bn2(y)))
        return jnp.concatenate([x, y], axis=-1)


class Transition(nnx.Module):
    def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs):
        self.bn = layers.batch_norm(in_features, dtype=dtype, rngs=rngs)
        self.conv = layers.conv(
            in_features, out_features, 1, kernel_init=_INIT, dtype=dtype, rngs=rngs
        )

    def __call__(self, x):
        return layers.avg_pool(self.conv(nnx.relu(self.bn(x))), 2, 2)


class DenseNet(nnx.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
        growth_rate: int = 32,
        block_sizes: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
        stem_features: int = 64,
    ):
        self.stem_conv = layers.conv(
            in_channels, stem_features, 7, stride=2, padding=3, kernel_init=_INIT, dtype=dtype,
            rngs=rngs,
        )  # fmt: skip
        self.stem_bn = layers.batch_norm(stem_features, dtype=dtype, rngs=rngs)
        stages = []
        features = stem_features
        for i, num_layers in enumerate(block_sizes):
            for _ in range(num_layers):
                stages.append(DenseLayer(features, growth_rate, bn_size, dtype=dtype, rngs=rngs))
                features += growth_rate
            if i < len(block_sizes) - 1:
                stages.append(Transition(features, features // 2, dtype=dtype, rngs=rngs))
                features //= 2
        self.layers = nnx.List(stages)
        self.final_bn = layers.batch_norm(features, dtype=dtype, rngs=rngs)
        self.head = layers.Head(features, num_classes, dropout, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem_conv(x.astype(self.dtype))))
        x = layers.max_pool(x, 3, 2, padding=1)
        for layer in self.layers:
            x = layer(x)
        x = nnx.relu(self.final_bn(x))
        return self.head(layers.global_avg_pool(x))
