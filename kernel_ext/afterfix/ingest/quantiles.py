"""Quantiles of OTLP histogram and summary points, estimated as Prometheus estimates them.

Explicit-bucket histograms: find the bucket where the rank q*count falls and interpolate
linearly inside it, as `histogram_quantile` does. The lowest bucket, (-inf, b0], starts at 0
when b0 is positive (else it answers b0), and the highest, (bn, +inf), answers bn. OTLP points
may also carry `min` and `max`, the exact extremes: when they are there, they bound those two
buckets instead, and every estimate is kept within [min, max].

Exponential histograms: the same over their buckets, base 2^(2^-scale): bucket i holds
(base^i, base^(i+1)], negative buckets mirror it, the zero bucket is [-zeroThreshold, zeroThreshold].

Summaries: the value sent for the quantile, else interpolated linearly between the nearest two
sent, else none.

`histogram`, `exponential` and `summary` also check a point's buckets (raising `Bad` with what
is wrong) and give its p50, p90, p95, p99.
"""

from __future__ import annotations

import math

from .rows import Bad

__all__ = ["QUANTILES", "explicit_buckets", "exponential_buckets", "bucket_quantile", "summary_quantile",
           "histogram", "exponential", "summary"]  # fmt: skip

QUANTILES = (0.5, 0.9, 0.95, 0.99)  # p50, p90, p95, p99
_MAX_BUCKETS = 1 << 16  # per point: far above any SDK's default (160), small enough to walk


def explicit_buckets(bounds, counts) -> list[tuple[float, float, int]]:
    """(lower, upper, count) of an explicit-bucket histogram: (-inf, b0], (b0, b1], ..., (bn, +inf)."""
    edges = [-math.inf, *bounds, math.inf]
    return [(edges[i], edges[i + 1], c) for i, c in enumerate(counts)]


def exponential_buckets(scale: int, zero_count: int, zero_threshold: float, positive: tuple[int, list[int]],
                        negative: tuple[int, list[int]]) -> list[tuple[float, float, int]]:  # fmt: skip
    """(lower, upper, count) of an exponential histogram, from the most negative bucket up."""

    def edge(i: int) -> float:
        try:
            return 2.0 ** (i * 2.0**-scale)
        except OverflowError:
            return math.inf

    n_off, n_counts = negative
    p_off, p_counts = positive
    out = [(-edge(n_off + k + 1), -edge(n_off + k), c) for k, c in reversed(list(enumerate(n_counts)))]
    if zero_count:
        out.append((-zero_threshold, zero_threshold, zero_count))
    out += [(edge(p_off + k), edge(p_off + k + 1), c) for k, c in enumerate(p_counts)]
    return out


def bucket_quantile(q: float, buckets: list[tuple[float, float, int]], lo: float | None = None,
                    hi: float | None = None) -> float | None:  # fmt: skip
    """The q-quantile (0 < q < 1) estimated from ordered buckets, Prometheus' histogram_quantile
    way (see the module docstring), bounded by the point's `lo` (min) and `hi` (max) when known;
    None for an empty histogram or one whose answer is not a number."""
    total = sum(c for _, _, c in buckets)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for lower, upper, c in buckets:
        if c and below + c >= rank:
            break
        below += c
    else:  # pragma: no cover - rank <= total always falls in a bucket
        return None
    if lower == -math.inf:
        if lo is not None:
            lower = min(lo, upper)
        elif upper > 0:
            lower = 0.0
        else:
            return _bounded(upper, lo, hi)
    if upper == math.inf:
        if hi is None:
            return _bounded(lower, lo, hi)
        upper = max(hi, lower)
    v = lower + (upper - lower) * ((rank - below) / c)
    return _bounded(v, lo, hi)


def _bounded(v: float, lo: float | None, hi: float | None) -> float | None:
    if lo is not None and v < lo:
        v = lo
    if hi is not None and v > hi:
        v = hi
    return None if math.isnan(v) or math.isinf(v) else v


def summary_quantile(q: float, values: list[tuple[float, float]]) -> float | None:
    """The q-quantile from a summary's (quantile, value) pairs sorted by quantile: exact when
    sent, else interpolated between the nearest two, else None."""
    for i, (qi, vi) in enumerate(values):
        if qi == q:
            return vi
        if qi > q:
            if i == 0:
                return None
            q0, v0 = values[i - 1]
            return v0 + (vi - v0) * (q - q0) / (qi - q0)
    return None


# -- whole points, as both OTLP encodings give them -------------------------------------------


def histogram(count: int, bounds: list[float], counts: list[int], lo, hi) -> list[float | None] | None:
    """p50..p99 of an explicit-bucket point (None without buckets, min and max); `Bad` for
    buckets that contradict its count or each other."""
    if len(counts) > _MAX_BUCKETS:
        raise Bad(f"{len(counts)} buckets, over the limit of {_MAX_BUCKETS}")
    if counts and len(counts) != len(bounds) + 1:
        raise Bad(f"{len(counts)} bucket counts for {len(bounds)} explicit bounds; OTLP wants one more count than bounds")
    for i, b in enumerate(bounds):
        if math.isnan(b) or math.isinf(b) or (i and b <= bounds[i - 1]):
            raise Bad(f"explicit bounds must be finite and increasing: bound {i} is {b} after {bounds[i - 1] if i else None}")
    if counts and sum(counts) != count:
        raise Bad(f"the bucket counts add up to {sum(counts)}, not to the point's count {count}")
    if not counts:
        if lo is None or hi is None:
            return None  # no buckets and no extremes: count and sum only
        buckets = [(lo, hi, count)]
    else:
        buckets = explicit_buckets(bounds, counts)
    return [bucket_quantile(q, buckets, lo, hi) for q in QUANTILES]


def exponential(count: int, scale: int, zero_count: int, zero_threshold: float, pos, neg, lo, hi) -> list[float | None]:
    """p50..p99 of an exponential-histogram point; `pos` and `neg` are (offset, bucket counts)."""
    if not -10 <= scale <= 20:
        raise Bad(f"scale {scale} is outside OTLP's range -10..20")
    if len(pos[1]) + len(neg[1]) > _MAX_BUCKETS:
        raise Bad(f"{len(pos[1]) + len(neg[1])} buckets, over the limit of {_MAX_BUCKETS}")
    if math.isnan(zero_threshold) or zero_threshold < 0:
        raise Bad(f"zeroThreshold {zero_threshold} is not a non-negative number")
    total = zero_count + sum(pos[1]) + sum(neg[1])
    if total != count:
        raise Bad(f"zeroCount and the bucket counts add up to {total}, not to the point's count {count}")
    buckets = exponential_buckets(scale, zero_count, zero_threshold, pos, neg)
    return [bucket_quantile(q, buckets, lo, hi) for q in QUANTILES]


def summary(pairs: list[tuple[float, float]]) -> list[float | None]:
    """p50..p99 of a summary point from its (quantile, value) pairs, in any order."""
    for q, _ in pairs:
        if not 0.0 <= q <= 1.0:
            raise Bad(f"quantile {q} is outside 0..1")
    pairs = sorted(pairs)
    return [summary_quantile(q, pairs) for q in QUANTILES]
