"""The mLSTM's recurrent step and its chunkwise parallel form (Beck et al. 2024), on ``rnnx.unroll``'s semantics.

Axis letters: ``t`` time, ``n`` the flat batch, ``k`` heads of ``e`` units, ``h = k e``. The equations are
in :func:`rnnx.mlstm`'s docstring; the cell's projection ``xp`` holds ``q, k, v, o`` (``h`` each) and the
gate pre-activations ``i~, f~`` (``k`` each).

The parallel form. Unrolling the stabilised recurrence, the state after step ``t`` is a weighted sum over
*sources*: every earlier step ``s`` of its segment, with log-weight ``log D_ts = F_t - F_s + i~_s`` where
``F_t`` is the cumulative ``log f`` (the paper's ``D`` matrix), and the state the segment started from (the
initial carry, or the reset state after a reset), with log-weight ``m_0 + F_t - F_start``. The stabiliser
``m_t`` of the recurrence is exactly the largest of these log-weights, so

    h~_t = (sum_s exp(log D_ts - m_t) (q_t . k_s) v_s + exp(w_0 - m_t) C_0 q_t) / max(|den_t|, exp(-m_t))

gives the recurrence's outputs, not an approximation of them. A masked step is ``log f = 0`` and
``i~ = -inf`` (the state passes through), a reset cuts the sources before it. The quadratic form costs
``t^2`` per sequence, so ``Form.sequence`` runs it within chunks of ``chunk_size`` steps and carries
``(C, n, m)`` from chunk to chunk with ``lax.scan``: the paper's chunkwise form.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnx.core.gates import log_forget, stabilised

EPS = 1e-6
"""Added to the normaliser, as the xLSTM authors' code does: once ``m_t`` exceeds about 88, ``exp(-m_t)``
underflows float32 to 0 and the lower bound alone no longer keeps the division's gradient finite."""


class MLSTMCarry(NamedTuple):
    """The mLSTM state: matrix memory ``c (*b, k e e)`` (flattened), normaliser ``n (*b, h)``, both divided by
    ``exp(m)``, and stabiliser ``m (*b, k)``."""

    c: jax.Array
    n: jax.Array
    m: jax.Array


