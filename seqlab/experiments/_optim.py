"""The optimizers and learning-rate schedules a config may name: one table each.

``OPTIMIZERS`` and ``SCHEDULES`` are what ``train.optimizer`` and ``train.schedule``
accept (the config validator reads their keys) and what ``make_optimizer`` builds (optax).
"""

from __future__ import annotations

import optax

# train.schedule -> (train config -> learning rate or optax schedule)
SCHEDULES = {
    "constant": lambda train: train.lr,
    "cosine": lambda train: optax.cosine_decay_schedule(train.lr, train.steps),
    "warmup_cosine": lambda train: optax.warmup_cosine_decay_schedule(
        0.0, train.lr, train.warmup_steps, train.steps
    ),
}

# train.optimizer -> ((train config, learning rate) -> optax optimizer)
OPTIMIZERS = {
    "adam": lambda train, lr: optax.adam(lr),
    "adamw": lambda train, lr: optax.adamw(lr, weight_decay=train.weight_decay),
    "sgd": lambda train, lr: optax.sgd(lr, momentum=0.9),
    "rmsprop": lambda train, lr: optax.rmsprop(lr),
}


def make_optimizer(train) -> optax.GradientTransformation:
    """The optax optimizer of ``config.train``: schedule, clipping, optimizer."""
    lr = SCHEDULES[train.schedule](train)
    optimizer = OPTIMIZERS[train.optimizer](train, lr)
    if train.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(train.clip_norm), optimizer)
    return optimizer
