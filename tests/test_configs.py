"""Every config file loads, overrides work, and each builds its model at its input size."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from speechjax import frontend_settings, models

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p for p in (REPO / "configs").glob("*.py") if p.name != "__init__.py")
SEED_MODELS = ("alexnet", "resnet18", "resnet34", "resnet50", "densenet121")


def load_config(path: pathlib.Path, *args):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def _build_abstractly(config, num_classes: int = 35):
    """Constructs the model and runs it on one example, as shapes only (no FLOPs)."""
    input_shape = frontend_settings.output_shape(
        config.features,
        int(config.data.sample_rate * config.data.clip_seconds),
        config.data.sample_rate,
    )

    def forward(x):
        model = models.create_model(config.model, num_classes, input_shape, nnx.Rngs(0))
        models.set_training(model, False)
        return model(x)

    logits = jax.eval_shape(forward, jax.ShapeDtypeStruct((2, *input_shape), jnp.float32))
    return input_shape, logits


def test_every_config_file_is_found():
    names = {p.stem for p in CONFIG_FILES}
    assert {
        "default",
        "seed",
        "alexnet",
        "resnet18",
        "resnet32",
        "resnet34",
        "resnet50",
        "densenet121",
        "bcresnet",
    } <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_loads_and_builds_its_model(path):
    config = load_config(path)
    if path.stem in models.MODEL_NAMES:
        assert config.model.name == path.stem
    _, logits = _build_abstractly(config)
    assert logits.shape == (2, 35) and logits.dtype == jnp.float32


@pytest.mark.parametrize("model_name", SEED_MODELS)
def test_seed_config_reproduces_the_original_for_each_model(model_name):
    config = load_config(REPO / "configs" / "seed.py", model_name)
    assert config.model.name == model_name
    assert (config.train.optimizer, config.train.lr, config.train.batch_size) == ("adam", 1e-3, 16)
    assert (config.train.epochs, config.train.patience, config.model.dropout) == (50, 15, 0.1)
    input_shape, logits = _build_abstractly(config)
    assert input_shape == (224, 224, 3)
    assert logits.shape == (2, 35)


def test_configs_are_locked_against_new_keys():
    config = load_config(REPO / "configs" / "resnet32.py")
    with pytest.raises(AttributeError):
        config.train.lrr = 0.1