@dataclasses.dataclass(frozen=True)
class Form:
    """The mLSTM's shape: ``heads`` (``k``), ``units`` per head (``e``), forget gate, chunk size."""

    heads: int
    units: int
    forget_gate: str
    chunk_size: int

    def zeros(self, batch_shape: tuple[int, ...], dtype) -> MLSTMCarry:
        k, e = self.heads, self.units
        return MLSTMCarry(*(jnp.zeros((*batch_shape, size), dtype) for size in (k * e * e, k * e, k)))

    def split(self, xp):
        """``q, k, v (..., k, e)`` (``k`` scaled by ``1/sqrt(e)``), ``o (..., h)``, ``i~, log f (..., k)``."""
        xp = xp.astype(jnp.promote_types(xp.dtype, jnp.float32))
        h, lead = self.heads * self.units, xp.shape[:-1]
        q, key, v, o = (xp[..., j * h : (j + 1) * h] for j in range(4))
        heads = lambda a: a.reshape(*lead, self.heads, self.units)  # noqa: E731
        i_pre, f_pre = xp[..., 4 * h : 4 * h + self.heads], xp[..., 4 * h + self.heads :]
        return heads(q), heads(key) / math.sqrt(self.units), heads(v), o, i_pre, log_forget(f_pre, self.forget_gate)

    def unpack(self, carry, dtype):
        lead = carry.m.shape[:-1]
        k, e = self.heads, self.units
        return (carry.c.astype(dtype).reshape(*lead, k, e, e), carry.n.astype(dtype).reshape(*lead, k, e),
                carry.m.astype(dtype))  # fmt: skip

    def pack(self, c, n, m, dtype) -> MLSTMCarry:
        lead, h = m.shape[:-1], self.heads * self.units  # sizes spelt out: a batch axis may have size 0
        return MLSTMCarry(c.reshape(*lead, h * self.units).astype(dtype), n.reshape(*lead, h).astype(dtype),
                          m.astype(dtype))  # fmt: skip

    def output(self, num, den, m, o):
        """``y = sigmoid(o) * num / (max(|den|, exp(-m)) + eps)``, heads concatenated."""
        # m_t falls far below 0 where the input gates stay closed (i~ << 0) from a zero start; exp(-m) then
        # overflows, which the forward pass survives (num / inf = 0) but not the gradient (inf * 0). Below
        # m = -80 the bound exceeds 5e34 and the output is 0 to float32's precision either way.
        bound = jnp.exp(-jnp.maximum(m, -80.0))
        ht = num / (jnp.maximum(jnp.abs(den), bound) + EPS)[..., None]
        return jax.nn.sigmoid(o) * ht.reshape(o.shape)

    def step(self, carry: MLSTMCarry, xp):
        """One step of the recurrence: ``(carry, xp (*b, 4h + 2k)) -> (carry, y (*b, h))``."""
        q, k, v, o, i_pre, log_f = self.split(xp)
        c, n, m = self.unpack(carry, q.dtype)
        f, i, m = stabilised(log_f, i_pre, m)
        c = f[..., None, None] * c + i[..., None, None] * v[..., :, None] * k[..., None, :]
        n = f[..., None] * n + i[..., None] * k
        y = self.output(jnp.einsum("...ab,...b->...a", c, q), jnp.sum(n * q, -1), m, o)
        return self.pack(c, n, m, carry.m.dtype), y.astype(carry.m.dtype)

    def sequence(self, xp, carry, valid, reset, fresh, reverse):
        """All steps of time-major ``xp (t, n, 4h + 2k)``, chunkwise, with ``rnnx.unroll``'s semantics (arguments
        as :mod:`rnnx.core.backends.scan` receives them). Returns ``(carry, ys (t, n, h))``."""
        steps, batch = xp.shape[:2]
        valid = jnp.ones((steps, batch), bool) if valid is None else valid
        reset = jnp.zeros((steps, batch), bool) if reset is None else reset
        fresh = self.zeros((batch,), carry.m.dtype) if fresh is None else fresh
        if reverse:
            xp, valid, reset = (jnp.flip(a, 0) for a in (xp, valid, reset))
        size = min(self.chunk_size, steps)
        chunks = -(-steps // size)
        pad = chunks * size - steps
        if pad:  # masked steps change nothing
            grow = lambda a: jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])  # noqa: E731
            xp, valid, reset = grow(xp), grow(valid), grow(reset)
        split = lambda a: a.reshape(chunks, size, *a.shape[1:])  # noqa: E731

        def chunk(state, inputs):
            return self.chunk(state, *inputs, fresh)

        carry, ys = jax.lax.scan(chunk, carry, (split(xp), split(valid), split(reset)))
        ys = ys.reshape(chunks * size, *ys.shape[2:])[:steps]
        return carry, (jnp.flip(ys, 0) if reverse else ys)

    def chunk(self, carry, xp, valid, reset, fresh):
        """The quadratic parallel form over one chunk ``xp (L, n, ...)``, from ``carry``."""
        q, k, v, o, i_pre, log_f = self.split(xp)
        acc, steps = q.dtype, q.shape[0]
        log_f = jnp.where(valid[..., None], log_f, 0.0)
        i_pre = jnp.where(valid[..., None], i_pre, -jnp.inf)
        segment = jnp.cumsum(reset, axis=0)  # (L, n): sources of another segment do not count
        first = segment == 0  # still in the segment that starts from carry (later ones start from fresh)
        cum = jnp.cumsum(log_f, axis=0)  # F_t
        start = jax.lax.cummax(jnp.where(reset, jnp.arange(steps)[:, None], 0), axis=0)
        before = jnp.take_along_axis(cum - log_f, start[..., None], axis=0)  # F just before the segment
        c0, n0, m0 = self.unpack(carry, acc)
        cf, nf, mf = self.unpack(fresh, acc)
        w0 = jnp.where(first[..., None], m0, mf) + cum - before  # the starting state's log-weight, (L, n, k)
        log_d = cum[:, None] - cum[None, :] + i_pre[None, :]  # (t, s, n, k)
        allowed = jnp.tril(jnp.ones((steps, steps), bool))[..., None] & (segment[:, None] == segment[None, :])
        log_d = jnp.where(allowed[..., None], log_d, -jnp.inf)
        m = jnp.maximum(w0, jnp.max(log_d, axis=1))
        d = jnp.exp(log_d - m[:, None])
        w = jnp.exp(w0 - m)
        scores = jnp.einsum("tnke,snke->tsnk", q, k) * d
        pick = lambda a, b: jnp.where(first.reshape(*first.shape, *(1,) * (a.ndim - 2)), a, b)  # noqa: E731
        cq = pick(jnp.einsum("nkab,tnkb->tnka", c0, q), jnp.einsum("nkab,tnkb->tnka", cf, q))
        nq = pick(jnp.einsum("nke,tnke->tnk", n0, q), jnp.einsum("nke,tnke->tnk", nf, q))
        num = jnp.einsum("tsnk,snke->tnke", scores, v) + w[..., None] * cq
        den = jnp.sum(scores, axis=1) + w * nq
        ys = self.output(num, den, m, o)
        ys = jnp.where(valid[..., None], ys, jnp.zeros((), ys.dtype))
        last = first[-1][:, None]
        c = jnp.einsum("snk,snka,snkb->nkab", d[-1], v, k) + w[-1][..., None, None] * jnp.where(
            last[..., None, None], c0, cf
        )
        n = jnp.einsum("snk,snke->nke", d[-1], k) + w[-1][..., None] * jnp.where(last[..., None], n0, nf)
        return self.pack(c, n, m[-1], carry.m.dtype), ys.astype(carry.m.dtype)


__all__ = ["EPS", "Form", "MLSTMCarry"]
