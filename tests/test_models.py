"""The CNNs: layouts (parameter counts), shapes, modes, dtypes, size errors, training.

Full-size networks are only traced abstractly (`nnx.eval_shape`, `jax.eval_shape`,
`jax.make_jaxpr`): compiling DenseNet121 alone takes minutes on a 2-core CPU. Everything
that runs uses tiny variants built from the same classes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import default
from speechjax.errors import UserError
from speechjax.models import (
    alexnet,
    bcresnet,
    create_model,
    densenet,
    layers,
    resnet,
    set_training,
)
from speechjax.models.registry import CNN_NAMES

# The networks trained on spectrograms from scratch; speech_embedding (a frozen pretrained
# network with an input of its own) is tested in test_speech_embedding.py.

# Input sizes the configs feed: log-mel with 40/64/128 bands, seed STFT resized to 224 x 224
# and unresized (32 x 257).
CONFIG_SHAPES = {
    "alexnet": [(101, 128, 1), (224, 224, 3)],
    "resnet18": [(101, 40, 1), (101, 64, 1), (224, 224, 3), (32, 257, 3)],
    "resnet34": [(101, 64, 1), (224, 224, 3), (32, 257, 3)],
    "resnet50": [(101, 64, 1), (224, 224, 3), (32, 257, 3)],
    "resnet32": [(101, 40, 1), (101, 64, 1), (224, 224, 3), (32, 257, 3)],
    "densenet121": [(101, 40, 1), (101, 64, 1), (224, 224, 3), (32, 257, 3)],
    "bcresnet": [(101, 40, 1), (51, 40, 1), (101, 64, 1), (224, 224, 3), (32, 257, 3)],
}

# torchvision's parameter counts (1000 classes, 3 channels; BatchNorm running stats excluded).
# ResNet-32 with 10 classes and option-A shortcuts: 432 (stem conv) + 32 (stem BN)
# + 23,360 (stage 1) + 88,192 (stage 2) + 351,488 (stage 3) + 650 (dense) = 464,154,
# the "0.46M" of He et al. 2016, table 6. BC-ResNet-8 (the default width) with 12 classes:
# the paper's 321,068 (see test_bcresnet_parameter_counts_match_the_paper) plus 2 x 25 x 128
# stem weights for the two extra input channels.
SIZE_OPS = {
    "alexnet": alexnet.SIZE_OPS,
    "densenet121": densenet.SIZE_OPS,
    "bcresnet": bcresnet.SIZE_OPS,
}
PARAM_COUNTS = {
    "alexnet": (1000, 61_100_840),
    "resnet18": (1000, 11_689_512),
    "resnet34": (1000, 21_797_672),
    "resnet50": (1000, 25_557_032),
    "resnet32": (10, 464_154),
    "densenet121": (1000, 7_978_856),
    "bcresnet": (12, 327_468),
}


def model_config(name, **overrides):
    config = default.get_config().model
    config.unlock()
    config.name = name
    for key, value in overrides.items():
        config[key] = value
    return config


def rngs(seed=0):
    # rbg keys: XLA CPU takes seconds to compile each threefry draw, and eager init draws
    # once per parameter shape.
    return nnx.Rngs(
        params=jax.random.key(seed, impl="rbg"), dropout=jax.random.key(seed + 1, impl="rbg")
    )


def abstract_model(name, num_classes, input_shape, **overrides):
    return nnx.eval_shape(
        lambda: create_model(model_config(name, **overrides), num_classes, input_shape, rngs())
    )


@functools.cache
def full_model(name, channels):
    """The real network, abstract (no arrays), built once per test session: building
    DenseNet121 even abstractly takes seconds. Its forward pass works at any size above the
    minimum, whatever size it was built for."""
    num_classes = PARAM_COUNTS[name][0]
    return abstract_model(name, num_classes, (224, 224, channels))


def count_params(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def trace_forward(model, batch, input_shape):
    """jaxpr of the eval-mode forward pass, without running or compiling it."""
    set_training(model, False)
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    return jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)


def iter_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from iter_eqns(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from iter_eqns(sub)


@pytest.mark.parametrize("name", CNN_NAMES)
def test_parameter_counts_match_torchvision(name):
    model = full_model(name, 3)
    assert count_params(model) == PARAM_COUNTS[name][1]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model)) if x.ndim)


@pytest.mark.parametrize("name", CNN_NAMES)
def test_config_sizes_give_logits_and_no_slow_convolutions(name):
    """Every config input size gives float32 [B, classes] logits (with 1 and 3 channels), and
    no convolution reaching XLA has an output smaller than its kernel (XLA CPU's slow loop)."""
    num_classes = PARAM_COUNTS[name][0]
    first = CONFIG_SHAPES[name][0]
    other_channels = (*first[:2], 4 - first[2])
    for shape in [*CONFIG_SHAPES[name], other_channels]:
        closed = trace_forward(full_model(name, shape[2]), 2, shape)
        (out,) = closed.out_avals
        assert out.shape == (2, num_classes) and out.dtype == jnp.float32, shape
        for eqn in iter_eqns(closed.jaxpr):
            if eqn.primitive.name != "conv_general_dilated":
                continue
            dims = eqn.params["dimension_numbers"]
            out_hw = [eqn.outvars[0].aval.shape[d] for d in dims.out_spec[2:]]
            kernel_hw = [eqn.invars[1].aval.shape[d] for d in dims.rhs_spec[2:]]
            assert all(o >= k for o, k in zip(out_hw, kernel_hw, strict=True)), (
                f"{name} at {shape}: {out_hw} output under a {kernel_hw} kernel"
            )


def test_small_map_convolution_matches_lax_values_and_gradients():
    """The slices + matmul path computes what lax.conv_general_dilated does, forward and back."""
    x = jax.random.normal(jax.random.key(0), (2, 4, 2, 3))
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    dims = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))

    @jax.jit
    def both(x, k):
        results = []
        for conv in (layers.conv_general_dilated, jax.lax.conv_general_dilated):
            for strides in ((1, 1), (2, 2)):

                def f(x, k, conv=conv, strides=strides):
                    y = conv(x, k, strides, ((1, 1), (1, 1)), dimension_numbers=dims)
                    return jnp.sum(y * jnp.cos(y)), y

                (_, y), grads = jax.value_and_grad(f, (0, 1), has_aux=True)(x, k)
                results.append((y, *grads))
        return results

    # Full float32 products: at the default precision a GPU multiplies in TF32 (1e-3).
    with jax.default_matmul_precision("highest"):
        results = both(x, k)
    ours, reference = results[:2], results[2:]
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name, shape, minimum",
    [
        ("alexnet", (101, 40, 1), 63),
        ("alexnet", (32, 257, 3), 63),
        ("densenet121", (20, 64, 1), 29),
    ],
)
def test_too_small_input_names_minimum_and_resize_field(name, shape, minimum):
    with pytest.raises(UserError, match=rf"{minimum} x {minimum}.*features\.resize"):
        create_model(model_config(name), 35, shape, rngs())
    # The stated minimum passes the check and really runs.
    layers.check_input_size(name, (minimum, minimum, 1), SIZE_OPS[name])
    (out,) = trace_forward(full_model(name, 1), 1, (minimum, minimum, 1)).out_avals
    assert out.shape == (1, PARAM_COUNTS[name][0])


