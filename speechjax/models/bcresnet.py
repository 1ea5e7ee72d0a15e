"""BC-ResNet: broadcasted residual learning for keyword spotting (Kim et al., Interspeech 2021,
arXiv 2106.04140), BC-ResNet-tau for a width factor tau.

A BC-ResBlock on a [B, T, F, C] map (time along height, frequency along width):

    f2:  frequency-wise depthwise 3-tap convolution (stride 2 along frequency where a stage
         shrinks it) -> SubSpectralNorm (BatchNorm per frequency sub-band)           [B, T, F, C]
    average over frequency                                                           [B, T, 1, C]
    f1:  temporal depthwise 3-tap convolution (dilated) -> BN -> swish -> 1x1 convolution
         -> spatial (channel) dropout                                                [B, T, 1, C]
    out: ReLU(f1 broadcast over frequency + f2 + x)

Most of the work is 1-D along time; the 2-D residual f2 keeps the frequency detail. A
transition block (the first of each stage, where the channels change) starts with a 1x1
convolution -> BN -> ReLU and has no identity shortcut.

Layout (the authors' code, channels for base = 8 tau):
    stem:    5x5 convolution, stride 2 along frequency, 2 base channels -> BN -> ReLU
    stages:  2, 2, 4, 4 blocks of base, 1.5 base, 2 base, 2.5 base channels; stages 2 and 3
             halve the frequency; temporal dilation 1, 2, 4, 8
    head:    depthwise 5x5 (time padded, frequency not) -> 1x1 convolution to 4 base
             channels -> BN -> ReLU -> global average pool -> Dropout(model.dropout) -> Dense
With 40 mel bands the frequency axis goes 40 -> 20 (stem) -> 20, 10, 5, 5 (stages) -> 1
(head); time is never shrunk. The paper's classifier is a 1x1 convolution with bias after
the pool, the same parameters as the Dense layer here; the dropout before it is this
codebase's (the paper has none there).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from speechjax.errors import UserError
from speechjax.models import layers

BASE_CHANNELS = 8  # BC-ResNet-1
STAGE_BLOCKS = (2, 2, 4, 4)
STAGE_WIDTHS = (1.0, 1.5, 2.0, 2.5)  # x base channels; int() as the authors' code
STAGE_FREQ_STRIDES = (1, 2, 2, 1)
STAGE_DILATIONS = (1, 2, 4, 8)  # temporal, 2**stage as the authors' code

# Only frequency shrinks: stem 5/2/2, the 3-tap convolutions of stages 2 and 3 (3/2/1), and the
# head's 5x5 depthwise convolution, unpadded along frequency. 33 bins are the minimum (5 left
# before the head); time keeps its length (every time kernel is padded).
SIZE_OPS = layers.AxisSizeOps(time=(), freq=((5, 2, 2), (3, 2, 1), (3, 2, 1), (5, 1, 0)))


def channels(width_factor: float) -> tuple[int, tuple[int, ...], int]:
    """(stem, per-stage, head) channel counts of BC-ResNet-`width_factor`."""
    base = int(BASE_CHANNELS * width_factor)
    return 2 * base, tuple(int(base * w) for w in STAGE_WIDTHS), 4 * base


def band_matrix(freq_bins: int, sub_bands: int) -> np.ndarray:
    """[F, S] one-hot: bin f belongs to sub-band floor(f * S / F) (contiguous, equal when S
    divides F, as the reference's reshape; otherwise sizes differ by at most one)."""
    band = np.arange(freq_bins) * sub_bands // freq_bins
    return (band[:, None] == np.arange(sub_bands)[None, :]).astype(np.float32)


class SubSpectralNorm(nnx.Module):
    """BatchNorm with its own statistics and affine parameters per (frequency sub-band, channel)
    (Chang et al., "Subspectral normalization for neural audio data processing", 2021).

    The reference implementation reshapes to C * S channels and applies BatchNorm2d, which
    needs S to divide the bins; here bins are assigned to bands by a [F, S] matrix, so any
    F >= S works. Parameters and statistics are flat (S * C,) vectors, band-major, in float32
    (flat so that weight decay, which skips 1-D parameters, skips them as it skips BN's).
    Running averages follow `layers.batch_norm` (momentum 0.9, eps 1e-5, biased variance).
    `Module.train()/eval()` switch `use_running_average` as they do BatchNorm's.
    """

    def __init__(
        self,
        features: int,
        sub_bands: int,
        *,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        dtype,
    ):
        size = (sub_bands * features,)
        self.scale = nnx.Param(jnp.ones(size, jnp.float32))
        self.bias = nnx.Param(jnp.zeros(size, jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros(size, jnp.float32))
        self.var = nnx.BatchStat(jnp.ones(size, jnp.float32))
        self.features = features
        self.sub_bands = sub_bands
        self.momentum = momentum
        self.epsilon = epsilon
        self.dtype = dtype
        self.use_running_average = False

    def __call__(self, x: jax.Array) -> jax.Array:
        bins, shape = x.shape[2], (self.sub_bands, self.features)
        if bins < self.sub_bands:
            raise UserError(
                f"model.sub_bands={self.sub_bands} needs at least that many frequency bins in "
                f"every block, but a block sees {bins}: use fewer sub-bands or more mel bands."
            )
        bands = jnp.asarray(band_matrix(bins, self.sub_bands))  # [F, S]
        x32 = x.astype(jnp.float32)
        if self.use_running_average:
            mean, var = self.mean[...].reshape(shape), self.var[...].reshape(shape)
        else:
            counts = x.shape[0] * x.shape[1] * bands.sum(0)[:, None]  # [S, 1]
            mean = bands.T @ jnp.sum(x32, axis=(0, 1)) / counts  # [S, C]
            centred = x32 - bands @ mean
            var = bands.T @ jnp.sum(centred * centred, axis=(0, 1)) / counts
            m = self.momentum
            self.mean[...] = m * self.mean[...] + (1 - m) * mean.reshape(-1)
            self.var[...] = m * self.var[...] + (1 - m) * var.reshape(-1)
        scale = self.scale[...].reshape(shape) * jax.lax.rsqrt(var + self.epsilon)
        shift = self.bias[...].reshape(shape) - mean * scale
        return (x32 * (bands @ scale) + bands @ shift).astype(self.dtype)


class BCResBlock(nnx.Module):
    """One broadcasted residual block; a transition block when channels or frequency change."""

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        freq_stride: int,
        dilation: int,
        sub_bands: int,
        spatial_dropout: float,
        dtype,
        rngs: nnx.Rngs,
    ):
        common = {"dtype": dtype, "rngs": rngs}
        self.transition = in_features != features or freq_stride != 1
        if self.transition:
            self.expand = layers.conv(in_features, features, 1, **common)
            self.expand_bn = layers.batch_norm(features, **common)
        self.freq_conv = layers.conv(
            features, features, (1, 3), stride=(1, freq_stride), padding=(0, 1), groups=features,
            **common,
        )  # fmt: skip
        self.ssn = SubSpectralNorm(features, sub_bands, dtype=dtype)
        self.time_conv = layers.conv(
            features, features, (3, 1), padding=(dilation, 0), dilation=(dilation, 1),
            groups=features, **common,
        )  # fmt: skip
        self.time_bn = layers.batch_norm(features, **common)
        self.pointwise = layers.conv(features, features, 1, **common)
        # Spatial dropout (torch's Dropout2d): whole channels of an example, one mask over time.
        self.dropout = nnx.Dropout(spatial_dropout, broadcast_dims=(1, 2), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        if self.transition:
            x = nnx.relu(self.expand_bn(self.expand(x)))
        two_d = self.ssn(self.freq_conv(x))
        y = jnp.mean(two_d, axis=2, keepdims=True)
        y = nnx.silu(self.time_bn(self.time_conv(y)))
        y = self.dropout(self.pointwise(y))
        out = two_d + y  # broadcast over frequency
        if not self.transition:
            out = out + shortcut
        return nnx.relu(out)


class BCResNet(nnx.Module):
    """BC-ResNet-`width_factor` for [B, T, F, C] spectrograms (T frames, F bins)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width_factor: float,
        sub_bands: int,
        spatial_dropout: float,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
        stage_blocks: Sequence[int] = STAGE_BLOCKS,
    ):
        common = {"dtype": dtype, "rngs": rngs}
        stem_width, widths, head_width = channels(width_factor)
        self.stem_conv = layers.conv(in_channels, stem_width, 5, stride=(1, 2), padding=2, **common)
        self.stem_bn = layers.batch_norm(stem_width, **common)
        blocks = []
        features = stem_width
        for stage, (num_blocks, width) in enumerate(zip(stage_blocks, widths, strict=True)):
            for i in range(num_blocks):
                blocks.append(
                    BCResBlock(
                        features,
                        width,
                        freq_stride=STAGE_FREQ_STRIDES[stage] if i == 0 else 1,
                        dilation=STAGE_DILATIONS[stage],
                        sub_bands=sub_bands,
                        spatial_dropout=spatial_dropout,
                        **common,
                    )
                )
                features = width
        self.blocks = nnx.List(blocks)
        self.head_depthwise = layers.conv(
            features, features, 5, padding=(2, 0), groups=features, **common
        )
        self.head_pointwise = layers.conv(features, head_width, 1, **common)
        self.head_bn = layers.batch_norm(head_width, **common)
        self.head = layers.Head(head_width, num_classes, dropout, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem_conv(x.astype(self.dtype))))
        for block in self.blocks:
            x = block(x)
        x = self.head_pointwise(self.head_depthwise(x))
        x = nnx.relu(self.head_bn(x))
        return self.head(layers.global_avg_pool(x))
