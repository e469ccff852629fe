"""The jump test: is a capability's rise narrower than W0 decades of the x-axis?

The definition (printed in every report, `DEFINITION`): a jump is a rise from a curve's floor to its ceiling, 10% to
90% of its own amplitude, narrower than W0 decades of the x-axis. W0 (`analysis.w0`, default 0.5 decades, a
factor of about 3 in N) is chosen before looking.

The curve judged is a logistic in t = log10 x, parametrised by its width directly:

    mu(t) = F + (C - F) s(t),   s(t) = 1 / (1 + exp(-2 ln 9 (t - t0) / W))

so that s rises from 0.1 to 0.9 over exactly W decades (t0 - W/2 to t0 + W/2). F (floor) and C (ceiling) stay inside
the metric's bounds with F <= C (the curve is oriented so that up is better: a rise is an improvement), so no fitted
curve leaves [0, 1] for an accuracy or goes below 0 for a loss.

Several curves may share one width and keep their own (F, C, t0): the runs of one model size along training. Across
sizes there is one curve, the expected score of a run of size N, E[y | N], estimated at each size from all its runs.

Where the runs of a size sit at two levels (`per_run` abrupt), the curve across sizes is judged by the share of
runs at the high level, as binomial counts (`analysis.share`); `analysis.verdicts.noise_mode` decides which model
judges, before any width is fitted. Otherwise:

Noise, measured where it lives (never one pooled variance for every size):
- each run's measurement error: its standard error, or for a proportion the binomial variance from n (with half an
  example added on each side, so that 0/256 is not measured as exact);
- across sizes, the between-run variance at each size follows the curve. A run's score, as a fraction u of the way
  from the floor to the ceiling, has mean s and variance phi s (1 - s) (a beta law; phi = 1 is runs at exactly two
  levels, phi = 0 is every run on the same curve), so a run's variance at a size is
  vm + tau2 + phi (C - F)^2 s (1 - s): zero between-run spread on the plateaus, largest where runs split, plus a
  constant scatter tau2. tau2 and phi are fitted by moments to every size's own sample variance (`_phi`), and the
  variance enters at the curve's value s, not at each size's sample variance: that one is zero wherever six runs
  agree by chance (overconfident) and large wherever they split (which lets a step pass through any split size).
  The likelihood of each size's mean is normal with that variance over its number of runs (-2 log L includes the
  log-variance, since the variance moves with the curve);
- with one run per x (along training, imported model families), a dispersion factor from the fit's residuals
  (chi2 / dof, at least 1 where measurement errors are known): between-model or between-checkpoint scatter that
  the measurement error does not explain (a quasi-likelihood, McCullagh & Nelder 1989, section 9.2).

The fit. A grid over (W, t0) with F and C solved exactly at each point (variable projection, clamped to the bounds),
then each width's location refined between grid points; the estimate and its intervals come from a fine grid, the
statistic from a coarser one that the bootstrap draws use too, so the observed statistic and its null are computed
alike.

The test. The statistic compares the best fit with W <= W0 against the best with W >= W0:

    T = [min_{W >= W0} deviance - min_{W <= W0} deviance] / dispersion    (positive: the data favour a narrow rise)

Its null distribution is simulated (a parametric bootstrap at the boundary W = W0, the least favourable point of
either one-sided null): data sets are drawn from the fit constrained to W = W0 with the measured noise model, runs
included (their variance model is re-estimated in every draw, so the uncertainty of a variance from six runs is
part of the calibration), and T is recomputed on each. p_value = P(T* >= T) tests H0: W >= W0; p_smooth =
P(T* <= T) tests H0: W <= W0. Up to `n_boot` draws, stopping early once both p-values are clearly on one side of
0.025 and 0.05 (`mc_decided`). width_hi is where the profile over W, right of its minimum, crosses the 95% quantile of
T*; width_lo where it crosses that of -T* on the left: one-sided 95% bounds whose cut-offs are calibrated at W0,
where they decide the verdict (away from W0 they are approximate). The location interval is the profile over t0
cut at the 95% quantile of |T*|.

Verdicts (`verdict`):
- `emergent`: width_hi lies below W0 (and p_value <= alpha), the q-value (Benjamini-Hochberg within the row's
  family: the headline metric of every task, or the metric's own) is at most alpha, and the floor and the ceiling are
  observed (at least `MIN_SIDE` points on each plateau of the fit), however far apart the x values are: the null
  holds every rise W0 wide that fits between them, so a rejection is evidence across any spacing;
- `smooth`: width_lo lies above W0 (and p_smooth <= alpha). A rise already wider than W0 within the measured range needs no plateau;
- `inconclusive`: the interval straddles W0 (with adjacent x around the rise more than W0/2 apart named as the
  reason), or a claimed jump's plateau is unseen;
- `flat`: the best curve does not beat a constant beyond noise (a calibrated test: `p_flat` > alpha).

Beside it: a model-free cross-check (the steepest step between adjacent sizes, as a share of the amplitude, against
the most a rise W0 wide can climb over that step), and, across sizes, `per_run`: do single runs acquire the ability
abruptly (two levels) or move through the middle together (a two-level mixture against one level per size, each
calibrated by a parametric bootstrap under the other, McLachlan 1987, Applied Statistics 36:318).

This module imports numpy, scipy and pandas only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from analysis.options import DEFAULTS
from analysis.stats import mc_decided, profile_interval, refine_minimum

W0 = DEFAULTS.w0  # analysis.w0: decades of the x-axis, chosen before looking
ALPHA = DEFAULTS.alpha
N_BOOT = DEFAULTS.n_boot  # Monte Carlo sd of a p-value near 0.05: sqrt(.05 * .95 / 500) = 0.0097 < 0.01
MIN_SIZES = 4  # distinct x values below which no curve is judged
MIN_SIDE = 2  # points each plateau of a claimed jump needs
LN9X2 = 2.0 * np.log(9.0)  # s(t) = expit(LN9X2 (t - t0) / W) rises from 0.1 to 0.9 over W

DEFINITION = (
    "A jump is a rise from a curve's floor to its ceiling (10% to 90% of its own amplitude) narrower than W0 "
    "decades of the x-axis (W0 = {w0:g} here, analysis.w0, chosen before looking). Across sizes the curve "
    "judged is the expected score of a run of size N, estimated from all runs at each size; where runs sit at two "
    "levels, from the share of runs at the high level (binomial counts per size), the levels measured from each "
    "level's own runs; along training, each run's own curve. A row is emergent when the width W's "
    "95% upper bound lies below W0 (a calibrated test, and its false-discovery-rate q-value at most alpha within "
    "the headline metric of each task), smooth when W's 95% lower bound lies above W0, inconclusive when the "
    "bounds straddle W0 (the evidence says when the sizes around the rise are too far apart to resolve W0) or "
    "when a claimed jump's floor or ceiling is not observed; flat when nothing rises beyond noise. "
    "per_run says whether single runs acquire the ability abruptly (at two levels, the share at the high one rising "
    "with size), gradually (moving through the middle together), or cannot tell.")

FLAG_COLUMNS = ["task", "metric", "x", "verdict", "jump_at", "jump_lo", "jump_hi", "width", "width_lo", "width_hi",
                "n_sizes", "n_runs", "per_run", "p_value", "q_value", "breakthroughness", "mirage", "loss_at_jump",
                "evidence"]
EXTRA_COLUMNS = ["w0", "floor", "ceiling", "p_smooth", "p_flat", "step_max", "step_allowed", "step_p",
                 "share_by_size", "share_width", "per_run_p", "loss_separates", "em_measured", "em_predicted",
                 "answer_length", "noise", "q_family", "reason"]


# ---------------------------------------------------------------------------------------------------- the grid
@dataclass
class Grid:
    """Widths (decades) x locations (log10 x) of the logistic; `s` holds each curve's basis per grid point."""

    widths: np.ndarray  # (nW,), contains w0
    t0: np.ndarray  # (nT,)
    w0_index: int

    @classmethod
    def build(cls, t_all: np.ndarray, w0: float, n_widths: int = 10, n_even: int = 0, fine: bool = False) -> "Grid":
        """Widths: `n_widths` log-spaced from well below the smallest gap to far beyond the span, plus a dense
        band around w0. Locations: coarse (the draws; locations are refined between grid points anyway): about one
        per measured point across the measured range and two beyond each end; fine (the estimate and its
        intervals): every point (or 60 quantiles of them), every gap's middle and `n_even` evenly spaced reaching
        half a span beyond."""
        t = np.unique(t_all)
        span = max(float(t[-1] - t[0]), 1e-9)
        gaps = np.diff(t)
        small = float(np.min(gaps)) if gaps.size else span
        lo_w = max(min(small / 8.0, w0 / 20.0), 1e-3)
        hi_w = max(20.0 * span, 10.0 * w0)
        # near W0 the widths are dense (0.03 decades apart): data drawn at W = W0 then find their best width near,
        # not exactly at, W0, so the statistic has a continuous null distribution rather than a lump at zero
        near = w0 * 10 ** (0.03 * np.arange(-4, 5))
        widths = np.unique(np.concatenate([np.geomspace(lo_w, hi_w, n_widths), near]))
        if fine:
            # beyond 60 distinct points (every checkpoint of every run against loss), 60 quantiles of them stand in
            # for the points: the locations stay dense where the points are, at a bounded cost
            pts = t if t.size <= 60 else np.quantile(t, np.linspace(0.0, 1.0, 60))
            mids = (pts[:-1] + pts[1:]) / 2 if pts.size > 1 else pts
            even = np.linspace(t[0] - 0.5 * span, t[-1] + 0.5 * span, n_even)
            t0 = np.unique(np.round(np.concatenate([pts, mids, even]), 12))
        else:
            k = int(np.clip(t.size, 8, 40))
            step = span / (k - 1)
            t0 = np.concatenate([t[0] - step * np.array([6.0, 2.0]), np.linspace(t[0], t[-1], k),
                                 t[-1] + step * np.array([2.0, 6.0])])
        return cls(widths, t0, int(np.argmin(np.abs(np.log(widths / w0)))))

    @property
    def shape(self) -> tuple[int, int]:
        return self.widths.size, self.t0.size

    def basis(self, t: np.ndarray) -> np.ndarray:
        """(n, nW * nT): s(t) at every grid point, width-major."""
        z = (t[:, None, None] - self.t0[None, None, :]) * (LN9X2 / self.widths[None, :, None])
        return expit(z).reshape(t.size, -1)