def test_unknown_name_and_bad_fields_are_user_errors():
    with pytest.raises(UserError, match="alexnet, resnet18, .*densenet121"):
        create_model(model_config("vgg16"), 35, (101, 40, 1), rngs())
    with pytest.raises(UserError, match="model.dtype"):
        create_model(model_config("resnet32", dtype="float16"), 35, (101, 40, 1), rngs())
    with pytest.raises(UserError, match="model.shortcut"):
        create_model(model_config("resnet32", shortcut="C"), 35, (101, 40, 1), rngs())
    with pytest.raises(UserError, match="model.widths"):
        create_model(model_config("resnet32", widths=(32, 16)), 35, (101, 40, 1), rngs())


def test_resnet32_fields_build_tiny_variants_and_option_b_adds_projections():
    tiny_a = abstract_model("resnet32", 10, (16, 8, 1), blocks_per_stage=1, widths=(4, 8))
    tiny_b = abstract_model(
        "resnet32", 10, (16, 8, 1), blocks_per_stage=1, widths=(4, 8), shortcut="B"
    )
    # stem 36+8, two blocks (4->4: 288+16, 4->8: 288+576+32), dense 8*10+10.
    assert count_params(tiny_a) == 44 + 304 + 896 + 90
    # plus the 1x1 projection 4->8 and its BN.
    assert count_params(tiny_b) == count_params(tiny_a) + 32 + 16


