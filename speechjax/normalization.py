"""Per-channel normalisation statistics of the training spectrograms.

Computed once from the training split (`input_pipeline`), stored in every checkpoint as
part of the run metadata (`speechjax.run`), and used by every front end: tf.data in
training and evaluation, JAX in inference and export. `norm_stats.json` in a workdir is
a copy for people; nothing reads it back.
"""

import dataclasses
import json
import os

from speechjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class NormStats:
    """Per-channel mean and standard deviation of the training spectrograms."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        try:
            mean = tuple(float(m) for m in d["mean"])
            std = tuple(float(s) for s in d["std"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"Normalisation statistics need lists 'mean' and 'std' of numbers, got {d!r}."
            ) from e
        if len(mean) != len(std) or not mean:
            raise UserError(f"Normalisation statistics: {len(mean)} means but {len(std)} stds.")
        return cls(mean, std)

    @classmethod
    def identity(cls, channels: int) -> "NormStats":
        """Statistics that leave spectrograms unchanged (features.normalize=False)."""
        return cls((0.0,) * channels, (1.0,) * channels)

    def save(self, path: str) -> None:
        """Writes JSON atomically, so a reader never sees half a file."""
        partial = f"{path}.partial-{os.getpid()}"
        with open(partial, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(partial, path)
