"""The train state and the pure train and eval steps that jit compiles.

The model is a Flax NNX module, split once into a graph definition (static: layer
structure and train/eval mode) and array state (parameters, BatchNorm statistics, dropout
RNG counters). The steps merge them back, so they stay pure functions of arrays, which is
what `jax.jit` with shardings and buffer donation wants.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from speechjax import models
from speechjax.batch_keys import LABEL, MASK, SPECTROGRAM

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


def _build_model(
    config: ml_collections.ConfigDict, num_classes: int, input_shape: tuple[int, int, int]
) -> nnx.Module:
    # "rbg" keys for initialisation: threefry's init graph compiles for seconds on CPU.
    params_key = jax.random.key(config.seed, impl="rbg")
    rngs = nnx.Rngs(params=params_key, dropout=config.seed + 1)
    model = models.create_model(config.model, num_classes, input_shape, rngs)
    models.set_training(model, True)
    return model


def abstract_model_variables(
    config: ml_collections.ConfigDict, num_classes: int, input_shape: tuple[int, int, int]
) -> dict[str, nnx.State]:
    """{"params", "model_state"} of the model, as shapes and dtypes only (nothing computed):
    the template for reading a checkpoint's weights."""
    _, params, model_state = nnx.split(
        nnx.eval_shape(lambda: _build_model(config, num_classes, input_shape)), nnx.Param, ...
    )
    return {"params": params, "model_state": model_state}


def create_train_state(
    config: ml_collections.ConfigDict,
    num_classes: int,
    input_shape: tuple[int, int, int],
    tx: optax.GradientTransformation,
) -> tuple[ModelDef, TrainState]:
    """Initialises the model from `config.seed` and the optimiser state for it."""
    build = functools.partial(_build_model, config, num_classes, input_shape)
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


def _make_batch_loss(config: ml_collections.ConfigDict, num_classes: int):
    """`batch_loss(model, step, batch) -> (mean loss, (per-example loss, logits))`: the
    forward pass and loss of a train step (mixup included), shared by both step forms."""
    label_smoothing = config.train.label_smoothing
    mixup_alpha = config.augment.mixup_alpha
    mixup_key = jax.random.key(config.seed + 2)

    def batch_loss(model, step, batch):
        images, labels, mask = batch[SPECTROGRAM], batch[LABEL], batch[MASK]
        if mixup_alpha > 0:
            # Mixup pairs each example with another of the same batch; its randomness
            # comes from the step number so a resumed run mixes the same pairs.
            key_lam, key_perm = jax.random.split(jax.random.fold_in(mixup_key, step))
            lam = jax.random.beta(key_lam, mixup_alpha, mixup_alpha)
            partner = jax.random.permutation(key_perm, labels.shape[0])
            images = lam * images + (1 - lam) * _rows(images, partner)
        logits, trained_logits = _training_outputs(model(images))

        def loss_for(targets):
            # One cross-entropy per member of a pooled model (models.pooled), summed: each
            # member learns as if alone.
            members = _cross_entropy(trained_logits, targets[:, None], num_classes, label_smoothing)
            return jnp.sum(members, axis=-1)

        loss = loss_for(labels)
        if mixup_alpha > 0:
            loss = lam * loss + (1 - lam) * loss_for(_rows(labels, partner))
        mean_loss = jnp.sum(loss * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return mean_loss, (loss, logits)

    return batch_loss


def _training_outputs(outputs) -> tuple[jax.Array, jax.Array]:
    """A training-mode forward pass -> (logits [B, C] for the metrics, the logits the loss
    trains [B, K, C]): K = 1 for a plain network; a pooled model gives its members'."""
    if isinstance(outputs, tuple):
        return outputs
    return outputs, outputs[:, None]


def _rows(x: jax.Array, rows: jax.Array) -> jax.Array:
    """x[rows], laid out as x: on the mesh's explicitly sharded batch axis ("data") JAX
    cannot infer a gather's output sharding and needs it said."""
    return x.at[rows].get(out_sharding=jax.typeof(x).sharding)


def _apply_gradients(state: TrainState, tx, grads, model_state) -> TrainState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        model_state=model_state,
        opt_state=opt_state,
    )


def make_train_step(
    model_def: ModelDef,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    num_classes: int,
) -> Callable[[TrainState, dict], tuple[TrainState, Metrics]]:
    """Returns the pure train step: forward, backward, optimiser update."""
    batch_loss = _make_batch_loss(config, num_classes)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, Metrics]:
        model = nnx.merge(model_def.train_graph, state.params, state.model_state)
        # nnx.grad (not jax.grad): it lets BatchNorm update its statistics on the merged
        # model, and differentiates with respect to the nnx.Param variables only.
        grads, (loss, logits) = nnx.grad(
            lambda model: batch_loss(model, state.step, batch), has_aux=True
        )(model)
        _, _, model_state = nnx.split(model, nnx.Param, ...)
        new_state = _apply_gradients(state, tx, grads, model_state)
        return new_state, _masked_sums(loss, logits, batch[LABEL], batch[MASK])

    return train_step


SPLIT_STEP_CHOICES = ("auto", "on", "off")


def use_split_step(config: ml_collections.ConfigDict) -> bool:
    """Whether training runs `make_split_train_step` (config.train.split_step)."""
    choice = config.train.split_step
    if choice == "auto":
        # Faster on the CPU for the BatchNorm networks (see below); AlexNet, whose few large
        # layers have no residual stream to recompute, only pays the second dispatch (35%
        # slower). Not measured on GPUs, where one program stays the default.
        return jax.default_backend() == "cpu" and config.model.name != "alexnet"
    return choice == "on"


def make_split_train_step(
    model_def: ModelDef,
    tx: optax.GradientTransformation,
    config: ml_collections.ConfigDict,
    num_classes: int,
):
    """The train step of `make_train_step` as two pure functions to jit separately:
    `forward(state, batch) -> residuals` and `backward(state, residuals, batch) ->
    (state, metrics)`.

    Why: in one XLA CPU program the fusion pass folds the forward's elementwise chain
    (BatchNorm, ReLU, residual add) into the copies that transpose each activation for its
    kernel-gradient convolution, recomputing the residual stream back to the start of each
    stage; between two programs the activations are stored outputs that the backward only
    reads (benchmarks/split_step.py: ResNet-32 16% and ResNet50 31% faster per step on a
    2-core CPU; AlexNet 35% slower).
    """
    batch_loss = _make_batch_loss(config, num_classes)

    def loss_of(params, model_state, step, batch):
        model = nnx.merge(model_def.train_graph, params, model_state)
        mean_loss, aux = batch_loss(model, step, batch)
        return mean_loss, (aux, nnx.split(model, nnx.Param, ...)[2])

    def forward(state: TrainState, batch: dict):
        # The vjp function is a pytree of the residuals: returned, they are materialised.
        # model_state is an argument too (its gradient unused): NNX refuses to update
        # BatchNorm statistics that come from outside the traced function.
        _, vjp_fn, aux = jax.vjp(
            lambda params, model_state: loss_of(params, model_state, state.step, batch),
            state.params,
            state.model_state,
            has_aux=True,
        )
        return vjp_fn, aux

    def backward(state: TrainState, residuals, batch: dict) -> tuple[TrainState, Metrics]:
        vjp_fn, ((loss, logits), model_state) = residuals
        grads, _ = vjp_fn(jnp.ones((), jnp.float32))
        new_state = _apply_gradients(state, tx, grads, model_state)
        return new_state, _masked_sums(loss, logits, batch[LABEL], batch[MASK])

    return forward, backward


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
