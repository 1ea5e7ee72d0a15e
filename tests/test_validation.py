"""speechjax.validation: the start-up checks of the config and the workdir."""

import os
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import pytest

from configs import default
from speechjax import audio, sharding, validation
from speechjax.errors import UserError
from tests import tiny_config
from tests.test_configs import CONFIG_FILES, SEED_MODELS, load_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def config_with(**fields):
    """configs/default.py with `group__field=value` (or `group__sub__field`) set, of any type:
    as a config file that builds its own ConfigDict could (ConfigDict's own type checks only
    guard fields it was created with)."""
    tree = default.get_config().to_dict()
    for name, value in fields.items():
        *groups, field = name.split("__")
        node = tree
        for group in groups:
            node = node[group]
        node[field] = value
    return ml_collections.ConfigDict(tree)


def problems(config) -> list[str]:
    """The lines validate() refuses `config` with ([] if it accepts it)."""
    try:
        validation.validate(config)
    except UserError as e:
        return str(e).splitlines()
    return []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_every_shipped_config_is_valid(path):
    assert problems(load_config(path)) == []


@pytest.mark.parametrize("model_name", SEED_MODELS)
def test_seed_config_of_every_model_is_valid(model_name):
    assert problems(load_config(REPO / "configs" / "seed.py", model_name)) == []


def test_tiny_test_config_is_valid(tmp_path):
    assert problems(tiny_config.get_config(str(tmp_path))) == []


def test_every_field_has_a_rule():
    rules = validation._field_rules(audio.MIN_SAMPLE_RATE)
    assert sorted(rules) == sorted(validation.field_names(default.get_config()))


