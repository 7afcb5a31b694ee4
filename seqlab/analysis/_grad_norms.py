"""‖∂L/∂h_t‖ for every layer, sequence and step, in one backward pass."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import check_rank, check_seq_lengths, require
from seqlab.cells import hidden_of, input_layout
from seqlab.layers import RNNLayer
from seqlab.typing import Array, Params


def _check_layer(layer) -> None:
    require(
        isinstance(layer, RNNLayer),
        f"expected a seqlab.layers.RNNLayer, got {type(layer).__name__}",
    )


def _zero_perturbations(layer: RNNLayer, params: Params, xs: Array):
    """Zeros shaped like each layer's and direction's hidden state over time."""
    batch_size, num_steps = (xs.shape[1], xs.shape[0]) if layer.time_major else xs.shape[:2]
    carries = jax.eval_shape(lambda p: layer.initial_carry(p, (batch_size,)), params)

    def zeros(carry):
        hidden = hidden_of(carry)
        shape = (
            (num_steps, *hidden.shape)
            if layer.time_major
            else (hidden.shape[0], num_steps, *hidden.shape[1:])
        )
        return jnp.zeros(shape, hidden.dtype)

    return tuple({d: zeros(state[d]) for d in state} for state in carries)


def _feature_norm(gradients: Array) -> Array:
    """‖·‖₂ over everything after the (time, batch) axes: the features, or for a cell
    with a spatial state the whole map (every position and channel)."""
    return _scaled_norm(gradients.reshape((*gradients.shape[:2], -1)))


def _scaled_norm(vectors: Array) -> Array:
    """‖v‖₂ over the last axis without squaring tiny entries into underflow."""
    scale = jnp.max(jnp.abs(vectors), axis=-1, keepdims=True)
    safe = jnp.where(scale > 0, scale, jnp.ones_like(scale))
    return (safe * jnp.linalg.norm(vectors / safe, axis=-1, keepdims=True))[..., 0]


def hidden_grad_norms(
    layer: RNNLayer,
    params: Params,
    xs: Array,
    loss_fn,
    *,
    seq_lengths: Array | None = None,
    numpy: bool = True,
) -> np.ndarray:
    """‖∂L/∂h_t‖₂ for every layer, sequence and step.

    ∂L/∂h_t is the total derivative of ``L = loss_fn(outputs)`` with respect to the hidden
    state h at step t: through the output at t and through every later step (for LSTM, h
    is the output part of the state, not c). It is computed in one backward pass by adding
    a zero perturbation to every hidden state (``RNNLayer.apply(hidden_perturbations=)``)
    and differentiating with respect to it. For a cell with a spatial state
    (``seqlab.cells.ConvLSTM``) the norm is over the whole map, every position and channel.

    Args:
      layer: an RNNLayer (no dropout is applied).
      params: its parameters.
      xs: inputs in the layer's layout.
      loss_fn: ``outputs -> scalar`` on the layer's outputs.
      seq_lengths: optional (B,) lengths; norms at padded steps are exactly 0.
      numpy: return a float64 NumPy array (default); False returns a JAX array in the
        parameters' dtype, so the function can run inside ``jit`` and ``vmap`` (e.g. over
        seeds).

    Returns:
      float64 NumPy array of shape (num_layers, B, T) for a unidirectional layer, and
      (num_layers, 2, B, T) for a bidirectional one (index 0 forward, 1 backward; t is
      the position in the sequence in both). Computed in the parameters' dtype: in
      float32, norms below about 1e-38 underflow to 0; run under ``jax.enable_x64`` with
      float64 parameters to resolve smaller ones. Non-finite gradients stay NaN or inf
      (see ``first_non_finite``).
    """
    _check_layer(layer)
    check_rank("xs", xs, *input_layout(layer.cells[0], layer.time_major))
    if seq_lengths is not None:
        batch_size, num_steps = (xs.shape[1], xs.shape[0]) if layer.time_major else xs.shape[:2]
        seq_lengths = check_seq_lengths(seq_lengths, batch_size, num_steps)
    perturbations = _zero_perturbations(layer, params, xs)

    def loss(perturbations):
        outputs, _ = layer.apply(
            params, xs, seq_lengths=seq_lengths, hidden_perturbations=perturbations
        )
        return loss_fn(outputs)

    value = jax.eval_shape(loss, perturbations)
    require(
        hasattr(value, "shape") and value.shape == (),
        f"loss_fn must return a scalar, got {getattr(value, 'shape', type(value).__name__)}",
    )
    grads = jax.grad(loss)(perturbations)
    norms = jnp.stack(
        [jnp.stack([_feature_norm(g[d]) for d in layer.directions]) for g in grads]
    )  # (L, dirs, B, T), or (L, dirs, T, B) when time-major
    if layer.time_major:
        norms = jnp.swapaxes(norms, -1, -2)
    norms = norms if layer.bidirectional else norms[:, 0]
    return np.asarray(norms, np.float64) if numpy else norms


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """Where non-finite gradient norms first appear in the backward pass."""

    layer: int
    step: int
    count: int

    def __str__(self) -> str:
        return (
            f"{self.count} non-finite gradient norms; the first in the backward pass at "
            f"layer {self.layer}, step {self.step}"
        )


def first_non_finite(norms: np.ndarray) -> NonFinite | None:
    """None when every norm from ``hidden_grad_norms`` is finite; else where they start.

    The backward pass visits the last step first and, at each step, the top layer first,
    so "first" is the largest step t with a non-finite norm and, at that step, the highest
    layer. ``norms`` is (L, B, T) or (L, 2, B, T).
    """
    bad = ~np.isfinite(norms)
    if not bad.any():
        return None
    per_layer_step = bad.reshape(bad.shape[0], -1, bad.shape[-1]).any(axis=1)  # (L, T)
    step = int(np.nonzero(per_layer_step.any(axis=0))[0].max())
    layer = int(np.nonzero(per_layer_step[:, step])[0].max())
    return NonFinite(layer=layer, step=step, count=int(bad.sum()))
