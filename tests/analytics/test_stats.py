"""The statistics core against independent computations (numpy resampling, numpy quantiles)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from prefixscope.analytics import stats


def _hist(values: np.ndarray, group: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = np.floor(np.log(np.maximum(values, stats.MIN_BINNED_VALUE)) * stats.BINS_PER_E)
    bins, counts = np.unique(b.astype(np.int64), return_counts=True)
    return np.full(len(bins), group, dtype=np.int64), bins, counts.astype(np.int64)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_exact_bootstrap_matches_resampling(p: float) -> None:
    rng = np.random.default_rng(3)
    x = rng.lognormal(np.log(400), 0.5, 1500)
    binned = stats.bin_value(np.floor(np.log(x) * stats.BINS_PER_E))
    # Monte-Carlo bootstrap of the same (binned) sample, vectorised: B x n resamples
    idx = rng.integers(0, len(x), size=(4000, len(x)))
    boot = np.quantile(binned[idx], p, axis=1, method="inverted_cdf")
    g, b, c = _hist(x)
    res = stats.quantile_bootstrap(g, b, c, 1, p)
    assert res.mean[0] == pytest.approx(boot.mean(), rel=0.01)
    assert np.sqrt(res.var[0]) == pytest.approx(boot.std(), rel=0.12)
    assert res.ci_low[0] == pytest.approx(np.quantile(boot, 0.025), rel=0.02)
    assert res.ci_high[0] == pytest.approx(np.quantile(boot, 0.975), rel=0.02)


def test_hist_quantile_and_groups() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.lognormal(5, 0.4, 20000), rng.lognormal(6, 0.8, 5000)
    ga, ba, ca = _hist(a, 0)
    gb, bb, cb = _hist(b, 1)
    g, bins, counts = (np.concatenate(x) for x in ((ga, gb), (ba, bb), (ca, cb)))
    for p in (0.5, 0.9, 0.99):
        q = stats.hist_quantile(g, bins, counts, 3, p)
        assert q[0] == pytest.approx(np.quantile(a, p), rel=0.01)
        assert q[1] == pytest.approx(np.quantile(b, p), rel=0.01)
        assert np.isnan(q[2])  # empty group


def test_intervals() -> None:
    lo, hi = stats.jeffreys_interval([0, 50, 100], [100, 100, 100])
    assert lo[0] == 0 and hi[2] == 1 and lo[1] < 0.5 < hi[1]
    lo, hi = stats.mean_interval([0.8], [0.04], [100])
    assert (hi[0] - lo[0]) / 2 == pytest.approx(1.984 * 0.02, rel=1e-3)


def test_msprt_is_always_valid_under_the_null() -> None:
    """Ville: P(any of 50 looks has p <= alpha) <= alpha under 'no change', vectorised."""
    rng = np.random.default_rng(5)
    sims, looks, batch = 4000, 50, 20
    steps = rng.standard_normal((sims, looks * batch))
    csum = np.cumsum(steps, axis=1)[:, batch - 1 :: batch]
    n = np.arange(1, looks + 1) * batch
    est, var = csum / n, 1.0 / n
    p = stats.msprt_p_value(est, np.broadcast_to(var, est.shape), np.full(est.shape, 0.3))
    rate = float(np.mean((p <= 0.05).any(axis=1)))
    assert rate <= 0.05
    # and it has power: a true effect of 0.3 sd is found by the last look
    p1 = stats.msprt_p_value(est + 0.3, np.broadcast_to(var, est.shape), np.full(est.shape, 0.3))
    assert np.mean(p1[:, -1] <= 0.05) > 0.95


def test_msprt_bound_matches_its_test_and_covers_over_looks() -> None:
    """Issue 15: the interval an alert shows is the test's own confidence sequence. The bound
    is >= 0 exactly when the always-valid p-value is <= alpha, and the true effect stays
    above the running maximum of the bound at every look with probability >= 1 - alpha."""
    rng = np.random.default_rng(7)
    sims, looks, batch, effect = 4000, 50, 20, 0.2
    steps = rng.standard_normal((sims, looks * batch)) + effect
    n = np.arange(1, looks + 1) * batch
    est = np.cumsum(steps, axis=1)[:, batch - 1 :: batch] / n
    var = np.broadcast_to(1.0 / n, est.shape)
    tau = np.full(est.shape, 0.3)
    bound = est - stats.msprt_threshold(var, tau, 0.05)
    p = stats.msprt_p_value(est, var, tau)
    decided = np.abs(p - 0.05) > 1e-9
    assert decided.sum() > 0.99 * p.size
    assert np.array_equal((bound >= 0)[decided], (p <= 0.05)[decided])
    running = np.maximum.accumulate(bound, axis=1)
    miss = float(np.mean((running > effect).any(axis=1)))
    assert 0 < miss <= 0.05  # covered at every look; the bound is not vacuous either
    assert np.mean(running[:, -1] > 0) > 0.9  # and it moves off 0 when the effect is real


def test_bh() -> None:
    q = stats.bh_q_values([0.01, 0.04, 0.03, 0.5])
    # sorted p 0.01, 0.03, 0.04, 0.5 -> raw m*p/rank 0.04, 0.06, 0.0533, 0.5, then running min
    assert q.tolist() == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.beta(6, 2, 120), rng.beta(8, 2, 300)  # a is worse (lower)
    v1, v0 = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    p = stats.welch_p_value(b.mean() - a.mean(), v1, len(a), v0, len(b))
    ref = sps.ttest_ind(a, b, equal_var=False, alternative="less")
    assert float(p) == pytest.approx(ref.pvalue, rel=1e-9)
    assert float(stats.welch_df(v1, len(a), v0, len(b))) == pytest.approx(ref.df, rel=1e-9)
    assert float(stats.welch_p_value(0.1, 0.0, 100, 0.0, 100)) == 1.0  # no spread: not tested


def _exact_rejection(n1: int, p1: float, n0: int, p0: float, level: float) -> float:
    """P(two_proportion_p_value <= level), summed over every (k1, k0) outcome."""
    k1, k0 = np.meshgrid(np.arange(n1 + 1), np.arange(n0 + 1), indexing="ij")
    weight = sps.binom.pmf(k1, n1, p1) * sps.binom.pmf(k0, n0, p0)
    return float((weight * (stats.two_proportion_p_value(k1, n1, k0, n0) <= level)).sum())


@pytest.mark.parametrize("rate", [0.01, 0.02, 0.05, 0.2])
@pytest.mark.parametrize("n", [100, 300, 1000])
def test_two_proportion_size_close_to_nominal(rate: float, n: int) -> None:
    """Exact size (every outcome enumerated) under p1 = p0. The binomial lattice makes it
    wobble around the level: up to 1.16x at the 5 % level (n=100, 2 % rates), within 5 % of
    it at the levels BH needs for one comparison among 10 to 36 (alpha/m)."""
    assert _exact_rejection(n, rate, n, rate, 0.05) <= 0.05 * 1.2
    for level in (0.005, 0.05 / 36):
        assert _exact_rejection(n, rate, n, rate, level) <= level * 1.05


def test_two_proportion_power_and_direction() -> None:
    # thumbs-down 5 % -> 10 % at n=1000/side, one comparison in ten (BH's first step)
    assert _exact_rejection(1000, 0.10, 1000, 0.05, 0.005) == pytest.approx(0.9578, abs=5e-4)
    p = stats.two_proportion_p_value([60, 40, 0], [1000] * 3, [40, 60, 0], [1000] * 3)
    assert p[0] < 0.05 < 0.95 < p[1] and p[2] == 1.0  # one-sided; no events: not evidence


def test_score_intervals_stay_in_the_unit_interval() -> None:
    """Issue 13: Refusal printed 0.500 [-0.075, 1.075]: a t interval on a few 0/1 scores."""
    from prefixscope.analytics.stats import bounded_score_interval

    # 3 of 6 pass/fail scores; 6 graded scores near 1; a single score
    total = np.array([3.0, 5.7, 1.0])
    sumsq = np.array([3.0, 5.49, 1.0])  # graded: five 1.0 and one 0.7
    n = np.array([6.0, 6.0, 1.0])
    lo, hi = bounded_score_interval(total, sumsq, n)
    assert np.all((lo >= 0) & (hi <= 1))
    assert lo[0] < 0.5 < hi[0] and hi[0] - lo[0] < 1.0  # a binomial interval, not [0, 1]
    assert hi[1] == 1.0 and 0.8 < lo[1] < 0.95  # graded: the t interval, cut at 1
    assert lo[2] < 1.0 and hi[2] == 1.0
