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
