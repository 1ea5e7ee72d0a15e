"""Optax optimiser and learning-rate schedule built from `config.train`."""

import jax
import ml_collections
import optax

from speechjax.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


def learning_rate_schedule(train_config: ml_collections.ConfigDict, steps_per_epoch: int):
    """Returns step -> learning rate for `train.schedule`, counted in optimizer steps."""
    lr = train_config.lr
    warmup_steps = int(train_config.warmup_epochs * steps_per_epoch)
    total_steps = max(train_config.epochs * steps_per_epoch, warmup_steps + 1)
    if train_config.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif train_config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup_steps, decay_steps=total_steps
        )
    elif train_config.schedule == "step":
        schedule = optax.exponential_decay(
            init_value=lr,
            transition_steps=max(1, train_config.decay_epochs * steps_per_epoch),
            decay_rate=train_config.decay_factor,
            staircase=True,
        )
    else:
        raise UserError(
            f"config.train.schedule={train_config.schedule!r} is not one of {SCHEDULES}."
        )
    if warmup_steps == 0:
        return schedule
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, schedule], [warmup_steps])


def _decay_mask(params):
    # Decay weight matrices and kernels only: biases and BatchNorm scales are not
    # regularised, the usual practice for CNNs.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(
    train_config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
    """The optimiser chain: optional clipping, then the chosen update rule."""
    schedule = learning_rate_schedule(train_config, steps_per_epoch)
    decay = train_config.weight_decay
    name = train_config.optimizer
    if name == "adamw":
        update = optax.adamw(schedule, weight_decay=decay, mask=_decay_mask)
    elif name == "adam":
        update = optax.adam(schedule)
    elif name == "sgd":
        update = optax.sgd(schedule, momentum=train_config.momentum, nesterov=train_config.nesterov)
    else:
        raise UserError(f"config.train.optimizer={name!r} is not one of {OPTIMIZERS}.")
    chain = []
    if train_config.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(train_config.grad_clip_norm))
    if decay > 0 and name != "adamw":
        # Classic L2 regularisation for adam and sgd: added to the gradient before the update.
        chain.append(optax.add_decayed_weights(decay, mask=_decay_mask))
    chain.append(update)
    return optax.chain(*chain)
