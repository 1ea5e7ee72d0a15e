"""torchvision's AlexNet (the "one weird trick" variant: 64-192-384-256-256 filters).

features -> adaptive average pool to 6 x 6 -> Dropout(0.5), FC 4096, ReLU, Dropout(0.5),
FC 4096, ReLU -> Dropout(model.dropout) -> Dense(num_classes). No BatchNorm. The constructor's
widths, hidden size and classifier dropout default to torchvision's; tests shrink them.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from speechjax.models import layers

# Layers that shrink the map: conv1 (11/4/2) and the three 3/2 max-pools (the 5x5 and 3x3
# convolutions keep the size).
SIZE_OPS = ((11, 4, 2), (3, 2, 0), (3, 2, 0), (3, 2, 0))
_KERNELS = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))  # kernel, stride, padding
_POOL_AFTER = (0, 1, 4)
_POOLED = 6

# He init rather than torch's default (variance 1/(3 fan_in)): with no BatchNorm, torch's
# default shrinks the signal at each of the seven ReLU layers and plain SGD barely moves.
_INIT = layers.he_normal_fan_in


class AlexNet(nnx.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
        widths: Sequence[int] = (64, 192, 384, 256, 256),
        hidden: int = 4096,
        classifier_dropout: float = 0.5,
    ):
        convs = []
        for width, (kernel, stride, padding) in zip(widths, _KERNELS, strict=True):
            convs.append(
                layers.conv(
                    in_channels,
                    width,
                    kernel,
                    stride=stride,
                    padding=padding,
                    use_bias=True,
                    kernel_init=_INIT,
                    dtype=dtype,
                    rngs=rngs,
                )
            )
            in_channels = width
        self.convs = nnx.List(convs)
        dense = {"kernel_init": _INIT, "dtype": dtype, "param_dtype": jnp.float32, "rngs": rngs}
        self.dropout1 = nnx.Dropout(classifier_dropout, rngs=rngs)
        self.fc1 = nnx.Linear(in_channels * _POOLED * _POOLED, hidden, **dense)
        self.dropout2 = nnx.Dropout(classifier_dropout, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, hidden, **dense)
        self.head = layers.Head(hidden, num_classes, dropout, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        for i, conv in enumerate(self.convs):
            x = nnx.relu(conv(x))
            if i in _POOL_AFTER:
                x = layers.max_pool(x, 3, 2)
        x = layers.adaptive_avg_pool(x, (_POOLED, _POOLED))
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.fc1(self.dropout1(x)))
        x = nnx.relu(self.fc2(self.dropout2(x)))
        return self.head(x)
