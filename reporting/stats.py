"""Differences between experiment arms with 95 % confidence intervals, and the sentence that says them.

Rates (delivered, replied, clicked, converted per recipient) are compared with Newcombe's hybrid
score interval for a difference of proportions (Newcombe 1998, method 10: built from each arm's
Wilson interval), which stays inside [-1, 1] and behaves with small counts and rates near 0 or 1
where the Wald interval does not. Revenue per recipient is compared with Welch's t interval
(unequal variances, Welch-Satterthwaite degrees of freedom), from each arm's count, sum and sum
of squares. Small enough not to need scipy: the t quantile comes from the regularized incomplete
beta function by bisection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

CONFIDENCE = 0.95
Z = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)  # 1.959963...


@dataclass(frozen=True)
class Difference:
    """``estimate`` (arm minus reference) and its interval; significant when it excludes zero."""

    estimate: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float | bool]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "significant": self.significant}


def wilson(successes: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return (centre - spread) / scale, (centre + spread) / scale


def proportion_difference(x1: int, n1: int, x2: int, n2: int, z: float = Z) -> Difference | None:
    """p1 - p2 with Newcombe's hybrid score interval; None when an arm has nobody."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return Difference(d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def mean_difference(
    n1: int, sum1: float, sumsq1: float, n2: int, sum2: float, sumsq2: float
) -> tuple[Difference, float] | None:
    """(mean1 - mean2 with Welch's interval, degrees of freedom); None with fewer than 2 in an arm
    or no variance at all."""
    if n1 < 2 or n2 < 2:
        return None
    m1, m2 = sum1 / n1, sum2 / n2
    v1 = max(sumsq1 - n1 * m1 * m1, 0.0) / (n1 - 1)
    v2 = max(sumsq2 - n2 * m2 * m2, 0.0) / (n2 - 1)
    a, b = v1 / n1, v2 / n2
    if a + b == 0:
        return None
    se = math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    t = t_quantile(1 - (1 - CONFIDENCE) / 2, df)
    d = m1 - m2
    return Difference(d, d - t * se, d + t * se), df


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t with ``df`` degrees of freedom."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            numerator = 1.0
        elif i % 2 == 0:
            numerator = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            numerator = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + numerator * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + numerator / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1 - c * d) < 1e-15:
            break
    return front * (f - 1) / a


# --- In words --------------------------------------------------------------------------------


def sentence(metric: str, arm: str, reference: str, difference: Difference | None, *, unit: str = "points") -> str:
    """One plain sentence: how the arm differs from the reference and whether that is significant.

    Rates are given in percentage points (``unit="points"``: the difference is a proportion);
    otherwise ``unit`` names what the figures are already in (a currency), or is empty.
    """
    if difference is None:
        return f"Not enough recipients yet to compare {arm} with {reference} on {metric}."
    scale, digits = (100, 1) if unit == "points" else (1, 2)
    size = abs(difference.estimate) * scale
    direction = "higher" if difference.estimate > 0 else "lower" if difference.estimate < 0 else "no different"
    low, high = difference.low * scale, difference.high * scale
    suffix = f" {unit}" if unit else ""
    what = f"{size:.{digits}f}{suffix} {direction} than" if direction != "no different" else "the same as"
    interval = f"(95 % CI {low:+.{digits}f} to {high:+.{digits}f}{suffix})"
    if difference.significant:
        verdict = "the difference is significant at 95 % confidence"
    else:
        verdict = "the difference is not significant: it may be chance"
    return f"{arm}'s {metric} is {what} {reference}'s {interval}; {verdict}."
