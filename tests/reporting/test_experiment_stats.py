"""Arm differences with 95 % intervals, checked against published worked examples."""

import pytest

from reporting import stats

# Newcombe (1998), "Interval estimation for the difference between independent proportions",
# Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score, from Wilson intervals).
NEWCOMBE_EXAMPLES = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
]

# Welch's t-test, example 1 of its Wikipedia article: t = -2.46, about 25 degrees of freedom, p = 0.021.
A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


@pytest.mark.parametrize(("counts", "interval"), NEWCOMBE_EXAMPLES)
def test_difference_of_proportions_matches_newcombes_method_10(counts, interval):
    difference = stats.proportion_difference(*counts)
    assert (round(difference.low, 4), round(difference.high, 4)) == interval


def test_a_rate_difference_whose_interval_excludes_zero_is_significant():
    assert stats.proportion_difference(56, 70, 48, 80).significant
    assert not stats.proportion_difference(50, 100, 45, 100).significant


def test_student_t_quantiles_match_the_tables():
    assert round(stats.t_quantile(0.975, 1), 4) == 12.7062
    assert round(stats.t_quantile(0.975, 10), 4) == 2.2281
    assert round(stats.t_quantile(0.975, 30), 4) == 2.0423


def test_welch_interval_matches_the_worked_example():
    difference, df = stats.mean_difference(
        len(A1), sum(A1), sum(x * x for x in A1), len(A2), sum(A2), sum(x * x for x in A2)
    )
    assert round(df, 1) == 25.0
    assert round(difference.estimate, 4) == -2.1667
    t = stats.t_quantile(0.975, df)
    assert round(difference.estimate / ((difference.high - difference.estimate) / t), 2) == -2.46
    assert (round(difference.low, 3), round(difference.high, 3)) == (-3.984, -0.349)
    assert difference.significant  # p = 0.021 < 0.05


def test_no_comparison_without_recipients():
    assert stats.proportion_difference(0, 0, 1, 10) is None
    assert stats.mean_difference(1, 5.0, 25.0, 10, 5.0, 5.0) is None


def test_the_sentence_says_the_size_the_interval_and_the_verdict():
    significant = stats.sentence("reply rate", "B", "Control", stats.proportion_difference(56, 70, 48, 80))
    assert significant == (
        "B's reply rate is 20.0 points higher than Control's (95 % CI +5.2 to +33.4 points); "
        "the difference is significant at 95 % confidence."
    )
    chance = stats.sentence("reply rate", "A", "B", stats.proportion_difference(45, 100, 50, 100))
    assert chance.startswith("A's reply rate is 5.0 points lower than B's (95 % CI")
    assert chance.endswith("the difference is not significant: it may be chance.")
    assert (
        stats.sentence("reply rate", "A", "B", None) == "Not enough recipients yet to compare A with B on reply rate."
    )


def test_a_revenue_sentence_gives_the_amount_without_points():
    difference, _ = stats.mean_difference(
        len(A1), sum(A1), sum(x * x for x in A1), len(A2), sum(A2), sum(x * x for x in A2)
    )
    text = stats.sentence("revenue per recipient", "A", "B", difference, unit="")
    assert text == (
        "A's revenue per recipient is 2.17 lower than B's (95 % CI -3.98 to -0.35); "
        "the difference is significant at 95 % confidence."
    )