def _solve_box(w, y, S, lb, ub):
    """Weighted least squares of y on F (1 - s) + C s for every row of (w, y) and every column of S, with
    lb <= F <= C <= ub. w: (B, n), or (B, n, G) when the weights differ between grid points. Returns chi2, F, C,
    each (B, G).

    The minimum of a convex quadratic over that triangle is the unconstrained one when it is inside, else the best of
    the minima along its three edges (F = lb, C = ub, F = C), each a clamped one-dimensional solve.
    """
    if w.ndim == 2 and S.ndim == 3:  # fixed weights, a basis per row: batched matrix-vector products
        wy = w * y
        sw = w.sum(1)[:, None]
        swy = wy.sum(1)[:, None]
        swyy = (wy * y).sum(1)[:, None]
        sws = np.matmul(w[:, None, :], S)[:, 0]
        swss = np.matmul(w[:, None, :], S * S)[:, 0]
        swsy = np.matmul(wy[:, None, :], S)[:, 0]
    elif w.ndim == 3:  # weights that follow the basis
        ws = w * S
        ones = np.ones_like(y)
        r1 = np.matmul(np.stack([ones, y, y * y], 1), w)  # (B, 3, G): the weighted sums of 1, y, y^2
        r2 = np.matmul(np.stack([ones, y], 1), ws)
        sw, swy, swyy = r1[:, 0], r1[:, 1], r1[:, 2]
        sws, swsy = r2[:, 0], r2[:, 1]
        swss = np.einsum("bng,bng->bg", ws, S) if S.ndim == 3 else np.einsum("bng,ng->bg", ws, S)
    elif w.ndim == 2:
        wy = w * y
        sw = w.sum(1)[:, None]
        swy = wy.sum(1)[:, None]
        swyy = (wy * y).sum(1)[:, None]
        sws = w @ S
        swss = w @ (S * S)
        swsy = wy @ S
    saa = sw - 2 * sws + swss
    sab = sws - swss
    sbb = swss
    say = swy - swsy
    sby = swsy

    def chi2(F, C):
        return swyy - 2 * F * say - 2 * C * sby + F * F * saa + 2 * F * C * sab + C * C * sbb

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        det = saa * sbb - sab * sab
        tiny = 1e-12 * np.maximum(saa * sbb, 1e-300)
        F0 = (sbb * say - sab * sby) / det
        C0 = (saa * sby - sab * say) / det
        inside = (det > tiny) & (F0 >= lb) & (C0 <= ub) & (F0 <= C0)
        best = np.where(inside, chi2(F0, C0), np.inf)
        bF = np.where(inside, F0, np.nan)
        bC = np.where(inside, C0, np.nan)

        def take(F, C):
            nonlocal best, bF, bC
            c = chi2(F, C)
            better = np.isfinite(c) & (c < best)
            best = np.where(better, c, best)
            bF = np.where(better, F, bF)
            bC = np.where(better, C, bC)

        if inside.all():
            return np.maximum(best, 0.0), bF, bC
        c_eq = np.clip(swy / sw, lb, ub) * np.ones_like(sws)
        take(c_eq, c_eq)  # F = C: a constant
        if np.isfinite(lb):
            C1 = np.where(sbb > 0, np.clip((sby - lb * sab) / sbb, lb, ub), lb)
            take(np.full_like(C1, lb), C1)
        if np.isfinite(ub):
            F1 = np.where(saa > 0, np.clip((say - ub * sab) / saa, lb, ub), ub)
            take(F1, np.full_like(F1, ub))
    return np.maximum(best, 0.0), bF, bC


