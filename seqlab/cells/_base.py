"""What a recurrent cell is, and helpers shared by the built-in cells.

A cell is a small static description plus three pure functions::

    init(key, input_size) -> params                 # a pytree of arrays
    initial_carry(params, batch_shape) -> carry      # zeros (or learned) of shape batch_shape + ...
    step(params, carry, x) -> (carry, y)             # one time step; x is (*batch_shape, D)

A cell knows nothing of how it is unrolled. Cells whose input enters only through an
affine map may also offer

    project_inputs(params, xs) -> projected          # the affine map, for any leading dims
    step_projected(params, carry, projected) -> (carry, y)

so that ``seqlab.scan`` can hoist the input projection of all time steps out of the loop
as one matmul (``step == step_projected ∘ project_inputs``).

A cell may also declare the structure of its state Jacobian ∂s_t/∂s_{t-1} (s the carry,
flattened), as a class attribute ``jacobian_structure``, one of:

    "linear-diagonal"  s_t = a_t ⊙ s_{t-1} + b_t with a_t, b_t independent of s (MinGRU)
    "diagonal"         ∂s_t/∂s_{t-1} diagonal, s_t nonlinear in s_{t-1} (DiagGRU)
    "block-diagonal"   the carry's K leaves all have H features and every block
                       ∂leaf_i/∂leaf_j is diagonal: K x K blocks of diagonals (DiagLSTM)
    "dense"            anything else; the default, for every cell that says nothing

The parallel-in-time solver (``seqlab.parallel``) trusts the declaration: it computes
only the entries the structure allows, so a wrong one gives wrong results (the tests
check the built-in cells' declarations against full Jacobians).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from seqlab._checks import require
from seqlab.typing import Array, Carry, Params, PRNGKey, Shape


@runtime_checkable
class RecurrentCell(Protocol):
    """The interface ``seqlab.scan`` and the layers rely on."""

    def init(self, key: PRNGKey, input_size: int) -> Params: ...

    def initial_carry(self, params: Params, batch_shape: Shape) -> Carry: ...

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]: ...


class Cell(NamedTuple):
    """A user-defined cell made of three pure functions (see the module docstring).

    Example, an Elman cell in ten lines::

        def init(key, input_size):
            k1, k2 = jax.random.split(key)
            return {"w_x": jax.random.normal(k1, (input_size, 32)) / input_size**0.5,
                    "w_h": jax.nn.initializers.orthogonal()(k2, (32, 32))}

        def initial_carry(params, batch_shape):
            return jnp.zeros((*batch_shape, params["w_h"].shape[0]))

        def step(params, h, x):
            h = jnp.tanh(x @ params["w_x"] + h @ params["w_h"])
            return h, h

        cell = seqlab.cells.Cell(init, initial_carry, step)
    """

    init: Callable[[PRNGKey, int], Params]
    initial_carry: Callable[[Params, Shape], Carry]
    step: Callable[[Params, Carry, Array], tuple[Carry, Array]]


JACOBIAN_STRUCTURES = ("linear-diagonal", "diagonal", "block-diagonal", "dense")


def jacobian_structure(cell: Any) -> str:
    """The structure of ``cell``'s state Jacobian (see the module docstring); ``"dense"``
    for a cell that does not declare one."""
    structure = getattr(cell, "jacobian_structure", "dense")
    require(
        structure in JACOBIAN_STRUCTURES,
        f"{type(cell).__name__}.jacobian_structure must be one of {list(JACOBIAN_STRUCTURES)}, "
        f"got {structure!r}",
    )
    return structure


def can_hoist(cell: Any) -> bool:
    """Whether ``cell`` offers ``project_inputs`` and ``step_projected``."""
    return bool(getattr(cell, "hoistable", hasattr(cell, "project_inputs")))


def spatial_shape(cell: Any) -> tuple[int, ...]:
    """The spatial size of ``cell``'s input frames and state map: () for a cell over
    feature vectors (inputs (*batch, D)), e.g. (32, 32) for a convolutional cell (inputs
    (*batch, 32, 32, C)). A cell declares it as the attribute ``spatial_shape``."""
    return tuple(getattr(cell, "spatial_shape", ()))


def input_layout(cell: Any, time_major: bool = False) -> tuple[int, str]:
    """The rank of a batch of sequences ``cell`` reads and its axes in words:
    ``(3, "(B, T, D)")``, or e.g. ``(5, "(B, T, 32, 32, C)")`` for a cell with spatial
    shape (32, 32)."""
    spatial = spatial_shape(cell)
    lead = "T, B" if time_major else "B, T"
    if not spatial:
        return 3, f"({lead}, D)"
    return 3 + len(spatial), f"({lead}, {', '.join(map(str, spatial))}, C)"


def check_cell(cell: Any) -> None:
    """Raise ValueError unless ``cell`` has callable ``init``, ``initial_carry`` and ``step``."""
    missing = [
        name
        for name in ("init", "initial_carry", "step")
        if not callable(getattr(cell, name, None))
    ]
    require(
        not missing,
        f"a cell must have callable init, initial_carry and step; {type(cell).__name__} "
        f"lacks {', '.join(missing)}",
    )


def check_hidden_size(name: str, value: Any) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive int, got {value!r}",
    )


def check_input_size(input_size: Any) -> None:
    require(
        isinstance(input_size, int) and not isinstance(input_size, bool) and input_size > 0,
        f"input_size must be a positive int, got {input_size!r}",
    )


def gate_blocks_init(
    initializer: Callable, key: PRNGKey, rows: int, columns: int, num_gates: int
) -> Array:
    """A (rows, num_gates * columns) matrix whose gate blocks are initialized independently.

    Flax and Keras initialize each gate's recurrent matrix on its own (e.g. one orthogonal
    matrix per gate); initializing the concatenation as one matrix would not be orthogonal
    per gate.
    """
    keys = jax.random.split(key, num_gates)
    return jnp.concatenate([initializer(k, (rows, columns), jnp.float32) for k in keys], axis=-1)


@dataclasses.dataclass(frozen=True)
class TrainableInitialState:
    """Wraps any cell so that its initial carry is a learned parameter.

    Parameters become ``{"cell": <inner params>, "initial_state": <carry without batch dims>}``;
    the initial state starts at the inner cell's own initial carry (zeros for the built-in
    cells) and is broadcast over the batch.
    """

    cell: Any

    def __post_init__(self):
        check_cell(self.cell)

    @property
    def hoistable(self) -> bool:
        return can_hoist(self.cell)

    @property
    def jacobian_structure(self) -> str:
        return jacobian_structure(self.cell)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return spatial_shape(self.cell)

    def init(self, key: PRNGKey, input_size: int) -> Params:
        params = self.cell.init(key, input_size)
        return {"cell": params, "initial_state": self.cell.initial_carry(params, ())}

    def initial_carry(self, params: Params, batch_shape: Shape) -> Carry:
        return jax.tree_util.tree_map(
            lambda leaf: jnp.broadcast_to(leaf, (*batch_shape, *leaf.shape)),
            params["initial_state"],
        )

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        return self.cell.step(params["cell"], carry, x)

    def input_size(self, params: Params) -> int | None:
        inner = getattr(self.cell, "input_size", None)
        return inner(params["cell"]) if callable(inner) else None

    def project_inputs(self, params: Params, xs: Array) -> Any:
        return self.cell.project_inputs(params["cell"], xs)

    def step_projected(self, params: Params, carry: Carry, projected: Any) -> tuple[Carry, Array]:
        return self.cell.step_projected(params["cell"], carry, projected)


def hidden_of(carry: Carry) -> Array:
    """The hidden state h inside a carry: the carry itself when it is one array, else its
    ``h`` field (``LSTMState`` and any NamedTuple carry with an ``h`` field)."""
    if hasattr(carry, "shape"):
        return carry
    require(
        hasattr(carry, "h"),
        f"cannot find the hidden state in a carry of type {type(carry).__name__}: use one "
        "array, or a NamedTuple with an 'h' field",
    )
    return carry.h


def replace_hidden(carry: Carry, hidden: Array) -> Carry:
    """``carry`` with its hidden state (see ``hidden_of``) replaced by ``hidden``."""
    return hidden if hasattr(carry, "shape") else carry._replace(h=hidden)


@dataclasses.dataclass(frozen=True)
class PerturbedHidden:
    """Analysis device: adds a perturbation δ_t to the hidden state after every step.

    Inputs arrive as ``concat([x_t, δ_t], -1)`` with x_t of ``input_size`` features; the
    step computes ``h_t = step(h_{t-1}, x_t).h + δ_t`` and emits it as the output, so the
    gradient of a loss with respect to δ at δ = 0 is ∂L/∂h_t, the total derivative through
    the output at t and every later step. The cell's output must be its hidden state (true
    of every built-in cell).
    """

    cell: Any
    input_size: int

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return spatial_shape(self.cell)

    def init(self, key: PRNGKey, input_size: int) -> Params:
        return self.cell.init(key, input_size)

    def initial_carry(self, params: Params, batch_shape: Shape) -> Carry:
        return self.cell.initial_carry(params, batch_shape)

    def step(self, params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
        inputs, delta = x[..., : self.input_size], x[..., self.input_size :]
        new_carry, _ = self.cell.step(params, carry, inputs)
        hidden = hidden_of(new_carry) + delta
        return replace_hidden(new_carry, hidden), hidden
