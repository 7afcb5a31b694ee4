"""Plain float64 NumPy loops over time: the references the library is checked against.

Written from the papers' equations, one batch element and one step at a time, sharing no
code with seqlab.
"""

from __future__ import annotations

import numpy as np

import seqlab


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np(tree):
    if isinstance(tree, dict):
        return {k: np.asarray(v, np.float64) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def reference_step(cell, params, carry, x):
    """One step of a built-in cell for one sequence: x (D,), carry of (H,) vectors."""
    p = _np(params)
    bias = p.get("b", 0.0)
    if isinstance(cell, seqlab.cells.RNN):
        activation = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "identity": lambda z: z}
        h = activation[cell.activation](x @ p["w_ih"] + bias + carry @ p["w_hh"])
        return h, h
    if isinstance(cell, seqlab.cells.LSTM):
        h, c = carry
        hidden = cell.hidden_size
        z = x @ p["w_ih"] + bias + h @ p["w_hh"]
        i = _sigmoid(z[:hidden])
        f = _sigmoid(z[hidden : 2 * hidden])
        g = np.tanh(z[2 * hidden : 3 * hidden])
        o = _sigmoid(z[3 * hidden :])
        c = f * c + i * g
        h = o * np.tanh(c)
        if cell.proj_size:
            h = h @ p["w_hr"]
        return (h, c), h
    if isinstance(cell, seqlab.cells.GRU):
        h = carry
        n_h = cell.hidden_size
        w_ih, w_hh = p["w_ih"], p["w_hh"]
        b = bias if np.ndim(bias) else np.zeros(3 * n_h)
        r = _sigmoid(x @ w_ih[:, :n_h] + b[:n_h] + h @ w_hh[:, :n_h])
        z = _sigmoid(x @ w_ih[:, n_h : 2 * n_h] + b[n_h : 2 * n_h] + h @ w_hh[:, n_h : 2 * n_h])
        if cell.variant == "cudnn":
            b_hn = p.get("b_hn", np.zeros(n_h))
            n = np.tanh(x @ w_ih[:, 2 * n_h :] + b[2 * n_h :] + r * (h @ w_hh[:, 2 * n_h :] + b_hn))
        else:
            n = np.tanh(x @ w_ih[:, 2 * n_h :] + b[2 * n_h :] + (r * h) @ w_hh[:, 2 * n_h :])
        h = (1 - z) * n + z * h
        return h, h
    if isinstance(cell, seqlab.cells.MGU):
        h = carry
        n_h = cell.hidden_size
        w_ih, w_hh, b = p["w_ih"], p["w_hh"], bias
        f = _sigmoid(x @ w_ih[:, :n_h] + b[:n_h] + h @ w_hh[:, :n_h])
        candidate = np.tanh(x @ w_ih[:, n_h:] + b[n_h:] + (f * h) @ w_hh[:, n_h:])
        h = (1 - f) * h + f * candidate
        return h, h
    # The cells built for parallel-in-time solves, from the papers' equations. MinGRU and
    # MinLSTM: Feng et al. 2024 ("Were RNNs all we needed?", Algorithms 1-4, with minLSTM's
    # normalized gates f' = f / (f + i), i' = i / (f + i)); DiagGRU and DiagLSTM: ParaRNN's
    # ParaGRU / ParaLSTM (Danieli et al. 2026), the GRU and LSTM with every recurrent
    # matrix diagonal; seqlab parametrizes the diagonals as tanh(a_hh).
    if isinstance(cell, seqlab.cells.MinGRU):
        n_h = cell.hidden_size
        z = _sigmoid(x @ p["w_ih"][:, :n_h] + bias[:n_h])
        candidate = x @ p["w_ih"][:, n_h:] + bias[n_h:]
        h = (1 - z) * carry + z * candidate
        return h, h
    if isinstance(cell, seqlab.cells.MinLSTM):
        n_h = cell.hidden_size
        f = _sigmoid(x @ p["w_ih"][:, :n_h] + bias[:n_h])
        i = _sigmoid(x @ p["w_ih"][:, n_h : 2 * n_h] + bias[n_h : 2 * n_h])
        candidate = x @ p["w_ih"][:, 2 * n_h :] + bias[2 * n_h :]
        h = f / (f + i) * carry + i / (f + i) * candidate
        return h, h
    if isinstance(cell, seqlab.cells.DiagGRU):
        h = carry
        n_h = cell.hidden_size
        w_r, w_z, w_n = (np.tanh(p["a_hh"][k * n_h : (k + 1) * n_h]) for k in range(3))
        pre = [x @ p["w_ih"][:, k * n_h : (k + 1) * n_h] + bias[k * n_h : (k + 1) * n_h]
               for k in range(3)]  # fmt: skip
        r = _sigmoid(pre[0] + w_r * h)
        z = _sigmoid(pre[1] + w_z * h)
        n = np.tanh(pre[2] + r * (w_n * h + p["b_hn"]))
        h = (1 - z) * n + z * h
        return h, h
    if isinstance(cell, seqlab.cells.DiagLSTM):
        h, c = carry
        n_h = cell.hidden_size
        gates = [
            x @ p["w_ih"][:, k * n_h : (k + 1) * n_h]
            + bias[k * n_h : (k + 1) * n_h]
            + np.tanh(p["a_hh"][k * n_h : (k + 1) * n_h]) * h
            for k in range(4)
        ]
        i, f, g, o = _sigmoid(gates[0]), _sigmoid(gates[1]), np.tanh(gates[2]), _sigmoid(gates[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        return (h, c), h
    raise TypeError(type(cell))


def reference_initial_carry(cell, batch_size):
    if isinstance(cell, seqlab.cells.DiagLSTM):
        return (np.zeros((batch_size, cell.hidden_size)), np.zeros((batch_size, cell.hidden_size)))
    if isinstance(cell, seqlab.cells.LSTM):
        return (
            np.zeros((batch_size, cell.proj_size or cell.hidden_size)),
            np.zeros((batch_size, cell.hidden_size)),
        )
    return np.zeros((batch_size, cell.hidden_size))


def _index(carry, b):
    return tuple(part[b] for part in carry) if isinstance(carry, tuple) else carry[b]


def reference_scan(cell, params, xs, carry=None, seq_lengths=None, reverse=False):
    """xs (B, T, D); returns outputs (B, T, out) and the final carry, packed semantics.

    Sequence b is read for t < seq_lengths[b] only, backwards when ``reverse``; outputs at
    other steps are zero and the final carry is the one after the last step read.
    """
    xs = np.asarray(xs, np.float64)
    batch_size, num_steps, _ = xs.shape
    if carry is None:
        carry = reference_initial_carry(cell, batch_size)
    carry = (
        tuple(np.array(c, np.float64) for c in carry)
        if isinstance(carry, tuple)
        else (np.array(carry, np.float64))
    )
    lengths = np.full(batch_size, num_steps) if seq_lengths is None else np.asarray(seq_lengths)
    outputs, finals = None, []
    for b in range(batch_size):
        carry_b = _index(carry, b)
        steps = range(lengths[b])
        for t in reversed(steps) if reverse else steps:
            carry_b, y = reference_step(cell, params, carry_b, xs[b, t])
            if outputs is None:
                outputs = np.zeros((batch_size, num_steps, y.shape[-1]))
            outputs[b, t] = y
        finals.append(carry_b)
    if outputs is None:  # every length is zero
        out_size = cell.proj_size if getattr(cell, "proj_size", 0) else cell.hidden_size
        outputs = np.zeros((batch_size, num_steps, out_size))
    if isinstance(carry, tuple):
        final = tuple(np.stack([f[i] for f in finals]) for i in range(len(carry)))
    else:
        final = np.stack(finals)
    return outputs, final


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max(max |expected|, 1e-30), over all leaves; inf when
    ``actual`` is NaN or infinite where ``expected`` is finite (Python's ``max`` would
    drop a NaN: ``max(0.0, nan)`` is 0.0, and a NaN result would pass every tolerance)."""
    actual_leaves = actual if isinstance(actual, tuple | list) else [actual]
    expected_leaves = expected if isinstance(expected, tuple | list) else [expected]
    worst = 0.0
    for a, e in zip(actual_leaves, expected_leaves, strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape, (a.shape, e.shape)
        if np.any(~np.isfinite(a) & np.isfinite(e)):
            return float("inf")
        worst = max(worst, float(np.max(np.abs(a - e)) / max(np.max(np.abs(e)), 1e-30)))
    return worst