@pytest.mark.parametrize("name", CNN_NAMES)
def test_set_training_switches_every_dropout_and_batchnorm(name):
    model = full_model(name, 1)
    modules = [m for _, m in nnx.iter_modules(model)]
    dropouts = [m for m in modules if isinstance(m, nnx.Dropout)]
    # BatchNorm and BC-ResNet's SubSpectralNorm.
    norms = [m for m in modules if hasattr(m, "use_running_average")]
    assert dropouts and (norms or name == "alexnet")
    if name == "bcresnet":
        assert sum(isinstance(m, bcresnet.SubSpectralNorm) for m in norms) == 12
    for training in (False, True):
        set_training(model, training)
        assert all(m.deterministic is not training for m in dropouts)
        assert all(m.use_running_average is not training for m in norms)


def tiny_models(dtype=jnp.float32, dropout=0.0, seed=0):
    """One small network per architecture family, from the same classes as the real ones."""
    kw = {"dropout": dropout, "dtype": dtype, "rngs": rngs(seed)}
    return {
        "alexnet": alexnet.AlexNet(
            3, 4, widths=(8, 8, 8, 8, 8), hidden=16, classifier_dropout=dropout, **kw
        ),
        "resnet_basic": resnet.ResNet(
            1,
            4,
            block=resnet.BasicBlock,
            stage_sizes=(1, 1),
            widths=(8, 8),
            imagenet_stem=True,
            shortcut="B",
            **kw,
        ),  # fmt: skip
        "resnet_bottleneck": resnet.ResNet(
            1,
            4,
            block=resnet.Bottleneck,
            stage_sizes=(1, 1),
            widths=(4, 4),
            imagenet_stem=True,
            shortcut="B",
            **kw,
        ),  # fmt: skip
        "resnet_cifar": resnet.cifar_resnet(
            1, 4, blocks_per_stage=1, widths=(8, 16), shortcut="A", **kw
        ),
        "densenet": densenet.DenseNet(
            1, 4, growth_rate=4, block_sizes=(1, 1), bn_size=2, stem_features=8, **kw
        ),
        # Base 4 channels, one block per stage; spatial dropout as the head's.
        "bcresnet": bcresnet.BCResNet(
            1,
            4,
            width_factor=0.5,
            sub_bands=5,
            spatial_dropout=dropout,
            stage_blocks=(1, 1, 1, 1),
            **kw,
        ),  # fmt: skip
    }


def tiny_batch(name, batch=8, num_classes=4):
    # Sizes where no feature map is smaller than a 3x3 kernel: the slices + matmul path has its
    # own test, and avoiding it here saves compile time. BC-ResNet needs >= 33 frequency bins
    # and never shrinks time.
    size = {"alexnet": 63, "resnet_cifar": 16}.get(name, 32)
    shape = (batch, size, size, 3 if name == "alexnet" else 1)
    if name == "bcresnet":
        shape = (batch, 16, 40, 1)
    # A per-example offset on top of noise survives global average pooling.
    x = jax.random.normal(jax.random.key(2), shape)
    x = x + 2 * jax.random.normal(jax.random.key(3), (batch, 1, 1, shape[-1]))
    return x, jnp.arange(batch) % num_classes


@nnx.jit
def sgd_step(model, optimizer, x, y):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@pytest.mark.parametrize("name", list(tiny_models()))
def test_sgd_on_a_fixed_batch_drives_the_loss_down(name):
    model = tiny_models()[name]
    # AlexNet has no BatchNorm: it needs a much smaller step to stay stable.
    lr = 0.003 if name == "alexnet" else 0.1
    optimizer = nnx.Optimizer(model, optax.sgd(lr, momentum=0.9), wrt=nnx.Param)
    x, y = tiny_batch(name)
    losses = [float(sgd_step(model, optimizer, x, y)) for _ in range(30)]
    assert np.isfinite(losses).all(), losses
    # BatchNorm over 8 tiny examples makes the descent bumpy: judge the last few steps.
    assert min(losses[-5:]) < 0.25 * losses[0], losses


