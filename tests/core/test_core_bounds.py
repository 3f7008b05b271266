from __future__ import annotations

import pytest

from stopwise.daemon.core.bounds import cp_lower, cp_upper, hoeffding_upper, kish


@pytest.mark.parametrize("k,n,conf,expected", [
    (0, 10, 0.95, 0.25887),     # 1 - 0.05 ** (1/10)
    (0, 300, 0.95, 0.00994),
    (1, 100, 0.95, 0.04656),
    (5, 100, 0.95, 0.10225),
    (10, 1000, 0.99, 0.02004),
])
def test_clopper_pearson_upper_matches_known_values(k, n, conf, expected):
    assert cp_upper(k, n, conf) == pytest.approx(expected, abs=2e-5)


def test_upper_bound_is_where_the_binomial_tail_equals_alpha():
    from scipy.stats import binom

    for k, n in ((0, 40), (3, 250), (17, 900)):
        p = cp_upper(k, n, 0.95)
        assert binom.cdf(k, n, p) == pytest.approx(0.05, abs=1e-6)


def test_zero_losses_closed_form():
    for n in (50, 299, 1000):
        assert cp_upper(0, n, 0.95) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)


def test_lower_bound_and_edges():
    assert cp_lower(5, 100, 0.95) == pytest.approx(0.01991, abs=2e-5)
    assert cp_lower(0, 100, 0.95) == 0.0
    assert cp_upper(0, 0, 0.95) == 1.0 and cp_upper(100, 100, 0.95) == 1.0


def test_certifies_one_percent_with_few_hundred_clean_samples_where_hoeffding_cannot():
    assert cp_upper(0, 300, 0.95) < 0.01
    assert hoeffding_upper(0.0, 300, 0.95) > 0.05
    # Hoeffding needs ~15000 clean samples for the same 1%
    assert hoeffding_upper(0.0, 14000, 0.95) > 0.01
    # with a realistic 0.3% loss rate a couple thousand samples suffice
    assert cp_upper(6, 2000, 0.95) < 0.01


def test_fractional_counts_are_monotone():
    ups = [cp_upper(k, 500.0, 0.95) for k in (0.0, 0.5, 1.0, 1.5, 2.0)]
    assert ups == sorted(ups) and len(set(ups)) == 5


def test_kish_effective_size():
    assert kish(4.0, 4.0) == 4.0          # four weights of 1
    assert kish(1.0 + 10.0, 1.0 + 100.0) == pytest.approx(121 / 101)
    assert kish(0.0, 0.0) == 0.0
