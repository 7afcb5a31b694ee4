"""``Parallel``: the settings of the parallel-in-time solve, as ``kernels.Pallas`` is for the
kernels."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from seqlab._checks import check_one_of, require

JACOBIANS = ("auto", "full", "diagonal")


def at_least_float32(dtype):
    """The dtype a solve of ``dtype`` states runs in: float32 for narrower floats
    (bfloat16, float16), the dtype itself otherwise (``jnp.promote_types`` would refuse
    float64 with float32 under strict dtype promotion)."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype.itemsize < 4 else dtype


@dataclasses.dataclass(frozen=True)
class Parallel:
    """How ``seqlab.scan(..., implementation=Parallel(...))`` solves all steps at once.

    ``implementation="parallel"`` is ``Parallel()``.

    Args:
      jacobian: which state Jacobians the Newton iterations use.
        ``"auto"``: the cell's exact Jacobian in its declared structure
        (``seqlab.cells.jacobian_structure``): elementwise for linear-diagonal and
        diagonal cells, 2x2 blocks of diagonals for DiagLSTM, full matrices (DEER, memory
        O(T·B·S²) for a state of S numbers) for dense cells. ``"full"``: full matrices for
        every cell. ``"diagonal"``: only the diagonal (quasi-DEER; for dense cells it is
        read off the full per-step Jacobian, so it saves memory in the solve, not work).
      tolerance: the solve has converged when, for every sequence,
        ``max_t ‖s_t − f(s_{t−1}, x_t)‖_∞ ≤ tolerance · max_t ‖f(s_{t−1}, x_t)‖_∞``
        (the relative residual: relative to the trajectory's own scale, so states of
        1e-5 are solved as accurately as states of 1; the scale's floor is the smallest
        normal number, so a solve stops at iteration 0 only when its start is exact).
        None: ``64 · eps`` of the dtype the solve runs in (7.6e-6 in float32, 1.4e-14 in
        float64). The solve runs in float32 at least: bfloat16 and float16 problems are
        solved in float32 and their results rounded back (a tolerance of 64·eps of
        bfloat16, 0.5, stopped them before the first iteration).
      max_iterations: the cap on Newton iterations (linear solves). If some sequence has
        not converged by then, ``seqlab.scan`` runs the sequential scan instead, inside the
        same compiled program (``lax.cond``; under ``jax.vmap`` both branches run).
      damping: Levenberg–Marquardt-style step control per sequence. A trial trajectory
        with non-finite values is rejected (the iterate stays where it was) and the next
        trial's Jacobians are shrunk by ``1 / (1 + λ)`` with λ = 1, 4, 16, … (one step
        further per rejection), which moves the step from Newton (λ = 0) toward the
        Jacobi fixed-point step ``s ← f(s_{-1})`` (λ → ∞), which makes progress from any
        start; a finite trial is kept, and λ falls by 4 (to 0 below 1/16) when it lowered
        the residual. (Raising λ also when the residual merely grew stalled a dense LSTM
        that plain Newton solves in 21 non-monotone iterations.) So an expanding cell
        never puts an overflowed trajectory into the iterate: it converges slower or
        falls back. False: plain Newton (a non-finite trial is kept and the solve cannot
        converge).
      fallback: True (the default): a solve that has not converged is replaced by the
        sequential scan's answer (above). False: no fallback; if any sequence has not
        converged, every output and the final carry are NaN (so are their gradients):
        never the unconverged trajectory, and never, silently, the sequential answer. For
        tests and benchmarks that must check or time the parallel solve itself (a
        comparison with the sequential scan cannot tell a fallback from a solve).
      hoist: compute the input projection of all steps once, before the solve (cells
        with ``project_inputs`` only), rather than in every iteration. None (the
        default): whenever the cell can; ``seqlab.scan``'s ``hoist_input_projection``
        sets it too.
    """

    jacobian: str = "auto"
    tolerance: float | None = None
    max_iterations: int = 64
    damping: bool = True
    fallback: bool = True
    hoist: bool | None = None
    name: ClassVar[str] = "parallel"  # the implementation's name in seqlab.scan

    def __post_init__(self):
        check_one_of("jacobian", self.jacobian, JACOBIANS)
        require(
            self.tolerance is None
            or (isinstance(self.tolerance, int | float) and self.tolerance > 0),
            f"tolerance must be None or a positive number, got {self.tolerance!r}",
        )
        require(
            isinstance(self.max_iterations, int)
            and not isinstance(self.max_iterations, bool)
            and self.max_iterations >= 1,
            f"max_iterations must be a positive int, got {self.max_iterations!r}",
        )
        require(isinstance(self.damping, bool), f"damping must be a bool, got {self.damping!r}")
        require(isinstance(self.fallback, bool), f"fallback must be a bool, got {self.fallback!r}")
        require(
            self.hoist is None or isinstance(self.hoist, bool),
            f"hoist must be None, True or False, got {self.hoist!r}",
        )

    def tolerance_for(self, dtype) -> float:
        """The tolerance in force for a solve whose states have ``dtype`` (narrower
        floating dtypes are solved in float32: their tolerance is float32's)."""
        if self.tolerance is not None:
            return float(self.tolerance)
        return 64 * float(jnp.finfo(at_least_float32(dtype)).eps)