# ---------------------------------------------------------------------------------------------------- the data
@dataclass
class Curves:
    """The points of one test, oriented (up is better) and grouped.

    Across sizes (`runs`): one curve, every run a point of its size; the curve's value at a size is its runs' mean.
    Along training or with one run per x (`single`): one or more curves, each point a measurement.
    """

    mode: str  # "runs" or "single"
    t: list  # per curve, log10 x of its points (runs mode: the distinct sizes)
    lb: float  # oriented bounds of the metric
    ub: float
    # runs mode
    size_of_run: np.ndarray | None = None  # (R,) index of each run's size
    run_y: np.ndarray | None = None  # (R,) oriented values
    run_vm: np.ndarray | None = None  # (R,) measurement variance (0 where unknown)
    # measurement variance of oriented run values (B, R) -> (B, R), where it follows the value (a proportion's
    # binomial variance): recomputed for every draw, as for the data. None: run_vm, fixed
    vm_of: object = None
    # measured values of oriented true levels (rng, (B, R)) -> (B, R), where the measurement has a known law (a
    # proportion of n examples: binomial). None: normal, with the variance `vm_of` gives (or run_vm)
    measure: object = None
    m: np.ndarray | None = None  # (n,) runs per size
    # single mode
    y: list = field(default_factory=list)  # per curve, oriented values
    vm: list = field(default_factory=list)  # per curve, measurement variances
    measured: bool = True  # whether measurement variances are known


