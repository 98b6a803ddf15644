"""Exponential gating with a stabiliser (Beck et al. 2024, Appendix A), shared by the sLSTM and the mLSTM.

An exponential input gate ``i_t = exp(i~_t)`` overflows float32 once ``i~_t > 88``; both xLSTM cells keep
their states divided by ``exp(m_t)`` instead, with ``m_t`` the running maximum below, so every gate they
multiply by lies in ``(0, 1]``.
"""

import jax
import jax.numpy as jnp

FORGET_GATES = ("sigmoid", "exp")


def log_forget(pre: jax.Array, forget_gate: str) -> jax.Array:
    """``log f_t`` from the forget gate's pre-activation: ``log sigmoid`` (``"sigmoid"``) or itself (``"exp"``)."""
    return jax.nn.log_sigmoid(pre) if forget_gate == "sigmoid" else pre


def stabilised(log_f: jax.Array, i_pre: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(f', i', m_t)``: ``m_t = max(log f_t + m_{t-1}, i~_t)``, ``f' = exp(log f_t + m_{t-1} - m_t)`` and
    ``i' = exp(i~_t - m_t)``, the gates divided by ``exp(m_t)``; one of them is 1, neither exceeds it."""
    new_m = jnp.maximum(log_f + m, i_pre)
    return jnp.exp(log_f + m - new_m), jnp.exp(i_pre - new_m), new_m


__all__ = ["FORGET_GATES", "log_forget", "stabilised"]
