"""Tree cells: a recurrent cell's idea applied over children instead of a time step.

A tree cell is a small static description plus pure functions::

    init(key, input_size) -> params
    leaf_state(params, batch_shape) -> state         # the state of an absent child
    node_step(params, x, children, mask) -> state    # x (*b, D); children: a state with
                                                     # (*b, K, ...) leaves; mask (*b, K)
    output(state) -> h                               # what a head reads

``node_step`` must treat a child whose mask is False as absent. The built-in cells also
offer the hoisting pair ``project_inputs(params, x)`` and
``node_step_projected(params, projected, children, mask)`` (``node_step`` is their
composition), so that ``tree_scan`` projects every node's input in one matmul.

A leaf is a node whose children are all absent. Parameter layouts follow the sequence
cells, so that a chain (every node one child) reduces to them with the same parameters:
``ChildSumTreeLSTM`` and ``NaryTreeLSTM(arity=1)`` to ``seqlab.cells.LSTM``, ``TreeGRU`` to
``seqlab.cells.GRU(variant="original")``, ``TreeRNN(arity=1)`` to ``seqlab.cells.RNN``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from seqlab._checks import check_positive, require
from seqlab.cells import LSTMState

_kernel_init = jax.nn.initializers.lecun_normal()


class TreeCell(NamedTuple):
    """A user-defined tree cell from pure functions (see the module docstring)."""

    init: Callable
    leaf_state: Callable
    node_step: Callable
    output: Callable = lambda state: state
    arity: int | None = None  # None: any number of children


def _present(mask, like):
    """``mask`` (*b, K) as (*b, K, 1), to broadcast against children leaves ``like``."""
    return mask.reshape(*mask.shape, *[1] * (like.ndim - mask.ndim))


def _split(array, sizes):
    out, start = [], 0
    for size in sizes:
        out.append(array[..., start : start + size])
        start += size
    return out


@dataclasses.dataclass(frozen=True)
class _TreeCellBase:
    hidden_size: int
    use_bias: bool = dataclasses.field(default=True, kw_only=True)

    num_gates = 1
    arity: ClassVar[int | None] = None  # None: any number of children (child-sum cells)

    def __post_init__(self):
        check_positive("hidden_size", self.hidden_size)

    def _recurrent_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def _bias_init(self):
        return jnp.zeros((self.num_gates * self.hidden_size,), jnp.float32)

    def init(self, key, input_size: int) -> dict:
        require(input_size > 0, f"input_size must be positive, got {input_size}")
        k_in, k_rec = jax.random.split(key)
        rows, cols = self._recurrent_shape()
        params = {
            "w_ih": _kernel_init(k_in, (input_size, self.num_gates * self.hidden_size)),
            "w_hh": _kernel_init(k_rec, (rows, cols)),
        }
        if self.use_bias:
            params["b"] = self._bias_init()
        return params

    def leaf_state(self, params, batch_shape):
        return jnp.zeros((*batch_shape, self.hidden_size), params["w_hh"].dtype)

    def project_inputs(self, params, x):
        projected = x @ params["w_ih"]
        if not self.use_bias:
            return projected
        return projected + params["b"].reshape((1,) * (projected.ndim - 1) + (-1,))

    def node_step(self, params, x, children, mask):
        return self.node_step_projected(params, self.project_inputs(params, x), children, mask)

    def output(self, state):
        return state

    def _concat(self, h, mask):
        """(*b, K, H) children h, absent ones zeroed, as (*b, K·H)."""
        h = jnp.where(_present(mask, h), h, jnp.zeros_like(h))
        return h.reshape(*h.shape[:-2], h.shape[-2] * h.shape[-1])

    def _check_arity(self, mask):
        require(
            mask.shape[-1] == self.arity,
            f"{type(self).__name__} takes exactly {self.arity} child slots, got {mask.shape[-1]}",
        )


@dataclasses.dataclass(frozen=True)
class TreeRNN(_TreeCellBase):
    """Socher et al.'s recursive network: h = tanh(x W_ih + b + [h_1; …; h_K] W_hh).

    Children are positional (slot k has its own block of ``w_hh``); absent ones are zero.
    Parameters: ``w_ih`` (D, H), ``w_hh`` (K·H, H), ``b`` (H,). State and output: h.
    """

    arity: int = 2

    def __post_init__(self):
        super().__post_init__()
        check_positive("arity", self.arity)

    def _recurrent_shape(self):
        return self.arity * self.hidden_size, self.hidden_size

    def node_step_projected(self, params, projected, children, mask):
        self._check_arity(mask)
        return jnp.tanh(projected + self._concat(children, mask) @ params["w_hh"])


class _TreeLSTMState:
    """What the two Tree-LSTMs share: the forget bias at init, an ``LSTMState`` (h, c)
    state whose absent child is zeros, h as the output."""

    num_gates = 4

    def _bias_init(self):
        hidden = self.hidden_size
        return jnp.zeros((4 * hidden,), jnp.float32).at[hidden : 2 * hidden].set(self.forget_bias)

    def leaf_state(self, params, batch_shape):
        zeros = jnp.zeros((*batch_shape, self.hidden_size), params["w_hh"].dtype)
        return LSTMState(zeros, zeros)

    def output(self, state):
        return state.h


@dataclasses.dataclass(frozen=True)
class ChildSumTreeLSTM(_TreeLSTMState, _TreeCellBase):
    """Tai, Socher & Manning (2015), Child-Sum Tree-LSTM, gate order i, f, g, o::

        h̃ = Σ_k h_k
        i, g, o = σ(·), tanh(·), σ(·)  of  x W_ih + b + h̃ W_hh           (their columns)
        f_k = σ(x W_if + b_f + h_k W_hf)                                 (one per child)
        c = i * g + Σ_k f_k * c_k,   h = o * tanh(c)

    Any number of children. Parameters: ``w_ih`` (D, 4H), ``w_hh`` (H, 4H), ``b`` (4H,),
    the forget bias initialized to ``forget_bias``. State: ``LSTMState(h, c)``; output h.
    """

    forget_bias: float = 1.0
    num_gates = 4

    def _recurrent_shape(self):
        return self.hidden_size, 4 * self.hidden_size

    def node_step_projected(self, params, projected, children, mask):
        hidden = self.hidden_size
        present = _present(mask, children.h)
        h_k = jnp.where(present, children.h, jnp.zeros_like(children.h))
        c_k = jnp.where(present, children.c, jnp.zeros_like(children.c))
        p_i, p_f, p_g, p_o = _split(projected, [hidden] * 4)
        w_i, w_f, w_g, w_o = _split(params["w_hh"], [hidden] * 4)
        h_sum = jnp.sum(h_k, axis=-2)
        i = jax.nn.sigmoid(p_i + h_sum @ w_i)
        g = jnp.tanh(p_g + h_sum @ w_g)
        o = jax.nn.sigmoid(p_o + h_sum @ w_o)
        f_k = jax.nn.sigmoid(p_f[..., None, :] + h_k @ w_f)
        c = i * g + jnp.sum(jnp.where(present, f_k * c_k, jnp.zeros_like(c_k)), axis=-2)
        return LSTMState(o * jnp.tanh(c), c)


@dataclasses.dataclass(frozen=True)
class NaryTreeLSTM(_TreeLSTMState, _TreeCellBase):
    """Tai et al. (2015), N-ary Tree-LSTM: positional children, a forget gate per child
    that sees every child::

        [i, f_1 … f_K, g, o] of  x W_ih + b  (i, f, g, o; f shared by the K forgets)
                              +  [h_1; …; h_K] W_hh  (columns i, f_1 … f_K, g, o)
        c = σ(i) * tanh(g) + Σ_k σ(f_k) * c_k,   h = σ(o) * tanh(c)

    Parameters: ``w_ih`` (D, 4H), ``w_hh`` (K·H, (3 + K)·H), ``b`` (4H,). State:
    ``LSTMState(h, c)``; output h. Absent children are zero.
    """

    arity: int = 2
    forget_bias: float = 1.0
    num_gates = 4

    def __post_init__(self):
        super().__post_init__()
        check_positive("arity", self.arity)

    def _recurrent_shape(self):
        return self.arity * self.hidden_size, (3 + self.arity) * self.hidden_size

    def node_step_projected(self, params, projected, children, mask):
        self._check_arity(mask)
        hidden, arity = self.hidden_size, self.arity
        present = _present(mask, children.c)
        c_k = jnp.where(present, children.c, jnp.zeros_like(children.c))
        recurrent = self._concat(children.h, mask) @ params["w_hh"]
        r_i, *r_f, r_g, r_o = _split(recurrent, [hidden] * (3 + arity))
        p_i, p_f, p_g, p_o = _split(projected, [hidden] * 4)
        f_k = jax.nn.sigmoid(p_f[..., None, :] + jnp.stack(r_f, axis=-2))
        i = jax.nn.sigmoid(p_i + r_i)
        g = jnp.tanh(p_g + r_g)
        o = jax.nn.sigmoid(p_o + r_o)
        c = i * g + jnp.sum(f_k * c_k, axis=-2)
        return LSTMState(o * jnp.tanh(c), c)


@dataclasses.dataclass(frozen=True)
class TreeGRU(_TreeCellBase):
    """A Child-Sum GRU (gate order r, z, n; the reset gate of Cho et al. 2014, per child)::

        h̃ = Σ_k h_k
        z = σ(x W_iz + b_z + h̃ W_hz),   r_k = σ(x W_ir + b_r + h_k W_hr)
        n = tanh(x W_in + b_n + (Σ_k r_k * h_k) W_hn)
        h = (1 - z) * n + z * h̃

    Any number of children. Parameters: ``w_ih`` (D, 3H), ``w_hh`` (H, 3H), ``b`` (3H,).
    State and output: h.
    """

    num_gates = 3

    def _recurrent_shape(self):
        return self.hidden_size, 3 * self.hidden_size

    def node_step_projected(self, params, projected, children, mask):
        hidden = self.hidden_size
        h_k = jnp.where(_present(mask, children), children, jnp.zeros_like(children))
        p_r, p_z, p_n = _split(projected, [hidden] * 3)
        w_r, w_z, w_n = _split(params["w_hh"], [hidden] * 3)
        h_sum = jnp.sum(h_k, axis=-2)
        z = jax.nn.sigmoid(p_z + h_sum @ w_z)
        r_k = jax.nn.sigmoid(p_r[..., None, :] + h_k @ w_r)
        n = jnp.tanh(p_n + jnp.sum(r_k * h_k, axis=-2) @ w_n)
        return (1 - z) * n + z * h_sum


TREE_CELLS: dict[str, Any] = {
    "tree_rnn": TreeRNN,
    "child_sum_tree_lstm": ChildSumTreeLSTM,
    "nary_tree_lstm": NaryTreeLSTM,
    "tree_gru": TreeGRU,
}


def is_tree_cell(cell) -> bool:
    """Whether ``cell`` speaks the tree-cell contract (``node_step``)."""
    return hasattr(cell, "node_step") and hasattr(cell, "leaf_state")
