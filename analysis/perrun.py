"""Single runs and model-free checks beside the width test: do runs acquire an ability abruptly (two levels) or
gradually (`per_run_test`), the cut between two levels (`level_cut`), the share of runs at the high level and how
wide it rises (`share_rise`), whether held-out loss separates the runs that acquired it (`loss_alignment`), the
plateaus and widest gap around a fitted rise (`plateaus_and_gap`), and the steepest step between adjacent sizes
against the most a rise W0 wide can climb (`steepest_step`).

This module imports numpy and scipy only (and the width test's grid, `analysis.jumps`).
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import expit

from analysis.jumps import ALPHA, LN9X2, N_BOOT, W0, Grid


def plateaus_and_gap(t: np.ndarray, s_fit: np.ndarray, w0: float) -> tuple[int, int, float]:
    """Points on the fitted floor (s <= 0.1) and ceiling (s >= 0.9), and the widest step between adjacent points
    from the last one on the floor to the first one on the ceiling (the rise happens somewhere inside)."""
    order = np.argsort(t)
    t, s = t[order], s_fit[order]
    low = np.where(s <= 0.1)[0]
    high = np.where(s >= 0.9)[0]
    a = int(low.max()) if low.size else 0
    b = int(high.min()) if high.size else t.size - 1
    gap = float(np.max(np.diff(t[a: b + 1]))) if b > a else 0.0
    return int(low.size), int(high.size), gap


def steepest_step(t, ybar, var_mean, floor, ceiling, w0) -> tuple[float, float, float]:
    """Model-free cross-check: the largest rise between adjacent sizes, as a share of the amplitude, against the most
    a logistic W0 wide can climb over the same step (2 s(g/2) - 1 for a step of g decades, centred on its middle).
    Returns (step, allowed, p): p of "no step exceeds its allowance" (normal, Bonferroni over the n - 1 steps)."""
    amp = float(ceiling - floor)
    if amp <= 0 or len(t) < 2:
        return np.nan, np.nan, np.nan
    d = np.diff(ybar) / amp
    se = np.sqrt(var_mean[1:] + var_mean[:-1]) / amp
    g = np.diff(t)
    allowed = 2.0 * expit(LN9X2 * g / (2.0 * w0)) - 1.0
    z = (d - allowed) / np.maximum(se, 1e-12)
    j = int(np.argmax(z))
    return float(d[j]), float(allowed[j]), float(min(1.0, (len(d)) * stats.norm.sf(z[j])))


def per_run_test(size_of_run, run_y, run_vm, ybar_size, floor, ceiling, *, n_boot: int = N_BOOT, alpha: float = ALPHA,
                 seed: int = 0) -> dict:
    """Do single runs acquire the ability abruptly (two levels) or gradually (together through the middle)?

    At the transition sizes (mean between 10% and 90% of the way from floor to ceiling, at least 3 runs each), the
    runs of each size are explained either by two levels, the floor and the ceiling, each with its measurement
    noise and a share pi at the ceiling (a two-component mixture with fixed components), or by one level (a normal
    law with its own mean and spread). The statistic is the log-likelihood ratio summed over those sizes; p_abrupt is
    calibrated by draws from the one-level fits, p_gradual by draws from the mixture fits (McLachlan 1987), N_BOOT
    of each (Monte Carlo error near alpha below 0.01).
    abrupt when p_abrupt <= alpha, gradual when p_gradual <= alpha, else undetermined.
    The share acquired at each size counts the runs more than half way from floor to ceiling.
    """
    m = np.bincount(size_of_run, minlength=len(ybar_size))
    out = {"per_run": "undetermined", "per_run_p": np.nan, "p_gradual": np.nan,
           "acquired": np.zeros(run_y.size, bool), "k": np.zeros(m.size, int), "m": m, "why": "", "n_trans": 0,
           "separation": np.nan}
    if not ceiling > floor:
        out["why"] = "no rise"
        return out
    # the two levels from the runs themselves (the fitted curve's plateaus may lie beyond the measured range):
    # the best split of all runs' values into a low and a high group (one-dimensional 2-means)
    floor, ceiling, vf, vc, split = _two_levels(run_y, run_vm)
    amp = ceiling - floor
    acquired = run_y > split
    k = np.bincount(size_of_run, weights=acquired.astype(float), minlength=m.size).astype(int)
    # Ashman's D: how many pooled standard deviations apart the two groups lie (above 2: clearly two groups)
    out.update(acquired=acquired, k=k, levels=(floor, ceiling), level_sd=(float(np.sqrt(vf)), float(np.sqrt(vc))),
               separation=float(np.sqrt(2.0) * amp / np.sqrt(vf + vc)))
    u_size = (ybar_size - floor) / amp
    trans = np.where((u_size > 0.1) & (u_size < 0.9) & (m >= 3))[0]
    if trans.size == 0:
        out["why"] = ("no size with 3 or more runs was caught mid-transition" if np.any(m >= 3)
                      else "fewer than 3 runs per size")
        return out
    groups = [run_y[size_of_run == i] for i in trans]
    rng = np.random.default_rng(seed + 7)
    pis = np.linspace(0.0, 1.0, 51)

    def llr(Y):
        """Y: (B, r) runs of one size -> (llr (B,), pi_hat (B,), mu (B,), sd (B,))."""
        mu = Y.mean(1)
        var = np.maximum(((Y - mu[:, None]) ** 2).mean(1), min(vf, vc))
        l1 = (-0.5 * np.log(2 * np.pi * var)[:, None] - 0.5 * (Y - mu[:, None]) ** 2 / var[:, None]).sum(1)
        lf = -0.5 * np.log(2 * np.pi * vf) - 0.5 * (Y - floor) ** 2 / vf
        lc = -0.5 * np.log(2 * np.pi * vc) - 0.5 * (Y - ceiling) ** 2 / vc
        mx = np.maximum(lf, lc)
        # (B, r, P): log of the mixture density at every share
        lm = mx[..., None] + np.log((1 - pis) * np.exp(lf - mx)[..., None] + pis * np.exp(lc - mx)[..., None] + 1e-300)
        L = lm.sum(1)
        j = np.argmax(L, axis=1)
        return L[np.arange(Y.shape[0]), j] - l1, pis[j], mu, np.sqrt(var)

    obs = [llr(g[None]) for g in groups]
    stat = sum(o[0][0] for o in obs)
    sims_one, sims_two = 0.0, 0.0
    for g, o in zip(groups, obs):
        r = g.size
        y1 = o[2][0] + o[3][0] * rng.standard_normal((n_boot, r))
        sims_one = sims_one + llr(y1)[0]
        hi = rng.random((n_boot, r)) < o[1][0]
        y2 = np.where(hi, ceiling + np.sqrt(vc) * rng.standard_normal((n_boot, r)),
                      floor + np.sqrt(vf) * rng.standard_normal((n_boot, r)))
        sims_two = sims_two + llr(y2)[0]
    p_abrupt = float((1 + np.sum(sims_one >= stat)) / (n_boot + 1))
    p_gradual = float((1 + np.sum(sims_two <= stat)) / (n_boot + 1))
    out.update(per_run_p=p_abrupt, p_gradual=p_gradual)
    if p_abrupt <= alpha and p_gradual > alpha:
        out["per_run"] = "abrupt"
    elif p_gradual <= alpha and p_abrupt > alpha:
        out["per_run"] = "gradual"
    else:
        out["why"] = (f"neither two levels nor one level is rejected (p = {p_abrupt:.3g} and {p_gradual:.3g}) at "
                      f"{trans.size} transition size(s)")
    out["n_trans"] = int(trans.size)
    return out


def _two_levels(y, vm):
    """Split values into a low and a high group at the cut that minimises the within-group sum of squares; returns
    the two means, the two variances (each at least the median measurement variance of its group, and a floor of
    1e-3 of the gap squared) and the cut (half way between the groups' nearest members)."""
    order = np.argsort(y)
    ys = y[order]
    n = ys.size
    c1 = np.cumsum(ys)
    c2 = np.cumsum(ys * ys)
    i = np.arange(1, n)
    left = c2[:-1] - c1[:-1] ** 2 / i
    right = (c2[-1] - c2[:-1]) - (c1[-1] - c1[:-1]) ** 2 / (n - i)
    j = int(np.argmin(left + right)) + 1
    lo, hi = ys[:j], ys[j:]
    vlo = vm[order][:j]
    vhi = vm[order][j:]
    gap2 = (1e-3 * (hi.mean() - lo.mean())) ** 2
    vf = max(float(lo.var(ddof=1)) if lo.size > 1 else 0.0, float(np.median(vlo)), gap2)
    vc = max(float(hi.var(ddof=1)) if hi.size > 1 else 0.0, float(np.median(vhi)), gap2)
    return float(lo.mean()), float(hi.mean()), vf, vc, float((ys[j - 1] + ys[j]) / 2)


def level_cut(y) -> float:
    """The value that splits y into a low and a high group with the least within-group sum of squares (half way
    between the groups' nearest members): what separates runs that acquired an ability from those that did not."""
    y = np.asarray(y, float)
    return _two_levels(y, np.zeros_like(y))[4]


def share_rise(t, k, m) -> tuple[float, str]:
    """Decades over which the share of runs that acquired the ability rises from 10% to 90%: a binomial logistic
    regression of k of m runs on log10 x, by maximum likelihood over a (width, location) grid; with what limits it:
    "" (resolved), "no rise" (the share never crosses a half from below, or ends no higher than it starts: a share
    that falls has no rise), "adjacent" (it steps between two adjacent sizes: the grid's narrowest width) or "wide"
    (the grid's widest rise fits best: it barely moves over the range). The width is NaN unless resolved."""
    t, k, m = np.asarray(t, float), np.asarray(k, float), np.asarray(m, float)
    order = np.argsort(t)
    first, last = order[0], order[-1]
    if not (np.any(k < m / 2) and np.any(k > m / 2)) or not k[last] / m[last] > k[first] / m[first]:
        return np.nan, "no rise"
    grid = Grid.build(t, W0, n_widths=60, n_even=41, fine=True)
    S = np.clip(grid.basis(t), 1e-9, 1 - 1e-9)
    ll = (k[:, None] * np.log(S) + (m - k)[:, None] * np.log(1 - S)).sum(0)
    iw = int(np.argmax(ll) // grid.shape[1])
    if iw == 0:
        return np.nan, "adjacent"
    if iw == grid.widths.size - 1:
        return np.nan, "wide"
    return float(grid.widths[iw]), ""


def loss_alignment(acquired: np.ndarray, loss: np.ndarray) -> dict:
    """Du et al. 2024: does one held-out loss separate the runs that acquired the ability from those that did not?

    The threshold is the loss that misclassifies the fewest runs (acquired = below it); loss_at_jump is the middle of
    the gap it sits in. separates = no run misclassified. NaN / NA when only one class of runs exists.
    """
    ok = np.isfinite(loss)
    a, L = np.asarray(acquired, bool)[ok], np.asarray(loss, float)[ok]
    if a.all() or (~a).all() or a.size < 2:
        return {"loss_at_jump": np.nan, "loss_separates": None, "errors": np.nan, "n": int(a.size)}
    order = np.argsort(L)
    L, a = L[order], a[order]
    # threshold between positions i-1 and i: runs [0, i) predicted acquired
    errs = np.array([np.sum(~a[:i]) + np.sum(a[i:]) for i in range(1, L.size)])
    i = int(np.argmin(errs)) + 1
    return {"loss_at_jump": float((L[i - 1] + L[i]) / 2), "loss_separates": bool(errs[i - 1] == 0),
            "errors": int(errs[i - 1]), "n": int(L.size)}
