"""Start-up checks: the whole config, and the workdir, before any data is read or compiled.

`validate(config)` checks every field of the config and the rules between fields, and
raises one UserError holding one line per problem (main.py prints each as an `error:` line),
each naming the key, its value and what is allowed:

* every field of `configs/default.py` is present and no other (a misspelled field in a
  config file is named, with the closest existing one);
* each field's type and range (the table in `_field_rules`): learning rate > 0, batch sizes
  and epochs >= 1, probabilities in [0, 1], finite numbers everywhere...;
* names from the modules that define them: data.source, data.layout, eval.split
  (`sources`), features.kind (`frontend_settings`), train.optimizer and train.schedule (`optim`),
  model.name (the model registry);
* the checks the modules hold, called rather than copied: the front end's settings
  (`frontend_settings.output_shape`), augmentation (`augment.check_config`), the synthetic set's
  counts (`synthetic.check_config`), each model's own options and its minimum input size
  for the front end's output (`models.check_config`), the global batch size against the
  device count (`sharding.check_batch_size`, in train mode only: eval and predict take any
  device count);
* cross-field rules: a clip holds at least one analysis window; data.source=folder needs
  data.dir; the warmup fits in the run (train mode).

A check that reads a field already reported is skipped, so each mistake is reported once.
`train.epochs=0` is refused, not taken as a no-op: a run trains at least one epoch, and
`--mode eval` tests a trained run without training it.

`check_workdir` refuses a workdir that is a file, lies under a file, or cannot be written,
without creating anything. `closest_fields` suggests the fields a misspelled key meant.

This module imports nothing heavy at the top: main.py's flag parser uses `closest_fields`
before TensorFlow or JAX are needed. `validate` imports the modules whose checks it calls.
"""

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import ml_collections

from speechjax.errors import UserError

# Words people use for a field, mapped to its name here (`train.learning_rate` -> `lr`).
_ALIASES = {
    "learning_rate": "lr",
    "learningrate": "lr",
    "step_size": "lr",
    "bs": "batch_size",
    "batch": "batch_size",
    "batchsize": "batch_size",
    "epoch": "epochs",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "max_epochs": "epochs",
    "opt": "optimizer",
    "optim": "optimizer",
    "lr_schedule": "schedule",
    "scheduler": "schedule",
    "wd": "weight_decay",
    "l2": "weight_decay",
    "clip": "grad_clip_norm",
    "grad_clip": "grad_clip_norm",
    "clip_norm": "grad_clip_norm",
    "max_grad_norm": "grad_clip_norm",
    "warmup": "warmup_epochs",
    "warmup_steps": "warmup_epochs",
    "arch": "name",
    "architecture": "name",
    "network": "name",
    "dropout_rate": "dropout",
    "drop_rate": "dropout",
    "sr": "sample_rate",
    "sampling_rate": "sample_rate",
    "path": "dir",
    "root": "dir",
    "num_mels": "n_mels",
    "n_mel": "n_mels",
    "mels": "n_mels",
    "hop": "hop_ms",
    "hop_length": "hop_ms",
    "window": "window_ms",
    "win_length": "window_ms",
    "frontend": "kind",
    "front_end": "kind",
    "smoothing": "label_smoothing",
    "mixup": "mixup_alpha",
    "precision": "dtype",
    "classes": "classes_file",
}


@dataclasses.dataclass(frozen=True)
class _Rule:
    """What a field may hold: `accepts(value)`, and the same in words for the message."""

    allowed: str
    accepts: Callable[[Any], bool]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(low: int | None = None, high: int | None = None) -> _Rule:
    if low is not None and high is not None:
        return _Rule(f"an integer in [{low}, {high}]", lambda v: _is_int(v) and low <= v <= high)
    if low is not None:
        return _Rule(f"an integer >= {low}", lambda v: _is_int(v) and v >= low)
    return _Rule("an integer", _is_int)


def _number(above: float | None = None, at_least: float | None = None, below: float | None = None):
    """A finite number, > `above` or >= `at_least`, and < `below` when given."""
    words, tests = [], []
    if above is not None:
        words.append(f"> {above:g}")
        tests.append(lambda v: v > above)
    if at_least is not None:
        words.append(f">= {at_least:g}")
        tests.append(lambda v: v >= at_least)
    if below is not None:
        words.append(f"< {below:g}")
        tests.append(lambda v: v < below)
    allowed = "a finite number" + (" " + " and ".join(words) if words else "")
    return _Rule(allowed, lambda v: _is_number(v) and all(test(v) for test in tests))


