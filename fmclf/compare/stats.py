"""Statistics over seeds, by scipy.stats: the mean with a 95% confidence interval
(Student's t), the interquartile mean (from 5 seeds up), and the comparison of a
cell with the best one: the paired difference with its t interval and a bootstrap
interval, the paired t-test's p (raw and Holm-adjusted over the comparisons of a
table), and the probability of improvement P(A > B).

The bootstrap resamples the seeds and, where the runs kept their test
predictions, the test examples too (the same examples for every run of a
replicate), so the shared test set's own sampling error is part of the interval.
Importing this module imports neither scipy nor numpy (the functions do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Fewer seeds than this, and a conclusion is flagged as resting on too few.
FEW_SEEDS = 5
BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Summary:
    """A sample's mean, sample standard deviation (n - 1), the half-width of the 95%
    confidence interval of its mean, and its interquartile mean; ``std`` and ``ci95`` are
    None for fewer than two values, ``iqm`` for fewer than :data:`FEW_SEEDS`."""

    n: int
    mean: float | None
    std: float | None
    ci95: float | None
    iqm: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        """The JSON form (compare.json)."""
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": self.ci95, "iqm": self.iqm}


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std, 95% CI half-width ``t(0.975, n-1) * std / sqrt(n)`` and IQM of ``values``."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None)
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, std, t_quantile(0.975, n - 1) * std / math.sqrt(n), iqm(values) if n >= FEW_SEEDS else None)


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean (rliable's definition: the mean of the middle 50%, scipy's trim_mean(x, 0.25))."""
    from scipy import stats

    return float(stats.trim_mean(list(values), 0.25))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    from scipy import stats

    return float(stats.t.cdf(t, df))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    from scipy import stats

    return float(stats.t.ppf(p, df))


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the seeds both have: mean difference, the half-width of its 95% t
    interval, the paired t-test's two-sided p (and Holm's adjustment, set by :func:`holm`
    over a table), whether the difference is beyond noise (the interval excludes 0), the
    probability of improvement P(a > b), and the bootstrap's 95% interval of the difference
    (``resampled``: "seeds" or "seeds and test examples")."""

    n: int
    mean_diff: float
    ci95: float | None
    p: float | None
    beyond_noise: bool | None  #: None: too few shared seeds to say (fewer than 2)
    p_holm: float | None = None
    prob_improvement: float | None = None
    bootstrap: tuple[float, float] | None = None
    resampled: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (compare.json)."""
        return {"n": self.n, "mean_diff": self.mean_diff, "ci95": self.ci95, "p": self.p, "p_holm": self.p_holm,
                "beyond_noise": self.beyond_noise, "prob_improvement": self.prob_improvement,
                "bootstrap_ci95": list(self.bootstrap) if self.bootstrap is not None else None,
                "resampled": self.resampled, "few_seeds": self.n < FEW_SEEDS}


def paired(a: dict[int, float], b: dict[int, float], correct: tuple[Any, Any] | None = None) -> Paired | None:
    """The paired comparison of ``a`` against ``b`` (each seed -> value) over their shared seeds;
    None when they share none. ``correct``: per shared seed (in sorted order), each run's 0/1
    correctness on every test example, for a bootstrap over seeds and examples together."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    diffs = [a[s] - b[s] for s in shared]
    s = summarize(diffs)
    assert s.mean is not None
    improvement = prob_improvement([a[k] for k in shared], [b[k] for k in shared])
    if s.n < 2:
        return Paired(s.n, s.mean, None, None, None, prob_improvement=improvement)
    assert s.std is not None
    if correct is not None:
        boot, resampled = bootstrap_examples(*correct), "seeds and test examples"
    else:
        boot, resampled = bootstrap_seeds(diffs), "seeds"
    if s.std == 0:  # the same difference on every seed: no noise at all between seeds
        return Paired(s.n, s.mean, 0.0, 1.0 if s.mean == 0 else 0.0, s.mean != 0, None, improvement, boot, resampled)
    from scipy import stats

    p = float(stats.ttest_rel([a[k] for k in shared], [b[k] for k in shared]).pvalue)
    return Paired(s.n, s.mean, s.ci95, p, abs(s.mean) > (s.ci95 or 0.0), None, improvement, boot, resampled)


def prob_improvement(a: Sequence[float], b: Sequence[float]) -> float:
    """P(A > B) + P(A = B) / 2 over every pair of a value of ``a`` and one of ``b`` (rliable's probability
    of improvement: the Mann-Whitney U statistic over n * m)."""
    from scipy import stats

    return float(stats.mannwhitneyu(a, b).statistic) / (len(a) * len(b))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of ``pvalues`` (None stays None): the k-th smallest of m is multiplied
    by m - k + 1, made monotone, capped at 1."""
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - k) * p))
        out[i] = running
    return out


def bootstrap_seeds(diffs: Sequence[float], replicates: int = BOOTSTRAP_REPLICATES,
                    seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of ``diffs`` (one per seed), by scipy.stats.bootstrap."""
    import numpy as np
    from scipy import stats

    if len(set(diffs)) == 1:  # every resample is the same: the interval is that one value
        return float(diffs[0]), float(diffs[0])
    result = stats.bootstrap((np.asarray(diffs, dtype=float),), np.mean, n_resamples=replicates,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_examples(correct_a: Any, correct_b: Any, replicates: int = BOOTSTRAP_REPLICATES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean accuracy difference, resampling the seeds (rows)
    and the test examples (columns) together: ``correct_a``/``correct_b`` are (seeds x examples) 0/1 arrays
    of two cells, paired by row. Each replicate draws seeds and examples with replacement, the same draw for
    both cells; its statistic is the mean over the drawn seeds of the accuracy difference on the drawn examples."""
    import numpy as np

    diff = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    seeds, examples = diff.shape
    rng = np.random.default_rng(seed)
    stats = np.empty(replicates)
    for r in range(replicates):  # counts of each seed and example in the replicate: the same as indexing, faster
        rows = np.bincount(rng.integers(0, seeds, seeds), minlength=seeds)
        cols = np.bincount(rng.integers(0, examples, examples), minlength=examples)
        stats[r] = rows @ diff @ cols / (seeds * examples)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)
