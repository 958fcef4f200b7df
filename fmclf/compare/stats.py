"""Statistics over seeds: mean, sample standard deviation, a 95% confidence
interval from Student's t, and a paired comparison of two cells.

Pure Python (``math`` only): scipy is not a dependency. Student's t
distribution is computed from the regularized incomplete beta function
(a continued fraction, as in *Numerical Recipes* 6.4), and its quantiles by
bisection on that CDF; the tests hold both to published tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """A sample's mean, sample standard deviation (n - 1) and the half-width of the
    95% confidence interval of its mean; ``std`` and ``ci95`` are None for fewer than two values."""

    n: int
    mean: float | None
    std: float | None
    ci95: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        """The JSON form (compare.json)."""
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": self.ci95}


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std and 95% CI half-width ``t(0.975, n-1) * std / sqrt(n)`` of ``values``."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None)
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, std, t_quantile(0.975, n - 1) * std / math.sqrt(n))


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the seeds both have: mean difference, the half-width of its 95%
    confidence interval, the two-sided p-value of the paired t-test, and whether the
    difference is beyond the seeds' noise (the interval excludes 0)."""

    n: int
    mean_diff: float
    ci95: float | None
    p: float | None
    beyond_noise: bool | None  #: None: too few shared seeds to say (fewer than 2)

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """The JSON form (compare.json)."""
        return {"n": self.n, "mean_diff": self.mean_diff, "ci95": self.ci95, "p": self.p,
                "beyond_noise": self.beyond_noise}


def paired(a: dict[int, float], b: dict[int, float]) -> Paired | None:
    """The paired t-test of ``a`` against ``b`` (each seed -> value) over their shared seeds;
    None when they share none."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    diffs = [a[s] - b[s] for s in shared]
    s = summarize(diffs)
    assert s.mean is not None
    if s.n < 2:
        return Paired(s.n, s.mean, None, None, None)
    assert s.std is not None
    if s.std == 0:  # the same difference on every seed: no noise at all
        return Paired(s.n, s.mean, 0.0, 1.0 if s.mean == 0 else 0.0, s.mean != 0)
    t = s.mean / (s.std / math.sqrt(s.n))
    p = 2.0 * (1.0 - t_cdf(abs(t), s.n - 1))
    return Paired(s.n, s.mean, s.ci95, max(0.0, min(1.0, p)), abs(s.mean) > (s.ci95 or 0.0))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    x = df / (df + t * t)
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, x)  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):  # bisection to the last bit
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    # the continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
