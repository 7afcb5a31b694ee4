"""Shared machinery of the built-in cells, whose input enters through one affine map.

Every built-in cell computes its gate pre-activations as ``x @ w_ih + b + (recurrent
part)``, so the input projection ``x @ w_ih + b`` can be hoisted out of the time loop.
Parameter layout (``G`` gates, gate blocks in the order each cell documents):

    w_ih: (D, G*H)    w_hh: (R, G*H)    b: (G*H,)    (+ cell-specific extras)

``R`` is the size of the recurrent input (H, or the projection size of an LSTM).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp

from seqlab.cells._base import check_hidden_size, check_input_size, gate_blocks_init
from seqlab.typing import Array, Carry, Params, PRNGKey, Shape

default_kernel_init = jax.nn.initializers.lecun_normal()
default_recurrent_init = jax.nn.initializers.orthogonal()


@dataclasses.dataclass(frozen=True)
class AffineInputCell:
    """Base class: fields every built-in cell has, and the hoisting pair.

    Subclasses set ``num_gates`` and implement ``step_projected`` (and may extend
    ``init`` through ``_bias_init`` and ``_extra_params``).

    The built-in cells also carry their hand-derived backward, which ``seqlab.scan``
    (``implementation="xla"``) uses instead of autodiff through the loop; each cell's
    derivation is written once, in three methods (``seqlab/unroll/_bptt.py`` runs them):

        forward_step(params, carry, projected) -> (carry, saved)
            one step after the input projection; ``saved`` holds what the backward
            needs beyond the carries (gate activations), a tuple of (*batch, ·) arrays
        backward_weights(params) -> weights
            what the backward loop multiplies by, prepared once before it: the
            transposed recurrent matrices, made contiguous once (why: "Wᵀ once" in
            ``seqlab/unroll/_policy.py``'s implementation choices)
        backward_step(weights, d_carry, saved, carry_prev, carry)
                -> (d_projected, d_recurrent, d_carry_prev)
            one step back: the gradient w.r.t. this step's projected input (its gate
            pre-activations), per-step terms for the recurrent weights' gradients
            (``()`` when ``d_projected`` suffices) and the gradient w.r.t. the carry
            before the step; ``d_carry`` is the total gradient w.r.t. the carry after it
        weight_gradients(params, xs, carries_prev, carries, saved, d_projected,
                         d_recurrent, *, sharded=False) -> dict
            every parameter's gradient over all steps at once, as large
            (T·B)-contractions outside the time loop (arguments stacked time-major;
            ``affine_gradients`` does the input projection's part)

    A subclass that changes ``step_projected`` must override these too, or it silently
    gets the parent's gradients; ``seqlab.scan`` therefore uses them only for the
    built-in classes themselves, never for subclasses.
    """

    hidden_size: int
    use_bias: bool = dataclasses.field(default=True, kw_only=True)
    kernel_init: Callable = dataclasses.field(default=default_kernel_init, kw_only=True)
    recurrent_init: Callable = dataclasses.field(default=default_recurrent_init, kw_only=True)

    num_gates: ClassVar[int] = 1
    hoistable: ClassVar[bool] = True

    def __post_init__(self):
        check_hidden_size("hidden_size", self.hidden_size)

    @property
    def recurrent_size(self) -> int:
        """Size of the state fed back into the recurrent matmul (R)."""
        return self.hidden_size

    def _bias_init(self) -> Array:
        return jnp.zeros((self.num_gates * self.hidden_size,), jnp.float32)

    def _extra_params(self, key: PRNGKey) -> dict[str, Array]:
        del key
        return {}

    def init(self, key: PRNGKey, input_size: int) -> Params:
        """Parameters for inputs of size ``input_size`` (a dict of float32 arrays)."""
        check_input_size(input_size)
        k_ih, k_hh, k_extra = jax.random.split(key, 3)
        gates, hidden = self.num_gates, self.hidden_size
        params = {
            "w_ih": gate_blocks_init(self.kernel_init, k_ih, input_size, hidden, gates),
            "w_hh": gate_blocks_init(self.recurrent_init, k_hh, self.recurrent_size, hidden, gates),
        }
        if self.use_bias:
            params["b"] = self._bias_init()
        params.update(self._extra_params(k_extra))
        return params

    def input_size(self, params: Params) -> int:
        """D, the input size ``params`` were made for."""
        return params["w_ih"].shape[0]

    def initial_carry(self, params: Params, batch_shape: Shape) -> Carry:
        dtype = params["w_hh"].dtype
        return jnp.zeros((*batch_shape, self.hidden_size), dtype)

    def project_inputs(self, params: Params, xs: Array) -> Array:
        """``xs @ w_ih + b`` for inputs with any leading dimensions: (..., D) -> (..., G*H)."""
        projected = xs @ params["w_ih"]
        if self.use_bias:
            projected = add_bias(projected, params["b"])
        return projected

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        """One time step: ``x`` is (*batch, D); returns (new carry, output)."""
        return self.step_projected(params, carry, self.project_inputs(params, x))


def add_bias(z: Array, bias: Array) -> Array:
    """``z + bias`` with the rank broadcast spelled out (works under rank_promotion='raise')."""
    return z + bias.reshape((1,) * (z.ndim - 1) + bias.shape)


def split_gates(array: Array, num_gates: int) -> list[Array]:
    return jnp.split(array, num_gates, axis=-1)


def contract_time_batch(left: Array, right: Array, *, sharded: bool = False) -> Array:
    """``Σ_t Σ_b left[t, b]ᵀ right[t, b]``: (T, B, I), (T, B, J) -> (I, J), one matmul in
    ``right``'s dtype.

    On one device: a matmul of (T·B, ·) reshapes. With ``sharded``
    (``seqlab.unroll.Xla(batch_sharded=True)``): one ``dot_general`` over both axes,
    because a merged T·B axis cannot carry a batch sharding and the partitioner would
    all-gather every device's (T, B, ·) activations to build it; this way each device sums
    its own part and only the (I, J) result is all-reduced. Why each form where it is:
    "contraction over time and batch" in ``seqlab/unroll/_policy.py``'s implementation
    choices."""
    left = left.astype(right.dtype)
    if sharded:
        return jnp.einsum("tbi,tbj->ij", left, right)
    return left.reshape(-1, left.shape[-1]).T @ right.reshape(-1, right.shape[-1])


def affine_gradients(
    params, xs: Array, d_pre: Array, recurrent: Array | None = None, *, sharded: bool = False
):
    """The gradients of ``w_ih`` and ``b`` (and of ``w_hh`` when ``recurrent``, the
    (T, B, R) inputs of the recurrent matmul, is given) from the gate pre-activations'
    gradient ``d_pre`` (T, B, G·H).

    With ``recurrent`` the two weight gradients are one matmul, ``[xs, recurrent]ᵀ d_pre``,
    reading ``d_pre`` once (why: "one matmul for dW_ih and dW_hh" in
    ``seqlab/unroll/_policy.py``'s implementation choices).
    """
    dtype, gradients = d_pre.dtype, {}
    if "b" in params:
        gradients["b"] = jnp.sum(d_pre, axis=(0, 1))
    if recurrent is None:
        gradients["w_ih"] = contract_time_batch(xs, d_pre, sharded=sharded)
        return gradients
    input_size = xs.shape[-1]
    left = jnp.concatenate([xs.astype(dtype), recurrent.astype(dtype)], axis=-1)
    both = contract_time_batch(left, d_pre, sharded=sharded)
    gradients["w_ih"], gradients["w_hh"] = both[:input_size], both[input_size:]
    return gradients


def sigmoid_gradient(s: Array) -> Array:
    """σ' read off the gate's value s = σ(a)."""
    return s * (1 - s)


def tanh_gradient(t: Array) -> Array:
    """tanh' read off the value t = tanh(a)."""
    return 1 - t * t
