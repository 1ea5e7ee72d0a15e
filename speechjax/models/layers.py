"""Building blocks shared by the CNNs: torch-style convolutions, pooling, the head, size checks.

All tensors are channels-last (NHWC, kernels HWIO), the layout Flax and XLA CPU prefer.
Padding is always explicit and symmetric, as in torchvision, so feature-map sizes match
the PyTorch originals exactly (Flax's "SAME" pads stride-2 convolutions differently).
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from speechjax.errors import UserError

# torchvision's default init for nn.Conv2d / nn.Linear: kaiming_uniform(a=sqrt(5)).
torch_default_init = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
he_normal_fan_out = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")
he_normal_fan_in = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")

_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs):
    """`lax.conv_general_dilated`, but as slices + one matmul when the output is smaller than
    the kernel, and as a sum of shifted slices for depthwise convolutions.

    XLA CPU runs such convolutions (ResNet18's last stage on a 101 x 40 log-mel: 4 x 2 under
    3 x 3) in a generic loop hundreds of times slower than the matmul: measured 4.7 s vs 64 ms
    for forward+backward of one 512-channel layer at batch 32. Its grouped (depthwise)
    convolution is slow at every size: on BC-ResNet's shapes at batch 32 the slices were 2-12x
    faster forward+backward (a 5 x 5 kernel over a 5-bin map: 181 ms vs 14 ms).
    """
    if _is_depthwise(lhs, rhs, padding, kwargs):
        return _depthwise_conv(lhs, rhs, window_strides, padding, kwargs)
    kh, kw = rhs.shape[:2]
    plain = (
        isinstance(padding, str)
        or kwargs.get("dimension_numbers") != _NHWC
        or kwargs.get("feature_group_count", 1) != 1
        or any(d != 1 for d in (kwargs.get("lhs_dilation") or (1, 1)))
        or any(d != 1 for d in (kwargs.get("rhs_dilation") or (1, 1)))
    )
    if not plain:
        (pt, pb), (pl, pr) = padding
        sh, sw = window_strides
        out_h = (lhs.shape[1] + pt + pb - kh) // sh + 1
        out_w = (lhs.shape[2] + pl + pr - kw) // sw + 1
        if out_h < kh or out_w < kw:
            return _im2col_conv(lhs, rhs, (sh, sw), padding, (out_h, out_w), kwargs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def _is_depthwise(lhs, rhs, padding, kwargs) -> bool:
    """One input channel per group and one output channel per input channel, NHWC/HWIO,
    explicit padding and no input dilation."""
    groups = kwargs.get("feature_group_count", 1)
    return (
        groups > 1
        and not isinstance(padding, str)
        and kwargs.get("dimension_numbers") == _NHWC
        and all(d == 1 for d in (kwargs.get("lhs_dilation") or (1, 1)))
        and lhs.shape[3] == groups
        and rhs.shape[2:] == (1, groups)
    )


def _depthwise_conv(x, kernel, strides, padding, kwargs):
    """out[b, i, j, c] = sum over (p, q) of x[b, i*sh + p*dh, j*sw + q*dw, c] * kernel[p, q, 0, c],
    accumulated in float32 (XLA fuses the slices, products and sum into one loop)."""
    kh, kw = kernel.shape[:2]
    (sh, sw), (dh, dw) = strides, tuple(kwargs.get("rhs_dilation") or (1, 1))
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out_h = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[2] - dw * (kw - 1) - 1) // sw + 1
    out_dtype = kwargs.get("preferred_element_type") or x.dtype
    kernel = kernel.astype(jnp.float32)
    total = None
    for p in range(kh):
        for q in range(kw):
            window = x[
                :,
                p * dh : p * dh + sh * (out_h - 1) + 1 : sh,
                q * dw : q * dw + sw * (out_w - 1) + 1 : sw,
                :,
            ]
            term = window.astype(jnp.float32) * kernel[p, q, 0]
            total = term if total is None else total + term
    return total.astype(out_dtype)


def _im2col_conv(x, kernel, strides, padding, out_hw, kwargs):
    kh, kw, cin, cout = kernel.shape
    (sh, sw), (out_h, out_w) = strides, out_hw
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    patches = jnp.concatenate(
        [
            x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )
    return jnp.dot(
        patches,
        kernel.reshape(kh * kw * cin, cout),
        precision=kwargs.get("precision"),
        preferred_element_type=kwargs.get("preferred_element_type"),
    )


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int | tuple[int, int],
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    use_bias: bool = False,
    kernel_init: Callable = torch_default_init,
    dtype,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A 2-D convolution with torch-style symmetric padding (float32 parameters).

    Kernel size, stride, padding and dilation are one int for both axes or a (height, width)
    = (time, frequency) pair; `groups` as torch's (`groups=in_features` is depthwise).
    """
    pad_h, pad_w = _pair(padding)
    return nnx.Conv(
        in_features,
        out_features,
        _pair(kernel_size),
        strides=_pair(stride),
        padding=((pad_h, pad_h), (pad_w, pad_w)),
        kernel_dilation=_pair(dilation),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=jax.nn.initializers.zeros,
        dtype=dtype,
        param_dtype=jnp.float32,
        conv_general_dilated=conv_general_dilated,
        rngs=rngs,
    )


