"""Config name -> network: the one place models are built and train/eval mode is switched."""

from collections.abc import Callable

import ml_collections
from flax import nnx

from speechjax import pretrained_embedding
from speechjax.errors import UserError
from speechjax.models import alexnet, bcresnet, densenet, layers, pooled, resnet, speech_embedding


def _alexnet(cfg, input_shape, num_classes, **kw):
    return alexnet.AlexNet(input_shape[2], num_classes, **kw)


def _imagenet_resnet(name):
    def build(cfg, input_shape, num_classes, **kw):
        return resnet.imagenet_resnet(name, input_shape[2], num_classes, **kw)

    return build


def _check_resnet32(cfg) -> None:
    widths = tuple(cfg.widths)
    if cfg.shortcut not in ("A", "B"):
        raise UserError(f'model.shortcut must be "A" or "B", got {cfg.shortcut!r}.')
    if not widths or any(not _is_int(w) or w < 1 for w in widths):
        raise UserError(
            f"model.widths={widths!r} must be one or more positive integers (filters per stage)."
        )
    if not _is_int(cfg.blocks_per_stage) or cfg.blocks_per_stage < 1:
        raise UserError(f"model.blocks_per_stage={cfg.blocks_per_stage!r} must be an integer >= 1.")
    if cfg.shortcut == "A" and list(widths) != sorted(widths):
        raise UserError(
            f"model.shortcut='A' pads channels with zeros, so model.widths must not decrease; "
            f'got {widths}. Use model.shortcut="B" (projection) for other widths.'
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resnet32(cfg, input_shape, num_classes, **kw):
    widths = tuple(int(w) for w in cfg.widths)
    return resnet.cifar_resnet(
        input_shape[2],
        num_classes,
        blocks_per_stage=int(cfg.blocks_per_stage),
        widths=widths,
        shortcut=cfg.shortcut,
        **kw,
    )


def _densenet121(cfg, input_shape, num_classes, **kw):
    return densenet.DenseNet(input_shape[2], num_classes, **kw)


def _no_options(cfg) -> None:
    """The torchvision layouts take no model.* options beyond name, dropout and dtype."""


def _check_bcresnet(cfg) -> None:
    if int(bcresnet.BASE_CHANNELS * float(cfg.width_factor)) < 1:
        raise UserError(
            f"model.width_factor must be at least {1 / bcresnet.BASE_CHANNELS} (BC-ResNet-tau has "
            f"int({bcresnet.BASE_CHANNELS} tau) base channels), got {cfg.width_factor}."
        )
    if not _is_int(cfg.sub_bands) or cfg.sub_bands < 1:
        raise UserError(f"model.sub_bands must be an integer >= 1, got {cfg.sub_bands!r}.")
    if not 0.0 <= cfg.spatial_dropout < 1.0:
        raise UserError(f"model.spatial_dropout must be in [0, 1), got {cfg.spatial_dropout}.")


def _bcresnet(cfg, input_shape, num_classes, **kw):
    return bcresnet.BCResNet(
        input_shape[2],
        num_classes,
        width_factor=float(cfg.width_factor),
        sub_bands=int(cfg.sub_bands),
        spatial_dropout=float(cfg.spatial_dropout),
        **kw,
    )


def _check_speech_embedding(cfg) -> None:
    if not _is_int(cfg.head_units) or cfg.head_units < 1:
        raise UserError(f"model.head_units must be an integer >= 1, got {cfg.head_units!r}.")
    convs = speech_embedding.conv_count()
    if not _is_int(cfg.tuned_convs) or not 0 <= cfg.tuned_convs <= convs:
        raise UserError(
            f"model.tuned_convs must be an integer in 0..{convs} (the pretrained network's "
            f"convolutions; 0 keeps it frozen), got {cfg.tuned_convs!r}."
        )
    if cfg.cnn_branch:
        if cfg.cnn_branch not in CNN_NAMES:
            raise UserError(
                f"model.cnn_branch must be empty or one of {', '.join(CNN_NAMES)}, "
                f"got {cfg.cnn_branch!r}."
            )
        weight = cfg.cnn_branch_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < 1:
            raise UserError(f"model.cnn_branch_weight must be in (0, 1), got {weight!r}.")
        _REGISTRY[cfg.cnn_branch][1](cfg)


# The CNN branch sees the speech_embedding front end's 10 ms frames averaged in threes:
# 30 ms steps, near the demo ResNet-32's 20 ms, for a third of the compute.
CNN_BRANCH_TIME_POOL = 3


def _cnn_branch_first_bin(bins: int) -> int:
    """Where the CNN branch's bins start: after the network's own 32 if the front end adds
    some of its own (features.branch_mels), else at 0 (it shares the network's)."""
    return pretrained_embedding.N_MELS if bins > pretrained_embedding.N_MELS else 0


def cnn_branch_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """What the CNN branch of a speech_embedding model receives for `input_shape`."""
    frames, bins, channels = input_shape
    return frames // CNN_BRANCH_TIME_POOL, bins - _cnn_branch_first_bin(bins), channels


def _speech_embedding(cfg, input_shape, num_classes, **kw):
    head = speech_embedding.SpeechEmbeddingClassifier(
        int(input_shape[0]),
        num_classes,
        head_units=int(cfg.head_units),
        tuned_convs=int(cfg.tuned_convs),
        **kw,
    )
    if not cfg.cnn_branch:
        return head
    build_cnn = _REGISTRY[cfg.cnn_branch][0]
    cnn = build_cnn(cfg, cnn_branch_input_shape(input_shape), num_classes, **kw)
    weight = float(cfg.cnn_branch_weight)
    view = pooled.InputView(
        cnn, first_bin=_cnn_branch_first_bin(input_shape[1]), time_pool=CNN_BRANCH_TIME_POOL
    )
    return pooled.LogLinearPool([head, view], [1.0 - weight, weight])


# name -> (constructor, checks of its own model.* options, the (kernel, stride, padding)
# layers that shrink the input). The ResNets pad every strided layer, so any input of at
# least 1 x 1 survives them.
_REGISTRY: dict[
    str,
    tuple[
        Callable[..., nnx.Module],
        Callable[[ml_collections.ConfigDict], None],
        layers.SizeOps | layers.AxisSizeOps,
    ],
] = {
    "alexnet": (_alexnet, _no_options, alexnet.SIZE_OPS),
    "resnet18": (_imagenet_resnet("resnet18"), _no_options, ()),
    "resnet34": (_imagenet_resnet("resnet34"), _no_options, ()),
    "resnet50": (_imagenet_resnet("resnet50"), _no_options, ()),
    "resnet32": (_resnet32, _check_resnet32, ()),
    "densenet121": (_densenet121, _no_options, densenet.SIZE_OPS),
    "bcresnet": (_bcresnet, _check_bcresnet, bcresnet.SIZE_OPS),
    "speech_embedding": (_speech_embedding, _check_speech_embedding, speech_embedding.SIZE_OPS),
}
# Models whose input is a pretrained network's, fixed: features.kind must be this, unnormalised.
REQUIRED_FEATURES = {"speech_embedding": "speech_embedding"}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
# The networks on spectrograms: every model but those on a pretrained network's input.
CNN_NAMES: tuple[str, ...] = tuple(name for name in MODEL_NAMES if name not in REQUIRED_FEATURES)


def check_config(
    model_config: ml_collections.ConfigDict, input_shape: tuple[int, int, int] | None
) -> None:
    """Raises UserError, naming the key, for `model.*` settings `create_model` would refuse
    on inputs of `input_shape` (too small an input included; None: the settings alone);
    builds nothing."""
    name = model_config.name
    if name not in _REGISTRY:
        raise UserError(f"Unknown model.name {name!r}; choose one of: {', '.join(MODEL_NAMES)}.")
    if input_shape is not None and (len(input_shape) != 3 or min(input_shape) < 1):
        raise UserError(
            f"input_shape must be (time_frames, freq_bins, channels) of one example, "
            f"got {tuple(input_shape)}."
        )
    dropout = model_config.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1), got {dropout!r}.")
    layers.compute_dtype(model_config.dtype)
    _, check_options, size_ops = _REGISTRY[name]
    check_options(model_config)
    if input_shape is not None:
        layers.check_input_size(name, input_shape, size_ops)
        if name == "speech_embedding" and model_config.cnn_branch:
            branch = model_config.cnn_branch
            layers.check_input_size(
                f"model.cnn_branch={branch!r}",
                cnn_branch_input_shape(input_shape),
                _REGISTRY[branch][2],
                remedy="These are the speech_embedding front end's frames averaged in threes; "
                "choose a model.cnn_branch that takes them, such as resnet32 or resnet18.",
            )


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
    check_config(model_config, input_shape)
    build, _, _ = _REGISTRY[model_config.name]
    return build(
        model_config,
        tuple(int(size) for size in input_shape),
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
