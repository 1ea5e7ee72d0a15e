"""A trained model from its checkpoint alone: restore, then waveforms -> probabilities.

`load_model(workdir, step)` reads a checkpoint's run metadata and only its parameters and
BatchNorm statistics (no optimiser state, no training session, no `train.*` setting),
onto the default device whatever device count trained it. `Classifier` adds the JAX front
end (`speechjax.jax_frontend`) in front of the network, in one jitted function that the
serving modes use: `--mode predict` directly, and export as the function it serializes.

    classifier = Classifier.from_workdir("runs/resnet32")
    probabilities = classifier.predict(waveforms)   # float32 [B, clip_samples] at 16 kHz
"""

import dataclasses
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from speechjax import checkpoints, frontend_settings, jax_frontend, models
from speechjax.run import RunMetadata, Workdir

# Batch sizes the jitted function is compiled for: inputs are padded up to the next one,
# so any number of clips costs at most a handful of compilations.
_BATCH_SIZES = (1, 8, 64)


@flax.struct.dataclass
class ModelVariables:
    """What inference needs of a train state: the same two fields, nothing else."""

    params: nnx.State
    # BatchNorm running statistics (and the dropout RNG state eval mode ignores).
    model_state: nnx.State


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A checkpoint's network in eval mode: graph, variables, metadata, step."""

    graph: nnx.GraphDef
    variables: ModelVariables
    metadata: RunMetadata
    step: int

    def logits(self, variables: ModelVariables, spectrograms: jax.Array) -> jax.Array:
        """[B, T, F, C] normalised features -> float32 [B, num_classes] (pure, jittable)."""
        return nnx.merge(self.graph, variables.params, variables.model_state)(spectrograms)


def input_shape(metadata: RunMetadata) -> tuple[int, int, int]:
    return frontend_settings.output_shape(
        ml_collections.ConfigDict(metadata.features), metadata.clip_samples, metadata.sample_rate
    )


def abstract_model(metadata: RunMetadata) -> tuple[nnx.GraphDef, ModelVariables]:
    """The eval-mode graph and the variables' shapes, built from the metadata (no FLOPs)."""

    def build() -> nnx.Module:
        model = models.create_model(
            ml_collections.ConfigDict(metadata.model),
            len(metadata.class_names),
            input_shape(metadata),
            nnx.Rngs(0),
        )
        models.set_training(model, False)
        return model

    graph, params, model_state = nnx.split(nnx.eval_shape(build), nnx.Param, ...)
    return graph, ModelVariables(params=params, model_state=model_state)


def load_model(workdir: str, step: int = -1) -> TrainedModel:
    """Checkpoint `step` (-1: the best) of `workdir`, for inference; UserError if none."""
    manager = checkpoints.existing_manager(Workdir(workdir))
    step = checkpoints.choose_step(manager, step)
    metadata = checkpoints.restore_run(manager, step)
    graph, template = abstract_model(metadata)
    restored = checkpoints.restore_model_variables(
        manager, step, {"params": template.params, "model_state": template.model_state}
    )
    variables = ModelVariables(params=restored["params"], model_state=restored["model_state"])
    return TrainedModel(graph, variables, metadata, step)


class Classifier:
    """A trained model with its front end: raw one-clip waveforms -> class probabilities."""

    def __init__(self, model: TrainedModel):
        self.model = model
        self.metadata = model.metadata
        self._frontend = jax_frontend.make_frontend(
            self.metadata.features,
            self.metadata.sample_rate,
            self.metadata.clip_samples,
            self.metadata.norm_stats if self.metadata.features.get("normalize", True) else None,
        )
        self._jitted = jax.jit(self._probabilities)

    @classmethod
    def from_workdir(cls, workdir: str, step: int = -1) -> "Classifier":
        return cls(load_model(workdir, step))

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.metadata.class_names

    @property
    def sample_rate(self) -> int:
        return self.metadata.sample_rate

    @property
    def clip_samples(self) -> int:
        return self.metadata.clip_samples

    @property
    def step(self) -> int:
        return self.model.step

    def _probabilities(self, variables: ModelVariables, waveforms: jax.Array) -> jax.Array:
        with jax.named_scope(jax_frontend.SCOPE):
            features = self._frontend(waveforms)
        logits = self.model.logits(variables, features)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    def probabilities_fn(self) -> Callable[[jax.Array], jax.Array]:
        """The pure function waveforms float32 [B, clip_samples] -> probabilities [B, classes],
        with the trained variables as constants (what export serializes)."""
        variables = self.model.variables
        return lambda waveforms: self._probabilities(variables, waveforms)

    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        """float32 [B, clip_samples] in [-1, 1] at `sample_rate` -> float32 [B, classes]."""
        waveforms = np.asarray(waveforms, np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] != self.clip_samples:
            raise ValueError(
                f"expected waveforms [batch, {self.clip_samples}], got {waveforms.shape}; "
                "use fit_clip() to pad or crop each one"
            )
        chunk = _BATCH_SIZES[-1]
        outputs = []
        for start in range(0, len(waveforms), chunk):
            batch = waveforms[start : start + chunk]
            size = next(b for b in _BATCH_SIZES if b >= len(batch))
            padded = np.zeros((size, self.clip_samples), np.float32)
            padded[: len(batch)] = batch
            outputs.append(np.asarray(self._jitted(self.model.variables, padded))[: len(batch)])
        if not outputs:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(outputs)


def fit_clip(waveform: np.ndarray, clip_samples: int) -> np.ndarray:
    """One waveform -> exactly clip_samples: the centre window if longer, zero-padded at the
    end if shorter (what evaluation does with such clips)."""
    start = max(len(waveform) - clip_samples, 0) // 2
    window = waveform[start : start + clip_samples]
    return np.pad(window, (0, clip_samples - len(window))).astype(np.float32, copy=False)
