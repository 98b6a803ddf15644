"""NumPy reference cells, written from the equations in the docstrings, independent of rnnx's code.

Gate orders: LSTM i, f, g, o; GRU r, z, n. Weights ``w_ih (d, g*h)``, ``w_hh (h, g*h)``, bias ``b (g*h,)``.

A step returns the new carry; where the output is not the carry (or its first part), it returns
``Emit(carry, y)``.
"""

from typing import NamedTuple

import numpy as np


class Emit(NamedTuple):
    """A step's new carry and its output, for cells whose output is not the carry's first part."""

    carry: object
    y: np.ndarray


def split(result):
    """``(carry, y)`` from a reference step's result."""
    if isinstance(result, Emit):
        return result.carry, result.y
    return result, (result[0] if isinstance(result, tuple) else result)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def simple_rnn_step(p, h, x, activation="tanh"):
    pre = x @ p["w_ih"] + h @ p["w_hh"] + p.get("b", 0.0)
    return np.tanh(pre) if activation == "tanh" else np.maximum(pre, 0.0)


def lstm_step(p, state, x):
    h, c = state
    hs = h.shape[-1]
    z = x @ p["w_ih"] + h @ p["w_hh"] + p.get("b", 0.0)
    i, f, g, o = (z[..., k * hs : (k + 1) * hs] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return h, c


def gru_step(p, h, x, reset_after=True):
    hs = h.shape[-1]
    wi = [p["w_ih"][:, k * hs : (k + 1) * hs] for k in range(3)]
    wh = [p["w_hh"][:, k * hs : (k + 1) * hs] for k in range(3)]
    b = [p["b"][k * hs : (k + 1) * hs] if "b" in p else 0.0 for k in range(3)]
    r = sigmoid(x @ wi[0] + b[0] + h @ wh[0])
    z = sigmoid(x @ wi[1] + b[1] + h @ wh[1])
    if reset_after:
        n = np.tanh(x @ wi[2] + b[2] + r * (h @ wh[2] + p.get("b_hn", 0.0)))
    else:
        n = np.tanh(x @ wi[2] + b[2] + (r * h) @ wh[2])
    return (1.0 - z) * n + z * h


def g(x):
    """minGRU/minLSTM candidate activation (Feng et al. 2024): x + 0.5 for x >= 0, sigmoid(x) below."""
    return np.where(x >= 0, x + 0.5, sigmoid(x))


def min_gru_step(p, h, x):
    hs = h.shape[-1]
    pre = x @ p["w_ih"] + p["b"]
    z = sigmoid(pre[..., :hs])
    return (1.0 - z) * h + z * g(pre[..., hs:])


def min_lstm_step(p, h, x):
    hs = h.shape[-1]
    pre = x @ p["w_ih"] + p["b"]
    f, i = sigmoid(pre[..., :hs]), sigmoid(pre[..., hs : 2 * hs])
    return f / (f + i) * h + i / (f + i) * g(pre[..., 2 * hs :])


def lru_step(p, h, x):
    """LRU (Orvieto et al. 2023): ``h' = lambda h + gamma (B x)``, ``y = Re(C h') + D x``, complex state."""
    n = p["nu_log"].shape[0]
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    w = p["w_ih"]
    b_matrix = (w[:, :n] + 1j * w[:, n : 2 * n]).T  # (N, d)
    c_matrix = (p["c_re"] + 1j * p["c_im"]).T  # (h, N)
    h = lam * h + np.exp(p["gamma_log"]) * (x @ b_matrix.T)
    return Emit(h, np.real(h @ c_matrix.T) + x @ w[:, 2 * n :])


def _block_diagonal(blocks, gates=1):
    """The dense ``(k e, gates k e)`` matrix of per-head blocks ``(k, e, gates e)``, gate-major columns."""
    heads, e = blocks.shape[:2]
    h = heads * e
    dense = np.zeros((h, gates * h))
    for j in range(heads):
        for g in range(gates):
            dense[j * e : (j + 1) * e, g * h + j * e : g * h + (j + 1) * e] = blocks[j][:, g * e : (g + 1) * e]
    return dense


def rg_lru_step(p, h, x, c=8.0):
    """RG-LRU (De et al. 2024): ``a_t = sigmoid(Lambda)^(c r_t)``, ``h' = a_t h + sqrt(1 - a_t^2) (i_t u_t)``."""
    u = x @ p["w_ih"] + p["b"]
    r = sigmoid(u @ _block_diagonal(p["w_a"]) + p["b_a"])
    i = sigmoid(u @ _block_diagonal(p["w_x"]) + p["b_x"])
    a = sigmoid(p["lam"]) ** (c * r)
    return a * h + np.sqrt(1.0 - a**2) * (i * u)


def _log_f(pre, forget_gate):
    return -np.logaddexp(0.0, -pre) if forget_gate == "sigmoid" else pre


def slstm_step(p, state, x, forget_gate="sigmoid"):
    """sLSTM (Beck et al. 2024), stabilised (their Appendix A); state ``(h, c, n, m)``, gate order i, f, z, o."""
    h, c, n, m = state
    hs = h.shape[-1]
    pre = x @ p["w_ih"] + p["b"] + h @ _block_diagonal(p["w_hh"], 4)
    i_pre, f_pre, z_pre, o_pre = (pre[..., k * hs : (k + 1) * hs] for k in range(4))
    log_f = _log_f(f_pre, forget_gate)
    m_new = np.maximum(log_f + m, i_pre)
    i, f = np.exp(i_pre - m_new), np.exp(log_f + m - m_new)
    c = f * c + i * np.tanh(z_pre)
    n = f * n + i
    return sigmoid(o_pre) * c / n, c, n, m_new


def slstm_step_unstabilised(p, state, x, forget_gate="sigmoid"):
    """The sLSTM's Equations 8-14 as written, without the stabiliser: state ``(h, c, n)``."""
    h, c, n = state
    hs = h.shape[-1]
    pre = x @ p["w_ih"] + p["b"] + h @ _block_diagonal(p["w_hh"], 4)
    i_pre, f_pre, z_pre, o_pre = (pre[..., k * hs : (k + 1) * hs] for k in range(4))
    f = np.exp(_log_f(f_pre, forget_gate))
    c = f * c + np.exp(i_pre) * np.tanh(z_pre)
    n = f * n + np.exp(i_pre)
    return sigmoid(o_pre) * c / n, c, n


def _mlstm_parts(p, x, heads):
    width = p["w_ih"].shape[1]
    hs = (width - 2 * heads) // 4
    e = hs // heads
    pre = x @ p["w_ih"] + p["b"]
    q, k, v, o = (pre[..., j * hs : (j + 1) * hs] for j in range(4))
    i_pre, f_pre = pre[..., 4 * hs : 4 * hs + heads], pre[..., 4 * hs + heads :]
    return q, k / np.sqrt(e), v, o, i_pre, f_pre, e


def mlstm_step(p, state, x, heads=1, forget_gate="sigmoid"):
    """mLSTM (Beck et al. 2024), stabilised: state ``(C (k e e), n (h), m (k))``, for one sequence or, row by
    row, for a batch ``x (b, d)``."""
    if np.ndim(x) == 2:
        rows = [mlstm_step(p, tuple(a[r] for a in state), x[r], heads, forget_gate) for r in range(len(x))]
        return Emit(tuple(np.stack(a) for a in zip(*(r.carry for r in rows))), np.stack([r.y for r in rows]))
    q, k, v, o, i_pre, f_pre, e = _mlstm_parts(p, x, heads)
    c, n, m = (np.array(a, np.float64) for a in state)
    c, n = c.reshape(heads, e, e), n.reshape(heads, e)
    h_tilde, m_new = np.zeros(heads * e), np.zeros(heads)
    for j in range(heads):
        part = slice(j * e, (j + 1) * e)
        log_f = _log_f(f_pre[j], forget_gate)
        m_new[j] = max(log_f + m[j], i_pre[j])
        i, f = np.exp(i_pre[j] - m_new[j]), np.exp(log_f + m[j] - m_new[j])
        c[j] = f * c[j] + i * np.outer(v[part], k[part])
        n[j] = f * n[j] + i * k[part]
        h_tilde[part] = c[j] @ q[part] / (max(abs(n[j] @ q[part]), np.exp(-m_new[j])) + 1e-6)  # the authors' eps
    return Emit((c.reshape(-1), n.reshape(-1), m_new), sigmoid(o) * h_tilde)


def mlstm_step_unstabilised(p, state, x, heads=1, forget_gate="sigmoid"):
    """The mLSTM's Equations 19-27 as written: state ``(C, n)`` per head, normaliser bound 1."""
    q, k, v, o, i_pre, f_pre, e = _mlstm_parts(p, x, heads)
    c, n = (np.array(a, np.float64) for a in state)
    h_tilde = np.zeros(heads * e)
    for j in range(heads):
        part = slice(j * e, (j + 1) * e)
        i, f = np.exp(i_pre[j]), np.exp(_log_f(f_pre[j], forget_gate))
        c[j] = f * c[j] + i * np.outer(v[part], k[part])
        n[j] = f * n[j] + i * k[part]
        h_tilde[part] = c[j] @ q[part] / max(abs(n[j] @ q[part]), 1.0)
    return Emit((c, n), sigmoid(o) * h_tilde)


def run(step, params, xs, carry, lengths=None, reverse=False):
    """Run ``step`` over ``xs (b, t, d)`` one sequence at a time, truncating each to its length.

    Returns the final carry per sequence and outputs ``(b, t, h)`` with zeros past each length.
    """
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    batch, steps = xs.shape[:2]
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    finals, outputs = [], []
    for n in range(batch):
        state, ys = carry(n), {}
        order = range(lengths[n])
        for t in reversed(order) if reverse else order:
            state, ys[t] = split(step(params, state, np.asarray(xs[n, t], np.float64)))
        finals.append(state)
        outputs.append(ys)
    hidden = next((y.shape[-1] for ys in outputs for y in ys.values()), 0)
    return finals, np.stack([[ys.get(t, np.zeros(hidden)) for t in range(steps)] for ys in outputs])


def run_sequence(step, params, xs, initial, fresh, *, lengths=None, mask=None, reset=None, reverse=False, hidden=None):
    """``rnnx.unroll``'s documented sequence semantics, one sequence and one step at a time, in float64.

    Args:
      step: a NumPy reference step ``(params, carry, x) -> carry``.
      xs: ``(b, t, d)``, batch-major with one flat batch axis.
      initial, fresh: ``(b, h)`` arrays, or tuples of them for a carry in parts (the LSTM's ``(h, c)``): the
        carry before the first step, and the state a reset restores (``cell.default_carry(params)``).
      lengths: ``(b,)``: only the first ``length`` steps are the sequence. The padding after them is not part
        of it: its outputs are zero and it touches nothing, so the final carry is the one after the last valid
        step and ``reverse`` runs the valid part backwards from ``initial``.
      mask: ``(b, t)``: a masked step passes the carry through unchanged and outputs zero.
      reset: ``(b, t)``: True where a new segment starts. Each segment runs from ``fresh`` in the scan
        direction: forwards the carry is reset before the step, backwards after it (so before the step at
        ``t - 1``); the segment met first starts from ``initial`` unless a reset marks its start.
      reverse: run each valid part from its last step to its first; outputs stay aligned with their inputs.
      hidden: the outputs' width (default: the last axis of ``initial``, or of its first part).

    Returns:
      ``(finals, ys)``: the final carry of each sequence (a list) and the outputs ``(b, t, h)``.
    """
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    batch, steps = xs.shape[:2]
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths).reshape(batch)
    mask = np.ones((batch, steps), bool) if mask is None else np.asarray(mask).reshape(batch, steps)
    reset = np.zeros((batch, steps), bool) if reset is None else np.asarray(reset).reshape(batch, steps)

    def part(state, n):
        if isinstance(state, tuple):
            return tuple(_float64(s[n]) for s in state)
        return _float64(state[n])

    if hidden is None:
        hidden = (initial[0] if isinstance(initial, tuple) else initial).shape[-1]
    finals, ys = [], np.zeros((batch, steps, hidden))
    for n in range(batch):
        state, length = part(initial, n), int(lengths[n])
        for t in reversed(range(length)) if reverse else range(length):
            starts = (t + 1 < length and reset[n, t + 1]) if reverse else reset[n, t]
            if starts:
                state = part(fresh, n)
            if mask[n, t]:
                state, ys[n, t] = split(step(params, state, np.asarray(xs[n, t], np.float64)))
        finals.append(state)
    return finals, ys


def _float64(a):
    """float64, or complex128 for a complex state (the LRU's)."""
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)
