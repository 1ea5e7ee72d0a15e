"""A run's workdir: where each file goes, and the run metadata every checkpoint carries.

`RunMetadata` is what defines a trained model's input and output: the model config, the
front-end config, sample rate, clip length, class names and normalisation statistics. It
is stored in every checkpoint (the one source of truth), so eval, predict and export
rebuild the network and front end from the checkpoint alone, and a setting that
contradicts it is refused (`conflicts`) instead of silently giving wrong numbers.
"""

import copy
import dataclasses
import json
import os
from typing import Any

import ml_collections
from absl import logging

from speechjax.errors import UserError
from speechjax.normalization import NormStats

# Config groups that define the model; with DATA_FIELDS, a checkpoint fixes them all.
DEFINING_GROUPS = ("model", "features")
DATA_FIELDS = ("sample_rate", "clip_seconds")
# Data settings that say where clips come from: the same values mean "the training data".
SOURCE_FIELDS = (
    "source",
    "dir",
    "layout",
    "classes_file",
    "data_dir",
    "cache_dir",
    "synthetic",
    "train_on_validation",
)
# model.* and features.* fields added after checkpoints had been written, each with the value
# that rebuilds what such a checkpoint holds: an older checkpoint's config is read with them.
FEATURES_FIELDS_ADDED = {"branch_mels": 0}
MODEL_FIELDS_ADDED = {
    "head_units": 256,
    "tuned_convs": 0,
    "cnn_branch": "",
    "cnn_branch_weight": 0.3,
}


@dataclasses.dataclass(frozen=True)
class Workdir:
    """The files of one run (`--workdir`)."""

    path: str

    def _join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def checkpoints(self) -> str:
        return os.path.abspath(self._join("checkpoints"))

    @property
    def config_json(self) -> str:
        return self._join("config.json")

    @property
    def norm_stats(self) -> str:
        return self._join("norm_stats.json")

    @property
    def results(self) -> str:
        return self._join("results.json")

    @property
    def history_plot(self) -> str:
        return self._join("history.png")

    @property
    def predictions(self) -> str:
        return self._join("predictions.json")

    @property
    def export_dir(self) -> str:
        return self._join("export")

    def eval_report(self, split: str, data_tag: str = "") -> str:
        """eval_<split>.json for the training data; eval_<split>-<tag>.json for other data."""
        suffix = f"-{data_tag}" if data_tag else ""
        return self._join(f"eval_{split}{suffix}.json")

    def confusion_plot(self, split: str, data_tag: str = "") -> str:
        suffix = f"-{data_tag}" if data_tag else ""
        return self._join(f"confusion_{split}{suffix}.png")


def _plain(value: Any) -> Any:
    """JSON's view of a config value (tuples become lists), so values compare as stored."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    return json.loads(json.dumps(value))


def _group(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
    return _plain(config[name])


@dataclasses.dataclass(frozen=True)
class RunMetadata:
    """What defines a trained model's input and output; stored in every checkpoint."""

    model: dict[str, Any]
    features: dict[str, Any]
    sample_rate: int
    clip_seconds: float
    class_names: tuple[str, ...]
    norm_stats: NormStats
    # The training data's settings (source, folder...), to tell it from other data.
    data: dict[str, Any]

    @classmethod
    def from_config(
        cls, config: ml_collections.ConfigDict, class_names, norm_stats: NormStats
    ) -> "RunMetadata":
        return cls(
            model=_group(config, "model"),
            features=_group(config, "features"),
            sample_rate=int(config.data.sample_rate),
            clip_seconds=float(config.data.clip_seconds),
            class_names=tuple(class_names),
            norm_stats=norm_stats,
            data={k: _plain(config.data[k]) for k in SOURCE_FIELDS if k in config.data},
        )

    @property
    def trained_on_validation(self) -> bool:
        """Whether it was the final fit (data.train_on_validation; absent in older runs)."""
        return bool(self.data.get("train_on_validation", False))

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["class_names"] = list(self.class_names)
        record["norm_stats"] = self.norm_stats.to_dict()
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "RunMetadata":
        return cls(
            model={**MODEL_FIELDS_ADDED, **record["model"]},
            features={**FEATURES_FIELDS_ADDED, **record["features"]},
            sample_rate=int(record["sample_rate"]),
            clip_seconds=float(record["clip_seconds"]),
            class_names=tuple(record["class_names"]),
            norm_stats=NormStats.from_dict(record["norm_stats"]),
            data=dict(record.get("data", {})),
        )

    def defining_values(self) -> dict[str, Any]:
        """{"model.name": ..., "features.n_mels": ..., "data.sample_rate": ...}."""
        values = {
            f"{group}.{key}": value
            for group in DEFINING_GROUPS
            for key, value in getattr(self, group).items()
        }
        values.update({f"data.{key}": getattr(self, key) for key in DATA_FIELDS})
        return values

    def conflicts(self, config: ml_collections.ConfigDict, keys=None) -> list[str]:
        """'key: checkpoint A, config B' for each defining field (of `keys`, if given) that
        `config` sets differently."""
        found = []
        for key, stored in self.defining_values().items():
            if keys is not None and key not in keys:
                continue
            group, field = key.split(".")
            if field not in config[group]:
                continue
            given = _plain(config[group][field])
            if given != stored:
                found.append(f"{key}: checkpoint {stored!r}, given {given!r}")
        return found

    def check_overrides(self, config: ml_collections.ConfigDict, overrides, where: str) -> None:
        """UserError naming every command-line override (`overrides`: config keys) that
        contradicts this checkpoint; differing values of the config file itself give way to
        the checkpoint's (`apply_to`), with a warning."""
        conflicts = self.conflicts(config, keys=set(overrides))
        if conflicts:
            raise UserError(
                f"The checkpoint in {where} fixes these settings, and the command line "
                "contradicts it: " + "; ".join(conflicts) + ". Drop those overrides (the model "
                "and front end come from the checkpoint), or train a new model in a new "
                "--workdir."
            )
        replaced = self.conflicts(config)
        if replaced:
            logging.warning("Using the checkpoint's settings, not the config file's: %s", replaced)

    def apply_to(
        self, config: ml_collections.ConfigDict, overrides=()
    ) -> ml_collections.ConfigDict:
        """A copy of `config` whose model, front end, sample rate and clip length are these,
        and whose data settings are the training data's, except those set on the command
        line (`overrides`: config keys such as "data.dir"), which select other data."""
        config = copy.deepcopy(config)
        overridden = set(overrides)
        with config.unlocked():
            for key, value in self.defining_values().items():
                group, field = key.split(".")
                current = config[group].get(field)
                config[group][field] = tuple(value) if isinstance(current, tuple) else value
            for field, value in self.data.items():
                if field not in config.data or any(
                    k == f"data.{field}" or k.startswith(f"data.{field}.") for k in overridden
                ):
                    continue
                if isinstance(config.data[field], ml_collections.ConfigDict):
                    for sub, sub_value in value.items():
                        if f"data.{field}.{sub}" not in overridden and sub in config.data[field]:
                            config.data[field][sub] = sub_value
                else:
                    current = config.data[field]
                    config.data[field] = tuple(value) if isinstance(current, tuple) else value
            if "data.dir" in overridden and "data.layout" not in overridden:
                # The layout described the training folder; another folder is detected anew.
                config.data.layout = "auto"
        return config

    def same_data(self, config: ml_collections.ConfigDict) -> bool:
        """Whether `config` reads the data this model was trained on."""
        return all(_plain(config.data[k]) == v for k, v in self.data.items() if k in config.data)
