"""NumPy reference cells, written from the equations in the docstrings, independent of rnnx's code.

Gate orders: LSTM i, f, g, o; GRU r, z, n. Weights ``w_ih (d, g*h)``, ``w_hh (h, g*h)``, bias ``b (g*h,)``.
"""

import numpy as np


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


def run(step, params, xs, carry, lengths=None, reverse=False):
    """Run ``step`` over ``xs (b, t, d)`` one sequence at a time, truncating each to its length.

    Returns the final carry per sequence and outputs ``(b, t, h)`` with zeros past each length.
    """
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    batch, steps = xs.shape[:2]
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    finals, outputs = [], []
    for n in range(batch):
        state = carry(n)
        ys = np.zeros((steps, np.shape(state[0] if isinstance(state, tuple) else state)[-1]))
        order = range(lengths[n])
        for t in reversed(order) if reverse else order:
            state = step(params, state, np.asarray(xs[n, t], np.float64))
            ys[t] = state[0] if isinstance(state, tuple) else state
        finals.append(state)
        outputs.append(ys)
    return finals, np.stack(outputs)


def run_sequence(step, params, xs, initial, fresh, *, lengths=None, mask=None, reset=None, reverse=False):
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
            return tuple(np.asarray(s[n], np.float64) for s in state)
        return np.asarray(state[n], np.float64)

    hidden = (initial[0] if isinstance(initial, tuple) else initial).shape[-1]
    finals, ys = [], np.zeros((batch, steps, hidden))
    for n in range(batch):
        state, length = part(initial, n), int(lengths[n])
        for t in reversed(range(length)) if reverse else range(length):
            starts = (t + 1 < length and reset[n, t + 1]) if reverse else reset[n, t]
            if starts:
                state = part(fresh, n)
            if mask[n, t]:
                state = step(params, state, np.asarray(xs[n, t], np.float64))
                ys[n, t] = state[0] if isinstance(state, tuple) else state
        finals.append(state)
    return finals, ys
