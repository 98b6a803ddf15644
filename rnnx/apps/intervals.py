"""Confidence intervals and a significance test for a few runs per setting (seeds), from the t-distribution.

No SciPy: the 97.5% quantiles of Student's t for 1-30 degrees of freedom are tabulated; beyond, the
Cornish-Fisher expansion about the normal quantile (error below 1e-4 from 30 degrees on).

>>> round(t_quantile_975(4), 3)
2.776
>>> [round(x, 3) for x in t_interval([1.0, 2.0, 3.0])]
[2.0, -0.484, 4.484]
"""

import math
from collections.abc import Sequence

_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131]
_T975 += [2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
_Z975 = 1.959964


def t_quantile_975(df: float) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (``df`` >= 1; fractional ones, as in
    Welch's test, are rounded down below 30, which widens the interval slightly)."""
    if df < 1:
        raise ValueError(f"df must be at least 1, received {df!r}")
    if df < 30:
        return _T975[int(df) - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its two-sided 95% interval, ``mean +- t * sd / sqrt(n)``; a single
    value has an unbounded interval (``-inf, inf``)."""
    n = len(values)
    if n == 0:
        raise ValueError("values must hold at least one number")
    mean = sum(values) / n
    if n == 1:
        return mean, -math.inf, math.inf
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def welch_significant(a: Sequence[float], b: Sequence[float]) -> tuple[float, bool]:
    """``(t statistic, whether the means differ at the 5% level, two-sided)`` by Welch's t-test."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError(f"each sample needs at least two values, received {na} and {nb}")
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    if va + vb == 0:
        return (0.0 if ma == mb else math.copysign(math.inf, ma - mb)), ma != mb
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return t, abs(t) > t_quantile_975(df)


__all__ = ["t_interval", "t_quantile_975", "welch_significant"]
