"""Parameter conversion from Flax linen's ``LSTMCell``, ``OptimizedLSTMCell`` and ``GRUCell``.

Flax keeps one Dense per gate: for the LSTM input kernels ``ii, if, ig, io`` (no bias) and
hidden ``hi, hf, hg, ho`` (with bias); for the GRU ``ir, iz, in`` (with bias) and ``hr,
hz`` (no bias) plus ``hn`` (with bias, inside the reset product). seqlab concatenates the
gate blocks in the same order. Flax's LSTM carry is ``(c, h)``; seqlab's is
``LSTMState(h, c)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from seqlab._checks import require
from seqlab.cells import GRU, LSTM
from seqlab.typing import Params


def _check_activations(module) -> None:
    gate = getattr(module, "gate_fn", jax.nn.sigmoid)
    activation = getattr(module, "activation_fn", jnp.tanh)
    require(
        gate is jax.nn.sigmoid and activation is jnp.tanh,
        f"only the default sigmoid gates and tanh activation convert; {type(module).__name__} "
        f"has gate_fn={getattr(gate, '__name__', gate)}, "
        f"activation_fn={getattr(activation, '__name__', activation)}",
    )


def from_flax_linen(module: Any, variables: Params) -> tuple[Any, Params]:
    """``(cell, params)`` computing what a Flax linen recurrent cell computes.

    Args:
      module: a ``flax.linen.LSTMCell``, ``OptimizedLSTMCell`` or ``GRUCell``.
      variables: its variables (``module.init(...)``), with or without the top-level
        ``"params"`` collection.
    """
    from flax import linen

    params = variables.get("params", variables)
    _check_activations(module)

    def kernels(names):
        return jnp.concatenate([params[n]["kernel"] for n in names], axis=-1)

    if isinstance(module, linen.LSTMCell | linen.OptimizedLSTMCell):
        cell = LSTM(module.features)
        return cell, {
            "w_ih": kernels(["ii", "if", "ig", "io"]),
            "w_hh": kernels(["hi", "hf", "hg", "ho"]),
            "b": jnp.concatenate([params[n]["bias"] for n in ["hi", "hf", "hg", "ho"]]),
        }
    if isinstance(module, linen.GRUCell):
        cell = GRU(module.features, variant="cudnn")
        return cell, {
            "w_ih": kernels(["ir", "iz", "in"]),
            "w_hh": kernels(["hr", "hz", "hn"]),
            "b": jnp.concatenate([params[n]["bias"] for n in ["ir", "iz", "in"]]),
            "b_hn": params["hn"]["bias"],
        }
    raise ValueError(
        "from_flax_linen expects flax.linen.LSTMCell, OptimizedLSTMCell or GRUCell, "
        f"got {type(module).__name__}"
    )
