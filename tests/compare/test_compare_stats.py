"""The statistics of fmclf compare against published tables and values worked by hand."""

from __future__ import annotations

import math

import pytest

from fmclf.compare import stats

# Student's t quantiles from the standard table (e.g. NIST/SEMATECH e-Handbook, 1.3.6.7.2), 4 decimals.
T_TABLE = {
    (0.975, 1): 12.7062, (0.975, 2): 4.3027, (0.975, 3): 3.1824, (0.975, 4): 2.7764, (0.975, 5): 2.5706,
    (0.975, 9): 2.2622, (0.975, 10): 2.2281, (0.975, 29): 2.0452, (0.975, 100): 1.9840,
    (0.995, 1): 63.6567, (0.995, 4): 4.6041, (0.95, 4): 2.1318, (0.90, 10): 1.3722,
}


@pytest.mark.parametrize(("p", "df"), list(T_TABLE))
def test_t_quantiles_match_the_table(p, df):
    assert stats.t_quantile(p, df) == pytest.approx(T_TABLE[(p, df)], abs=6e-5)


def test_t_quantiles_tend_to_the_normal_and_are_symmetric():
    assert stats.t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert stats.t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=6e-5)
    assert stats.t_quantile(0.5, 3) == 0.0


def test_t_cdf_known_values():
    # df = 1 is the Cauchy distribution: P(T <= 1) = 3/4 exactly
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)
    # df = 2 has a closed form: 1/2 + t / (2 sqrt(2 + t^2))
    for t in (0.3, 1.0, 2.5, -1.7):
        assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert stats.t_cdf(0.0, 7) == 0.5
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)


def test_summary_by_hand():
    # 2, 4, 4, 5: mean 15/4 = 3.75; squared deviations 3.0625 + 0.0625 + 0.0625 + 1.5625 = 4.75;
    # sample variance 4.75 / 3, std 1.258306; ci95 = t(0.975, 3) * std / 2 = 3.182446 * 0.629153 = 2.002245
    s = stats.summarize([2, 4, 4, 5])
    assert (s.n, s.mean) == (4, 3.75)
    assert s.std == pytest.approx(math.sqrt(4.75 / 3), rel=1e-12)
    assert s.ci95 == pytest.approx(2.002245, abs=1e-6)
    assert stats.summarize([0.83]).as_dict() == {"n": 1, "mean": 0.83, "std": None, "ci95": None, "iqm": None}
    assert stats.summarize([]).mean is None


def test_paired_comparison_by_hand():
    # differences 0.5, 1.0, 1.5: mean 1, std 0.5, se 0.5 / sqrt 3 = 0.288675, t = 3.464102 with 2 df;
    # two-sided p = 2 (1 - (1/2 + t / (2 sqrt(2 + t^2)))) = 1 - 3.464102 / sqrt(14) = 0.074180
    p = stats.paired({0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.5, 1: 1.0, 2: 2.5, 3: 9.0})  # seed 3 is not shared
    assert p.n == 3 and p.mean_diff == pytest.approx(1.0)
    assert p.p == pytest.approx(1 - 3.464102 / math.sqrt(14), abs=1e-6)
    assert p.ci95 == pytest.approx(4.302653 * 0.288675, abs=1e-5)
    assert p.beyond_noise is False  # 1 ± 1.242: the interval holds 0


def test_a_difference_beyond_the_noise():
    a = {s: 0.80 + 0.01 * s for s in range(5)}
    # 0.05 better on every seed, give or take 0.002
    b = {s: v - 0.05 + (0.002 if s % 2 else -0.002) for s, v in a.items()}
    p = stats.paired(a, b)
    assert p.beyond_noise is True and p.p < 1e-4
    assert p.mean_diff == pytest.approx((3 * 0.052 + 2 * 0.048) / 5, abs=1e-12)  # seeds 0, 2, 4: 0.052; 1, 3: 0.048


def test_pairing_edge_cases():
    assert stats.paired({0: 1.0}, {1: 1.0}) is None  # no shared seed
    one = stats.paired({0: 1.0, 1: 2.0}, {0: 0.5})
    assert (one.n, one.beyond_noise, one.p) == (1, None, None)
    same_gap = stats.paired({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.5})  # exactly 0.5 on both seeds: no noise at all
    assert (same_gap.beyond_noise, same_gap.p) == (True, 0.0)
    equal = stats.paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert (equal.beyond_noise, equal.p) == (False, 1.0)
