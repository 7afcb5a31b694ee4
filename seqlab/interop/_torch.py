"""Parameter conversion to and from PyTorch's ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``.

torch is imported lazily: seqlab does not depend on it. Weights map as

    torch weight_ih_l{k}[_reverse]  (G*H, D)  ->  w_ih (D, G*H)      (transposed)
    torch weight_hh_l{k}[_reverse]  (G*H, R)  ->  w_hh (R, G*H)
    torch weight_hr_l{k}[_reverse]  (P, H)    ->  w_hr (H, P)         (LSTM proj_size)
    RNN, LSTM: b = bias_ih + bias_hh
    GRU:       b = bias_ih + [bias_hr, bias_hz, 0],  b_hn = bias_hn   (cuDNN placement)

Gate orders are PyTorch's (LSTM i, f, g, o; GRU r, z, n), so blocks copy as they are.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from seqlab._checks import require
from seqlab.cells import GRU, LSTM, RNN
from seqlab.layers import RNNLayer
from seqlab.typing import Params

_SUFFIXES = {"forward": "", "backward": "_reverse"}


def _torch():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("seqlab.interop torch conversion needs torch installed") from error
    return torch


def _array(tensor) -> jnp.ndarray:
    return jnp.asarray(tensor.detach().cpu().numpy().astype(np.float32))


def from_torch(module: Any) -> tuple[RNNLayer, Params]:
    """An ``RNNLayer`` and parameters that compute what ``module`` computes.

    Supports ``torch.nn.RNN`` (tanh or relu), ``torch.nn.LSTM`` (with ``proj_size``) and
    ``torch.nn.GRU``, with any ``num_layers``, ``bidirectional``, ``batch_first``,
    ``bias`` and inter-layer ``dropout``. The layer takes inputs in the module's own
    layout (``time_major = not batch_first``); with ``seq_lengths`` it matches the module
    run on a ``pack_padded_sequence`` (zeros at padded steps).
    """
    torch = _torch()
    hidden = getattr(module, "hidden_size", None)
    if isinstance(module, torch.nn.LSTM):
        cell = LSTM(hidden, proj_size=module.proj_size, use_bias=module.bias)
    elif isinstance(module, torch.nn.GRU):
        cell = GRU(hidden, variant="cudnn", use_bias=module.bias)
    elif isinstance(module, torch.nn.RNN):
        cell = RNN(hidden, activation=module.nonlinearity, use_bias=module.bias)
    else:
        raise ValueError(
            "from_torch expects torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU, "
            f"got {type(module).__name__}"
        )
    layer = RNNLayer(
        cell,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        dropout=float(module.dropout),
        time_major=not module.batch_first,
    )
    weights = dict(module.named_parameters())
    params = []
    for index in range(module.num_layers):
        layer_params = {}
        for direction in layer.directions:
            suffix = f"_l{index}{_SUFFIXES[direction]}"
            p = {
                "w_ih": _array(weights["weight_ih" + suffix]).T,
                "w_hh": _array(weights["weight_hh" + suffix]).T,
            }
            if module.bias:
                bias_ih = _array(weights["bias_ih" + suffix])
                bias_hh = _array(weights["bias_hh" + suffix])
                if isinstance(cell, GRU):
                    p["b"] = bias_ih.at[: 2 * hidden].add(bias_hh[: 2 * hidden])
                    p["b_hn"] = bias_hh[2 * hidden :]
                else:
                    p["b"] = bias_ih + bias_hh
            if isinstance(cell, LSTM) and cell.proj_size:
                p["w_hr"] = _array(weights["weight_hr" + suffix]).T
            layer_params[direction] = p
        params.append(layer_params)
    return layer, tuple(params)


def to_torch(layer: RNNLayer, params: Params) -> Any:
    """A ``torch.nn.RNN``, ``LSTM`` or ``GRU`` computing what ``layer`` computes.

    Needs one cell for all layers, of a kind PyTorch has: ``cells.RNN`` (tanh or relu),
    ``cells.LSTM``, or ``cells.GRU(variant="cudnn")``. Biases go to ``bias_ih`` (and the
    GRU's ``b_hn`` to the n block of ``bias_hh``); the other ``bias_hh`` entries are zero.
    """
    torch = _torch()
    require(isinstance(layer, RNNLayer), f"to_torch expects an RNNLayer, got {type(layer)}")
    cell = layer.cells[0]
    require(
        all(c == cell for c in layer.cells),
        "to_torch needs the same cell in every layer (PyTorch modules have one)",
    )
    match cell:
        case LSTM():
            module_type, extra = torch.nn.LSTM, {"proj_size": cell.proj_size}
        case GRU(variant="cudnn"):
            module_type, extra = torch.nn.GRU, {}
        case RNN(activation="tanh" | "relu"):
            module_type, extra = torch.nn.RNN, {"nonlinearity": cell.activation}
        case _:
            raise ValueError(
                "to_torch supports cells.RNN (tanh, relu), cells.LSTM and "
                f"cells.GRU(variant='cudnn'); got {cell!r}, which PyTorch has no module for"
            )
    options = dict(
        input_size=int(params[0]["forward"]["w_ih"].shape[0]),
        hidden_size=cell.hidden_size,
        num_layers=layer.num_layers,
        bias=cell.use_bias,
        batch_first=not layer.time_major,
        dropout=layer.dropout,
        bidirectional=layer.bidirectional,
    )
    module = module_type(**options, **extra)
    weights = dict(module.named_parameters())
    with torch.no_grad():
        for index, layer_params in enumerate(params):
            for direction, p in layer_params.items():
                suffix = f"_l{index}{_SUFFIXES[direction]}"

                def put(name, value, suffix=suffix):
                    weights[name + suffix].copy_(torch.from_numpy(np.array(value, np.float32)))

                put("weight_ih", np.asarray(p["w_ih"]).T)
                put("weight_hh", np.asarray(p["w_hh"]).T)
                if "w_hr" in p:
                    put("weight_hr", np.asarray(p["w_hr"]).T)
                if options["bias"]:
                    put("bias_ih", p["b"])
                    bias_hh = np.zeros(weights["bias_hh" + suffix].shape, np.float32)
                    if "b_hn" in p:
                        bias_hh[2 * cell.hidden_size :] = np.asarray(p["b_hn"])
                    put("bias_hh", bias_hh)
    return module


def state_to_torch_layout(layer: RNNLayer, state: Params):
    """A final state from ``layer.apply`` in PyTorch's layout.

    Returns ``h_n`` (num_layers * num_directions, B, H_out), or ``(h_n, c_n)`` for an
    LSTM, ordered layer by layer with forward before backward, as PyTorch orders them.
    """
    carries = [layer_state[d] for layer_state in state for d in layer.directions]
    if isinstance(carries[0], tuple):
        return tuple(jnp.stack([c[i] for c in carries]) for i in range(len(carries[0])))
    return jnp.stack(carries)