def _per_size(size_of_run, Y, m):
    """Means and sample variances per size of run values Y (B, R); sample variance NaN where m = 1."""
    n = m.size
    B = Y.shape[0]
    S1 = np.zeros((B, n))
    S2 = np.zeros((B, n))
    np.add.at(S1.T, size_of_run, Y.T)
    np.add.at(S2.T, size_of_run, (Y * Y).T)
    mean = S1 / m
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(m > 1, (S2 - m * mean * mean) / np.maximum(m - 1, 1), np.nan)
    return mean, np.maximum(var, 0.0)


def _phi(ybar, s2, vm_size, m):
    """The between-run variance model of each row, fitted by moments over the sizes with replicates.

    A size's excess variance (its runs' sample variance less their measurement variance) is explained as
    tau2 + phi (y - F)(C - y): a constant scatter tau2 between runs, plus the variance of runs split between two
    levels F and C (the lowest and highest size means) with mean y, scaled by phi in [0, 1]. Weighted by each size's
    degrees of freedom, tau2 >= 0 and phi >= 0 (non-negative least squares in two unknowns).
    ybar, s2: (B, n). Returns (phi, tau2, amp), each (B,).
    """
    F = ybar.min(1, keepdims=True)
    C = ybar.max(1, keepdims=True)
    shape = np.maximum((ybar - F) * (C - ybar), 0.0)
    d = np.maximum(m - 1.0, 0.0)
    e = np.where(d > 0, np.nan_to_num(s2) - vm_size, 0.0)
    s0, s1, s11 = d.sum(), (d * shape).sum(1), (d * shape * shape).sum(1)
    e0, e1 = (d * e).sum(1), (d * e * shape).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        det = s0 * s11 - s1 * s1
        phi = np.where(det > 0, (s0 * e1 - s1 * e0) / det, 0.0)
        tau2 = np.where(det > 0, (s11 * e0 - s1 * e1) / det, e0 / max(s0, 1e-300))
        # on an edge of the feasible quadrant: one unknown at 0, the other by its own least squares
        only_phi = np.where(s11 > 0, e1 / s11, 0.0)
        only_tau = e0 / max(s0, 1e-300)
    neg_t = tau2 < 0
    phi = np.where(neg_t, only_phi, phi)
    tau2 = np.where(neg_t, 0.0, tau2)
    neg_p = phi < 0
    tau2 = np.where(neg_p, only_tau, tau2)
    phi = np.where(neg_p, 0.0, phi)
    return np.clip(phi, 0.0, 1.0), np.maximum(tau2, 0.0), (C - F)[:, 0]


def _run_variance(S, vm_size, tau2, phi, amp, floor, q=None):
    """Variance of one run at each size and grid point: vm + tau2 + phi A^2 s (1 - s) at the grid point's share s.
    The variance follows the curve, not each size's own sample variance: that is zero wherever the runs of a size
    agree by chance, and large wherever they split, which would let a step pass through any split size's mean.
    S: (n, G) or (B, n, G); vm_size: (n,) or (B, n); tau2, phi, amp: (B,) -> (B, n, G). `q`, if given, is S (1 - S)
    already computed."""
    q = S * (1.0 - S) if q is None else q
    v = np.multiply((phi * amp * amp)[:, None, None], q if q.ndim == 3 else q[None])
    v += (vm_size if vm_size.ndim == 2 else vm_size[None])[:, :, None] + tau2[:, None, None]
    return np.maximum(v, floor, out=v)


def _sum_log(v):
    """sum over axis 1 of log v, for v > 0 (B, n, G): in single precision relative to each row's smallest value
    (about twice as fast; the error, about 1e-6 per term, is far below the deviance differences that decide
    anything), in double precision where that ratio would not fit a float32."""
    vmin = v.min(axis=(1, 2), keepdims=True)
    with np.errstate(over="ignore"):
        r = (v / vmin).astype(np.float32)
    if not np.isfinite(r).all():
        return np.log(v).sum(1)
    return np.log(r).sum(1, dtype=np.float64) + v.shape[1] * np.log(vmin[:, 0])


# ---------------------------------------------------------------------------------------------------- the fit
@dataclass
class WidthTest:
    """The result of `width_test`: the width of the rise with its interval, the location(s), and the two one-sided
    calibrated p-values, with what it was calibrated against."""

    width: float
    width_lo: float
    width_hi: float
    t0: np.ndarray  # per curve, log10 of the midpoint
    t0_lo: np.ndarray
    t0_hi: np.ndarray
    floor: np.ndarray  # per curve, oriented units
    ceiling: np.ndarray
    p_value: float  # H0: W >= W0
    p_smooth: float  # H0: W <= W0
    p_flat: float  # H0: no rise (a constant)
    statistic: float
    crit: float
    dispersion: float
    phi: float  # between-run overdispersion (runs mode), NaN otherwise
    n_boot: int
    w0: float
    var_mean: np.ndarray | None  # runs mode: variance of each size's mean at the best fit
    ybar: np.ndarray | None  # runs mode: each size's mean (oriented)
    grid: Grid | None = None
    profile: np.ndarray | None = None  # (nW,) profile deviance over the widths, minus its minimum


