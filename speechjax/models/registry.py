"""Config name -> network: the one place models are built and train/eval mode is switched."""

from collections.abc import Callable

import ml_collections
from flax import nnx

from speechjax.errors import UserError
from speechjax.models import alexnet, bcresnet, densenet, layers, resnet


def _alexnet(cfg, in_channels, num_classes, **kw):
    return alexnet.AlexNet(in_channels, num_classes, **kw)


def _imagenet_resnet(name):
    def build(cfg, in_channels, num_classes, **kw):
        return resnet.imagenet_resnet(name, in_channels, num_classes, **kw)

    return build


def _resnet32(cfg, in_channels, num_classes, **kw):
    widths = tuple(int(w) for w in cfg.widths)
    if cfg.shortcut not in ("A", "B"):
        raise UserError(f'model.shortcut must be "A" or "B", got {cfg.shortcut!r}.')
    if not widths or int(cfg.blocks_per_stage) < 1:
        raise UserError(
            "model.widths needs at least one stage width and model.blocks_per_stage must be >= 1; "
            f"got widths={widths}, blocks_per_stage={cfg.blocks_per_stage}."
        )
    if cfg.shortcut == "A" and list(widths) != sorted(widths):
        raise UserError(
            f"model.shortcut='A' pads channels with zeros, so model.widths must not decrease; "
            f'got {widths}. Use model.shortcut="B" (projection) for other widths.'
        )
    return resnet.cifar_resnet(
        in_channels,
        num_classes,
        blocks_per_stage=int(cfg.blocks_per_stage),
        widths=widths,
        shortcut=cfg.shortcut,
        **kw,
    )


def _densenet121(cfg, in_channels, num_classes, **kw):
    return densenet.DenseNet(in_channels, num_classes, **kw)


def _bcresnet(cfg, in_channels, num_classes, **kw):
    width_factor, sub_bands = float(cfg.width_factor), int(cfg.sub_bands)
    if int(bcresnet.BASE_CHANNELS * width_factor) < 1:
        raise UserError(
            f"model.width_factor must be at least {1 / bcresnet.BASE_CHANNELS} (BC-ResNet-tau has "
            f"int({bcresnet.BASE_CHANNELS} tau) base channels), got {cfg.width_factor}."
        )
    if sub_bands < 1 or sub_bands != cfg.sub_bands:
        raise UserError(f"model.sub_bands must be an integer >= 1, got {cfg.sub_bands!r}.")
    if not 0.0 <= cfg.spatial_dropout < 1.0:
        raise UserError(f"model.spatial_dropout must be in [0, 1), got {cfg.spatial_dropout}.")
    return bcresnet.BCResNet(
        in_channels,
        num_classes,
        width_factor=width_factor,
        sub_bands=sub_bands,
        spatial_dropout=float(cfg.spatial_dropout),
        **kw,
    )


# name -> (constructor, the (kernel, stride, padding) layers that shrink the input). The
# ResNets pad every strided layer, so any input of at least 1 x 1 survives them.
_REGISTRY: dict[str, tuple[Callable[..., nnx.Module], layers.SizeOps | layers.AxisSizeOps]] = {
    "alexnet": (_alexnet, alexnet.SIZE_OPS),
    "resnet18": (_imagenet_resnet("resnet18"), ()),
    "resnet34": (_imagenet_resnet("resnet34"), ()),
    "resnet50": (_imagenet_resnet("resnet50"), ()),
    "resnet32": (_resnet32, ()),
    "densenet121": (_densenet121, densenet.SIZE_OPS),
    "bcresnet": (_bcresnet, bcresnet.SIZE_OPS),
}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def create_model(
    model_config: ml_collections.ConfigDict,
    num_classes: int,
    input_shape: tuple[int, int, int],
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Build `model_config.name` for examples of `input_shape` = (time_frames, freq_bins, channels).

    The module maps float32 [B, T, F, C] to float32 logits [B, num_classes] and starts in
    training mode (dropout on, BatchNorm statistics updated); see `set_training`. Its dropout
    draws from the `dropout` stream of `rngs`, parameters from `params`.
    """
    name = model_config.name
    if name not in _REGISTRY:
        raise UserError(f"Unknown model.name {name!r}; choose one of: {', '.join(MODEL_NAMES)}.")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise UserError(
            f"input_shape must be (time_frames, freq_bins, channels) of one example, "
            f"got {tuple(input_shape)}."
        )
    if not 0.0 <= model_config.dropout < 1.0:
        raise UserError(f"model.dropout must be in [0, 1), got {model_config.dropout}.")
    build, size_ops = _REGISTRY[name]
    layers.check_input_size(name, input_shape, size_ops)
    return build(
        model_config,
        int(input_shape[2]),
        num_classes,
        dropout=float(model_config.dropout),
        dtype=layers.compute_dtype(model_config.dtype),
        rngs=rngs,
    )


def set_training(model: nnx.Module, training: bool) -> None:
    """Switch dropout and BatchNorm between training and inference, in place.

    `Module.train()` / `Module.eval()` set `deterministic` (Dropout) and
    `use_running_average` (BatchNorm) on every submodule.
    """
    if training:
        model.train()
    else:
        model.eval()
