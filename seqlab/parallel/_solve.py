"""All time steps at once: associative scans for linear recurrences, Newton for the rest.

The recurrence s_t = f(s_{t-1}, x_t) (s the carry, flattened to N numbers per sequence) is
solved as one system over the whole trajectory. For a cell linear in s
(``jacobian_structure == "linear-diagonal"``), f(s, x_t) = a_t ⊙ s + b_t and one
``lax.associative_scan`` over the affine maps (a_t, b_t) gives every s_t, exactly: maps are
composed as (a₂a₁, a₂b₁ + b₂), with no logarithms or divisions, so nothing overflows when
|a_t| ≤ 1 however long the sequence (the role minGRU's log-space form plays).

For any other cell, Newton's method on the residual r_t = s_t − f(s_{t−1}, x_t) for all t
(DEER, Lim et al. 2024; ParaRNN, Danieli et al. 2026): linearizing f around the current
trajectory gives the linear recurrence

    s_t^{k+1} = f(s_{t-1}^k, x_t) + J_t (s_{t-1}^{k+1} − s_{t-1}^k),   J_t = ∂f/∂s at s_{t-1}^k

solved by the same associative scan with J_t a diagonal (DiagGRU), 2x2 blocks of
diagonals (DiagLSTM) or a full matrix (DEER for dense cells), or only its diagonal
(quasi-DEER). ``Parallel`` documents the tolerance, the damping and the fallback.

Gradients (``jax.custom_vjp``, never through the iterations): at the solution the adjoint
μ_t = ∂L/∂s_t obeys the linear recurrence backward in time

    μ_t = ḡ_t + K_{t+1}ᵀ ȳ_{t+1} + J_{t+1}ᵀ μ_{t+1}

(ḡ the cotangent of the carries, ȳ of the outputs, K the outputs' Jacobian), solved by a
reverse associative scan with the exact transposed Jacobians of the cell's structure;
for dense cells with ``jacobian="diagonal"``, where the full matrices were never formed,
by an exact sequential adjoint (``lax.scan`` of per-step VJPs). Then one VJP of the step
over all t at once gives the gradients of the parameters, inputs and initial carry.

Everything here is time-major: inputs (T, B, ...), carries packed to (T, B, N).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import require
from seqlab.parallel._options import Parallel, at_least_float32
from seqlab.typing import Array


@dataclasses.dataclass(frozen=True)
class Packing:
    """How a carry pytree becomes one (..., N) array and back."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]  # each leaf's feature shape, without batch dims
    dtype: Any

    @classmethod
    def of(cls, carry, batch_ndim: int) -> Packing:
        leaves, treedef = jax.tree_util.tree_flatten(carry)
        dtypes = sorted({jnp.dtype(leaf.dtype).name for leaf in leaves})
        require(
            len(dtypes) == 1,
            f"implementation='parallel' needs a carry whose leaves share one dtype, got {dtypes}",
        )
        shapes = tuple(tuple(leaf.shape[batch_ndim:]) for leaf in leaves)
        return cls(treedef, shapes, jnp.dtype(dtypes[0]))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(shape) for shape in self.shapes)

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def pack(self, tree) -> Array:
        leaves = jax.tree_util.tree_leaves(tree)
        flat = [
            leaf.reshape(leaf.shape[: leaf.ndim - len(shape)] + (-1,))
            for leaf, shape in zip(leaves, self.shapes, strict=True)
        ]
        return flat[0] if len(flat) == 1 else jnp.concatenate(flat, axis=-1)

    def unpack(self, array: Array):
        lead = array.shape[:-1]
        parts = jnp.split(array, np.cumsum(self.sizes)[:-1].tolist(), axis=-1)
        leaves = [
            part.reshape(lead + shape) for part, shape in zip(parts, self.shapes, strict=True)
        ]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


# ---------------------------------------------------------------- linear recurrences
# Three forms of the per-step matrix A_t acting on packed states (..., N):
#   "elementwise" A (..., N);  "block" A (..., K, K, H) with N = K·H;  "dense" A (..., N, N).