class _Model:
    """Deviance of K curves sharing one width, on one grid, for replicate data sets (rows).

    Runs mode (one curve of size means): -2 log L of a normal law for each mean with the variance of `_run_variance`
    / m at the grid point's share; the variance follows the curve, so a size where 0 of 6 runs made it is not taken
    as measured without error when the curve says 1 in 7 should have. Single mode: chi2 with fixed weights (the
    measurement variances), over a dispersion factor.
    """

    def __init__(self, curves: Curves, grid: Grid):
        self.c = curves
        self.grid = grid
        self.S = [grid.basis(t) for t in curves.t]
        self.Q = [S * (1.0 - S) for S in self.S]
        self.dof = sum(t.size for t in curves.t) - 3 * len(curves.t) - 1
        self.same_t = len(curves.t) > 1 and all(t.shape == curves.t[0].shape and np.array_equal(t, curves.t[0])
                                                for t in curves.t)
        if curves.mode == "runs":
            self.m = curves.m
            self.avg = np.eye(curves.m.size)[curves.size_of_run] / curves.m  # (R, n): run values -> size means
            self.vm_size = curves.run_vm @ self.avg
            self.log_m = float(np.log(curves.m).sum())

    def runs_stats(self, Yr):
        """Size means, between-run variance tau2, phi, amplitude and the measurement variance of each size's runs
        (B, n) of run values Yr (B, R)."""
        ybar, s2 = _per_size(self.c.size_of_run, Yr, self.m)
        vm_size = self.vm_size[None] if self.c.vm_of is None else self.c.vm_of(Yr) @ self.avg
        phi, tau2, amp = _phi(ybar, s2, vm_size, self.m)
        return ybar, tau2, phi, amp, vm_size

    def _batches(self, Ys, Ws):
        """(curve index, t, Y, W) per batch: curves measured at the same points are fitted as one batch (rows
        stacked), since given the width each curve's fit is its own."""
        if self.c.mode == "runs":
            return [(0, self.c.t[0], None, None)]
        if self.same_t:
            return [(0, self.c.t[0], np.concatenate(Ys, axis=0), np.concatenate(Ws, axis=0))]
        return [(k, t, Ys[k], Ws[k]) for k, t in enumerate(self.c.t)]

    def _unbatch(self, out, Ys):
        if self.c.mode == "runs" or not self.same_t:
            return out
        B = Ys[0].shape[0]
        return [tuple(a[k * B:(k + 1) * B] for a in out[0]) for k in range(len(Ys))]

    def _dev(self, k, Y, stats_, W, S):
        """Deviance, F and C of curve k at the basis S: (n, G), or (B, n, G) when every row has its own."""
        if self.c.mode == "runs":
            ybar, tau2, phi, amp, vm_size = stats_
            floor = np.maximum((1e-3 * np.maximum(amp, 1e-12)) ** 2, 1e-300)[:, None, None]
            v = _run_variance(S, vm_size, tau2, phi, amp, floor, q=self.Q[k] if S is self.S[k] else None)
            w = self.m[None, :, None] / v
            c2, F, C = _solve_box(w, ybar, S, self.c.lb, self.c.ub)
            return c2 + _sum_log(v) - self.log_m, F, C
        return _solve_box(W, Y, S, self.c.lb, self.c.ub)

    def fit(self, Ys, stats_=None, Ws=None, steps: int = 4, top: int | None = 3):
        """Per curve: the grid's deviance (B, nW, nT), then at every width the location refined between grid points
        (`steps` halvings of a bracket around the grid's best, then a parabola's vertex), with its deviance, F and
        C (B, nW); and the dispersion (B,) deviances are divided by.

        Where the curves are fitted as one batch, only the `top` widths of each side of w0 (the grid profile's best
        there) are refined; the others keep their grid values. The statistic only reads each side's minimum, so this
        changes it only where the refined minimum would lie at a width the grid ranked below `top` on its side, and
        the draws that calibrate it are fitted the same way. `top=None` refines every width (the estimate and its
        intervals)."""
        nW, nT = self.grid.shape
        widths = self.grid.widths
        out = []
        for k, t, Y, W in self._batches(Ys, Ws):
            dg, Fg, Cg = self._dev(k, Y, stats_, W, self.S[k])
            B = dg.shape[0]
            dg = dg.reshape(B, nW, nT)
            j = np.argmin(dg, axis=2)
            best = np.take_along_axis(dg, j[..., None], 2)[..., 0]
            T0 = self.grid.t0[j]
            F = np.take_along_axis(Fg.reshape(B, nW, nT), j[..., None], 2)[..., 0]
            C = np.take_along_axis(Cg.reshape(B, nW, nT), j[..., None], 2)[..., 0]
            gaps = np.diff(self.grid.t0)
            step = np.maximum(np.concatenate([gaps[:1], gaps])[j], np.concatenate([gaps, gaps[-1:]])[j]) / 2
            if steps == 0:  # the grid's best locations only
                out.append((dg, best, T0, F, C))
                continue
            full = (dg, best, T0, F, C)
            sel = None
            i0 = self.grid.w0_index
            K = B // Ys[0].shape[0] if self.c.mode != "runs" and self.same_t else 1
            if top is not None and (len(self.c.t) == 1 or K > 1) and 2 * top < nW:
                # rank the widths by the profile (the sum over the batch's curves of each one's best)
                rank = best.reshape(K, B // K, nW).sum(0)
                lo_side = np.argsort(rank[:, : i0 + 1], axis=1)[:, :top]
                hi_side = i0 + np.argsort(rank[:, i0:], axis=1)[:, :top]
                sel = np.tile(np.concatenate([lo_side, hi_side], axis=1), (K, 1))  # (B, 2 top)
                best, T0, F, C, step = (np.take_along_axis(a, sel, 1) for a in (best, T0, F, C, step))
                wid = widths[sel][:, None, :]
            else:
                wid = widths[None, None, :]

            def at(T):
                S = expit(LN9X2 * (t[None, :, None] - T[:, None, :]) / wid)
                return self._dev(k, Y, stats_, W, S)

            with np.errstate(invalid="ignore", over="ignore"):
                for _ in range(steps):
                    for sign in (-1.0, 1.0):
                        T = T0 + sign * step
                        d, f, c = at(T)
                        better = d < best
                        best, T0 = np.where(better, d, best), np.where(better, T, T0)
                        F, C = np.where(better, f, F), np.where(better, c, C)
                    step = step / 2
                # a parabola through the bracket's ends and its best point
                dm, _, _ = at(T0 - step)
                dp, _, _ = at(T0 + step)
                curv = dm - 2 * best + dp
                shift = np.where(curv > 0, step * (dm - dp) / (2 * np.where(curv > 0, curv, 1.0)), 0.0)
                T = T0 + np.clip(shift, -step, step)
                d, f, c = at(T)
                better = d < best
                best, T0 = np.where(better, d, best), np.where(better, T, T0)
                F, C = np.where(better, f, F), np.where(better, c, C)
            if sel is not None:  # back into the full (B, nW) arrays; refined values only ever lower the grid's
                merged = [a.copy() for a in full[1:]]
                for a, v in zip(merged, (best, T0, F, C)):
                    np.put_along_axis(a, sel, v, 1)
                best, T0, F, C = merged
            out.append((dg, best, T0, F, C))
        out = self._unbatch(out, Ys)
        if self.c.mode == "runs":
            return out, np.ones(out[0][1].shape[0])
        prof_min = sum(o[1] for o in out).min(1)
        return out, _dispersion(prof_min, self.dof, self.c.measured)

    @staticmethod
    def profile(fits, disp):
        """(B, nW): over the dispersion, the sum over curves of each curve's best location at that width."""
        return sum(o[1] for o in fits) / disp[:, None]


def _dispersion(chi2_min, dof, measured):
    """chi2 / dof of the best fit: at least 1 where measurement errors are known (the noise is never taken to be
    smaller than measured), the residual variance itself where they are not."""
    d = np.where(dof > 0, chi2_min / max(dof, 1), 1.0)
    return np.maximum(d, 1.0) if measured else np.maximum(d, 1e-12)


def width_test(curves: Curves, *, w0: float = W0, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0,
               chunk: int | None = None, sequential: bool = True) -> WidthTest:
    """Fit the shared-width logistic to `curves`, and test and bound its width against w0 (see the module doc)."""
    rng = np.random.default_rng(seed)
    # draws per chunk: the size-means of one curve are small arrays (per-call overhead dominates: large chunks);
    # several long training curves are large ones (memory traffic dominates: smaller chunks)
    chunk = chunk or (125 if curves.mode == "runs" else 50)
    grid = Grid.build(np.concatenate(curves.t), w0)
    model = _Model(curves, grid)
    i = grid.w0_index

    # ---- observed: the estimate and intervals on a fine grid, the statistic on the grid the draws use
    fine = Grid.build(np.concatenate(curves.t), w0, n_widths=80, n_even=101, fine=True)
    fine_model = _Model(curves, fine)
    if curves.mode == "runs":
        st = model.runs_stats(curves.run_y[None])
        fits, disp = model.fit(None, st)
        ffits, fdisp = fine_model.fit(None, st, steps=5, top=None)
        phi = float(st[2][0])
        Ws = None
    else:
        st, phi = None, np.nan
        if curves.measured:
            floors = [max((1e-3 * (float(np.ptp(y)) or 1.0)) ** 2, 1e-300) for y in curves.y]
            Ws = [1.0 / np.maximum(vm, f)[None] for vm, f in zip(curves.vm, floors)]
        else:
            Ws = [np.ones((1, y.size)) for y in curves.y]
        fits, disp = model.fit([y[None] for y in curves.y], Ws=Ws)
        ffits, fdisp = fine_model.fit([y[None] for y in curves.y], Ws=Ws, steps=5, top=None)
    prof = model.profile(fits, disp)[0]
    T_obs = float(prof[i:].min()) - float(prof[: i + 1].min())
    fprof = fine_model.profile(ffits, fdisp)[0]
    dev_min = float(fprof.min())
    iw = int(np.argmin(fprof))
    fi = fine.w0_index
    best, null = [], []
    for dg, dev, T0, F, C in ffits:
        best.append((T0[0, iw], F[0, iw], C[0, iw]))
        null.append((T0[0, fi], F[0, fi], C[0, fi]))

    # ---- draws at W = w0
    Tb = _null_statistics(model, curves, null, st, phi, fdisp[0], Ws, w0, T_obs, n_boot, chunk, sequential, rng)
    n_used = Tb.size
    p_value = float((1 + np.sum(Tb >= T_obs - 1e-9)) / (n_used + 1))
    p_smooth = float((1 + np.sum(Tb <= T_obs + 1e-9)) / (n_used + 1))
    # one-sided 95% bounds: W < width_hi is the claim a test of H0: W >= W0 at 5% makes, W > width_lo its mirror
    crit_hi = max(float(np.quantile(Tb, level)), 1e-9)
    crit_lo = max(float(np.quantile(-Tb, level)), 1e-9)
    crit = float(np.quantile(np.abs(Tb), level))  # two-sided, for the location

    p_flat = _p_flat(model, curves, fits, prof, disp, st, Ws, rng)
    prof, fits, disp, grid, model = fprof, ffits, fdisp, fine, fine_model

    # ---- bounds from the profiles
    rel = prof - dev_min
    w_lo = profile_interval(np.log10(grid.widths), rel, crit_lo)[0]
    w_hi = profile_interval(np.log10(grid.widths), rel, crit_hi)[1]
    t0_lo, t0_hi = [], []
    per_curve = np.stack([o[1][0] for o in fits]) / disp[0]  # (K, nW)
    for k, o in enumerate(fits):
        others = prof - per_curve[k]  # (nW,): the other curves' best at each width
        tot = (o[0][0] / disp[0] + others[:, None]).min(axis=0)  # (nT,): best over widths, this curve's t0 fixed
        ok = np.where(tot - dev_min <= crit + 1e-9)[0]
        ok = ok if ok.size else np.array([int(np.argmin(tot))])
        # one grid step beyond the last location inside: the grid's resolution must not exclude the truth
        t0_lo.append(float(grid.t0[max(ok.min() - 1, 0)]))
        t0_hi.append(float(grid.t0[min(ok.max() + 1, grid.t0.size - 1)]))
    var_mean = ybar = None
    if curves.mode == "runs":
        ybar = st[0][0]
        s_b = expit(LN9X2 * (curves.t[0] - best[0][0]) / grid.widths[iw])
        amp = st[3]
        floor = np.maximum((1e-3 * np.maximum(amp, 1e-12)) ** 2, 1e-300)[:, None, None]
        var_mean = _run_variance(s_b[:, None], st[4], st[1], st[2], amp, floor)[0, :, 0] / curves.m
    # the estimate between grid widths (a parabola through the profile), kept inside its own bounds
    width = float(np.clip(10 ** refine_minimum(np.log10(grid.widths), prof), w_lo, w_hi))
    return WidthTest(width=width, width_lo=w_lo, width_hi=w_hi,
                     t0=np.array([b[0] for b in best]), t0_lo=np.array(t0_lo), t0_hi=np.array(t0_hi),
                     floor=np.array([b[1] for b in best]), ceiling=np.array([b[2] for b in best]),
                     p_value=p_value, p_smooth=p_smooth, p_flat=p_flat, statistic=T_obs, crit=crit,
                     dispersion=float(disp[0]), phi=phi, n_boot=n_used, w0=w0, var_mean=var_mean, ybar=ybar,
                     grid=grid, profile=rel)


def _null_statistics(model: _Model, curves: Curves, null, st, phi: float, disp: float, Ws, w0: float, T_obs: float,
                     n_boot: int, chunk: int, sequential: bool, rng) -> np.ndarray:
    """The statistic of data sets drawn at W = w0 (each curve at its fit `null`), in chunks; with `sequential`, stop
    early once both one-sided p-values are clearly away from the levels that decide a verdict, with 99%
    Clopper-Pearson bounds: 0.05 for either, and 0.025 too for p_value, which many rows' q-values compare with."""
    i = model.grid.w0_index
    Tb = []
    done = 0
    while done < n_boot:
        B = min(chunk, n_boot - done)
        if curves.mode == "runs":
            t00, F0, C0 = null[0]
            s0 = expit(LN9X2 * (curves.t[0] - t00) / w0)[curves.size_of_run]
            Yr = _draw_runs(rng, B, s0, F0, C0, phi, curves, float(st[1][0]))
            fb, db = model.fit(None, model.runs_stats(Yr))
        else:
            Ysb, Wsb = [], []
            for k in range(len(curves.t)):
                t00, F0, C0 = null[k]
                mu = F0 + (C0 - F0) * expit(LN9X2 * (curves.t[k] - t00) / w0)
                sd = np.sqrt(disp / Ws[k][0])
                Ysb.append(mu[None] + sd[None] * rng.standard_normal((B, mu.size)))
                Wsb.append(np.broadcast_to(Ws[k], (B, mu.size)))
            fb, db = model.fit(Ysb, Ws=Wsb)
        pb = model.profile(fb, db)
        Tb.append(pb[:, i:].min(1) - pb[:, : i + 1].min(1))
        done += B
        if sequential and done < n_boot:
            T = np.concatenate(Tb)
            if (mc_decided(int(np.sum(T >= T_obs - 1e-9)), done)
                    and mc_decided(int(np.sum(T <= T_obs + 1e-9)), done, levels=(0.05,))):
                break
    return np.concatenate(Tb)


def _draw_runs(rng, B, s_run, F, C, phi, curves, tau2):
    """B data sets of runs: each run at F + (C - F) u, u ~ Beta with mean s and variance phi s (1 - s) (phi = 1: runs
    at two levels; phi = 0: every run on the curve), plus the between-run scatter tau2, then measured: by the
    measurement's own law where it is known (`Curves.measure`: a proportion of n examples is binomial, skewed and
    discrete near 0 and 1), otherwise normal, with the variance a measurement at that value has (`Curves.vm_of`),
    or the run's own where fixed."""
    mu = np.clip(s_run, 1e-6, 1 - 1e-6)
    ph = np.clip(phi, 1e-4, 1 - 1e-4)
    tot = 1.0 / ph - 1.0
    level = F + (C - F) * rng.beta(mu * tot, (1 - mu) * tot, size=(B, mu.shape[-1]))
    if curves.measure is not None:
        return curves.measure(rng, level + np.sqrt(tau2) * rng.standard_normal(level.shape))
    vm = curves.run_vm[None] if curves.vm_of is None else curves.vm_of(level)
    return level + np.sqrt(vm + tau2) * rng.standard_normal(level.shape)


def _p_flat(model, curves, fits, prof, disp, st, Ws, rng, first: int = 39, most: int = N_BOOT - 1):
    """Calibrated p of H0 "no rise": draws of a constant with the measured noise (runs: every run at one level with
    the between-run scatter tau2, measured as the data were); the statistic is the improvement of the best logistic
    over the constant, as for the data. `first` draws, then more in chunks up to `most` (Monte Carlo error near 0.05
    below 0.01) while the p-value is not clearly on one side of 0.05 (a curve near the line gets the same answer
    from another seed). The question is only whether anything rises, so the grid's locations suffice, for the data
    and the draws alike."""
    grid_dev = sum(o[0].min(axis=2) for o in fits)  # (1, nW)
    if curves.mode != "runs":
        disp = _dispersion(grid_dev.min(1), model.dof, curves.measured)
    prof = grid_dev[0] / disp[0]
    def improvement(fb, db, const):
        return const - model.profile(fb, db).min(1)

    if curves.mode == "runs":
        S0 = np.zeros((curves.m.size, 1))
        def const_dev(stats_):
            yb, sb, ph, am, vs = stats_
            fl = np.maximum((1e-3 * np.maximum(am, 1e-12)) ** 2, 1e-300)[:, None, None]
            v = _run_variance(S0, vs, sb, ph, am, fl)[:, :, 0]
            w = curves.m[None] / v
            c = np.clip((w * yb).sum(1) / w.sum(1), curves.lb, curves.ub)
            return (w * (yb - c[:, None]) ** 2).sum(1) + np.log(v / curves.m[None]).sum(1)
        obs = float(const_dev(st)[0] - prof.min())
        c = float(np.mean(curves.run_y))

        def sims(n):
            Yr = _draw_runs(rng, n, np.zeros(curves.run_y.size), c, c, 0.0, curves, float(st[1][0]))
            stb = model.runs_stats(Yr)
            fb, db = model.fit(None, stb, steps=0)
            return improvement(fb, db, const_dev(stb))
    else:
        def const_dev(Ys, Wl, db):
            tot = 0.0
            for Y, W in zip(Ys, Wl):
                c = np.clip((W * Y).sum(1) / W.sum(1), curves.lb, curves.ub)
                tot = tot + (W * (Y - c[:, None]) ** 2).sum(1)
            return tot / db
        obs = float(const_dev([y[None] for y in curves.y], Ws, disp)[0] - prof.min())
        consts = [np.clip((W[0] * Y).sum() / W[0].sum(), curves.lb, curves.ub) for Y, W in zip(curves.y, Ws)]

        def sims(n):
            Ysb = [c + np.sqrt(disp[0] / W[0])[None] * rng.standard_normal((n, W.shape[1])) for c, W in zip(consts, Ws)]
            Wsb = [np.broadcast_to(W, (n, W.shape[1])) for W in Ws]
            fb, db = model.fit(Ysb, Ws=Wsb, steps=0)
            return improvement(fb, db, const_dev(Ysb, Wsb, db))
    k = n = 0
    while n < most:
        B = first if n == 0 else min(40, most - n)
        k += int(np.sum(sims(B) >= obs - 1e-9))
        n += B
        if (1 + k) / (n + 1) <= 0.025 or mc_decided(k, n, levels=(0.05,), conf=0.95):
            break
    return float((1 + k) / (n + 1))
