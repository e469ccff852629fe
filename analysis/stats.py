"""General statistics the verdicts share: breakthroughness, Benjamini-Hochberg q-values, Wilson intervals, the
variance of a measurement, when a Monte Carlo p-value is decided, and the minimum and interval of a profile on a grid.

This module imports numpy and scipy only.
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def breakthroughness(y) -> np.ndarray:
    """BIG-bench breakthroughness of curves sorted by x, by the published formula (Srivastava et al. 2022, section
    3.4 and appendix B; restated by Schaeffer et al. 2023, eq. 1), with no floor:

        B = sign(argmax_i y_i - argmin_i y_i) * (max_i y_i - min_i y_i) / sqrt(median_i (y_i - y_{i-1})^2)

    y: (n,) or (B, n), oriented so that higher is better. A zero median step gives inf (0 for a constant curve).
    Descriptive only: it is never a gate of a verdict.
    """
    Y = np.atleast_2d(np.asarray(y, dtype=float))
    if Y.shape[1] < 2:
        out = np.full(Y.shape[0], np.nan)
        return out if np.ndim(y) > 1 else out[0]
    rng = Y.max(axis=1) - Y.min(axis=1)
    sign = np.where(np.argmax(Y, axis=1) >= np.argmin(Y, axis=1), 1.0, -1.0)
    den = np.sqrt(np.median(np.diff(Y, axis=1) ** 2, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(rng == 0, 0.0, sign * rng / den)
    return out if np.ndim(y) > 1 else out[0]


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini & Hochberg 1995 q-values (step-up, monotone); NaN p-values stay NaN and do not count as tests."""
    p = np.asarray(p, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def wilson(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (Wilson 1927); (nan, nan) for n = 0."""
    if n <= 0:
        return np.nan, np.nan
    z = stats.norm.ppf(0.5 + level / 2)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, mid - half)), float(min(1.0, mid + half))


def measurement_variance(value, stderr, n, bounded01: bool) -> np.ndarray:
    """Each point's measurement variance: stderr^2, and for a proportion at least the binomial variance from n with
    half an example added on each side ((k + 1/2) / (n + 1): an exact 0 of 256 is not measured without error).
    0 where neither is known."""
    value = np.asarray(value, float)
    se = np.asarray(stderr, float) if stderr is not None else np.full(value.shape, np.nan)
    nn = np.asarray(n, float) if n is not None else np.full(value.shape, np.nan)
    v = np.where(np.isfinite(se), se ** 2, 0.0)
    if bounded01:
        ok = np.isfinite(nn) & (nn > 0)
        p = (np.clip(value, 0, 1) * np.where(ok, nn, 1) + 0.5) / (np.where(ok, nn, 1) + 1)
        v = np.where(ok, np.maximum(v, p * (1 - p) / np.where(ok, nn, 1)), v)
    return v


def mc_decided(k: int, n: int, levels=(0.025, 0.05), conf: float = 0.99) -> bool:
    """Whether k exceedances in n draws place a Monte Carlo p-value clearly on one side of every level: the
    Clopper-Pearson interval at `conf` excludes them all (a sequential stop in the spirit of Besag & Clifford 1991)."""
    a = (1 - conf) / 2
    lo = stats.beta.ppf(a, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(1 - a, k + 1, n - k) if k < n else 1.0
    return all(not (lo <= lev <= hi) for lev in levels)


def refine_minimum(x: np.ndarray, f: np.ndarray) -> float:
    """The minimum of a profile sampled at x, between grid points: the vertex of the parabola through the lowest
    sample and its two neighbours, kept inside them (the sample itself where it lies at an end of the grid, or
    where the three are collinear)."""
    j = int(np.argmin(f))
    if j == 0 or j == x.size - 1:
        return float(x[j])
    x0, x1, x2 = x[j - 1: j + 2]
    f0, f1, f2 = f[j - 1: j + 2]
    den = (x0 - x1) * (f0 - f2) - (x0 - x2) * (f0 - f1)
    if not abs(den) > 1e-15:
        return float(x1)
    num = (x0 - x1) ** 2 * (f0 - f2) - (x0 - x2) ** 2 * (f0 - f1)
    return float(np.clip(x0 - 0.5 * num / den, x0, x2))


def profile_interval(logw, rel, crit):
    """Widths whose profile stays within crit of the best, with the ends found by linear interpolation in log W
    between the last grid width inside and the first outside; 0 or inf where the set reaches the grid's end."""
    inside = np.where(rel <= crit + 1e-9)[0]
    a, b = int(inside.min()), int(inside.max())

    def cross(i_in, i_out):
        r0, r1 = rel[i_in], rel[i_out]
        f = (crit - r0) / (r1 - r0) if r1 > r0 else 0.0
        return float(10 ** (logw[i_in] + np.clip(f, 0.0, 1.0) * (logw[i_out] - logw[i_in])))

    lo = 0.0 if a == 0 else cross(a, a - 1)
    hi = np.inf if b == logw.size - 1 else cross(b, b + 1)
    return lo, hi