class Form(NamedTuple):
    kind: str
    blocks: int = 1  # K, for "block"

    def apply(self, a: Array, v: Array) -> Array:
        if self.kind == "elementwise":
            return a * v
        if self.kind == "block":  # written out: K is 2 or so (why: "2x2 blocks written
            # out" in seqlab/unroll/_policy.py's implementation choices)
            k = self.blocks
            split = v.reshape(v.shape[:-1] + (k, v.shape[-1] // k))
            rows = [sum(a[..., i, j, :] * split[..., j, :] for j in range(k)) for i in range(k)]
            return jnp.stack(rows, axis=-2).reshape(v.shape)
        return jnp.einsum("...ij,...j->...i", a, v)

    def compose(self, later: Array, earlier: Array) -> Array:
        if self.kind == "elementwise":
            return later * earlier
        if self.kind == "block":
            k = self.blocks

            def entry(i, m):
                return sum(later[..., i, j, :] * earlier[..., j, m, :] for j in range(k))

            rows = [jnp.stack([entry(i, m) for m in range(k)], axis=-2) for i in range(k)]
            return jnp.stack(rows, axis=-3)
        return later @ earlier

    def transpose(self, a: Array) -> Array:
        if self.kind == "elementwise":
            return a
        if self.kind == "block":
            return jnp.swapaxes(a, -3, -2)
        return jnp.swapaxes(a, -1, -2)


def solve_linear(form: Form, a: Array, b: Array) -> Array:
    """s_t = A_t s_{t-1} + b_t for t = 0..T-1 with s_{-1} = 0 (fold the start into b_0),
    by one associative scan over the time axis 0."""

    def combine(earlier, later):
        a_1, b_1 = earlier
        a_2, b_2 = later
        return form.compose(a_2, a_1), form.apply(a_2, b_1) + b_2

    return jax.lax.associative_scan(combine, (a, b), axis=0)[1]


def _per_batch(values: Array, like: Array) -> Array:
    """(B,) values shaped to broadcast against a time-major (T, B, ...) array."""
    return values.reshape((1, -1) + (1,) * (like.ndim - 2))


def _select(take: Array, new, old):
    """Per sequence: ``new`` where ``take`` (B,) else ``old``, for time-major pytrees."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(_per_batch(take, n), n, o), new, old)


def _shifted(states: Array, first: Array) -> Array:
    """The states each step starts from: (first, s_0, ..., s_{T-2})."""
    return jnp.concatenate([first[None], states[:-1]], axis=0)


# ---------------------------------------------------------------- the problem


@dataclasses.dataclass(frozen=True)
class Static:
    """The solve's non-array settings (hashable: the custom_vjp's static argument)."""

    cell: Any
    hoist: bool
    packing: Packing
    options: Parallel
    structure: str

    @property
    def forward_form(self) -> Form:
        """The Jacobians Newton uses."""
        jacobian = self.options.jacobian
        if jacobian == "full":
            return Form("dense")
        if jacobian == "diagonal" or self.structure in ("linear-diagonal", "diagonal"):
            return Form("elementwise")
        if self.structure == "block-diagonal":
            return Form("block", len(self.packing.shapes))
        return Form("dense")

    @property
    def backward_form(self) -> Form | None:
        """The exact Jacobians the adjoint scan uses; None: the sequential adjoint."""
        if self.structure in ("linear-diagonal", "diagonal"):
            return Form("elementwise")
        if self.structure == "block-diagonal":
            return Form("block", len(self.packing.shapes))
        return Form("dense") if self.options.jacobian != "diagonal" else None

    @property
    def linear(self) -> bool:
        return self.structure == "linear-diagonal" and self.forward_form.kind == "elementwise"


def check_structure(structure: str, packing: Packing) -> None:
    if structure == "block-diagonal":
        require(
            len(set(packing.sizes)) == 1,
            "a block-diagonal cell's carry leaves must all have the same number of features, "
            f"got {list(packing.sizes)}",
        )


def step_function(static: Static, params, inputs, valid):
    """f over all steps at once: packed (T, B, N) starting states -> (new states, outputs).

    Masked steps (``valid`` False) keep their state and output zeros, as in the
    sequential scan, so their Jacobian is the identity."""
    cell, packing = static.cell, static.packing
    step = cell.step_projected if static.hoist else cell.step

    def one(state, u, valid_t):
        new_carry, output = step(params, packing.unpack(state), u)
        new_state = packing.pack(new_carry)
        if valid_t is None:
            return new_state, output
        new_state = jnp.where(valid_t[:, None], new_state, state)
        output = jax.tree_util.tree_map(
            lambda y: jnp.where(valid_t.reshape((-1,) + (1,) * (y.ndim - 1)), y, 0).astype(y.dtype),
            output,
        )
        return new_state, output

    if valid is None:
        return jax.vmap(lambda s, u: one(s, u, None)), one
    return jax.vmap(one), one


def _evaluate(static: Static, f_all, valid, inputs, prev: Array, form: Form | None):
    """f at every step from ``prev``, its outputs and (with ``form``) its Jacobians."""
    args = (prev, inputs) if valid is None else (prev, inputs, valid)
    if form is None:
        new, outputs = f_all(*args)
        return new, outputs, None
    new, jvp, outputs = jax.linearize(lambda s: f_all(s, *args[1:]), prev, has_aux=True)
    return new, outputs, jacobians(static.structure, form, jvp, prev, len(static.packing.shapes))


def jacobians(structure: str, form: Form, jvp, prev: Array, num_leaves: int) -> Array:
    """Each step's state Jacobian in ``form``, from the linearized step ``jvp``: as few
    forward-mode products as the cell's declared structure allows (one for diagonal
    cells, K for K x K blocks, N for dense ones)."""
    size = prev.shape[-1]

    def columns(basis):  # basis (M, N): returns (T, B, N_out, M)
        out = jax.vmap(lambda e: jvp(jnp.broadcast_to(e, prev.shape)))(basis)
        return jnp.moveaxis(out, 0, -1)

    if structure in ("linear-diagonal", "diagonal"):
        diagonal = jvp(jnp.ones_like(prev))  # exact: J is diagonal
        if form.kind == "elementwise":
            return diagonal
        return diagonal[..., None] * jnp.eye(size, dtype=prev.dtype)  # "full" asked for
    if structure == "block-diagonal":
        num = num_leaves
        width = size // num
        basis = jnp.repeat(jnp.eye(num, dtype=prev.dtype), width, axis=1)  # (K, N)
        out = columns(basis)  # (T, B, N_out, K_in)
        block = jnp.moveaxis(out.reshape(out.shape[:2] + (num, width, num)), -2, -1)
        if form.kind == "block":
            return block  # (T, B, K_out, K_in, H)
        if form.kind == "elementwise":
            return jnp.diagonal(block, axis1=-3, axis2=-2).swapaxes(-1, -2).reshape(prev.shape)
        eye = jnp.eye(width, dtype=prev.dtype)  # dense from blocks of diagonals
        dense = jnp.einsum("...ijh,hg->...ihjg", block, eye)
        return dense.reshape(prev.shape + (size,))
    full = columns(jnp.eye(size, dtype=prev.dtype))  # (T, B, N, N)
    return jnp.diagonal(full, axis1=-2, axis2=-1) if form.kind == "elementwise" else full


def relative_residual(states: Array, new: Array) -> Array:
    """Per sequence: max_t ‖s_t − f(s_{t−1})‖_∞ / max_t ‖f(s_{t−1})‖_∞, in float32 at least;
    inf when anything is not finite.

    Relative to the trajectory's own scale, so a trajectory of 1e-5 is solved to the same
    relative accuracy as one of 1 (an absolute floor of 1 stopped such solves at iteration
    0 with relative error 1). The scale's floor is the dtype's smallest normal number: the
    residual is below any tolerance only when the states reproduce f to working precision
    (an all-zero trajectory that f maps to zero is exact, residual 0).
    """
    dtype = at_least_float32(states.dtype)
    states, new = states.astype(dtype), new.astype(dtype)
    difference = jnp.max(jnp.abs(states - new), axis=(0, 2))
    scale = jnp.maximum(jnp.max(jnp.abs(new), axis=(0, 2)), jnp.finfo(dtype).tiny)
    residual = (difference / scale).astype(jnp.float32)
    return jnp.where(jnp.isfinite(residual), residual, jnp.inf)


class Solution(NamedTuple):
    """The Newton solve's result: packed states (T, B, N), outputs, and its record."""

    states: Array
    outputs: Any
    iterations: Array  # int32 scalar: linear solves done
    converged: Array  # bool scalar: every sequence within the tolerance
    residuals: Array  # (max_iterations,) float32: max relative residual after each; NaN after