def batch_norm(features: int, *, dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm with torch's defaults (momentum 0.1 there is 0.9 here); statistics in float32."""
    return nnx.BatchNorm(
        features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )


def max_pool(x: jax.Array, size: int, stride: int, padding: int = 0) -> jax.Array:
    """nn.MaxPool2d(size, stride, padding): pads with -inf, floors the output size."""
    pad = ((padding, padding), (padding, padding))
    return nnx.max_pool(x, (size, size), (stride, stride), pad)


def avg_pool(x: jax.Array, size: int, stride: int) -> jax.Array:
    """nn.AvgPool2d(size, stride) without padding."""
    return nnx.avg_pool(x, (size, size), (stride, stride))


def _adaptive_matrix(in_size: int, out_size: int) -> jnp.ndarray:
    """Row i averages input [floor(i*n/m), ceil((i+1)*n/m)), torch's adaptive pooling bins."""
    rows = []
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(in_size)])
    return jnp.asarray(rows, jnp.float32)


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """nn.AdaptiveAvgPool2d(out_hw) as two small matmuls (the bins are static)."""
    ph = _adaptive_matrix(x.shape[1], out_hw[0]).astype(x.dtype)
    pw = _adaptive_matrix(x.shape[2], out_hw[1]).astype(x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", ph, x, pw)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, C], averaged in float32."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32)


class Head(nnx.Module):
    """Dropout(rate) -> Dense(num_classes), the last layer of every network, in float32."""

    def __init__(self, in_features: int, num_classes: int, dropout: float, *, rngs: nnx.Rngs):
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.dense = nnx.Linear(
            in_features,
            num_classes,
            kernel_init=torch_default_init,
            bias_init=jax.nn.initializers.zeros,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dense(self.dropout(x.astype(jnp.float32)))


def compute_dtype(name: str):
    """The model.dtype config string as a JAX dtype."""
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if name not in dtypes:
        raise UserError(f"model.dtype must be one of {sorted(dtypes)}, got {name!r}.")
    return dtypes[name]


# (kernel, stride, padding) of every layer that shrinks the feature map, in order.
SizeOps = Sequence[tuple[int, int, int]]


class AxisSizeOps(NamedTuple):
    """Separate SizeOps along time and frequency, for networks that treat the axes differently
    (BC-ResNet never shrinks time)."""

    time: SizeOps
    freq: SizeOps


def _output_size(size: int, ops: SizeOps) -> int:
    for kernel, stride, padding in ops:
        size = (size + 2 * padding - kernel) // stride + 1
        if size < 1:
            return 0
    return size


def _minimum_size(ops: SizeOps) -> int:
    return next(n for n in range(1, 10_000) if _output_size(n, ops) >= 1)


def check_input_size(
    model_name: str,
    input_shape: tuple[int, int, int],
    ops: SizeOps | AxisSizeOps,
    remedy: str | None = None,
) -> None:
    """Raise a UserError naming the minimum input size if `input_shape` shrinks to nothing,
    and what to do (`remedy`; by default, resize the features or add mel bands).

    `ops` apply to both axes, or per axis as an AxisSizeOps."""
    time_ops, freq_ops = (ops.time, ops.freq) if isinstance(ops, AxisSizeOps) else (ops, ops)
    time_frames, freq_bins = input_shape[:2]
    if _output_size(time_frames, time_ops) >= 1 and _output_size(freq_bins, freq_ops) >= 1:
        return
    min_time, min_freq = _minimum_size(time_ops), _minimum_size(freq_ops)
    example = (max(min_time, 224), max(min_freq, 224))
    if remedy is None:
        remedy = (
            f"Set features.resize to at least ({min_time}, {min_freq}) (e.g. "
            f"--config.features.resize='{example}'), or use more mel bands (features.n_mels)."
        )
    raise UserError(
        f"{model_name} needs inputs of at least {min_time} x {min_freq} (time frames x frequency "
        f"bins), but the features are {time_frames} x {freq_bins}. {remedy}"
    )
