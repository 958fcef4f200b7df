"""Each statistic of fmclf compare held to scipy's (or the reference definition's) value on fixed data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fmclf.compare import stats

A = [0.851, 0.847, 0.856, 0.849, 0.853, 0.850]
B = [0.842, 0.846, 0.845, 0.839, 0.848, 0.841]


def test_mean_and_t_interval_match_scipy():
    s = stats.summarize(A)
    low, high = scipy_stats.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=scipy_stats.sem(A))
    assert s.mean == pytest.approx(np.mean(A), abs=1e-12)
    assert s.std == pytest.approx(np.std(A, ddof=1), abs=1e-12)
    assert s.mean - s.ci95 == pytest.approx(low, abs=1e-6) and s.mean + s.ci95 == pytest.approx(high, abs=1e-6)


def test_iqm_is_rliables_trimmed_mean_from_five_seeds():
    values = [0.1, 0.9, 0.5, 0.4, 0.45, 0.6, 0.2, 0.7]
    assert stats.summarize(values).iqm == pytest.approx(scipy_stats.trim_mean(values, 0.25), abs=1e-12)
    assert stats.iqm(values) == pytest.approx(np.mean(sorted(values)[2:6]), abs=1e-12)  # the middle half
    assert stats.summarize(values[:4]).iqm is None  # fewer than 5 seeds: no IQM


def test_paired_t_test_p_matches_scipy():
    p = stats.paired(dict(enumerate(A)), dict(enumerate(B)))
    assert p.p == pytest.approx(scipy_stats.ttest_rel(A, B).pvalue, abs=1e-6)
    assert p.n == 6 and p.mean_diff == pytest.approx(np.mean(np.subtract(A, B)), abs=1e-12)
    assert p.as_dict()["few_seeds"] is False
    assert stats.paired({0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.5, 1: 1.0, 2: 2.5}).as_dict()["few_seeds"] is True


def test_probability_of_improvement_counts_every_pair_ties_half():
    a, b = [1.0, 2.0, 3.0, 3.0], [2.0, 3.0, 0.5]
    by_hand = sum((x > y) + 0.5 * (x == y) for x in a for y in b) / (len(a) * len(b))
    assert stats.prob_improvement(a, b) == pytest.approx(by_hand, abs=1e-12)
    assert stats.paired(dict(enumerate(A)), dict(enumerate(B))).prob_improvement == pytest.approx(
        scipy_stats.mannwhitneyu(A, B).statistic / 36, abs=1e-12)


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.03, 0.04 of m = 3: 3 * 0.01 = 0.03; 2 * 0.03 = 0.06; 1 * 0.04 = 0.04 -> monotone 0.06
    assert stats.holm([0.04, 0.01, None, 0.03]) == pytest.approx([0.06, 0.03, None, 0.06], abs=1e-12)
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert stats.holm([]) == []


def test_seed_bootstrap_is_scipys_percentile_bootstrap():
    diffs = np.subtract(A, B)
    expected = scipy_stats.bootstrap((diffs,), np.mean, n_resamples=500, method="percentile",
                                     rng=np.random.default_rng(7)).confidence_interval
    assert stats.bootstrap_seeds(list(diffs), replicates=500, seed=7) == pytest.approx(
        (expected.low, expected.high), abs=1e-6)
    assert stats.bootstrap_seeds([0.01, 0.01]) == (0.01, 0.01)


def test_bootstrap_over_seeds_and_examples_resamples_both_with_one_draw_for_both_cells():
    rng = np.random.default_rng(3)
    correct_a = rng.random((4, 50)) < 0.8
    correct_b = rng.random((4, 50)) < 0.7
    low, high = stats.bootstrap_examples(correct_a, correct_b, replicates=300, seed=11)
    # the same replicates, by indexing: seeds drawn, then examples drawn, from one generator
    draw, values = np.random.default_rng(11), []
    for _ in range(300):
        rows = draw.integers(0, 4, 4)
        cols = draw.integers(0, 50, 50)
        values.append(np.mean(correct_a[np.ix_(rows, cols)].astype(float) - correct_b[np.ix_(rows, cols)]))
    assert (low, high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-6)
    # the shared test set's error widens the interval beyond what the seeds alone say
    seed_only = stats.bootstrap_seeds(list(correct_a.mean(1) - correct_b.mean(1)), replicates=300, seed=11)
    assert high - low > seed_only[1] - seed_only[0]


def test_paired_uses_the_examples_when_given():
    rng = np.random.default_rng(5)
    correct_a, correct_b = rng.random((3, 40)) < 0.9, rng.random((3, 40)) < 0.6
    a = dict(enumerate(correct_a.mean(1))), dict(enumerate(correct_b.mean(1)))
    p = stats.paired(*a, correct=(correct_a, correct_b))
    assert p.resampled == "seeds and test examples"
    assert p.bootstrap == pytest.approx(stats.bootstrap_examples(correct_a, correct_b), abs=1e-12)
    assert stats.paired(*a).resampled == "seeds"
