"""Video: ``moving_digits``, scikit-learn's 8x8 digits bouncing in a frame
(``pip install 'seqlab[tasks]'``).

Each sequence is ``data.seq_len`` frames of ``frame_size`` x ``frame_size`` pixels (one
channel, values in [0, 1]) in which ``num_digits`` digits move in straight lines at
``speed`` pixels per frame and bounce off the edges (overlaps take the brighter pixel),
after the Moving MNIST of Srivastava et al. 2015. The task is next-frame prediction,
many-to-many regression: at every step the model has seen frames 0..t and predicts frame
t + 1 (inputs: frames 0..T-2; targets: frames 1..T-1). ``eval/mse`` is the mean squared
error per pixel; the baseline copies the last frame seen. Training sequences use the
training split of the digit images (``data.split_seed``); evaluation sequences use the
held-out images, so an evaluated digit was never seen in training.

Inputs are (B, T, frame_size, frame_size, 1): a convolutional cell (``conv_lstm``,
``conv_gru``) reads them as frames; any other cell reads each frame flattened to one
vector and predicts it as one vector (``info["frame_shape"]``). A bidirectional model
would read each target before predicting it: refused (``info["causal"]``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import require
from seqlab.experiments._config import DataConfig
from seqlab.experiments.tasks._base import Task, TaskData, register, split_indices
from seqlab.experiments.tasks._series import _require

DIGIT_SIZE = 8


@dataclasses.dataclass
class MovingDigitsData(DataConfig):
    seq_len: int = 10  # frames per sequence (T - 1 predictions)
    eval_size: int = 256  # generated evaluation sequences
    frame_size: int = 32
    num_digits: int = 1  # 1 or 2
    speed: float = 2.0  # pixels per frame
    eval_fraction: float = 0.2  # of the digit images, held out for evaluation


def _trajectories(key, batch_size: int, num_frames: int, num_digits: int, room: int, speed):
    """(B, T, K, 2) integer top-left corners of K digits moving at ``speed`` pixels per
    frame from random starts in random directions, reflected at 0 and ``room``."""
    k_start, k_angle = jax.random.split(key)
    start = jax.random.uniform(k_start, (batch_size, 1, num_digits, 2), maxval=room)
    angle = jax.random.uniform(k_angle, (batch_size, 1, num_digits, 1), maxval=2 * jnp.pi)
    velocity = speed * jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    time = jnp.arange(num_frames, dtype=jnp.float32).reshape(1, num_frames, 1, 1)
    position = start + velocity * time
    if room == 0:
        return jnp.zeros(position.shape, jnp.int32)
    folded = jnp.mod(position, 2 * room)  # a triangle wave: bouncing between 0 and room
    bounced = jnp.where(folded > room, 2 * room - folded, folded)
    return jnp.round(bounced).astype(jnp.int32)


def render(images, corners, frame_size: int):
    """Frames (B, T, S, S) with digit k of each sequence (``images`` (B, K, 8, 8)) at
    ``corners`` (B, T, K, 2) (row, column of its top-left pixel); overlaps take the
    maximum."""

    def place(image, corner):
        canvas = jnp.zeros((frame_size, frame_size), image.dtype)
        return jax.lax.dynamic_update_slice(canvas, image, (corner[0], corner[1]))

    # over digits, then frames, then sequences
    per_digit = jax.vmap(place, in_axes=(0, 0))
    per_frame = jax.vmap(per_digit, in_axes=(None, 0))
    frames = jax.vmap(per_frame, in_axes=(0, 0))(images, corners)  # (B, T, K, S, S)
    return jnp.max(frames, axis=2)


def moving_digits(key, images, batch_size: int, data) -> dict:
    """One batch: frames 0..T-2 as inputs, frames 1..T-1 as targets (B, T-1, S, S, 1)."""
    k_pick, k_move = jax.random.split(key)
    picks = jax.random.randint(k_pick, (batch_size, data.num_digits), 0, images.shape[0])
    room = data.frame_size - DIGIT_SIZE
    corners = _trajectories(k_move, batch_size, data.seq_len, data.num_digits, room, data.speed)
    frames = render(images[picks], corners, data.frame_size)[..., None]
    return {
        "inputs": frames[:, :-1],
        "lengths": jnp.full((batch_size,), data.seq_len - 1, jnp.int32),
        "targets": frames[:, 1:],
    }


def load_moving_digits(config) -> TaskData:
    data = config.data
    require(data.seq_len >= 2, f"data.seq_len must be >= 2 frames, got {data.seq_len}")
    require(
        data.frame_size >= DIGIT_SIZE,
        f"data.frame_size must be >= {DIGIT_SIZE} (the digits' size), got {data.frame_size}",
    )
    require(data.num_digits in (1, 2), f"data.num_digits must be 1 or 2, got {data.num_digits}")
    require(data.speed >= 0, f"data.speed must be >= 0 pixels per frame, got {data.speed}")
    digits = _require("sklearn.datasets").load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    train_idx, eval_idx = split_indices(len(images), data, eval_fraction=data.eval_fraction)
    train_images, eval_images = jnp.asarray(images[train_idx]), jnp.asarray(images[eval_idx])
    evaluation = moving_digits(jax.random.key(data.split_seed), eval_images, data.eval_size, data)
    evaluation = {name: np.asarray(array) for name, array in evaluation.items()}
    copy_last = float(np.mean((evaluation["inputs"] - evaluation["targets"]) ** 2))
    return TaskData(
        info={
            "kind": "many_to_many",
            "objective": "mse",
            "input_size": 1,
            "output_size": 1,
            "frame_shape": [data.frame_size, data.frame_size],
            "causal": True,  # the target of step t is input t + 1
            "baselines": {"eval/mse": copy_last},
            "baseline_name": "copy the last frame",
        },
        eval=evaluation,
        sample=lambda key, batch_size: moving_digits(key, train_images, batch_size, data),
    )


register(
    Task(
        "moving_digits",
        "scikit-learn digits bouncing in a frame: predict the next frame (many-to-many video)",
        MovingDigitsData,
        load_moving_digits,
        main_metric="eval/mse",
    )
)
