"""Parameter conversion from Flax linen's ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``
and ``ConvLSTMCell``.

Flax keeps one Dense per gate: for the LSTM input kernels ``ii, if, ig, io`` (no bias) and
hidden ``hi, hf, hg, ho`` (with bias); for the GRU ``ir, iz, in`` (with bias) and ``hr,
hz`` (no bias) plus ``hn`` (with bias, inside the reset product). seqlab concatenates the
gate blocks in the same order. Flax's LSTM carry is ``(c, h)``; seqlab's is
``LSTMState(h, c)``.

Flax's ``ConvLSTMCell`` has two convolutions of 4H output channels, ``ih`` (of the input)
and ``hh`` (of h), each with a bias, gate blocks in the order i, g, f, o, and adds a
constant 1 to the forget pre-activation at every step. seqlab's ``ConvLSTM`` has kernels
``w_x``, ``w_h`` in the order i, f, g, o and one bias ``b``: the converter reorders the
blocks and folds both biases and the constant 1 into ``b`` (f's block of ``b`` is
b_ih + b_hh + 1).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from seqlab._checks import require
from seqlab.cells import GRU, LSTM, ConvLSTM
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


def _check_conv_lstm(module, spatial_shape) -> tuple[int, ...]:
    """The kernel size of a Flax ``ConvLSTMCell`` that converts exactly; ValueError naming
    what does not."""
    name = type(module).__name__
    kernel = module.kernel_size
    kernel = (kernel,) if isinstance(kernel, int) else tuple(kernel)
    require(
        spatial_shape is not None,
        f"from_flax_linen needs spatial_shape= for a {name} (the spatial size of its input "
        "frames, e.g. (32, 32) or (64,), which the module does not record)",
    )
    require(
        isinstance(spatial_shape, list | tuple) and len(spatial_shape) == len(kernel),
        f"spatial_shape must have one size per spatial axis of the {name}'s kernel_size "
        f"{module.kernel_size!r} ({len(kernel)}), got {spatial_shape!r}",
    )
    strides = module.strides
    require(
        strides is None
        or strides == 1
        or (isinstance(strides, list | tuple) and all(s == 1 for s in strides)),
        f"only stride 1 converts (seqlab's ConvLSTM keeps the map's size); {name} has "
        f"strides={strides!r}",
    )
    padding = module.padding
    require(
        isinstance(padding, str) and padding.upper() == "SAME",
        f"only padding='SAME' converts (seqlab's ConvLSTM pads (k - 1) // 2 zeros before "
        f"and the rest after); {name} has padding={padding!r}",
    )
    require(
        module.dtype is None or jnp.dtype(module.dtype) == jnp.dtype(module.param_dtype),
        f"only a {name} computing in its parameters' dtype converts (seqlab computes in the "
        f"parameters' and inputs' dtype); it has dtype={module.dtype}, "
        f"param_dtype={module.param_dtype}",
    )
    return kernel


def _conv_lstm_params(module, params: Params) -> Params:
    """seqlab ConvLSTM parameters from Flax ConvLSTMCell ones: blocks i, g, f, o -> i, f,
    g, o; b = b_ih + b_hh + 1 on f (zero biases when ``use_bias=False``)."""
    hidden = module.features

    def reorder(value):  # gate blocks along the last axis: i, g, f, o -> i, f, g, o
        i, g, f, o = jnp.split(value, 4, axis=-1)
        return jnp.concatenate([i, f, g, o], axis=-1)

    w_x, w_h = params["ih"]["kernel"], params["hh"]["kernel"]
    require(
        w_x.shape[-1] == 4 * hidden and w_h.shape[-2:] == (hidden, 4 * hidden),
        f"expected ConvLSTMCell kernels with {4 * hidden} output channels and hh taking "
        f"{hidden}, got ih {w_x.shape} and hh {w_h.shape}",
    )
    if module.use_bias:
        bias = reorder(params["ih"]["bias"] + params["hh"]["bias"])
    else:
        bias = jnp.zeros((4 * hidden,), w_h.dtype)
    forget = jnp.zeros((4 * hidden,), bias.dtype).at[hidden : 2 * hidden].set(1)
    return {"w_x": reorder(w_x), "w_h": reorder(w_h), "b": bias + forget}


def from_flax_linen(
    module: Any, variables: Params, *, spatial_shape: tuple[int, ...] | None = None
) -> tuple[Any, Params]:
    """``(cell, params)`` computing what a Flax linen recurrent cell computes.

    Args:
      module: a ``flax.linen.LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or
        ``ConvLSTMCell``. A ConvLSTMCell converts to ``seqlab.cells.ConvLSTM`` (no
        peepholes) when it has stride 1, padding ``'SAME'`` and computes in its
        parameters' dtype (``dtype`` None or ``param_dtype``); anything else raises
        ValueError. Flax's runtime +1 on the forget gate and its two biases are folded
        into ``b``, so ``use_bias=False`` gives ``b`` of zeros with 1 on the forget block.
      variables: its variables (``module.init(...)``), with or without the top-level
        ``"params"`` collection.
      spatial_shape: for a ``ConvLSTMCell`` (required there, refused otherwise): the
        spatial size of its input frames, e.g. (32, 32) or (64,), one size per axis of
        its ``kernel_size``; the module does not record it.

    seqlab's initial carry is zeros, Flax's default ``carry_init``: a module with another
    ``carry_init`` converts, and its carry must be passed to ``seqlab.scan`` explicitly.
    """
    from flax import linen

    params = variables.get("params", variables)
    _check_activations(module)
    is_conv = isinstance(module, linen.ConvLSTMCell)
    require(
        spatial_shape is None or is_conv,
        f"spatial_shape is for flax.linen.ConvLSTMCell only, got it for {type(module).__name__}",
    )

    def kernels(names):
        return jnp.concatenate([params[n]["kernel"] for n in names], axis=-1)

    if is_conv:
        kernel = _check_conv_lstm(module, spatial_shape)
        cell = ConvLSTM(module.features, spatial_shape=tuple(spatial_shape), kernel_size=kernel)
        return cell, _conv_lstm_params(module, params)
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
        "from_flax_linen expects flax.linen.LSTMCell, OptimizedLSTMCell, GRUCell or "
        f"ConvLSTMCell, got {type(module).__name__}"
    )