def test_dropout_and_batchnorm_statistics_act_only_in_training():
    model = resnet.cifar_resnet(
        1, 4, blocks_per_stage=1, widths=(4, 8), shortcut="A", dropout=0.5,
        dtype=jnp.float32, rngs=rngs(),
    )  # fmt: skip
    x, _ = tiny_batch("resnet_cifar")
    forward = nnx.jit(lambda model, x: model(x))

    def stats():
        return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]

    set_training(model, False)
    before = stats()
    np.testing.assert_array_equal(forward(model, x), forward(model, x))
    for a, b in zip(before, stats(), strict=True):
        np.testing.assert_array_equal(a, b)

    set_training(model, True)
    first, second = forward(model, x), forward(model, x)
    assert not np.allclose(first, second)  # fresh dropout masks each call
    assert any(not np.allclose(a, b) for a, b in zip(before, stats(), strict=True))


def test_bfloat16_logits_match_float32_on_the_same_weights():
    """bfloat16 keeps float32 parameters and statistics and returns float32 logits within
    0.05 x the logit range of the float32 model (bfloat16 has an 8-bit mantissa)."""
    models32, models16 = tiny_models(jnp.float32), tiny_models(jnp.bfloat16)
    forward = nnx.jit(lambda model, x: model(x))
    for name, m32 in models32.items():
        m16 = models16[name]
        params32, params16 = nnx.state(m32, nnx.Param), nnx.state(m16, nnx.Param)
        for a, b in zip(jax.tree.leaves(params32), jax.tree.leaves(params16), strict=True):
            assert b.dtype == jnp.float32
            np.testing.assert_array_equal(a, b)
        assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(m16, nnx.BatchStat)))
        for model in (m32, m16):
            set_training(model, False)
        x, _ = tiny_batch(name, batch=4)
        y32, y16 = forward(m32, x), forward(m16, x)
        assert y16.dtype == jnp.float32
        scale = float(jnp.max(y32) - jnp.min(y32))
        np.testing.assert_allclose(y16, y32, atol=0.05 * scale, err_msg=name)


# BC-ResNet (Kim et al. 2021): paper parameter counts, a full-size forward pass, its
# SubSpectralNorm and its depthwise convolutions.


def bcresnet_blocks(model):
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, bcresnet.BCResBlock)]


@pytest.mark.parametrize("width_factor, expected", [(1.0, 9_232), (8.0, 321_068)])
def test_bcresnet_parameter_counts_match_the_paper(width_factor, expected):
    """BC-ResNet-1 and -8 with 12 classes on 40 mel bins: the paper's "9.2k" and "321k"
    (arXiv 2106.04140, table 2), and what the authors' code counts. Both include
    SubSpectralNorm's scale and bias per sub-band (5 pairs per channel in each of the 12
    blocks: 1,840 parameters for BC-ResNet-1, 14,720 for -8); one pair per channel would give
    7,760 and 309,292, which miss the paper. BatchNorm running statistics are not counted."""
    model = abstract_model("bcresnet", 12, (101, 40, 1), width_factor=width_factor)
    assert count_params(model) == expected
    widths = [block.ssn.features for block in bcresnet_blocks(model)]
    ssn = sum(count_params(block.ssn) for block in bcresnet_blocks(model))
    assert ssn == 10 * sum(widths)
    if width_factor == 1.0:
        assert widths == [8, 8, 12, 12, 16, 16, 16, 16, 20, 20, 20, 20]
        # stem 5x5 conv 400 + BN 32; transition blocks 1x1 in + BN, 3-tap convs, SSN, BN, 1x1.
        assert count_params(model.stem_conv) + count_params(model.stem_bn) == 432
        assert [count_params(b) for b in bcresnet_blocks(model)] == (
            [352, 208, 480, 360, 768, 544, 544, 544, 1120, 760, 760, 760]
        )
        # depthwise 5x5 500, 1x1 to 32 channels 640, BN 64, Dense 32 x 12 + 12.
        head = (model.head_depthwise, model.head_pointwise, model.head_bn, model.head)
        assert [count_params(m) for m in head] == [500, 640, 64, 396]