def newton(static: Static, params, inputs, start: Array, valid) -> Solution:
    """Solve for all states; ``start`` is the packed initial carry (B, N)."""
    f_all, _ = step_function(static, params, inputs, valid)
    num_steps = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    form = static.forward_form
    options = static.options
    tolerance = options.tolerance_for(static.packing.dtype)
    states = jnp.broadcast_to(start[None], (num_steps, *start.shape))

    def evaluate(states, form):  # f(s_{t-1}, x_t) for every t, from the trajectory s
        return _evaluate(static, f_all, valid, inputs, _shifted(states, start), form)

    def newton_step(states, new, a, damping):
        if damping is not None:
            a = a * _per_batch(1 / (1 + damping), a).astype(a.dtype)
        prev = _shifted(states, start)
        b = new - form.apply(a, prev)
        b = jnp.concatenate([new[:1], b[1:]], axis=0)  # s_0 = f(start) exactly
        return solve_linear(form, a, b)

    new, outputs, a = evaluate(states, form)
    residual = relative_residual(states, new)
    history = jnp.full((options.max_iterations,), jnp.nan, jnp.float32)

    if static.linear:  # one exact solve, then f once more for the outputs
        states = newton_step(states, new, a, None)
        new, outputs, _ = evaluate(states, None)
        history = history.at[0].set(jnp.max(relative_residual(states, new)))
        return Solution(new, outputs, jnp.int32(1), jnp.bool_(True), history)

    def unfinished(carry):
        iteration, *_, residual, _, _ = carry
        return (iteration < options.max_iterations) & jnp.any(residual > tolerance)

    def iterate(carry):
        iteration, states, new, outputs, a, residual, damping, history = carry
        trial = newton_step(states, new, a, damping if options.damping else None)
        trial_new, trial_outputs, trial_a = evaluate(trial, form)
        trial_residual = relative_residual(trial, trial_new)
        accept = jnp.isfinite(trial_residual) | (not options.damping)
        if options.damping:
            improved = accept & (trial_residual < residual)
            shrunk = jnp.where(damping / 4 < 1 / 16, 0.0, damping / 4)
            grown = jnp.maximum(1.0, 4 * damping)
            damping = jnp.where(improved, shrunk, jnp.where(accept, damping, grown))
        states, new, outputs, a = _select(
            accept, (trial, trial_new, trial_outputs, trial_a), (states, new, outputs, a)
        )
        residual = jnp.where(accept, trial_residual, residual)
        history = history.at[iteration].set(jnp.max(residual))
        return iteration + 1, states, new, outputs, a, residual, damping, history

    damping = jnp.zeros_like(residual)
    carry = (jnp.int32(0), states, new, outputs, a, residual, damping, history)
    iteration, _, new, outputs, _, residual, _, history = jax.lax.while_loop(
        unfinished, iterate, carry
    )
    converged = jnp.all(residual <= tolerance)
    return Solution(new, outputs, iteration, converged, history)


