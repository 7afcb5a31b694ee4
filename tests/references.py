"""Plain float64 NumPy loops over time: the references the library is checked against.

Written from the papers' equations, one batch element and one step at a time, sharing no
code with seqlab. Then the tree cells' references (plain recursion over one tree) and, last,
the convolutional cells' (one frame and one step at a time, the convolutions written out
as sums of shifted frames).
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


# Recursive (tree-structured) networks: one tree at a time, computed by plain recursion
# from the root (memoized), from the papers' equations; no seqlab code. ``children`` lists
# each node's child indices (children before parents, the root last); ``inputs`` is
# (N, D). Parameter names and layouts are seqlab's (``seqlab.trees``' docstrings): ``w_ih``
# (D, G·H), ``w_hh``, ``b`` (G·H,) with the gates side by side in column blocks of H.


def _tree_recursion(children, node_fn):
    """node_fn(node, [states of its children]) -> state, evaluated by recursion from the
    root (the last node), each node once."""
    memo = {}

    def state(node):
        if node not in memo:
            memo[node] = node_fn(node, [state(child) for child in children[node]])
        return memo[node]

    state(len(children) - 1)
    assert len(memo) == len(children), "every node must hang below the last one (the root)"
    return [memo[node] for node in range(len(children))]


def _bias(p, size):
    return p["b"] if "b" in p else np.zeros(size)


def tree_rnn_reference(params, children, inputs, arity):
    """Socher et al.'s recursive network: h = tanh(x W_ih + b + [h_1; …; h_K] W_hh), the
    K children positional, absent slots zero. Returns h (N, H)."""
    p, xs = _np(params), np.asarray(inputs, np.float64)
    hidden = p["w_hh"].shape[1]
    assert p["w_hh"].shape == (arity * hidden, hidden)

    def node(j, kids):
        assert len(kids) <= arity
        stacked = np.zeros(arity * hidden)
        for slot, h in enumerate(kids):
            stacked[slot * hidden : (slot + 1) * hidden] = h
        return np.tanh(xs[j] @ p["w_ih"] + _bias(p, hidden) + stacked @ p["w_hh"])

    return np.stack(_tree_recursion(children, node))


def child_sum_tree_lstm_reference(params, children, inputs):
    """Tai, Socher & Manning (2015), Child-Sum Tree-LSTM, eqs. (2)-(8); gates i, f, u
    (seqlab's g), o in column blocks of ``w_ih``/``w_hh``/``b``. Returns (h, c), each
    (N, H)."""
    p, xs = _np(params), np.asarray(inputs, np.float64)
    hidden = p["w_hh"].shape[0]
    b = _bias(p, 4 * hidden)

    def W(gate):  # the paper's W^(gate), U^(gate), b^(gate)
        k = "ifuo".index(gate)
        cols = slice(k * hidden, (k + 1) * hidden)
        return p["w_ih"][:, cols], p["w_hh"][:, cols], b[cols]

    def node(j, kids):
        x = xs[j]
        h_tilde = sum((h for h, _ in kids), np.zeros(hidden))  # (2)
        w, u, b_ = W("i")
        i = _sigmoid(x @ w + h_tilde @ u + b_)  # (3)
        w, u, b_ = W("f")
        f = [_sigmoid(x @ w + h_k @ u + b_) for h_k, _ in kids]  # (4)
        w, u, b_ = W("o")
        o = _sigmoid(x @ w + h_tilde @ u + b_)  # (5)
        w, u, b_ = W("u")
        u_ = np.tanh(x @ w + h_tilde @ u + b_)  # (6)
        c = i * u_ + sum((f_k * c_k for f_k, (_, c_k) in zip(f, kids, strict=True)), 0.0)  # (7)
        h = o * np.tanh(c)  # (8)
        return h, c

    states = _tree_recursion(children, node)
    return np.stack([h for h, _ in states]), np.stack([c for _, c in states])


def nary_tree_lstm_reference(params, children, inputs, arity):
    """Tai et al. (2015), N-ary Tree-LSTM, eqs. (9)-(14), children positional (slot s has
    its own U_s), absent slots zero. seqlab's layout: ``w_ih`` (D, 4H) columns i, f, u, o
    (the forget gates share W^(f) and b^(f)); ``w_hh`` (K·H, (3 + K)·H), row block s is
    child slot s, column blocks i, f_1 … f_K, u, o: U^(f)_{ks} is row block s, column
    block 1 + k. Returns (h, c), each (N, H)."""
    p, xs = _np(params), np.asarray(inputs, np.float64)
    hidden = p["w_hh"].shape[0] // arity
    assert p["w_hh"].shape == (arity * hidden, (3 + arity) * hidden)
    b = _bias(p, 4 * hidden)

    def block(matrix, row, col):
        return matrix[row * hidden : (row + 1) * hidden, col * hidden : (col + 1) * hidden]

    def node(j, kids):
        assert len(kids) <= arity
        h = [kids[s][0] if s < len(kids) else np.zeros(hidden) for s in range(arity)]
        c = [kids[s][1] if s < len(kids) else np.zeros(hidden) for s in range(arity)]

        def gate(k, col):  # W^(gate) x + b^(gate) (column block k of w_ih) + Σ_s U_s h_s
            recurrent = sum((h[s] @ block(p["w_hh"], s, col) for s in range(arity)), 0.0)
            cols = slice(k * hidden, (k + 1) * hidden)
            return xs[j] @ p["w_ih"][:, cols] + b[cols] + recurrent

        i = _sigmoid(gate(0, 0))  # (9)
        f = [_sigmoid(gate(1, 1 + k)) for k in range(arity)]  # (10): f_k, one per slot
        o = _sigmoid(gate(3, 2 + arity))  # (11)
        u = np.tanh(gate(2, 1 + arity))  # (12)
        c_j = i * u + sum((f[s] * c[s] for s in range(arity)), np.zeros(hidden))  # (13)
        return o * np.tanh(c_j), c_j  # (14)

    states = _tree_recursion(children, node)
    return np.stack([h for h, _ in states]), np.stack([c for _, c in states])


def tree_gru_reference(params, children, inputs):
    """The Child-Sum GRU of ``seqlab.trees.TreeGRU``'s docstring (Cho et al. 2014's GRU
    with the Child-Sum Tree-LSTM's treatment of children: gates of the summed children,
    one reset gate per child), gates r, z, n in column blocks::

        h̃ = Σ_k h_k;  z = σ(x W_iz + b_z + h̃ W_hz);  r_k = σ(x W_ir + b_r + h_k W_hr)
        n = tanh(x W_in + b_n + (Σ_k r_k ⊙ h_k) W_hn);  h = (1 - z) ⊙ n + z ⊙ h̃

    Returns h (N, H)."""
    p, xs = _np(params), np.asarray(inputs, np.float64)
    hidden = p["w_hh"].shape[0]
    b = _bias(p, 3 * hidden)
    cols = {gate: slice(k * hidden, (k + 1) * hidden) for k, gate in enumerate("rzn")}

    def node(j, kids):
        x = xs[j]
        h_tilde = sum(kids, np.zeros(hidden))
        x_r, x_z, x_n = (x @ p["w_ih"][:, cols[g]] + b[cols[g]] for g in "rzn")
        z = _sigmoid(x_z + h_tilde @ p["w_hh"][:, cols["z"]])
        reset = np.zeros(hidden)
        for h_k in kids:
            r_k = _sigmoid(x_r + h_k @ p["w_hh"][:, cols["r"]])
            reset = reset + r_k * h_k
        n = np.tanh(x_n + reset @ p["w_hh"][:, cols["n"]])
        return (1 - z) * n + z * h_tilde

    return np.stack(_tree_recursion(children, node))


# Convolutional cells (seqlab.cells.ConvLSTM, ConvGRU): one frame (*spatial, C) and one
# step at a time, the convolution written out as a sum over the kernel's taps of shifted,
# zero-padded frames; no seqlab code. Parameter names and layouts are seqlab's: ``w_x``
# (*k, C_in, G·H), ``w_h`` (*k, H, G·H), ``b`` (G·H,), the gates side by side in column
# blocks of H; ConvLSTM's peepholes ``w_ci``, ``w_cf``, ``w_co`` are (*spatial, H).


def same_convolution(frame, kernel):
    """Stride-1 cross-correlation (lax's convention: no kernel flip) of ``frame``
    (*spatial, C_in) with ``kernel`` (*k, C_in, C_out), zero "same" padding: (k - 1) // 2
    zeros before each spatial axis and the rest after. Returns (*spatial, C_out)::

        out[p] = Σ_j frame[p + j - (k - 1) // 2] @ kernel[j]   (frame is zero outside)
    """
    frame, kernel = np.asarray(frame, np.float64), np.asarray(kernel, np.float64)
    spatial, taps = frame.shape[:-1], kernel.shape[:-2]
    assert len(spatial) == len(taps) and kernel.shape[-2] == frame.shape[-1]
    padded = np.pad(frame, [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in taps] + [(0, 0)])
    out = np.zeros((*spatial, kernel.shape[-1]))
    for tap in np.ndindex(*taps):
        window = tuple(slice(j, j + n) for j, n in zip(tap, spatial, strict=True))
        out += padded[window] @ kernel[tap]
    return out


def _gate_blocks(pre, hidden, names):
    """The column blocks of width ``hidden`` of ``pre``'s last axis, by name."""
    return {name: pre[..., k * hidden : (k + 1) * hidden] for k, name in enumerate(names)}


def conv_lstm_reference_step(cell, params, carry, frame):
    """Shi et al. (2015), ConvLSTM, eq. (3), for one sequence: frame (*spatial, C_in),
    carry (h, c) each (*spatial, H); with ``cell.peephole`` the Hadamard peepholes
    W_ci ∘ C_{t-1}, W_cf ∘ C_{t-1}, W_co ∘ C_t. Gates i, f, g, o (the paper's tanh
    candidate is g). Returns ((h, c), h)."""
    p = _np(params)
    h, c = carry
    hidden = cell.hidden_size
    x = _gate_blocks(same_convolution(frame, p["w_x"]) + p["b"], hidden, "ifgo")
    r = _gate_blocks(same_convolution(h, p["w_h"]), hidden, "ifgo")
    peep = cell.peephole
    i = _sigmoid(x["i"] + r["i"] + (p["w_ci"] * c if peep else 0.0))
    f = _sigmoid(x["f"] + r["f"] + (p["w_cf"] * c if peep else 0.0))
    c = f * c + i * np.tanh(x["g"] + r["g"])
    o = _sigmoid(x["o"] + r["o"] + (p["w_co"] * c if peep else 0.0))
    h = o * np.tanh(c)
    return (h, c), h


def conv_gru_reference_step(cell, params, h, frame):
    """The convolutional GRU of ``seqlab.cells.ConvGRU``'s docstring (Cho et al. 2014 with
    convolutions; Ballas et al. 2016), for one sequence: frame (*spatial, C_in), h
    (*spatial, H); gates r, z, n::

        r = σ(W_xr * x + W_hr * h + b_r);  z = σ(W_xz * x + W_hz * h + b_z)
        n = tanh(W_xn * x + W_hn * (r ⊙ h) + b_n);  h' = (1 - z) ⊙ n + z ⊙ h
    """
    p = _np(params)
    hidden = cell.hidden_size
    w_h = _gate_blocks(p["w_h"], hidden, "rzn")
    x = _gate_blocks(same_convolution(frame, p["w_x"]) + p["b"], hidden, "rzn")
    r = _sigmoid(x["r"] + same_convolution(h, w_h["r"]))
    z = _sigmoid(x["z"] + same_convolution(h, w_h["z"]))
    n = np.tanh(x["n"] + same_convolution(r * h, w_h["n"]))
    h = (1 - z) * n + z * h
    return h, h


def conv_reference_scan(cell, params, xs, carry=None, seq_lengths=None, reverse=False):
    """``reference_scan`` for the convolutional cells: xs (B, T, *spatial, C_in); returns
    outputs (B, T, *spatial, H) and the final carry ((h, c) for ConvLSTM, h for ConvGRU),
    each (B, *spatial, H). Packed semantics: sequence b is read for t < seq_lengths[b]
    only, backwards when ``reverse``; outputs at other steps are zero and the final carry
    is the one after the last step read."""
    xs = np.asarray(xs, np.float64)
    batch_size, num_steps = xs.shape[:2]
    state_shape = (batch_size, *xs.shape[2:-1], cell.hidden_size)
    lstm = isinstance(cell, seqlab.cells.ConvLSTM)
    if not lstm:
        assert isinstance(cell, seqlab.cells.ConvGRU), type(cell)
    step = conv_lstm_reference_step if lstm else conv_gru_reference_step
    if carry is None:
        carry = (np.zeros(state_shape), np.zeros(state_shape)) if lstm else np.zeros(state_shape)
    carry = tuple(np.array(c, np.float64) for c in carry) if lstm else np.array(carry, np.float64)
    lengths = np.full(batch_size, num_steps) if seq_lengths is None else np.asarray(seq_lengths)
    outputs, finals = np.zeros((batch_size, num_steps, *state_shape[1:])), []
    for b in range(batch_size):
        carry_b = _index(carry, b)
        steps = range(lengths[b])
        for t in reversed(steps) if reverse else steps:
            carry_b, outputs[b, t] = step(cell, params, carry_b, xs[b, t])
        finals.append(carry_b)
    final = tuple(np.stack([f[i] for f in finals]) for i in range(2)) if lstm else np.stack(finals)
    return outputs, final