_FLAG = _Rule("True or False", lambda v: isinstance(v, bool))
_TEXT = _Rule("a string", lambda v: isinstance(v, str))
_PATH = _Rule("a non-empty path", lambda v: isinstance(v, str) and bool(v.strip()))
_INTEGERS = _Rule(
    "a tuple of integers", lambda v: isinstance(v, tuple | list) and all(map(_is_int, v))
)


def _field_rules(min_sample_rate: int) -> dict[str, _Rule]:
    """Every config field's type and range. Fields a module's own check covers (features.*,
    augment.*, model.*) get their type here and their range there; names are checked
    against the modules that define them (see `validate`)."""
    return {
        "seed": _integer(0, 2**62),
        "data.source": _TEXT,
        "data.dir": _TEXT,
        "data.layout": _TEXT,
        "data.classes_file": _PATH,
        "data.data_dir": _TEXT,
        "data.noise_dir": _TEXT,
        "data.cache_dir": _PATH,
        "data.sample_rate": _integer(min_sample_rate),
        "data.clip_seconds": _number(above=0),
        "data.shuffle_buffer": _integer(0),
        "data.cache_mb": _integer(0),
        "data.unknown_fraction": _number(at_least=0),
        "data.silence_fraction": _number(at_least=0),
        "data.train_on_validation": _FLAG,
        "data.synthetic.train_per_word": _integer(1),
        "data.synthetic.validation_per_word": _integer(1),
        "data.synthetic.test_per_word": _integer(1),
        "data.synthetic.noise_level": _number(at_least=0),
        "features.kind": _TEXT,
        "features.window_ms": _number(),
        "features.hop_ms": _number(),
        "features.n_mels": _integer(),
        "features.fmin": _number(),
        "features.fmax": _number(),
        "features.n_mfcc": _integer(),
        "features.branch_mels": _integer(),
        "features.channels": _integer(),
        "features.deltas": _FLAG,
        "features.resize": _INTEGERS,
        "features.normalize": _FLAG,
        "augment.time_shift_ms": _number(),
        "augment.noise_prob": _number(),
        "augment.noise_min": _number(),
        "augment.noise_max": _number(),
        "augment.gain_db": _number(),
        "augment.time_masks": _integer(),
        "augment.time_mask_width": _integer(),
        "augment.freq_masks": _integer(),
        "augment.freq_mask_width": _integer(),
        "augment.mask_from_bin": _integer(),
        "augment.mixup_alpha": _number(at_least=0),
        "augment.speed_change": _number(),
        "augment.pitch_semitones": _number(),
        "augment.reverb_prob": _number(),
        "augment.reverb_rt60_min": _number(),
        "augment.reverb_rt60_max": _number(),
        "augment.band_prob": _number(),
        "augment.eq_prob": _number(),
        "augment.eq_db": _number(),
        "model.name": _TEXT,
        "model.dropout": _number(),
        "model.dtype": _TEXT,
        "model.blocks_per_stage": _integer(),
        "model.widths": _INTEGERS,
        "model.shortcut": _TEXT,
        "model.width_factor": _number(above=0),
        "model.sub_bands": _integer(),
        "model.spatial_dropout": _number(),
        "model.head_units": _integer(),
        "model.tuned_convs": _integer(),
        "model.cnn_branch": _TEXT,
        "model.cnn_branch_weight": _number(above=0, below=1),
        "train.batch_size": _integer(1),
        "train.epochs": _Rule(
            "an integer >= 1 (to test a trained run without training it, use --mode eval)",
            lambda v: _is_int(v) and v >= 1,
        ),
        "train.patience": _integer(1),
        "train.optimizer": _TEXT,
        "train.lr": _number(above=0),
        "train.momentum": _number(at_least=0, below=1),
        "train.nesterov": _FLAG,
        "train.weight_decay": _number(at_least=0),
        "train.grad_clip_norm": _number(at_least=0),
        "train.schedule": _TEXT,
        "train.warmup_epochs": _number(at_least=0),
        "train.decay_epochs": _integer(1),
        "train.decay_factor": _Rule(
            "a finite number > 0 and <= 1", lambda v: _is_number(v) and 0 < v <= 1
        ),
        "train.label_smoothing": _number(at_least=0, below=1),
        "train.split_step": _TEXT,
        "train.init_from": _TEXT,
        "eval.batch_size": _integer(1),
        "eval.split": _TEXT,
        "eval.step": _integer(-1),
        "checkpoint.keep_latest": _integer(1),
        "predict.top_k": _integer(1),
        "predict.hop_ms": _number(above=0),
        "predict.average_ms": _number(at_least=0),
        "predict.threshold": _Rule("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1),
        "predict.suppress_ms": _number(at_least=0),
        "predict.plot": _FLAG,
    }


class _Problems:
    """The problems found so far, and the keys they concern."""

    def __init__(self):
        self.lines: list[str] = []
        self._failed: set[str] = set()

    def add(self, keys: Iterable[str], line: str) -> None:
        self.lines.append(line)
        self._failed.update(keys)

    def clear(self, *keys: str) -> bool:
        """Whether no problem concerns these keys ("features" covers "features.kind")."""
        return not any(_overlap(key, failed) for key in keys for failed in self._failed)

    def run(self, keys: tuple[str, ...], check: Callable[[], Any]) -> Any:
        """`check()`, skipped (None) when a field it reads has a problem already; its
        UserError becomes a problem of `keys`."""
        if not self.clear(*keys):
            return None
        try:
            return check()
        except UserError as e:
            self.add(keys, str(e))
            return None


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """The dotted names of every leaf field of `config` ("train.lr", ...)."""
    names = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            names += field_names(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def closest_fields(key: str, fields: Iterable[str]) -> list[str]:
    """The existing fields a misspelled or misplaced `key` most likely meant (often none or
    one): a synonym (train.learning_rate -> train.lr), the same name in other groups
    (model.batch_size -> eval.batch_size, train.batch_size), or a close spelling
    (train.epoch -> train.epochs)."""
    fields = list(fields)
    group, _, leaf = key.rpartition(".")

    def in_group(name: str) -> str:
        return f"{group}.{name}" if group else name

    names = [leaf, _ALIASES[leaf.lower()]] if leaf.lower() in _ALIASES else [leaf]
    for name in names:
        if in_group(name) in fields and in_group(name) != key:
            return [in_group(name)]
    for name in names:
        elsewhere = [f for f in fields if f.rpartition(".")[2] == name and f != key]
        if elsewhere:
            return elsewhere
    siblings = [f.rpartition(".")[2] for f in fields if f.rpartition(".")[0] == group]
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if close:
        return [in_group(close[0])]
    return difflib.get_close_matches(key, fields, n=1, cutoff=0.75)


def _hint(key: str, fields: Iterable[str]) -> str:
    closest = closest_fields(key, fields)
    return f" (did you mean {' or '.join(f'config.{c}' for c in closest)}?)" if closest else ""


def _value(config, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def validate(config: ml_collections.ConfigDict, mode: str = "train") -> None:
    """Raises UserError with one line per problem of `config`; see the module docstring.

    mode: main.py's --mode; rules of training alone (the batch over the devices, the
    warmup) apply to "train" only: eval and predict take any device count.
    """
    # Imported here (see the module docstring). sources and augment (below) import
    # TensorFlow, about 6 s here, though the checks used from them are pure Python.
    from speechjax import audio, frontend_settings, optim, sources, train_state
    from speechjax.models import registry

    problems = _Problems()
    rules = _field_rules(audio.MIN_SAMPLE_RATE)
    present = field_names(config)
    for key in present:
        if key not in rules:
            problems.add(
                [key],
                f"config.{key} is not a field of speechjax's config{_hint(key, rules)}; every "
                "field is listed, with a comment, in configs/default.py.",
            )
    for key, rule in rules.items():
        if key not in present:
            problems.add(
                [key],
                f"config.{key} is missing: start config files from configs/default.py "
                "(default.get_config()), which sets every field.",
            )
        elif not rule.accepts(_value(config, key)):
            problems.add([key], f"config.{key}={_value(config, key)!r}: must be {rule.allowed}.")
    names = {
        "data.source": sources.SOURCES,
        "data.layout": ("auto", *sources.LAYOUTS),
        "features.kind": frontend_settings.KINDS,
        "model.name": registry.MODEL_NAMES,
        "train.optimizer": optim.OPTIMIZERS,
        "train.schedule": optim.SCHEDULES,
        "train.split_step": train_state.SPLIT_STEP_CHOICES,
        "eval.split": sources.SPLITS,
    }
    for key, allowed in names.items():
        if problems.clear(key) and _value(config, key) not in allowed:
            problems.add(
                [key], f"config.{key}={_value(config, key)!r}: must be one of {', '.join(allowed)}."
            )
    _check_across_fields(config, problems, training=mode == "train")
    if problems.lines:
        raise UserError("\n".join(problems.lines))


def _check_across_fields(
    config: ml_collections.ConfigDict, problems: _Problems, training: bool
) -> None:
    """The modules' own checks and the rules between fields. Each runs only when every
    field it reads passed the checks above: then it meets the types it expects."""
    from speechjax import augment, frontend_settings, sharding, synthetic
    from speechjax.models import registry

    data, train = config.data, config.train
    if problems.clear("data.source", "data.dir") and data.source == "folder" and not data.dir:
        problems.add(
            ["data.dir"],
            "config.data.dir='': data.source='folder' needs the dataset's root folder.",
        )
    if problems.clear("data.source") and data.source == "synthetic":
        problems.run(
            ("data.synthetic", "data.sample_rate", "data.clip_seconds"),
            lambda: synthetic.check_config(data),
        )
    frontend = ("features", "data.sample_rate", "data.clip_seconds")
    clip_samples = 0
    if problems.clear(*frontend):
        clip_samples = round(data.clip_seconds * data.sample_rate)
    input_shape = problems.run(
        frontend,
        lambda: frontend_settings.output_shape(config.features, clip_samples, data.sample_rate),
    )
    # The speech_embedding front end pads every clip; the model checks the length it needs.
    if input_shape is not None and config.features.kind != "speech_embedding":
        kind = config.features.kind
        window = (
            frontend_settings.SEED_FRAME
            if kind == "seed"
            else round(config.features.window_ms * data.sample_rate / 1000)
        )
        if clip_samples < window:
            set_by = "" if kind == "seed" else ", features.window_ms"
            problems.add(
                frontend,
                f"config.data.clip_seconds={data.clip_seconds!r} gives clips of {clip_samples} "
                f"samples, shorter than one analysis window of the {kind} front end ({window} "
                f"samples{set_by}).",
            )
    needed = registry.REQUIRED_FEATURES.get(config.model.name) if problems.clear("model") else None
    if needed and problems.clear("features") and config.features.kind != needed:
        problems.add(
            ["features.kind"],
            f"config.model.name={config.model.name!r} runs a pretrained network on its own "
            f"front end: set features.kind={needed!r} (got {config.features.kind!r}).",
        )
    if needed and problems.clear("features") and config.features.normalize:
        problems.add(
            ["features.normalize"],
            f"config.model.name={config.model.name!r}: the pretrained network expects its "
            "front end's own scale; set features.normalize=False.",
        )
    branch_mels = config.features.branch_mels
    if branch_mels and problems.clear("model") and not (needed and config.model.cnn_branch):
        problems.add(
            ["features.branch_mels"],
            f"config.features.branch_mels={branch_mels!r} feeds the CNN of model.cnn_branch, "
            "which this model has not: set model.cnn_branch (with model.name="
            "'speech_embedding') or features.branch_mels=0.",
        )
    # Without an input shape (the front end's settings failed), the model's own options.
    problems.run(("model",), lambda: registry.check_config(config.model, input_shape))
    problems.run(("augment",), lambda: augment.check_config(config.augment))
    from_bin = config.augment.mask_from_bin
    if input_shape is not None and problems.clear("augment") and from_bin >= input_shape[1]:
        problems.add(
            ["augment.mask_from_bin"],
            f"config.augment.mask_from_bin={from_bin}: the front end gives {input_shape[1]} "
            f"bins (0-{input_shape[1] - 1}); SpecAugment would mask none of them.",
        )
    if not training:
        return
    problems.run(
        ("train.batch_size",),
        lambda: sharding.check_batch_size(train.batch_size, "train.batch_size"),
    )
    warmup = ("train.warmup_epochs", "train.epochs")
    if problems.clear(*warmup) and train.warmup_epochs > train.epochs:
        problems.add(
            warmup,
            f"config.train.warmup_epochs={train.warmup_epochs!r}: must be <= "
            f"train.epochs={train.epochs} (the warmup would outlast the run).",
        )


def check_workdir(workdir: str, flag: str = "--workdir") -> None:
    """Raises UserError when `workdir` cannot hold a run: it is a file (or a broken link), a
    folder above it is a file, or the folder where it is (or would be made) is not writable.
    Creates nothing. `flag` names the path in the messages (--output: a folder written to)."""
    path = os.path.abspath(workdir)
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if os.path.islink(existing) and not os.path.exists(existing):
        raise UserError(
            f"{flag} {workdir}: {existing} is a broken symbolic link; remove it or choose "
            f"another {flag}."
        )
    if not os.path.isdir(existing):
        why = "not a folder" if existing == path else "so no folder can be made under it"
        raise UserError(f"{flag} {workdir}: {existing} is a file, {why}; choose another {flag}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {workdir}: {existing} is not writable by this user; choose a folder "
            "you can write to, or change its permissions."
        )
