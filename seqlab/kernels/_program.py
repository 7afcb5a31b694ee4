"""Inside the recurrence kernels: a program's rows and tiles, the step barrier, the
chunked matmuls (``accumulate``), the walk over time, and the matmul precision.

The scheme (persistent RNN, Diamos et al. 2016; the split FlashRNN and cuDNN's persistent
kernels use): one kernel launch walks the whole sequence. The grid is

    (batch blocks, hidden programs)

Program (b, p) owns ``block_batch`` rows of the batch and a contiguous run of
``block_hidden``-wide column tiles of the hidden state, in every gate. Per time step it
reads the *whole* previous hidden state of its rows (written by all programs of its batch
block at the previous step), multiplies it by its own columns of the recurrent matrix
(the reduction runs in ``block_k`` chunks), applies the gate math to its own columns and
writes its slice of the new state. The programs of a batch block then meet at a grid
barrier before the next step. The input projection of all steps is one large XLA matmul
outside the kernel, so each step's work is the recurrent matmul plus fused gate math.

State lives in a (T + 1)-long buffer (row 0 = the initial state, row t + 1 = the carry
after step t), so a step never writes where another program may still be reading: no
double buffering is needed, and one barrier per dependent phase suffices. The buffer is
also the residual the backward kernel needs, and the backward kernel is the same scheme
run from the last step to the first, with the transposed recurrent matrix.

The barrier is a per-batch-block int32 counter in global memory: each program syncs its
threads (so its stores are done), adds one with an acquire-release atomic, then polls the
counter with atomic reads (acquires) until all programs of its block have arrived. All
programs must be resident at once, so their number is capped at the device's
multiprocessor count. Loads of state written by other programs are volatile (they bypass
L1; jax 0.10.2 cannot lower the ``.cg`` cache modifier: its table lacks the dots it
checks for).

Under ``jax.vmap`` (seeds, say) Pallas would add a grid axis and multiply the programs
past what can be resident; ``_launch.resident_vmap`` runs as many copies side by side as fit
and maps over the rest.

On CPU the same kernels run in Pallas interpret mode. Interpret mode runs the programs
of a grid one after another, so there the hidden axis is a single program that loops
over all column tiles, and the barrier is a no-op; everything else (tiling, padding,
masking, gate math, the reverse-time backward) is the code that runs on the GPU. The
barrier itself is only lowered (to Triton IR, for "cuda", on a CPU machine: see
tests/test_kernels.py::TestLowering), not run, until a GPU runs benchmarks/gpu_scan.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from seqlab.kernels._layout import Layout
from seqlab.typing import Array


class Program:
    """What one program knows about itself inside a kernel: its rows, its column tiles,
    and how to meet the other programs of its batch block."""

    def __init__(self, layout: Layout, counter_ref):
        self.layout = layout
        self.counter_ref = counter_ref
        self.block = pl.program_id(0)
        self.rank = pl.program_id(1)
        self.rows = pl.ds(
            pl.multiple_of(self.block * layout.tiles.block_batch, layout.tiles.block_batch),
            layout.tiles.block_batch,
        )

    def for_own_tiles(self, body: Callable[[Array], None]) -> None:
        """Run ``body(column)`` for the first column of each tile this program owns."""
        width = self.layout.tiles.block_hidden
        per_program = self.layout.tiles_per_program
        first = self.rank * per_program

        def run(index):
            body(pl.multiple_of((first + index) * width, width))

        if per_program == 1:
            run(0)
        else:
            lax.fori_loop(0, per_program, lambda i, c: (run(i), c)[1], 0)

    def sync(self, arrival: Array | int) -> None:
        """Barrier among the programs of this batch block.

        ``arrival`` counts the barriers this program has passed including this one
        (1, 2, ...); the counter only grows, so no reset is needed between steps.
        """
        if self.layout.interpret:
            return  # programs run in order; there is nothing to wait for
        plgpu.debug_barrier()  # every thread of this program has issued its stores
        programs = self.layout.hidden_programs
        if programs == 1:
            return
        # Arrive with an acquire-release atomic, then poll with atomic reads (adding 0):
        # each poll is an acquire at GPU scope, so once the count is reached this program
        # sees every store the other programs made before they arrived.
        target = programs * arrival
        seen = plgpu.atomic_add(self.counter_ref, self.block, 1) + 1

        def poll(_):
            return plgpu.atomic_add(self.counter_ref, self.block, 0)

        lax.while_loop(lambda count: count < target, poll, seen)
        plgpu.debug_barrier()  # no thread reads shared state before the poll succeeded

    def load_shared(self, ref, index) -> Array:
        """Load state other programs wrote (bypassing L1 on the GPU)."""
        if self.layout.interpret or self.layout.hidden_programs == 1:
            return ref[index]
        return plgpu.load(ref.at[index], volatile=True)


class Product(NamedTuple):
    """One matmul into an accumulator of ``accumulate``: the loaded left chunk times
    ``rhs(k0)``, a (block_k, block_hidden) chunk (or, with ``transpose``, a
    (block_hidden, block_k) chunk used transposed), added to accumulator ``output``."""

    rhs: Callable[[Array], Array]
    output: int
    transpose: bool = False


class Term(NamedTuple):
    """A left operand of ``accumulate`` (``lhs(k0)`` loads chunk k0, (block_batch,
    block_k), once per chunk) and the products it enters."""

    lhs: Callable[[Array], Array]
    products: Sequence[Product]


def accumulate(
    program: Program,
    terms: Sequence[Term],
    num_outputs: int,
    matmul_dtype,
    precision,
) -> list[Array]:
    """Sums of small matmuls over the hidden axis, in ``block_k`` chunks: accumulator i
    is the sum over every ``Product`` with ``output == i``. Operands are cast to
    ``matmul_dtype``; accumulation is float32."""
    layout = program.layout
    chunk = layout.tiles.block_k
    shape = (layout.tiles.block_batch, layout.tiles.block_hidden)

    def body(index, sums):
        k0 = pl.multiple_of(index * chunk, chunk)
        sums = list(sums)
        for term in terms:
            left = term.lhs(k0).astype(matmul_dtype)
            for product in term.products:
                contract = (((1,), (1 if product.transpose else 0,)), ((), ()))
                sums[product.output] = sums[product.output] + lax.dot_general(
                    left,
                    product.rhs(k0).astype(matmul_dtype),
                    contract,
                    precision=precision,
                    preferred_element_type=jnp.float32,
                )
        return tuple(sums)

    start = tuple(jnp.zeros(shape, jnp.float32) for _ in range(num_outputs))
    return list(lax.fori_loop(0, layout.hidden_padded // chunk, body, start))


def gate_gradients_back(
    program: Program, dpre_ref, w_ref, t, cols, gates: Sequence[int], precision
) -> Array:
    """Σ over ``gates`` of dpre_g[t] W_g^T for this program's rows and columns ``cols``:
    the gradient that reaches h_{t-1} through the recurrent matmul of those gates.
    ``dpre_ref`` (T, Bp, G*Hp) holds every program's pre-activation gradients (loaded
    shared); ``w_ref`` (Hp, G*Hp) is the recurrent matrix, read transposed."""
    hidden, chunk = program.layout.hidden_padded, program.layout.tiles.block_k
    terms = [
        Term(
            lambda k0, gate=gate: program.load_shared(
                dpre_ref, (t, program.rows, pl.ds(gate * hidden + k0, chunk))
            ),
            [
                Product(
                    lambda k0, gate=gate: w_ref[cols, pl.ds(gate * hidden + k0, chunk)],
                    output=0,
                    transpose=True,
                )
            ],
        )
        for gate in gates
    ]
    (total,) = accumulate(program, terms, 1, w_ref.dtype, precision)
    return total


def run_steps(
    program: Program,
    num_steps: int,
    phases: Sequence[tuple[Callable, bool]],
    reverse: bool,
) -> None:
    """Walk time: at each step run every phase over this program's tiles.

    ``phases`` holds ``(phase, sync)``: ``phase(t, column)`` runs for each owned tile,
    then, when ``sync``, a barrier (needed before anything reads what the phase wrote in
    other programs' columns). ``reverse`` walks from the last step to the first. The
    barrier after the initial state is written counts as arrival 1.
    """
    per_step = sum(1 for _, sync in phases if sync)

    def step(index, carry):
        t = num_steps - 1 - index if reverse else index
        arrivals = 1 + index * per_step
        for phase, sync in phases:
            program.for_own_tiles(lambda column, phase=phase: phase(t, column))
            if sync:
                arrivals = arrivals + 1
                program.sync(arrivals)
        return carry

    lax.fori_loop(0, num_steps, step, 0)


def matmul_precision(dtype) -> lax.Precision:
    """Precision of the in-kernel matmuls: full float32 when JAX's default matmul
    precision asks for it (``jax.default_matmul_precision("highest")``), else the
    device default (TF32 for float32 on NVIDIA GPUs), as XLA's own matmuls do."""
    setting = jax.config.jax_default_matmul_precision
    if jnp.dtype(dtype) == jnp.float32 and setting in ("highest", "float32", "HIGHEST"):
        return lax.Precision.HIGHEST
    return lax.Precision.DEFAULT


def reference_matmul(lhs: Array, weights: Array) -> Array:
    """``lhs @ weights`` as the kernels compute it, for the plain references: operands in
    the weights' dtype (bfloat16 weights round the float32 state, as cuDNN and XLA do),
    accumulation in float32."""
    return jnp.dot(lhs.astype(weights.dtype), weights, preferred_element_type=jnp.float32)