def sequential(static: Static, params, inputs, start: Array, valid):
    """The same recurrence one step after another (``lax.scan``): states and outputs."""
    _, one = step_function(static, params, inputs, valid)

    def body(state, inputs_t):
        u, valid_t = inputs_t
        new, output = one(state, u, valid_t)
        return new, (new, output)

    _, (states, outputs) = jax.lax.scan(body, start, (inputs, valid))
    return states, outputs


def _solve(static: Static, params, inputs, start, valid):
    solution = newton(static, params, inputs, start, valid)
    if static.linear:
        return solution.states, solution.outputs
    if not static.options.fallback:  # NaN unless converged: a failed solve cannot pass
        poison = lambda leaf: jnp.where(solution.converged, leaf, jnp.nan)  # noqa: E731
        return jax.tree_util.tree_map(poison, (solution.states, solution.outputs))
    return jax.lax.cond(
        solution.converged,
        lambda: (solution.states, solution.outputs),
        lambda: sequential(static, params, inputs, start, valid),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(static: Static, params, inputs, start: Array, valid: Array | None):
    """Packed states (T, B, N) and outputs of the recurrence, solved in parallel (with the
    sequential fallback), differentiated by the adjoint recurrence (module docstring)."""
    return _solve(static, params, inputs, start, valid)


SECOND_ORDER = (
    "seqlab.scan(implementation='parallel') differentiates a Newton solve by one adjoint "
    "solve at its solution, for first-order reverse mode (jax.grad, jax.vjp); "
    "differentiating that gradient again (jax.grad of a gradient, jax.hessian, forward "
    "over reverse) is not supported for {cell}, whose solve iterates. Use "
    "implementation='xla' or 'xla-autodiff' for higher-order derivatives (the linear-state "
    "cells MinGRU and MinLSTM support them on 'parallel' too)"
)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _solve_first_order(static: Static, params, inputs, start, valid):
    """``_solve`` for the custom_vjp's forward: differentiating it (which only a
    higher-order derivative does) raises a ValueError that says what to use instead of
    JAX's "Reverse-mode differentiation does not work for lax.while_loop"."""
    return _solve(static, params, inputs, start, valid)


@_solve_first_order.defjvp
def _solve_first_order_jvp(static, primals, tangents):
    del primals, tangents
    raise ValueError(SECOND_ORDER.format(cell=type(static.cell).__name__))


def _recurrence_fwd(static, params, inputs, start, valid):
    solve = _solve if static.linear else _solve_first_order
    states, outputs = solve(static, params, inputs, start, valid)
    return (states, outputs), (params, inputs, start, valid, states)


def _recurrence_bwd(static, residuals, cotangents):
    params, inputs, start, valid, states = residuals
    d_states, d_outputs = cotangents
    f_all, one = step_function(static, params, inputs, valid)
    prev = _shifted(states, start)

    def f_params(p, u, s):  # f over all steps with the parameters as an argument
        f_p = step_function(static, p, u, valid)[0]
        return f_p(s, u) if valid is None else f_p(s, u, valid)

    _, vjp = jax.vjp(f_params, params, inputs, prev)
    through_outputs = vjp((jnp.zeros_like(states), d_outputs))[2]  # K_tᵀ ȳ_t
    later = jnp.concatenate([through_outputs[1:], jnp.zeros_like(through_outputs[:1])])
    b = d_states + later  # μ_t = b_t + J_{t+1}ᵀ μ_{t+1}
    form = static.backward_form
    if form is None:
        adjoint = _sequential_adjoint(one, params, inputs, valid, prev, d_states, d_outputs)
    else:
        a = _evaluate(static, f_all, valid, inputs, prev, form)[2]
        a_next = form.transpose(jnp.concatenate([a[1:], a[:1]], axis=0))
        adjoint = solve_linear(form, a_next[::-1], b[::-1])[::-1]
    d_params, d_inputs, d_prev = vjp((adjoint, d_outputs))
    return d_params, d_inputs, d_prev[0], None


def _sequential_adjoint(one, params, inputs, valid, prev, d_states, d_outputs):
    """μ_t by a reverse ``lax.scan`` of per-step VJPs (exact, O(T·B·N) memory)."""
    del params  # ``one`` closes over them

    def tail(tree):
        return jax.tree_util.tree_map(lambda leaf: leaf[1:], tree)

    def back(adjoint_next, step_inputs):
        prev_next, u_next, valid_next, d_output_next, d_state = step_inputs
        _, vjp = jax.vjp(lambda s: one(s, u_next, valid_next), prev_next)
        (through,) = vjp((adjoint_next, d_output_next))
        adjoint = d_state + through
        return adjoint, adjoint

    last = d_states[-1]
    step_inputs = (
        prev[1:],
        tail(inputs),
        None if valid is None else valid[1:],
        tail(d_outputs),
        d_states[:-1],
    )
    _, earlier = jax.lax.scan(back, last, step_inputs, reverse=True)
    return jnp.concatenate([earlier, last[None]], axis=0)


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
