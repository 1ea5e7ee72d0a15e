"""Residual networks: torchvision's ResNet18/34/50 and the CIFAR-style ResNet-32.

ImageNet layout (torchvision): 7x7/2 conv, BN, ReLU, 3x3/2 max-pool, four stages
(64, 128, 256, 512 filters; stride 2 at the start of stages 2-4, on the 3x3 convolution
of a bottleneck, "ResNet v1.5"), 1x1 projection shortcuts where the shape changes.

CIFAR layout (He et al. 2016, section 4.2): 3x3 conv with widths[0] filters, BN, ReLU,
len(widths) stages of `blocks_per_stage` basic blocks, stride 2 at the start of every
stage but the first. Shortcuts where the shape changes are option A (strided subsampling
plus zero channels, no parameters) or B (1x1 projection).

Both end in global average pooling -> Dropout(model.dropout) -> Dense(num_classes).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from speechjax.models import layers

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") on every convolution.
_INIT = layers.he_normal_fan_out


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions; shortcut "A" (parameter-free) or "B" (projection) on shape change."""

    expansion = 1

    def __init__(self, in_features, width, stride, *, shortcut, dtype, rngs):
        self.conv1 = layers.conv(
            in_features, width, 3, stride=stride, padding=1, kernel_init=_INIT, dtype=dtype,
            rngs=rngs,
        )  # fmt: skip
        self.bn1 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv2 = layers.conv(
            width, width, 3, padding=1, kernel_init=_INIT, dtype=dtype, rngs=rngs
        )
        self.bn2 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
        self.shortcut = _shortcut(in_features, width, stride, shortcut, dtype, rngs)

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + self.shortcut(x))


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand to 4 x width; projection shortcut."""

    expansion = 4

    def __init__(self, in_features, width, stride, *, shortcut, dtype, rngs):
        out_features = width * self.expansion
        common = {"kernel_init": _INIT, "dtype": dtype, "rngs": rngs}
        self.conv1 = layers.conv(in_features, width, 1, **common)
        self.bn1 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv2 = layers.conv(width, width, 3, stride=stride, padding=1, **common)
        self.bn2 = layers.batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv3 = layers.conv(width, out_features, 1, **common)
        self.bn3 = layers.batch_norm(out_features, dtype=dtype, rngs=rngs)
        self.shortcut = _shortcut(in_features, out_features, stride, shortcut, dtype, rngs)

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return nnx.relu(y + self.shortcut(x))


class Projection(nnx.Module):
    """Option B: 1x1 strided convolution + BN (torchvision's `downsample`)."""

    def __init__(self, in_features, out_features, stride, *, dtype, rngs):
        self.conv = layers.conv(
            in_features, out_features, 1, stride=stride, kernel_init=_INIT, dtype=dtype,
            rngs=rngs,
        )  # fmt: skip
        self.bn = layers.batch_norm(out_features, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.conv(x))


class ZeroPadShortcut(nnx.Module):
    """Option A: take every stride-th pixel (where a 1x1 strided conv would look) and append
    zero channels; adds no parameters."""

    def __init__(self, in_features, out_features, stride):
        self.stride = stride
        self.extra = out_features - in_features

    def __call__(self, x):
        x = x[:, :: self.stride, :: self.stride, :]
        before = self.extra // 2
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (before, self.extra - before)))


class Identity(nnx.Module):
    def __call__(self, x):
        return x


def _shortcut(in_features, out_features, stride, kind, dtype, rngs) -> nnx.Module:
    if stride == 1 and in_features == out_features:
        return Identity()
    if kind == "A":
        return ZeroPadShortcut(in_features, out_features, stride)
    return Projection(in_features, out_features, stride, dtype=dtype, rngs=rngs)


class ResNet(nnx.Module):
    """A stem, stages of residual blocks, global average pooling and the shared head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        block: type[BasicBlock] | type[Bottleneck],
        stage_sizes: Sequence[int],
        widths: Sequence[int],
        imagenet_stem: bool,
        shortcut: str,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
    ):
        stem_width = 64 if imagenet_stem else widths[0]
        self.imagenet_stem = imagenet_stem
        self.stem_conv = layers.conv(
            in_channels,
            stem_width,
            7 if imagenet_stem else 3,
            stride=2 if imagenet_stem else 1,
            padding=3 if imagenet_stem else 1,
            kernel_init=_INIT,
            dtype=dtype,
            rngs=rngs,
        )
        self.stem_bn = layers.batch_norm(stem_width, dtype=dtype, rngs=rngs)
        blocks = []
        features = stem_width
        for stage, (num_blocks, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(
                    block(features, width, stride, shortcut=shortcut, dtype=dtype, rngs=rngs)
                )
                features = width * block.expansion
        self.blocks = nnx.List(blocks)
        self.head = layers.Head(features, num_classes, dropout, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem_conv(x.astype(self.dtype))))
        if self.imagenet_stem:
            x = layers.max_pool(x, 3, 2, padding=1)
        for block in self.blocks:
            x = block(x)
        return self.head(layers.global_avg_pool(x))


_IMAGENET = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def imagenet_resnet(name: str, in_channels, num_classes, *, dropout, dtype, rngs) -> ResNet:
    """torchvision's resnet18 / resnet34 / resnet50."""
    block, stage_sizes = _IMAGENET[name]
    return ResNet(
        in_channels,
        num_classes,
        block=block,
        stage_sizes=stage_sizes,
        widths=(64, 128, 256, 512),
        imagenet_stem=True,
        shortcut="B",
        dropout=dropout,
        dtype=dtype,
        rngs=rngs,
    )


def cifar_resnet(
    in_channels, num_classes, *, blocks_per_stage, widths, shortcut, dropout, dtype, rngs
) -> ResNet:
    """ResNet-(6n+2) of He et al. 2016 sec. 4.2; n=5 and widths (16, 32, 64) give ResNet-32."""
    return ResNet(
        in_channels,
        num_classes,
        block=BasicBlock,
        stage_sizes=(blocks_per_stage,) * len(widths),
        widths=widths,
        imagenet_stem=False,
        shortcut=shortcut,
        dropout=dropout,
        dtype=dtype,
        rngs=rngs,
    )
