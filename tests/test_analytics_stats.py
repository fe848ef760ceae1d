"""The statistics core against independent computations (numpy resampling, numpy quantiles)."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_bh() -> None:
    q = stats.bh_q_values([0.01, 0.04, 0.03, 0.5])
    # sorted p 0.01, 0.03, 0.04, 0.5 -> raw m*p/rank 0.04, 0.06, 0.0533, 0.5, then running min
    assert q.tolist() == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
