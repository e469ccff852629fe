"""The width test for runs at two levels: the share of runs that acquired an ability, as binomial counts per size.

Where every run of a task sits on its floor or at its high level (each run with levels of its own), E[y | N] is

    E[y | N] = mu_low + (mu_high - mu_low) pi(N),   pi(t) = a + (b - a) s(t),   t = log10 N

with mu_low, mu_high the means of the two groups of runs and pi the share of runs of size N at the high level. s is
the logistic of `analysis.jumps` (0.1 to 0.9 over W decades), so E[y | N] rises over exactly the width of pi: the
test of W against W0 is a test on pi alone. How far each level scatters from run to run, and how precisely each
run is measured, decide which group a run falls in (`analysis.perrun.per_run_test` separates them) but no longer
enter the width: the counts k of m runs per size are binomial given pi, whatever the levels do. One dispersion never
describes both the plateaus and the transition, because none is fitted.

a and b (the share's own floor and ceiling: a lucky small run, a share that levels off below all runs) are
nuisance parameters profiled over a small set (`SHARE_FLOORS`, `SHARE_CEILINGS`); W and the location over a grid,
the estimate then refined between grid points by a parabola through the profile (never a grid point by
construction). The statistic and its calibration follow `analysis.jumps.width_test`:

    T = min_{W >= W0} deviance - min_{W <= W0} deviance

simulated by a parametric bootstrap from the fit constrained to W = W0 (binomial draws of every size's count), with
the same sequential stop. Where `n_boot` draws leave a p-value undecided near a level, the draws go on, up to
`EXTEND` x n_boot: on sparse designs the likeliest outcome of a sharp rise (every run off below a gap, on above it)
has a null probability just under 0.05, and 500 draws would reject it only about half the time. A draw costs a
matrix product here, so the Monte Carlo error, not the data, no longer decides such verdicts. Beyond n_boot the
draws go on only while p_value or p_smooth is undecided at 0.05 (the level of a verdict), and p_flat keeps its
first n_boot draws. p_value = P(T* >= T) tests W >= W0, p_smooth = P(T* <= T) tests W <= W0; ties count against the
claim, so discreteness makes both conservative. p_flat tests a constant share.

This module imports numpy and scipy only.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

from analysis.jumps import LN9X2, N_BOOT, W0, Grid, WidthTest
from analysis.stats import mc_decided, profile_interval, refine_minimum

# the share's own floor a and ceiling b, profiled: a share that rises to a third of the runs is as much a rise as one
# that reaches all of them, so the ceiling must be free to sit low (else a sharp rise to a low share can only be
# fitted as a wide one, and is called smooth)
SHARE_FLOORS = (0.0, 0.04, 0.1, 0.2, 0.35)
SHARE_CEILINGS = (1.0, 0.96, 0.9, 0.8, 0.65, 0.5, 0.35, 0.2, 0.1)
_GROUP = 8  # (a, b) pairs per matrix product: (B, 2n) @ (2n, 8 G) keeps a chunk's product near 25 MB
_EPS = 1e-9
EXTEND = 8  # undecided p-values draw on, up to EXTEND x n_boot (Monte Carlo sd near 0.05: 0.0034 at 4,000 draws)


def share_grid(t: np.ndarray, w0: float) -> Grid:
    """Widths: 24 log-spaced from an eighth of the smallest gap to 20 spans, plus the dense band around w0 that
    `Grid.build` uses. Locations: every size, the points between adjacent sizes (quarters up to 15 sizes, halves
    beyond: the locations stay about 0.05 decades apart or closer on the designs in use), and four beyond each end
    (a rise placed between two sizes must be representable: counts step there)."""
    base = Grid.build(t, w0, n_widths=24)
    u = np.unique(t)
    frac = np.array([0.0, 0.25, 0.5, 0.75]) if u.size <= 15 else np.array([0.0, 0.5])
    inner = (u[:-1, None] + np.diff(u)[:, None] * frac[None]).ravel() if u.size > 1 else u
    span = max(float(np.ptp(u)), 1e-9)
    beyond = np.array([-0.5, -0.25, -0.12, -0.05]) * span
    t0 = np.unique(np.round(np.concatenate([u[0] + beyond, inner, [u[-1]], u[-1] - beyond[::-1]]), 12))
    return Grid(base.widths, t0, base.w0_index)


def _saturated(K: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(B, n): each count's binomial log-likelihood at its own proportion k/m (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ph = K / m[None]
        return (np.where(K > 0, K * np.log(np.where(K > 0, ph, 1.0)), 0.0)
                + np.where(K < m[None], (m[None] - K) * np.log(np.where(K < m[None], 1 - ph, 1.0)), 0.0))


class _ShareModel:
    """Binomial deviance of counts (B, n) at every (width, location) of a grid, profiled over the share's floor and
    ceiling (a < b from `SHARE_FLOORS` x `SHARE_CEILINGS`), a few (a, b) at a time so memory stays bounded."""

    def __init__(self, t: np.ndarray, m: np.ndarray, grid: Grid):
        self.grid, self.m = grid, np.asarray(m, float)
        self.ab = np.array([(x, y) for x in SHARE_FLOORS for y in SHARE_CEILINGS if x < y])  # (A, 2)
        S = grid.basis(t)  # (n, G)
        self.G = S.shape[1]
        self.blocks = []  # per group of (a, b): (2n, g G), log p over log (1 - p), the pairs side by side
        for j in range(0, len(self.ab), _GROUP):
            ab = self.ab[j: j + _GROUP]
            P = np.clip(ab[:, 0, None, None] + (ab[:, 1] - ab[:, 0])[:, None, None] * S[None], _EPS, 1 - _EPS)
            P = np.moveaxis(P, 0, 1).reshape(t.size, -1)  # (n, g G), pair-major within each column block
            self.blocks.append(np.concatenate([np.log(P), np.log1p(-P)], axis=0))
        self.shape = (grid.widths.size, grid.t0.size)

    def deviance(self, K: np.ndarray, with_arg: bool = False):
        """K: (B, n) counts -> the deviance (-2 log L plus the saturated model's 2 log L: 0 at a perfect fit) at
        every (W, t0), profiled over (a, b), (B, nW, nT); with `with_arg`, also the index into `ab` of the best
        (a, b) there."""
        K = np.asarray(K, float)
        KK = np.concatenate([K, self.m[None] - K], axis=1)  # (B, 2n)
        best = arg = None
        for j, block in enumerate(self.blocks):
            ll = (KK @ block).reshape(K.shape[0], -1, self.G)  # (B, g, G)
            top = ll.max(axis=1)
            if best is None:
                best = top
                if with_arg:
                    arg = ll.argmax(axis=1)
            else:
                if with_arg:
                    arg = np.where(top > best, j * _GROUP + ll.argmax(axis=1), arg)
                np.maximum(best, top, out=best)
        dev = (2.0 * (_saturated(K, self.m).sum(1)[:, None] - best)).reshape((K.shape[0],) + self.shape)
        return (dev, arg.reshape(dev.shape)) if with_arg else dev

    def statistic(self, dev: np.ndarray) -> np.ndarray:
        """(B, nW, nT) -> (B,): best with W >= W0 less best with W <= W0."""
        i = self.grid.w0_index
        prof = dev.min(axis=2)
        return prof[:, i:].min(1) - prof[:, : i + 1].min(1)

    def flat_improvement(self, K: np.ndarray, dev: np.ndarray) -> np.ndarray:
        """(B,): deviance of a constant share less the best logistic's."""
        c = np.clip(K.sum(1) / self.m.sum(), _EPS, 1 - _EPS)
        ll = K * np.log(c)[:, None] + (self.m[None] - K) * np.log1p(-c)[:, None]
        return 2.0 * (_saturated(K, self.m) - ll).sum(1) - dev.min(axis=(1, 2))


def share_test(t: np.ndarray, k: np.ndarray, m: np.ndarray, *, w0: float = W0, n_boot: int = N_BOOT,
               level: float = 0.95, seed: int = 0, chunk: int = 125, sequential: bool = True) -> WidthTest:
    """Test and bound the width of the share's rise: k of m runs at the high level at sizes t (log10 x, distinct).

    Returns a `WidthTest` whose floor and ceiling are the share's (a, b), in [0, 1]; `analysis.verdicts` maps
    them to the metric's units with the two levels' means."""
    t, k, m = np.asarray(t, float), np.asarray(k, float), np.asarray(m, float)
    rng = np.random.default_rng(seed)
    grid = share_grid(t, w0)
    model = _ShareModel(t, m, grid)
    dev, arg = model.deviance(k[None], with_arg=True)
    T_obs = float(model.statistic(dev)[0])
    prof = dev[0].min(axis=1)  # (nW,)
    dev_min = float(prof.min())
    iw = int(np.argmin(prof))
    it = int(np.argmin(dev[0, iw]))
    ia = int(arg[0, iw, it])
    fi = grid.w0_index
    jt = int(np.argmin(dev[0, fi]))
    a0, b0 = model.ab[int(arg[0, fi, jt])]
    pi0 = a0 + (b0 - a0) * expit(LN9X2 * (t - grid.t0[jt]) / w0)
    flat_obs = float(model.flat_improvement(k[None], dev)[0])
    c_flat = float(k.sum() / m.sum())

    Tb, Fb = [], []
    done = 0
    mi = m.astype(np.int64)
    most = EXTEND * n_boot if sequential else n_boot
    while done < most:
        B = min(chunk, most - done)
        Kb = rng.binomial(mi[None], np.broadcast_to(np.clip(pi0, 0, 1), (B, t.size))).astype(float)
        Tb.append(model.statistic(model.deviance(Kb)))
        if done < n_boot:  # p_flat keeps the first n_boot draws: only the width's verdict draws on
            Kf = rng.binomial(mi[None], np.full((B, t.size), c_flat)).astype(float)
            Fb.append(model.flat_improvement(Kf, model.deviance(Kf)))
        done += B
        if sequential and done < most:
            T = np.concatenate(Tb)
            up, down = int(np.sum(T >= T_obs - 1e-9)), int(np.sum(T <= T_obs + 1e-9))
            if done >= n_boot:  # beyond n_boot, only while a p-value is undecided at the verdict's level
                if mc_decided(up, done, levels=(0.05,)) and mc_decided(down, done, levels=(0.05,)):
                    break
            elif (mc_decided(up, done) and mc_decided(down, done, levels=(0.05,))
                  and mc_decided(int(np.sum(np.concatenate(Fb) >= flat_obs - 1e-9)), done, levels=(0.05,))):
                break
    Tb, Fb = np.concatenate(Tb), np.concatenate(Fb)
    n_used = Tb.size
    p_value = float((1 + np.sum(Tb >= T_obs - 1e-9)) / (n_used + 1))
    p_smooth = float((1 + np.sum(Tb <= T_obs + 1e-9)) / (n_used + 1))
    p_flat = float((1 + np.sum(Fb >= flat_obs - 1e-9)) / (Fb.size + 1))
    crit_hi = max(float(np.quantile(Tb, level)), 1e-9)
    crit_lo = max(float(np.quantile(-Tb, level)), 1e-9)
    crit = max(float(np.quantile(np.abs(Tb), level)), 1e-9)

    rel = prof - dev_min
    logw = np.log10(grid.widths)
    w_lo = profile_interval(logw, rel, crit_lo)[0]
    w_hi = profile_interval(logw, rel, crit_hi)[1]
    width = 10 ** refine_minimum(logw, prof)
    width = float(np.clip(width, w_lo if w_lo > 0 else 0.0, w_hi))
    tprof = dev[0].min(axis=0)  # (nT,)
    ok = np.where(tprof - dev_min <= crit + 1e-9)[0]
    ok = ok if ok.size else np.array([int(np.argmin(tprof))])
    t_best = refine_minimum(grid.t0, dev[0, iw])
    return WidthTest(width=width, width_lo=w_lo, width_hi=w_hi, t0=np.array([t_best]),
                     t0_lo=np.array([float(grid.t0[max(ok.min() - 1, 0)])]),
                     t0_hi=np.array([float(grid.t0[min(ok.max() + 1, grid.t0.size - 1)])]),
                     floor=np.array([float(model.ab[ia, 0])]), ceiling=np.array([float(model.ab[ia, 1])]),
                     p_value=p_value, p_smooth=p_smooth, p_flat=p_flat, statistic=T_obs, crit=crit,
                     dispersion=1.0, phi=np.nan, n_boot=n_used, w0=w0, var_mean=None, ybar=None, grid=grid,
                     profile=rel)
