"""``seqlab.scan`` on the fused Pallas kernels: which cells they cover, and the glue.

The glue computes the input projection of all steps as one XLA matmul (autodiff covers it),
runs the recurrence kernel, and turns the carried states it returns into the scan's outputs
and final carry; direction and the zeroing past each length are the front door's
(``seqlab/_time.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqlab._time import Steps
from seqlab.cells import GRU, LSTM, RNN, LSTMState
from seqlab.kernels import Pallas, gru_recurrence, lstm_recurrence, rnn_recurrence
from seqlab.typing import Array, Carry, Params
from seqlab.unroll._bptt import unwrap

KERNEL_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def unsupported_reason(cell, params: Params, xs: Array, carry: Carry) -> str | None:
    """Why the Pallas kernels cannot run this scan, or None when they can."""
    cell, params = unwrap(cell, params)
    if type(cell) not in (RNN, LSTM, GRU):
        return (
            "the Pallas kernels cover seqlab.cells.RNN, LSTM and GRU exactly (or one "
            f"wrapped in TrainableInitialState); got {type(cell).__name__}"
        )
    if isinstance(cell, LSTM) and cell.proj_size:
        return "the Pallas LSTM kernel has no projection (proj_size > 0)"
    dtypes = [("xs are", xs.dtype), ("the parameters are", params["w_hh"].dtype)]
    dtypes += [("the carry is", leaf.dtype) for leaf in jax.tree_util.tree_leaves(carry)]
    for name, dtype in dtypes:
        if jnp.dtype(dtype) not in KERNEL_DTYPES:
            return f"the Pallas kernels take float32 or bfloat16; {name} {jnp.dtype(dtype)}"
    return None


def scan_pallas(
    cell, params: Params, xs: Array, carry: Carry, steps: Steps | None, options: Pallas
) -> tuple[Array, Carry]:
    """Unroll ``cell`` over time-major, forward-ordered ``xs`` with the fused kernels:
    (outputs, final carry), under ``seqlab/_time.py``'s contract."""
    cell, params = unwrap(cell, params)
    num_steps, batch_size = xs.shape[:2]
    projected = cell.project_inputs(params, xs)
    lengths = jnp.full((batch_size,), num_steps, jnp.int32) if steps is None else steps.lengths
    w_hh = params["w_hh"]
    match cell:
        case LSTM():
            hs, cs = lstm_recurrence(projected, w_hh, carry.h, carry.c, lengths, options=options)
            final_carry = LSTMState(hs[-1].astype(carry.h.dtype), cs[-1].astype(carry.c.dtype))
        case GRU():
            b_hn = params.get("b_hn") if cell.variant == "cudnn" else None
            hs = gru_recurrence(
                projected, w_hh, b_hn, carry, lengths, variant=cell.variant, options=options
            )
            final_carry = hs[-1].astype(carry.dtype)
        case RNN():
            hs = rnn_recurrence(
                projected, w_hh, carry, lengths, activation=cell.activation, options=options
            )
            final_carry = hs[-1].astype(carry.dtype)
    return hs, final_carry
