"""Stacked and bidirectional recurrent layers over any cell."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from seqlab._checks import check_rank, require
from seqlab.cells import PerturbedHidden, check_cell, input_layout, spatial_shape
from seqlab.typing import Array, Params, PRNGKey, Shape
from seqlab.unroll import resolve_implementation, scan

DIRECTIONS = ("forward", "backward")


def cell_output_size(cell, params: Params, input_size: int) -> int:
    """The feature size (channels, for a cell with a spatial state) of ``cell.step``'s
    output, found by abstract evaluation."""
    spatial = spatial_shape(cell)

    def one_step(params):
        carry = cell.initial_carry(params, (1,))
        return cell.step(params, carry, jnp.zeros((1, *spatial, input_size), jnp.float32))[1]

    output = jax.eval_shape(one_step, params)
    require(
        hasattr(output, "shape") and tuple(output.shape[:-1]) == (1, *spatial),
        f"a stacked layer needs cells whose step returns one (batch, {'*spatial, ' * bool(spatial)}"
        f"features) array; {type(cell).__name__} returns {output}",
    )
    return int(output.shape[-1])


def dropout(key: PRNGKey, rate: float, x: Array) -> Array:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by 1/(1-rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _is_cell_sequence(value) -> bool:
    """A list or tuple of cells, as opposed to one cell (``cells.Cell`` is a NamedTuple)."""
    return isinstance(value, list | tuple) and not callable(getattr(value, "step", None))


@dataclasses.dataclass(frozen=True)
class RNNLayer:
    """``num_layers`` stacked recurrent layers, optionally bidirectional.

    Args:
      cell: the cell of every layer, or a sequence of ``num_layers`` cells (one per layer).
      num_layers: L.
      bidirectional: run a second cell backwards over each sequence (within its own
        length) and concatenate its outputs after the forward ones: [forward, backward].
      dropout: rate of dropout on the outputs of every layer but the last, applied only
        when ``apply(..., train=True)`` (PyTorch's ``dropout`` argument).
      time_major: inputs and outputs are (T, B, ...) rather than (B, T, ...).
      unroll, implementation, hoist_input_projection, remat: passed to ``seqlab.scan``
        (``implementation="pallas"`` runs every layer and direction on the fused kernels,
        ``"parallel"`` solves each in parallel over time).

    Parameters: a tuple over layers of ``{"forward": cell params, "backward": cell params}``
    (no "backward" unless bidirectional). States (the ``carry`` argument and the returned
    final state) have the same layout with carries in place of parameters.

    A unidirectional RNNLayer is itself a cell: ``initial_carry`` and ``step`` run one time
    step through every layer, so it can drive a decoder or be unrolled by ``seqlab.scan``.
    """

    cell: Any
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    time_major: bool = False
    unroll: int | bool | None = None
    implementation: Any = None  # None, "xla", "xla-autodiff", "pallas", "parallel", a
    # kernels.Pallas or a parallel.Parallel
    hoist_input_projection: bool | None = None
    remat: bool | int = False

    def __post_init__(self):
        require(
            isinstance(self.num_layers, int) and self.num_layers >= 1,
            f"num_layers must be a positive int, got {self.num_layers!r}",
        )
        require(
            isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0,
            f"dropout must be a rate in [0, 1), got {self.dropout!r}",
        )
        if _is_cell_sequence(self.cell):
            require(
                len(self.cell) == self.num_layers,
                f"a sequence of cells needs one per layer: num_layers = {self.num_layers}, "
                f"got {len(self.cell)} cells",
            )
            object.__setattr__(self, "cell", tuple(self.cell))
        for cell in self.cells:
            check_cell(cell)
        shapes = {spatial_shape(cell) for cell in self.cells}
        require(
            len(shapes) == 1,
            f"every layer's cell must read the same spatial shape, got {sorted(shapes)}",
        )
        resolve_implementation(self.implementation)  # a bad name fails here, not at apply

    @property
    def cells(self) -> tuple:
        """The cell of each layer."""
        return self.cell if _is_cell_sequence(self.cell) else (self.cell,) * self.num_layers

    @property
    def directions(self) -> tuple[str, ...]:
        return DIRECTIONS if self.bidirectional else DIRECTIONS[:1]

    def init(self, key: PRNGKey, input_size: int) -> Params:
        """Parameters for inputs with ``input_size`` features."""
        params = []
        size = input_size
        for cell, layer_key in zip(self.cells, jax.random.split(key, self.num_layers), strict=True):
            keys = jax.random.split(layer_key, len(self.directions))
            layer = {d: cell.init(k, size) for d, k in zip(self.directions, keys, strict=True)}
            size = cell_output_size(cell, layer["forward"], size) * len(self.directions)
            params.append(layer)
        return tuple(params)

    def output_size(self, input_size: int) -> int:
        """Features of ``apply``'s outputs (both directions together) for ``input_size``."""

        def run():
            params = self.init(jax.random.key(0), input_size)
            shape = (1, 1, *spatial_shape(self.cells[0]), input_size)
            return self.apply(params, jnp.zeros(shape, jnp.float32))[0]

        return int(jax.eval_shape(run).shape[-1])

    def initial_carry(self, params: Params, batch_shape: Shape) -> Params:
        """Every layer's and direction's initial carry (the layout of ``apply``'s state)."""
        return tuple(
            {d: cell.initial_carry(layer[d], batch_shape) for d in layer}
            for cell, layer in zip(self.cells, params, strict=True)
        )

    def _check_params(self, params: Params) -> None:
        require(
            isinstance(params, tuple | list) and len(params) == self.num_layers,
            f"params must be a sequence of {self.num_layers} per-layer dicts, got "
            f"{type(params).__name__}"
            + (f" of length {len(params)}" if hasattr(params, "__len__") else ""),
        )
        for index, layer in enumerate(params):
            require(
                isinstance(layer, dict) and set(layer) == set(self.directions),
                f"params[{index}] must be a dict with keys {list(self.directions)}, got "
                f"{list(layer) if isinstance(layer, dict) else type(layer).__name__}",
            )

    def apply(
        self,
        params: Params,
        xs: Array,
        *,
        seq_lengths: Array | None = None,
        carry: Params | None = None,
        key: PRNGKey | None = None,
        train: bool = False,
        hidden_perturbations: Params | None = None,
    ) -> tuple[Array, Params]:
        """Run the stack over a batch.

        Args:
          params: from ``init``.
          xs: (B, T, D), or (T, B, D) when ``time_major``; (B, T, *spatial, C) for cells
            with a spatial state (``seqlab.cells.ConvLSTM``).
          seq_lengths: optional (B,) valid lengths; see ``seqlab.scan``.
          carry: optional initial state, in the layout of ``initial_carry``.
          key: PRNG key for dropout; required when ``train`` and ``dropout > 0``.
          train: apply inter-layer dropout.
          hidden_perturbations: for gradient analysis (``seqlab.analysis``): arrays laid
            out like ``initial_carry`` but holding, per layer and direction, δ of shape
            (B, T, S) (time-major: (T, B, S)), added to the hidden state after each step
            (see ``cells.PerturbedHidden``). The gradient of a loss at δ = 0 is ∂L/∂h_t.

        Returns:
          ``(outputs, final_state)``: outputs (B, T, F) with F = directions x the top
          cell's output size, exactly zero at padded steps; final_state in the layout of
          ``initial_carry``, each carry taken at its sequence's last valid step (for the
          backward direction, after reading step 0).
        """
        self._check_params(params)
        check_rank("xs", xs, *input_layout(self.cells[0], self.time_major))
        use_dropout = train and self.dropout > 0.0 and self.num_layers > 1
        require(
            not use_dropout or key is not None,
            f"apply(train=True) with dropout={self.dropout} needs a PRNG key, got key=None",
        )
        batch_size = xs.shape[1] if self.time_major else xs.shape[0]
        if carry is None:
            carry = self.initial_carry(params, (batch_size,))
        require(
            isinstance(carry, tuple | list) and len(carry) == self.num_layers,
            f"carry must be a sequence of {self.num_layers} per-layer states "
            f"(see initial_carry), got {type(carry).__name__}",
        )
        dropout_keys = jax.random.split(key, self.num_layers) if use_dropout else None

        hidden = xs if self.time_major else jnp.swapaxes(xs, 0, 1)
        final_state = []
        for index, (cell, layer) in enumerate(zip(self.cells, params, strict=True)):
            if use_dropout and index > 0:
                hidden = dropout(dropout_keys[index], self.dropout, hidden)
            outputs, finals = [], {}
            for direction in self.directions:
                require(
                    isinstance(carry[index], dict) and direction in carry[index],
                    f"carry[{index}] must be a dict with keys {list(self.directions)}",
                )
                run_cell, run_input, hoist = cell, hidden, self.hoist_input_projection
                if hidden_perturbations is not None:  # the wrapper cell cannot hoist
                    hoist = None
                    delta = hidden_perturbations[index][direction]
                    delta = delta if self.time_major else jnp.swapaxes(delta, 0, 1)
                    run_cell = PerturbedHidden(cell, hidden.shape[-1])
                    run_input = jnp.concatenate([hidden, delta.astype(hidden.dtype)], axis=-1)
                out, finals[direction] = scan(
                    run_cell,
                    layer[direction],
                    run_input,
                    carry[index][direction],
                    seq_lengths=seq_lengths,
                    reverse=direction == "backward",
                    time_major=True,
                    unroll=self.unroll,
                    implementation=self.implementation,
                    hoist_input_projection=hoist,
                    remat=self.remat,
                )
                outputs.append(out)
            hidden = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)
            final_state.append(finals)
        outputs = hidden if self.time_major else jnp.swapaxes(hidden, 0, 1)
        return outputs, tuple(final_state)

    def step(self, params: Params, carry: Params, x: Array) -> tuple[Params, Array]:
        """One time step through every layer (unidirectional stacks only; no dropout)."""
        require(
            not self.bidirectional,
            "a bidirectional layer has no single step: its backward direction needs the "
            "whole sequence",
        )
        new_carry = []
        for cell, layer, layer_carry in zip(self.cells, params, carry, strict=True):
            state, x = cell.step(layer["forward"], layer_carry["forward"], x)
            new_carry.append({"forward": state})
        return tuple(new_carry), x
