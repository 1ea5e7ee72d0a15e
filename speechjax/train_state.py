"""The train state and the pure train and eval steps that jit compiles.

The model is a Flax NNX module, split once into a graph definition (static: layer
structure and train/eval mode) and array state (parameters, BatchNorm statistics, dropout
RNG counters). The steps merge them back, so they stay pure functions of arrays, which is
what `jax.jit` with shardings and buffer donation wants.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from speechjax import models
from speechjax.input_pipeline import LABEL, MASK, SPECTROGRAM

Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State
    # BatchNorm running statistics and the dropout RNG counters.
    model_state: nnx.State
    opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static halves of the model: one graph per mode, since the mode is static."""

    train_graph: nnx.GraphDef
    eval_graph: nnx.GraphDef


def create_train_state(
    config: ml_collections.ConfigDict,
    num_classes: int,
    input_shape: tuple[int, int, int],
    tx: optax.GradientTransformation,
) -> tuple[ModelDef, TrainState]:
    """Initialises the model from `config.seed` and the optimiser state for it."""

    def build() -> nnx.Module:
        # "rbg" keys for initialisation: threefry's init graph compiles for seconds on CPU.
        params_key = jax.random.key(config.seed, impl="rbg")
        rngs = nnx.Rngs(params=params_key, dropout=config.seed + 1)
        model = models.create_model(config.model, num_classes, input_shape, rngs)
        models.set_training(model, True)
        return model

    # The graphs come from an abstract model (shapes only); the arrays from one compiled
    # init, since eager initialisation compiles every random draw separately (seconds each
    # on a CPU).
    abstract = nnx.eval_shape(build)
    train_graph, _, _ = nnx.split(abstract, nnx.Param, ...)
    models.set_training(abstract, False)
    eval_graph, _, _ = nnx.split(abstract, nnx.Param, ...)

    @jax.jit
    def init() -> TrainState:
        _, params, model_state = nnx.split(build(), nnx.Param, ...)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            model_state=model_state,
            opt_state=tx.init(params),
        )

    return ModelDef(train_graph, eval_graph), init()


def _cross_entropy(logits, labels, num_classes: int, label_smoothing: float):
    targets = jax.nn.one_hot(labels, num_classes)
    if label_smoothing > 0:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def _masked_sums(loss, logits, labels, mask) -> Metrics:
    # Sums, not means: epochs add them up and divide by the number of real examples,
    # so padding and uneven last batches never skew loss or accuracy.
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(loss * mask),
        "correct_sum": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }


def make_train_step(
    model_def: ModelDef,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    num_classes: int,
) -> Callable[[TrainState, dict], tuple[TrainState, Metrics]]:
    """Returns the pure train step: forward, backward, optimiser update."""
    label_smoothing = config.train.label_smoothing
    mixup_alpha = config.augment.mixup_alpha
    mixup_key = jax.random.key(config.seed + 2)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, Metrics]:
        images, labels, mask = batch[SPECTROGRAM], batch[LABEL], batch[MASK]
        if mixup_alpha > 0:
            # Mixup pairs each example with another of the same batch; its randomness
            # comes from the step number so a resumed run mixes the same pairs.
            key_lam, key_perm = jax.random.split(jax.random.fold_in(mixup_key, state.step))
            lam = jax.random.beta(key_lam, mixup_alpha, mixup_alpha)
            partner = jax.random.permutation(key_perm, labels.shape[0])
            images = lam * images + (1 - lam) * images[partner]

        model = nnx.merge(model_def.train_graph, state.params, state.model_state)

        def loss_fn(model):
            logits = model(images)
            loss = _cross_entropy(logits, labels, num_classes, label_smoothing)
            if mixup_alpha > 0:
                partner_loss = _cross_entropy(logits, labels[partner], num_classes, label_smoothing)
                loss = lam * loss + (1 - lam) * partner_loss
            mean_loss = jnp.sum(loss * mask) / jnp.maximum(jnp.sum(mask), 1.0)
            return mean_loss, (loss, logits)

        # nnx.grad (not jax.grad): it lets BatchNorm update its statistics on the merged
        # model, and differentiates with respect to the nnx.Param variables only.
        grads, (loss, logits) = nnx.grad(loss_fn, has_aux=True)(model)
        _, params, model_state = nnx.split(model, nnx.Param, ...)
        updates, opt_state = tx.update(grads, state.opt_state, params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(params, updates),
            model_state=model_state,
            opt_state=opt_state,
        )
        return new_state, _masked_sums(loss, logits, labels, mask)

    return train_step


def make_eval_step(eval_graph: nnx.GraphDef, num_classes: int) -> Callable[[Any, dict], Metrics]:
    """Returns the pure eval step: loss sums, accuracy sums and the predicted classes.

    `state` is anything with `params` and `model_state`: a TrainState, or the variables
    inference restores without an optimiser (`speechjax.inference.ModelVariables`).
    """

    def eval_step(state, batch: dict) -> Metrics:
        labels, mask = batch[LABEL], batch[MASK]
        model = nnx.merge(eval_graph, state.params, state.model_state)
        logits = model(batch[SPECTROGRAM])
        loss = _cross_entropy(logits, labels, num_classes, 0.0)
        metrics = _masked_sums(loss, logits, labels, mask)
        metrics["predictions"] = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return metrics

    return eval_step
