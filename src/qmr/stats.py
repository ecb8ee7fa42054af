"""Confidence intervals: the one home of the interval math every reported claim uses.

- :func:`wilson`: a binomial (Wilson score) interval for one run's accuracy, k correct of n problems.
- :func:`t_interval`: a Student t-interval for the mean of a quantity over independent runs (seeds).
- :func:`bootstrap_ratio`: a percentile bootstrap over problems for a ratio of paired differences
  (the recovery ratio), with a fixed seed so the same traces give the same interval.
- :func:`overlap` / :func:`verdict`: whether two intervals overlap; overlapping 95% intervals are
  reported as "not significant", separate ones as "higher" / "lower". A conservative reading:
  separate 95% intervals mean a real difference; overlapping ones do not prove there is none.

No scipy (not a dependency): the t-quantile comes from the regularized incomplete beta function;
the bootstrap uses numpy (imported when called).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000

Interval = tuple[float, float]


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: got {confidence!r}; allowed: a number strictly between 0 and 1")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Interval | None:
    """Wilson score interval for a binomial proportion k/n; None when n == 0."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"k: got {k!r}; allowed: 0 <= k <= n ({n})")
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, center - half), min(1.0, center + half))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on :func:`t_cdf`, to 1e-12)."""
    if not 0 < p < 1:
        raise ValueError(f"p: got {p!r}; allowed: a number strictly between 0 and 1")
    if df <= 0:
        raise ValueError(f"df: got {df!r}; allowed: > 0")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """Student t-interval for the mean of ``values`` (independent runs); None with fewer than two."""
    vals = [float(v) for v in values]
    if len(vals) < 2:
        return None
    mean = statistics.fmean(vals)
    half = t_quantile(0.5 + confidence / 2, len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return (mean - half, mean + half)


def bootstrap_ratio(
    fp: Sequence[bool], q: Sequence[bool], r: Sequence[bool], seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
) -> Interval | None:  # fmt: skip
    """Percentile bootstrap over problems of (acc_r − acc_q) / (acc_fp − acc_q).

    ``fp``, ``q`` and ``r`` are per-problem correctness, aligned (the same problem at each index), so
    every resample keeps the pairing. A resample whose gap acc_fp − acc_q is not positive has no
    ratio; when more than (1 − confidence)/2 of the resamples are such, the ratio is not resolved
    (one tail is unbounded) and the result is None.
    """
    n = len(fp)
    if not n or len(q) != n or len(r) != n:
        raise ValueError(f"fp, q, r: got lengths {len(fp)}, {len(q)}, {len(r)}; allowed: equal and > 0")
    import numpy as np

    rng = np.random.default_rng(seed)
    a_fp, a_q, a_r = (np.asarray(x, dtype=np.int32) for x in (fp, q, r))
    fp_s, q_s, r_s = np.zeros(resamples), np.zeros(resamples), np.zeros(resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory for large benchmarks
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        fp_s[start:stop], q_s[start:stop], r_s[start:stop] = a_fp[idx].sum(1), a_q[idx].sum(1), a_r[idx].sum(1)
    gap = fp_s - q_s
    defined = gap > 0
    alpha = 1 - confidence
    if (~defined).sum() > alpha / 2 * resamples:
        return None
    ratios = (r_s[defined] - q_s[defined]) / gap[defined]
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def overlap(a: Interval | None, b: Interval | None) -> bool | None:
    """Do intervals ``a`` and ``b`` overlap? None when either is missing."""
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def verdict(a: Interval | None, b: Interval | None) -> str | None:
    """The report's word on ``a`` against ``b``: "not significant" when the intervals overlap, else
    "higher" or "lower"; None when either interval is missing."""
    o = overlap(a, b)
    if o is None:
        return None
    return "not significant" if o else "higher" if a[0] > b[1] else "lower"


def rounded(interval: Interval | None, digits: int = 4) -> list[float] | None:
    """An interval as a JSON list [lo, hi], rounded like the point values beside it."""
    return None if interval is None else [round(interval[0], digits), round(interval[1], digits)]