# One case per row of the table that validate() answers; the value, the key and what
# is allowed are all in the line.
@pytest.mark.parametrize(
    "fields, line",
    [
        (dict(train__lr=-0.01), "config.train.lr=-0.01: must be a finite number > 0."),
        (dict(train__lr=0.0), "config.train.lr=0.0: must be a finite number > 0."),
        (dict(train__lr=float("nan")), "config.train.lr=nan: must be a finite number > 0."),
        (dict(train__batch_size=0), "config.train.batch_size=0: must be an integer >= 1."),
        (dict(eval__batch_size=0), "config.eval.batch_size=0: must be an integer >= 1."),
        (
            dict(train__epochs=0),
            "config.train.epochs=0: must be an integer >= 1 (to test a trained run without "
            "training it, use --mode eval).",
        ),
        (
            dict(model__name="vgg16"),
            "config.model.name='vgg16': must be one of alexnet, resnet18, resnet34, resnet50, "
            "resnet32, densenet121, bcresnet, speech_embedding.",
        ),
        (
            dict(train__optimizer="adagrad"),
            "config.train.optimizer='adagrad': must be one of adam, adamw, sgd.",
        ),
        (
            dict(train__schedule="linear"),
            "config.train.schedule='linear': must be one of constant, cosine, step.",
        ),
        (
            dict(features__kind="stft"),
            "config.features.kind='stft': must be one of seed, logmel, mfcc, speech_embedding.",
        ),
        (
            dict(data__source="s3"),
            "config.data.source='s3': must be one of folder, tfds, synthetic.",
        ),
        (
            dict(data__layout="nested"),
            "config.data.layout='nested': must be one of auto, split_label, flat, speech_commands.",
        ),
        (
            dict(eval__split="dev"),
            "config.eval.split='dev': must be one of train, validation, test.",
        ),
        (
            dict(train__label_smoothing=1.0),
            "config.train.label_smoothing=1.0: must be a finite number >= 0 and < 1.",
        ),
        (dict(train__momentum=-0.5), "config.train.momentum=-0.5: must be a finite number >= 0"),
        (dict(train__patience=0), "config.train.patience=0: must be an integer >= 1."),
        (dict(augment__mixup_alpha=-1.0), "config.augment.mixup_alpha=-1.0: must be a finite"),
        (dict(data__sample_rate=800), "config.data.sample_rate=800: must be an integer >= 1000."),
        (dict(data__clip_seconds=0.0), "config.data.clip_seconds=0.0: must be a finite number > 0"),
        (dict(checkpoint__keep_latest=0), "config.checkpoint.keep_latest=0: must be an integer"),
        (dict(features__resize=(1.5, 2)), "config.features.resize=(1.5, 2): must be a tuple of"),
        (dict(features__deltas=1), "config.features.deltas=1: must be True or False."),
        (dict(features__hop_ms=float("inf")), "config.features.hop_ms=inf: must be a finite"),
        # The modules' own checks, called from validate():
        (dict(features__n_mels=200), "features.n_mels=200 must be in 1..128."),
        (dict(augment__noise_prob=1.5), "augment.noise_prob=1.5 must be in [0, 1]."),
        (dict(model__dropout=1.0), "model.dropout must be in [0, 1), got 1.0."),
        (dict(model__widths=(8, 0)), "model.widths=(8, 0) must be one or more positive integers"),
        (dict(model__dtype="float16"), "model.dtype must be one of ['bfloat16', 'float32']"),
        (
            dict(data__synthetic__train_per_word=0),
            "config.data.synthetic.train_per_word=0: must be an integer >= 1.",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(fields, line):
    (found,) = problems(config_with(**fields))
    assert found.startswith(line), found


def test_cross_field_rules():
    # The model's minimum input size against the front end's output (resize included).
    (line,) = problems(config_with(model__name="alexnet", features__resize=(32, 32)))
    assert "alexnet needs inputs of at least 63 x 63" in line and "32 x 32" in line
    (line,) = problems(config_with(model__name="densenet121", features__n_mels=16))
    assert "densenet121 needs inputs of at least 29 x 29" in line
    # A clip shorter than one analysis window.
    (line,) = problems(config_with(data__clip_seconds=0.01))
    assert "gives clips of 160 samples, shorter than one analysis window" in line
    assert "(400 samples, features.window_ms)" in line
    (line,) = problems(config_with(features__kind="seed", data__clip_seconds=0.05))
    assert "the seed front end (1024 samples)" in line
    # A folder source without its folder; a warmup longer than the run.
    assert problems(config_with(data__source="folder")) == [
        "config.data.dir='': data.source='folder' needs the dataset's root folder."
    ]
    (line,) = problems(config_with(train__epochs=2, train__warmup_epochs=3.0))
    assert line.startswith("config.train.warmup_epochs=3.0: must be <= train.epochs=2")
    # The front end's own rules (fmax against the sample rate).
    (line,) = problems(config_with(data__sample_rate=8000))
    assert "features.fmax=7600.0 need 0 <= fmin < fmax <= 4000.0" in line
    # SpecAugment from a bin past the front end's last (40 mel bands: bins 0-39).
    assert problems(config_with(augment__mask_from_bin=40)) == [
        "config.augment.mask_from_bin=40: the front end gives 40 bins (0-39); SpecAugment "
        "would mask none of them."
    ]
    assert problems(config_with(augment__mask_from_bin=39)) == []


def test_batch_size_must_divide_by_the_devices(monkeypatch):
    monkeypatch.setattr(sharding.jax, "device_count", lambda: 4)
    (line,) = problems(config_with(train__batch_size=6))
    assert line.startswith("config.train.batch_size=6 must be a multiple of the number of devices")
    assert problems(config_with(train__batch_size=8)) == []
    # Evaluation batches are padded to the devices: any size works.
    assert problems(config_with(eval__batch_size=7)) == []


def test_every_problem_is_reported_once():
    found = problems(
        config_with(
            train__lr=-1.0,
            train__batch_size=0,
            model__name="vgg16",
            features__resize=(8, 8),  # too small for alexnet, but the name is already wrong
            augment__noise_prob=2.0,
        )
    )
    assert found == [
        "config.train.batch_size=0: must be an integer >= 1.",
        "config.train.lr=-1.0: must be a finite number > 0.",
        "config.model.name='vgg16': must be one of alexnet, resnet18, resnet34, resnet50, "
        "resnet32, densenet121, bcresnet, speech_embedding.",
        "augment.noise_prob=2.0 must be in [0, 1].",
    ]


def test_unknown_and_missing_fields_of_a_config_file():
    config = default.get_config()
    with config.unlocked():
        config.train.learning_rate = 0.1
        del config.eval["step"]
    assert problems(config) == [
        "config.train.learning_rate is not a field of speechjax's config (did you mean "
        "config.train.lr?); every field is listed, with a comment, in configs/default.py.",
        "config.eval.step is missing: start config files from configs/default.py "
        "(default.get_config()), which sets every field.",
    ]


@pytest.mark.parametrize(
    "key, expected",
    [
        ("train.learning_rate", ["train.lr"]),  # a synonym: no spelling is close
        ("train.epoch", ["train.epochs"]),
        ("train.lrr", ["train.lr"]),
        ("features.nmels", ["features.n_mels"]),
        ("model.batch_size", ["eval.batch_size", "train.batch_size"]),  # another group
        ("data.sr", ["data.sample_rate"]),
        ("lr", ["train.lr"]),
        ("train.zzz", []),
    ],
)
def test_closest_fields(key, expected):
    assert validation.closest_fields(key, validation.field_names(default.get_config())) == expected


def test_importing_validation_does_not_import_tensorflow_or_jax():
    """main.py's flag parser uses closest_fields: a misspelled flag is answered at once."""
    code = (
        "import sys, speechjax.validation; print(sorted({'tensorflow', 'jax'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_workdir_that_is_a_file_or_under_one(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=f"{tmp_path / 'file'} is a file, not a folder"):
        validation.check_workdir(str(tmp_path / "file"))
    with pytest.raises(
        UserError, match=f"{tmp_path / 'file'} is a file, so no folder can be made under it"
    ):
        validation.check_workdir(str(tmp_path / "file" / "run" / "deeper"))
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UserError, match="is a broken symbolic link"):
        validation.check_workdir(str(tmp_path / "link"))
    before = sorted(os.listdir(tmp_path))
    validation.check_workdir(str(tmp_path / "new" / "run"))  # fine, and creates nothing
    validation.check_workdir(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == before


@pytest.fixture
def unwritable(tmp_path):
    """A folder this user cannot write to: mode 0o500, or, as root (who ignores modes), the
    immutable attribute."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root without chattr +i: no folder is unwritable")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_unwritable_workdir(unwritable):
    with pytest.raises(UserError, match=f"{unwritable} is not writable by this user"):
        validation.check_workdir(str(unwritable))
    with pytest.raises(UserError, match=f"--workdir {unwritable / 'run'}: {unwritable} is not"):
        validation.check_workdir(str(unwritable / "run"))