def test_bcresnet_forward_in_train_and_eval_mode():
    """A real BC-ResNet-1 on the paper's 101 x 40 input: finite float32 logits in both modes;
    training updates the (Sub)BatchNorm statistics, evaluation leaves them alone."""
    model = create_model(model_config("bcresnet", width_factor=1.0), 12, (101, 40, 1), rngs())
    x = jax.random.normal(jax.random.key(0), (2, 101, 40, 1))
    forward = nnx.jit(lambda model, x: model(x))

    def stats():
        return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]

    for training in (True, False):
        set_training(model, training)
        before = stats()
        logits = forward(model, x)
        assert logits.shape == (2, 12) and logits.dtype == jnp.float32
        assert np.isfinite(np.asarray(logits)).all()
        changed = [not np.array_equal(a, b) for a, b in zip(before, stats(), strict=True)]
        assert all(changed) if training else not any(changed)


def test_bcresnet_bfloat16_computes_in_bfloat16_with_float32_parameters():
    """BC-ResNet-8 traced in bfloat16: float32 parameters and statistics, bfloat16 convolutions
    (the depthwise ones run as slices, see layers.conv_general_dilated), float32 logits."""
    model = abstract_model("bcresnet", 12, (101, 40, 1), dtype="bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model)) if x.ndim)
    closed = trace_forward(model, 2, (101, 40, 1))
    convs = [e for e in iter_eqns(closed.jaxpr) if e.primitive.name == "conv_general_dilated"]
    # The stem, the 1x1 of the 4 transition blocks, the 12 blocks' 1x1, the head's 1x1.
    assert len(convs) == 1 + 4 + 12 + 1
    assert all(e.invars[0].aval.dtype == jnp.bfloat16 for e in convs)
    assert closed.out_avals[0].dtype == jnp.float32


def test_bcresnet_input_size_and_field_errors():
    """Frequency must keep 5 bins for the head's 5x5 (>= 33 bins); time may be any length."""
    with pytest.raises(UserError, match=r"1 x 33 .*32.*n_mels"):
        create_model(model_config("bcresnet"), 12, (101, 32, 1), rngs())
    layers.check_input_size("bcresnet", (1, 33, 1), bcresnet.SIZE_OPS)
    (out,) = trace_forward(full_model("bcresnet", 1), 1, (1, 33, 1)).out_avals
    assert out.shape == (1, 12)
    # The last two stages see 5 bins at 40 mel bands: 6 sub-bands cannot fit.
    too_many_bands = abstract_model("bcresnet", 12, (101, 40, 1), sub_bands=6)
    with pytest.raises(UserError, match=r"model.sub_bands=6 .* sees 5"):
        trace_forward(too_many_bands, 1, (101, 40, 1))
    with pytest.raises(UserError, match="model.width_factor"):
        create_model(model_config("bcresnet", width_factor=0.1), 12, (101, 40, 1), rngs())
    with pytest.raises(UserError, match="model.sub_bands"):
        create_model(model_config("bcresnet", sub_bands=0), 12, (101, 40, 1), rngs())
    with pytest.raises(UserError, match="model.spatial_dropout"):
        create_model(model_config("bcresnet", spatial_dropout=1.0), 12, (101, 40, 1), rngs())


@pytest.mark.parametrize("freq_bins", [10, 8])
def test_subspectral_norm_normalises_each_sub_band_separately(freq_bins):
    """Every (sub-band, channel) gets mean 0 and variance 1 over batch, time and its bins, then
    its own scale and bias; equal to the reference (BatchNorm over C * S channels after a
    reshape) when 5 divides the bins (10), contiguous bands of 2, 2, 1, 2, 1 bins otherwise (8).
    Running statistics move 10% towards the batch's; eval mode uses them."""
    batch, frames, chans, subs = 4, 6, 3, 5
    rng = np.random.default_rng(0)
    bands = bcresnet.band_matrix(freq_bins, subs)  # [F, S]
    offset, spread = rng.normal(0, 5, (subs, chans)), rng.uniform(0.5, 4, (subs, chans))
    x = rng.normal(size=(batch, frames, freq_bins, chans)) * (bands @ spread) + bands @ offset
    ssn = bcresnet.SubSpectralNorm(chans, subs, dtype=jnp.float32)
    ssn.scale[...] = jnp.asarray(rng.uniform(0.5, 2, subs * chans), jnp.float32)
    ssn.bias[...] = jnp.asarray(rng.normal(size=subs * chans), jnp.float32)
    y = np.asarray(ssn(jnp.asarray(x, jnp.float32)))

    band_of_bin = bands.argmax(1)
    if freq_bins == 8:
        np.testing.assert_array_equal(band_of_bin, [0, 0, 1, 1, 2, 3, 3, 4])
    scale, bias = (np.asarray(v[...]).reshape(subs, chans) for v in (ssn.scale, ssn.bias))
    means, variances = np.zeros((subs, chans)), np.zeros((subs, chans))
    for s in range(subs):
        xs, ys = x[:, :, band_of_bin == s], y[:, :, band_of_bin == s]
        means[s], variances[s] = xs.mean((0, 1, 2)), xs.var((0, 1, 2))
        normalised = (ys - bias[s]) / scale[s]
        np.testing.assert_allclose(normalised.mean((0, 1, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(normalised.var((0, 1, 2)), 1, rtol=1e-3)
        expected = (xs - means[s]) / np.sqrt(variances[s] + 1e-5) * scale[s] + bias[s]
        np.testing.assert_allclose(ys, expected, rtol=1e-4, atol=1e-4)
    if freq_bins == 10:  # the reference: BatchNorm2d(C * S) on [B, C * S, F / S, T]
        xr = x.reshape(batch, frames, subs, 2, chans)
        mean, var = xr.mean((0, 1, 3), keepdims=True), xr.var((0, 1, 3), keepdims=True)
        reference = (xr - mean) / np.sqrt(var + 1e-5) * scale[:, None] + bias[:, None]
        np.testing.assert_allclose(y, reference.reshape(x.shape), rtol=1e-4, atol=1e-4)
    # One BatchNorm over all bins would leave the bands' means apart: SSN removes them.
    assert np.ptp(means) > 5

    np.testing.assert_allclose(np.asarray(ssn.mean[...]), 0.1 * means.reshape(-1), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(ssn.var[...]), 0.9 + 0.1 * variances.reshape(-1), rtol=1e-5
    )
    ssn.eval()
    ssn.mean[...], ssn.var[...] = (
        jnp.asarray(v.reshape(-1), jnp.float32) for v in (means, variances)
    )
    np.testing.assert_allclose(ssn(jnp.asarray(x, jnp.float32)), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kernel, strides, dilation, padding",
    [((1, 3), (1, 2), (1, 1), ((0, 0), (1, 1))), ((3, 1), (1, 1), (4, 1), ((4, 4), (0, 0))),
     ((5, 5), (1, 1), (1, 1), ((2, 2), (0, 0)))],
)  # fmt: skip
def test_depthwise_convolution_as_slices_matches_lax(kernel, strides, dilation, padding):
    """BC-ResNet's depthwise convolutions (frequency 3-tap with stride 2, dilated time 3-tap,
    the head's 5x5 over a 5-bin map) as slices equal lax's grouped convolution, forward and
    back."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 10, 4))
    k = jax.random.normal(jax.random.key(1), (*kernel, 1, 4))
    dims = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
    kwargs = {"rhs_dilation": dilation, "dimension_numbers": dims, "feature_group_count": 4}

    @jax.jit
    def both(x, k):
        results = []
        for conv in (layers.conv_general_dilated, jax.lax.conv_general_dilated):

            def f(x, k, conv=conv):
                y = conv(x, k, strides, padding, **kwargs)
                return jnp.sum(y * jnp.cos(y)), y

            (_, y), grads = jax.value_and_grad(f, (0, 1), has_aux=True)(x, k)
            results.append((y, *grads))
        return results

    ours, reference = both(x, k)
    assert ours[0].shape == reference[0].shape
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    jaxpr = jax.make_jaxpr(
        lambda x, k: layers.conv_general_dilated(x, k, strides, padding, **kwargs)
    )
    assert all(e.primitive.name != "conv_general_dilated" for e in iter_eqns(jaxpr(x, k).jaxpr))
