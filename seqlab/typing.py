"""Type aliases used across seqlab.

Dimension legend used in shapes throughout the docstrings:

    B  batch            T  time (sequence length)
    D  input features   H  hidden size
    P  projection size  G  number of gates (4 for LSTM, 3 for GRU, 2 for MGU, 1 for RNN)
    L  number of stacked layers

Arrays are batch-major, ``(B, T, D)``, unless a function takes ``time_major=True``,
in which case they are ``(T, B, D)``.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import jax

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params: TypeAlias = Any  # a pytree of arrays
Carry: TypeAlias = Any  # a pytree of arrays with leading batch dimensions
Shape: TypeAlias = tuple[int, ...]

__all__ = ["Array", "PRNGKey", "Params", "Carry", "Shape"]
