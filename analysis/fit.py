"""Fitting scaling laws: `fit_law(df, law, x, y) -> FitResult`, `compute_optimal(fit, C)`.

How a fit is made (the same for every law in `analysis.laws`):
1. Grid: every point of a grid over the law's non-linear parameters (exponents, locations) is scored at once, with
   the linear parameters (offsets, amplitudes) solved exactly by weighted least squares for each grid point
   (variable projection; Golub & Pereyra 1973), inside their bounds where the metric's range bounds them
   (`profile_linear`). No starting values needed.
2. Refinement: the best few distinct grid points (with their exact linear parameters) start a bounded
   Levenberg-Marquardt search over all parameters (Levenberg 1944; Marquardt 1963), all starts in one batch, run
   until the cost stops falling. Residuals are on y's scale, or on log y or log(1 + y) (`space`).
3. Robust losses: `loss="huber"` minimises sum_i Huber_delta(log f(x_i) - log y_i) (Huber 1964), the loss
   Hoffmann et al. 2022 used for their approach 3 and Besiroglu et al. 2024 (Epoch AI) in their replication; it is
   minimised by L-BFGS-B from the best starts of step 1.
4. Intervals: resampled seeds where the table has at least 5 (within each x when every x has several seeds, each
   (x, seed) being its own training run; whole seeds otherwise, as when a seed's rows are the checkpoints of one
   run), a parametric bootstrap where it has fewer, and resampled points where it has no seeds (Efron & Tibshirani
   1993, section 6.5 and ch. 9; see `fit_law` and `_bootstrap_samples`). Every resample is refitted in one vectorised
   Levenberg-Marquardt loop started from the full-data fit. `ci` are percentile intervals; `stderr` the bootstrap
   standard deviations.

The Chinchilla law with the Huber loss is fitted exactly as Besiroglu et al. 2024 ("Chinchilla Scaling: A
replication attempt", section 2) did: log L = LSE(a - alpha log N, b - beta log D, e), A = e^a, B = e^b, E = e^e, Huber
delta = 1e-3 on log L, L-BFGS-B from their grid of starts (alpha, beta in 0..2 step 0.5; e in -1..1 step 0.5;
a, b in 0..25 step 5). All 4,500 starts are scored; the best `starts` (default 64) are refined together by a
batched iteratively-reweighted Gauss-Newton, and the best of those is polished by L-BFGS-B. Bootstrap refits start
from the full-data optimum and use the batched solver (it agrees with per-resample L-BFGS-B to about 1e-3 in the
parameters, and is what makes thousands of resamples affordable).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from analysis.laws import LAWS, Law, get_law
from analysis.solver import (Projector, chinchilla_starts, fit_chinchilla_huber, lse_irls, lse_to_params,
                             refine_huber, refine_l2, space_weights, assemble, batched_lm, design, from_space,
                             profile_linear, solve_small, to_space)

LOSSES = ("l2", "huber")
SPACES = ("linear", "log", "log1p")
INTERVALS = ("auto", "bootstrap", "parametric")
# Below this many resampling units (seeds within each x, or whole seeds) fit_law's intervals are model-based: see
# `_resample_scheme`.
MIN_RESAMPLE_UNITS = 5
# Default range of y for laws of a loss: E is an irreducible loss, so E >= 0 (Hoffmann et al. 2022, section 3.3).
DEFAULT_Y_BOUNDS = {"power": (0.0, np.inf), "chinchilla": (0.0, np.inf)}


# --------------------------------------------------------------------------------------------------- the result
@dataclass
class FitResult:
    """A fitted law: parameters with uncertainties, information criteria and predictions.

    aic, aicc, bic use the Gaussian likelihood of the residuals on the scale that was fitted (log y for Huber fits)
    with the noise variance estimated, so k = number of parameters + 1 (Burnham & Anderson 2002, eq. 2.1, 2.14;
    Schwarz 1978). For a Huber fit they are approximate (the loss is not a Gaussian likelihood). aicc is inf when
    n <= k + 1. rmse is in y's units. space: the scale the fit was made on ("linear", "log" or "log1p"; see
    `to_space`). y_bounds: the range of the metric; predictions and intervals are kept inside it.
    """

    law: str
    params: dict[str, float]
    stderr: dict[str, float]
    ci: dict[str, tuple[float, float]]
    aic: float
    aicc: float
    bic: float
    rmse: float
    n: int
    x: Any
    y: str
    loss: str
    n_boot: int = 0
    level: float = 0.95
    boot: np.ndarray | None = field(default=None, repr=False)  # (n_boot, p) bootstrap parameter sets
    residuals: np.ndarray | None = field(default=None, repr=False)  # on the fitted scale
    log_resid: bool = False
    options: dict = field(default_factory=dict, repr=False)
    space: str = ""  # "" means "log" when log_resid else "linear" (results built by hand)
    y_bounds: tuple[float, float] = (-np.inf, np.inf)
    scatter: str = "resample"  # a new point's scatter in prediction draws: the residuals resampled, or "t"

    @property
    def _space(self) -> str:
        return self.space or ("log" if self.log_resid else "linear")

    def _clip(self, v):
        lo, hi = self.y_bounds
        if np.isfinite(lo) or np.isfinite(hi):
            return np.clip(v, lo, hi)
        return v

    @property
    def _law(self) -> Law:
        if self.law.startswith("bnsl"):
            return get_law("bnsl", breaks=int(self.law[4:] or 1))
        return get_law(self.law)

    def _x(self, x):
        law = self._law
        if law.n_inputs == 2:
            if isinstance(x, pd.DataFrame):
                x = np.stack([x[self.x[0]].to_numpy(float), x[self.x[1]].to_numpy(float)])
            x = np.asarray(x, dtype=float)
            if x.ndim == 1 and x.shape[0] == 2:
                x = x[:, None]
            if x.ndim != 2 or x.shape[0] != 2:
                raise ValueError("chinchilla predictions need (N, D): a DataFrame with the fitted x columns or an "
                                 "array of shape (2, n)")
            return x
        if isinstance(x, pd.DataFrame):
            x = x[self.x]
        return np.asarray(x, dtype=float)

    def predict(self, x) -> np.ndarray:
        """The fitted curve at x (array-like; for chinchilla a DataFrame with the N, D columns or an array (2, n)),
        kept inside `y_bounds`."""
        return self._clip(self._law.func(self._x(x), *[self.params[p] for p in self._law.params]))

    @property
    def finite_boot(self) -> np.ndarray:
        """The bootstrap's parameter sets that are finite (a refit that failed is left out), (B, p)."""
        return self.boot[np.all(np.isfinite(self.boot), axis=1)] if self.boot is not None else np.empty((0, 0))

    def with_scatter_of(self, x, y) -> "FitResult":
        """The same fit, whose prediction draws take a new point's scatter from the residuals of the points (x, y)
        on the fitted scale, instead of resampling those of every point it was fitted on (points with a non-finite
        residual are left out). A few residuals cannot be resampled: n of them place a new point beyond their range
        with probability 2 / (n + 1), 15% for 12. So the draws are t: s t_n, with s^2 = sum r^2 / n about the curve
        (its mean known: the refitted curves carry the fit's own uncertainty) and n degrees of freedom, the
        prediction interval of a normal scatter whose variance is estimated from n points."""
        yv = np.asarray(y, dtype=float)
        with np.errstate(all="ignore"):
            r = to_space(yv, self._space) - to_space(self.predict(x), self._space)
        return replace(self, residuals=r[np.isfinite(r)], scatter="t")

    def draws(self, x, kind: str = "prediction", rng: np.random.Generator | None = None,
              per_draw: bool = False) -> np.ndarray:
        """The bootstrap's curves at x, (B, n): `kind="confidence"` the refitted curves themselves, `"prediction"`
        each plus a resampled residual (on the fitted scale), a draw of a new measurement. Kept inside `y_bounds`.
        With `per_draw`, x is (m, n) with m at most the number of bootstrap sets: the b-th set is evaluated at the
        b-th row (to chain one fit's draws into another's). Needs n_boot > 0."""
        if self.boot is None or len(self.boot) == 0:
            raise ValueError("this fit has no bootstrap: refit with n_boot > 0 to get intervals")
        if kind not in ("confidence", "prediction"):
            raise ValueError(f"kind must be 'confidence' or 'prediction', got {kind!r}")
        X = self._x(x)
        B = self.finite_boot
        if per_draw:
            if self._law.n_inputs != 1 or X.ndim != 2 or X.shape[0] > len(B):
                raise ValueError(f"per_draw needs x of shape (m, n) with m <= {len(B)} for a one-input law")
            B = B[: X.shape[0]]
        F = np.atleast_2d(self._law.func(X, *[B[:, j:j + 1] for j in range(B.shape[1])]))
        if kind == "prediction" and self.residuals is not None and len(self.residuals):
            rng = np.random.default_rng(self.options.get("seed", 0) + 1) if rng is None else rng
            if self.scatter == "t":
                r = self.residuals
                eps = np.sqrt(np.mean(r * r)) * rng.standard_t(r.size, size=F.shape)
            else:
                eps = rng.choice(self.residuals, size=F.shape)
            F = from_space(to_space(F, self._space) + eps, self._space)
        return self._clip(F)

    def predict_interval(self, x, level: float = 0.95, kind: str = "prediction") -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap interval at x: `kind="confidence"` for the curve itself, `"prediction"` for a new measurement
        (`draws`). Needs n_boot > 0. Both ends are kept inside `y_bounds`."""
        F = self.draws(x, kind)
        q = (1 - level) / 2
        return np.nanquantile(F, q, axis=0), np.nanquantile(F, 1 - q, axis=0)

    def to_row(self) -> dict:
        """A flat dict for fits.csv: law, n, criteria, and value/stderr/ci_low/ci_high for each parameter."""
        row = {"law": self.law, "x": self.x if isinstance(self.x, str) else "+".join(self.x), "y": self.y,
               "loss": self.loss, "n": self.n, "aic": self.aic, "aicc": self.aicc, "bic": self.bic,
               "rmse": self.rmse, "n_boot": self.n_boot}
        for p, v in self.params.items():
            row[p] = v
            row[f"{p}_stderr"] = self.stderr.get(p, np.nan)
            lo, hi = self.ci.get(p, (np.nan, np.nan))
            row[f"{p}_ci_low"], row[f"{p}_ci_high"] = lo, hi
        return row


def information_criteria(rss: float, n: int, p: int) -> tuple[float, float, float]:
    """AIC, AICc, BIC of a least-squares fit with unknown noise variance (k = p + 1).

    -2 log L = n log(2 pi RSS / n) + n; AIC = -2 log L + 2k; AICc = AIC + 2k(k+1)/(n-k-1) (Hurvich & Tsai 1989);
    BIC = -2 log L + k log n (Schwarz 1978).
    """
    k = p + 1
    m2ll = n * np.log(2 * np.pi * max(rss, 1e-300) / n) + n
    aic = m2ll + 2 * k
    aicc = aic + 2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else np.inf
    return float(aic), float(aicc), float(m2ll + k * np.log(n))


# ------------------------------------------------------------------------------------------------------ fit_law
def _columns(df: pd.DataFrame, x, y, law: Law, extra=()) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"fit_law needs a pandas DataFrame, got {type(df).__name__}")
    xs = [x] if law.n_inputs == 1 else list(x) if isinstance(x, (list, tuple)) else None
    if xs is None or len(xs) != law.n_inputs:
        raise ValueError(f"law {law.name!r} needs x as a pair of column names (N, D), got {x!r}")
    for c in xs + [y]:
        if not isinstance(c, str) or c not in df.columns:
            raise ValueError(f"column {c!r} is not in the table; columns are: {', '.join(map(str, df.columns))}")
    for c in extra:
        if c not in df.columns:
            raise ValueError(f"column {c!r} is not in the table; columns are: {', '.join(map(str, df.columns))}")
    keep = list(dict.fromkeys(xs + [y] + list(extra) + [c for c in ("seed",) if c in df.columns]))
    sub = df[keep].copy()  # only what the fit reads: copying a wide results table costs more than the fit
    for c in xs + [y]:
        try:
            sub[c] = pd.to_numeric(sub[c], errors="raise").astype(float)
        except (ValueError, TypeError):
            raise ValueError(f"column {c!r} must be numeric to fit {law.name!r}") from None
    ok = np.all(np.isfinite(sub[xs + [y]].to_numpy(float)), axis=1)
    sub = sub[ok]
    if law.log_x and len(sub) and (sub[xs].to_numpy(float) <= 0).any():
        bad = [c for c in xs if (sub[c] <= 0).any()][0]
        raise ValueError(f"column {bad!r} has values <= 0; law {law.name!r} needs positive x (drop those rows)")
    X = sub[xs[0]].to_numpy(float) if law.n_inputs == 1 else np.stack([sub[c].to_numpy(float) for c in xs])
    return X, sub[y].to_numpy(float), sub


def _resolve_y_bounds(law: Law, y_bounds) -> tuple[float, float]:
    if y_bounds is None:
        return DEFAULT_Y_BOUNDS.get(law.name, (-np.inf, np.inf))
    try:
        lo, hi = y_bounds
        lo = -np.inf if lo is None else float(lo)
        hi = np.inf if hi is None else float(hi)
    except (TypeError, ValueError):
        raise ValueError(f"y_bounds must be a pair (low, high) of numbers or None, got {y_bounds!r}") from None
    if np.isnan(lo) or np.isnan(hi) or not lo < hi:
        raise ValueError(f"y_bounds must have low < high, got {y_bounds!r}")
    return lo, hi


def fit_law(df: pd.DataFrame, law: str, x, y: str, *, loss: str | None = None, huber_delta: float = 1e-3,
            log_residuals: bool | None = None, n_boot: int = 200, seed: int = 0, level: float = 0.95,
            grid: dict | np.ndarray | None = None, bounds: dict | None = None, exclude_top_k: int = 0,
            breaks: int = 1, starts: int = 64, weights: str | None = None, space: str | None = None,
            y_bounds: tuple[float | None, float | None] | None = None, interval: str = "auto") -> FitResult:
    """Fit a scaling law to columns of a table.

    df: one row per measurement; rows with a missing or non-finite x or y are left out. x: a column name (for
    chinchilla a pair (N, D) of column names). y: the column to fit. law: one of analysis.laws.LAWS.
    loss: "l2" (least squares, the default) or "huber" (Huber on log residuals when every y > 0; the default for
    chinchilla). huber_delta: the Huber threshold (1e-3 as in Hoffmann et al. 2022).
    space: the scale residuals are measured on: "linear" (y itself; the default for l2), "log" (log y; the default
    for huber, and what `log_residuals=True` means) or "log1p" (log(1 + y): the scale on which Caballero et al.
    2022 fit broken neural scaling laws, in the script for their Figure 4 in the repository
    ethancaballero/broken_neural_scaling_laws; their appendix A.6 describes the fitting).
    grid: non-linear starting values (a dict name -> values, or an array of full rows; for chinchilla with Huber the
    Epoch grid names a, b, e, alpha, beta). bounds: name -> (low, high). exclude_top_k: drop the k points with the
    highest y first (Besiroglu et al. 2024 drop 5). breaks: number of breaks for bnsl. starts: how many of the best
    grid starts run L-BFGS-B in Huber fits. weights: optional column of per-row weights (e.g. 1/stderr^2).

    y_bounds: (low, high), the range of the metric (None for an open end). The law's levels (`Law.levels`: power's
    and chinchilla's E, logistic's floor and ceiling, the offset a of bnsl, saturating, hinge and constant) are
    fitted inside it, in the point fit and in every bootstrap refit, so their intervals are inside it too; and
    `predict` and `predict_interval` are clipped to it. Default: E >= 0 for power and chinchilla (E is an
    irreducible loss), no bounds for the other laws; pass (None, None) to lift it, (0, 1) for an accuracy. Explicit
    `bounds` on a level win over y_bounds.

    Intervals (n_boot > 0; n_boot = 0 gives none, and Jacobian standard errors). `ci` are percentile intervals of
    `level` from n_boot refits and `stderr` their standard deviations; the refits are of one of these kinds:
    - resampled seeds within each x, when every x has several seeds (a `seed` column) and every x has at least
      MIN_RESAMPLE_UNITS = 5 of them (each (x, seed) an independent run; see `_bootstrap_samples`);
    - resampled whole seeds, when the table has a `seed` column naming at least 5 seeds but not every x has
      several (rows that share a seed share its noise, as the checkpoints of one run);
    - resampled rows, when there is no `seed` column (or a single seed);
    - parametric (model-based), when the seeds above are fewer than 5: at each x, or in all. A resample of 2 to 4
      values has only 3 to 35 distinct outcomes and estimates each x's spread from 1 to 3 degrees of freedom, and
      whole-seed resamples of 2 to 4 runs are as coarse; such intervals run narrow (on synthetic power laws with
      2 seeds at each of 5 sizes, the 95% interval of the exponent covered the truth in 88% of 200 data sets
      resampling seeds, 95.5% parametric). Instead, new data are simulated from the fitted curve with
      Gaussian noise on the fitted scale, sd_b = s sqrt((n - p) / chi2_{n-p}) drawn afresh for each refit, where
      s^2 = sum w r^2 / (n - p) is the residual variance with its n - p degrees of freedom (a parametric
      bootstrap, Efron & Tibshirani 1993, section 6.5; drawing sd_b makes its percentile intervals exactly
      Student-t intervals for a model linear in its parameters: the posterior of a Gaussian linear model under the
      prior p(theta, sigma) proportional to 1/sigma, Gelman et al. 2013, "Bayesian Data Analysis", 3rd ed.,
      section 14.2).
    interval: "auto" (the rule above), "bootstrap" (always resample, as the first three kinds) or "parametric"
    (always model-based). The kind used is in FitResult.options["interval"].
    """
    L = get_law(law, breaks=breaks)
    loss = _check_options(L, loss, space, interval, n_boot, level)
    X, yv, sub = _columns(df, x, y, L, extra=[weights] if weights is not None else [])
    X, yv, sub = _drop_top(X, yv, sub, exclude_top_k)
    n, p = len(yv), len(L.params)
    if n < p + 1:
        raise ValueError(f"law {L.name!r} has {p} parameters and needs at least {p + 1} points with finite "
                         f"{x!r} and {y!r}; got {n}")
    w = _row_weights(sub, weights, n)
    space = _fit_space(yv, y, loss, space, log_residuals)
    y_lo, y_hi = _resolve_y_bounds(L, y_bounds)
    bnds = _param_bounds(L, X, (y_lo, y_hi), bounds)

    # ---- point estimate
    chin = None  # (z_hat, e_bounds) of a Chinchilla Huber fit, which its bootstrap refits start from
    if L.name == "chinchilla" and loss == "huber":
        theta, chin = _chinchilla_huber_point(X, yv, w, bnds, space, grid, huber_delta, starts)
    else:
        theta = _point_fit(L, X, yv, w, bnds, loss, space, grid, huber_delta)

    pred = L.func(X, *theta)
    resid = to_space(yv, space) - to_space(pred, space)
    rss_fit = float(np.sum(w * resid ** 2) / np.mean(w))
    aic, aicc, bic = information_criteria(rss_fit, n, p)
    rmse = float(np.sqrt(np.mean((yv - pred) ** 2)))

    # ---- intervals
    boot, method, scheme = None, None, None
    if n_boot > 0:
        boot, method, scheme = _interval_refits(L, X, yv, w, sub, theta, resid, bnds, loss, space, interval,
                                                n_boot, seed, huber_delta, chin)
    params = dict(zip(L.params, map(float, theta)))
    stderr, ci = _uncertainties(L, boot, level, X, yv, w, theta, space)
    return FitResult(law=L.name, params=params, stderr=stderr, ci=ci, aic=aic, aicc=aicc, bic=bic, rmse=rmse, n=n,
                     x=x if L.n_inputs == 1 else tuple(x), y=y, loss=loss, n_boot=int(n_boot), level=level,
                     boot=boot, residuals=resid, log_resid=space == "log",
                     options={"seed": seed, "huber_delta": huber_delta, "exclude_top_k": exclude_top_k,
                              "interval": method, "resample": scheme},
                     space=space, y_bounds=(y_lo, y_hi))


def _check_options(L: Law, loss: str | None, space: str | None, interval: str, n_boot, level: float) -> str:
    """Validate fit_law's options that need no data; returns the loss (Huber for chinchilla when not given)."""
    if loss is None:
        loss = "huber" if L.name == "chinchilla" else "l2"
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if space is not None and space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be a whole number >= 0, got {n_boot!r}")
    if not (0 < level < 1):
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    return loss


def _drop_top(X: np.ndarray, yv: np.ndarray, sub: pd.DataFrame, exclude_top_k: int
              ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The points without the exclude_top_k highest y (in their original order)."""
    if not exclude_top_k:
        return X, yv, sub
    if exclude_top_k < 0 or exclude_top_k >= len(yv):
        raise ValueError(f"exclude_top_k={exclude_top_k} must be between 0 and the number of points ({len(yv)})")
    keep = np.argsort(-yv, kind="stable")[exclude_top_k:]
    keep.sort()
    return (X[keep] if X.ndim == 1 else X[:, keep]), yv[keep], sub.iloc[keep]


def _row_weights(sub: pd.DataFrame, weights: str | None, n: int) -> np.ndarray:
    """Per-row weights from the column `weights`, or ones."""
    if weights is None:
        return np.ones(n)
    if weights not in sub.columns:
        raise ValueError(f"weights column {weights!r} is not in the table")
    w = pd.to_numeric(sub[weights], errors="coerce").to_numpy(float)
    if not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError(f"weights column {weights!r} must hold positive finite numbers")
    return w


def _fit_space(yv: np.ndarray, y: str, loss: str, space: str | None, log_residuals: bool | None) -> str:
    """The scale residuals are measured on (see fit_law), checked against the values of y."""
    if space is None:
        space = "log" if (loss == "huber" if log_residuals is None else log_residuals) else "linear"
    elif log_residuals is not None and bool(log_residuals) != (space == "log"):
        raise ValueError(f"log_residuals={log_residuals!r} contradicts space={space!r}; give one of them")
    if space == "log" and np.any(yv <= 0):
        what = "Huber on log residuals" if loss == "huber" else "a fit on log y"
        raise ValueError(f"column {y!r} has values <= 0: {what} needs positive y (use loss='l2')")
    if space == "log1p" and np.any(yv <= -1):
        raise ValueError(f"column {y!r} has values <= -1: a fit on log(1 + y) needs y > -1")
    return space


def _param_bounds(L: Law, X, y_range: tuple[float, float], bounds: dict | None) -> dict:
    """Bounds of every parameter: the law's own, its levels inside y's range, then the caller's `bounds`."""
    y_lo, y_hi = y_range
    levels = {nm: (y_lo, y_hi) for nm in L.levels} if (np.isfinite(y_lo) or np.isfinite(y_hi)) else {}
    bnds = {**L.bounds(X), **levels, **(bounds or {})}
    unknown = set(bounds or {}) - set(L.params)
    if unknown:
        raise ValueError(f"bounds for unknown parameter(s) {sorted(unknown)} of law {L.name!r}: {L.params}")
    return bnds


def _chinchilla_huber_point(X, yv, w, bnds: dict, space: str, grid, huber_delta: float, starts: int
                            ) -> tuple[np.ndarray, tuple[np.ndarray, tuple[float, float]]]:
    """The Chinchilla Huber fit of Besiroglu et al. 2024 (module docstring): the parameters, and (z_hat, e_bounds),
    the optimum in LSE form and the bounds of e = log E, from which the bootstrap refits start."""
    if space != "log":
        raise ValueError("chinchilla with Huber is fitted on log loss (Hoffmann et al. 2022); use loss='l2' "
                         "for a fit on the raw scale")
    E_lo, E_hi = bnds.get("E", (-np.inf, np.inf))
    if E_hi <= 0:
        raise ValueError(f"chinchilla with Huber has E = exp(e) > 0; an upper bound of {E_hi} on E is impossible")
    e_bounds = (np.log(E_lo) if E_lo > 0 else -np.inf, np.log(E_hi) if np.isfinite(E_hi) else np.inf)
    starts_arr = chinchilla_starts(grid if isinstance(grid, dict) else None)
    z_hat, _ = fit_chinchilla_huber(X, yv, w, huber_delta, starts_arr, starts, e_bounds=e_bounds)
    return lse_to_params(z_hat), (z_hat, e_bounds)


def _point_fit(L: Law, X, yv, w, bnds: dict, loss: str, space: str, grid, huber_delta: float) -> np.ndarray:
    """Steps 1 to 3 of the module docstring for every fit but Chinchilla with Huber: grid, refinement by
    Levenberg-Marquardt from the best distinct grid points, then the Huber loss where asked."""
    if isinstance(grid, dict):
        g = L.grid(X, {k: (min(v), max(v)) for k, v in grid.items()})
        axes = [np.asarray(grid.get(nm, np.unique(g[:, j]))) for j, nm in enumerate(L.nonlinear)]
        mesh = np.meshgrid(*axes, indexing="ij") if axes else []
        G = np.stack([m.ravel() for m in mesh], axis=1) if axes else np.zeros((1, 0))
    elif grid is not None:
        G = np.atleast_2d(np.asarray(grid, dtype=float))
    else:
        G = L.grid(X, bnds)
    l2_space = space if loss == "l2" else "linear"  # a Huber fit starts from least squares on y
    score, lin = profile_linear(L, X, yv, space_weights(yv, w, l2_space), G, bnds)
    if l2_space != "linear":
        # rank the grid by the objective on the fitted scale, each point with its linearised linear parameters
        Pg = assemble(L, G, lin)
        F = L.func(X, *[Pg[:, j:j + 1] for j in range(Pg.shape[1])])
        with np.errstate(all="ignore"):
            score = np.sum(w * (to_space(F, l2_space) - to_space(yv, l2_space)) ** 2, axis=-1)
        score = np.where(np.isfinite(score), score, np.inf)
    top = _distinct_top(G, score, int(L.extra.get("lm_starts", 3)))
    theta, _ = refine_l2(L, X, yv, w, G[top], bnds, grid=G, space=l2_space)
    if loss == "huber":
        theta, _ = refine_huber(L, X, yv, w, theta[None], bnds, huber_delta, space)
    return theta


def _interval_refits(L: Law, X, yv, w, sub: pd.DataFrame, theta, resid, bnds: dict, loss: str, space: str,
                     interval: str, n_boot: int, seed: int, huber_delta: float, chin) -> tuple[np.ndarray, str, str]:
    """Step 4 of the module docstring: n_boot refits (rows of parameters, NaN where a resample cannot identify the
    law), the kind of interval ("bootstrap" or "parametric") and the resampling scheme (`_resample_scheme`)."""
    n, p = len(yv), len(L.params)
    rng = np.random.default_rng(seed)
    xkey = X if X.ndim == 1 else X[0] + 1e-9 * X[1]
    scheme, units = _resample_scheme(sub, xkey)
    method = interval
    if interval == "auto":
        method = "parametric" if scheme != "rows" and units < MIN_RESAMPLE_UNITS else "bootstrap"
    if method == "parametric":
        Yb = _parametric_samples(L, X, theta, w, resid, space, n_boot, rng)
        Wb = np.tile(w, (n_boot, 1))
    else:
        Wb, Yb = _bootstrap_samples(sub, yv, n_boot, rng, xkey)
        Wb = Wb * w
        if space == "log" and np.any(Yb <= 0):
            Yb = np.maximum(Yb, np.min(yv) * 1e-3)  # a rescaled draw below zero cannot be logged
        if space == "log1p" and np.any(Yb <= -1):
            Yb = np.maximum(Yb, -1.0 + 1e-3 * (1.0 + np.min(yv)))
    if chin is not None:
        z_hat, e_bounds = chin
        Zb, _ = lse_irls(np.tile(z_hat, (n_boot, 1)), np.log(X[0]), np.log(X[1]), np.log(Yb), Wb, huber_delta,
                          e_bounds=e_bounds)
        boot = np.array([lse_to_params(z) for z in Zb])
    else:
        P0 = _bootstrap_starts(L, X, Yb, Wb, theta, bnds)
        boot, _ = batched_lm(L, X, Yb, Wb, P0, bnds, loss=loss, delta=huber_delta, space=space)
    # a resample that keeps fewer distinct x than the law has parameters cannot identify it
    codes, uniq = pd.factorize(xkey)
    onehot = np.zeros((n, len(uniq)))
    onehot[np.arange(n), codes] = 1.0
    distinct = np.count_nonzero((Wb > 0) @ onehot, axis=1)
    boot[distinct < min(p, len(uniq))] = np.nan
    return boot, method, scheme


def _uncertainties(L: Law, boot, level: float, X, yv, w, theta, space: str) -> tuple[dict, dict]:
    """(stderr, ci) of every parameter: bootstrap SDs and percentile intervals where at least 2 refits are finite,
    else Jacobian standard errors and no intervals."""
    if boot is not None and np.isfinite(boot).all(axis=1).sum() >= 2:
        ok = np.isfinite(boot).all(axis=1)
        q = (1 - level) / 2
        stderr = dict(zip(L.params, map(float, np.std(boot[ok], axis=0, ddof=1))))
        lo, hi = np.quantile(boot[ok], q, axis=0), np.quantile(boot[ok], 1 - q, axis=0)
        ci = {nm: (float(a), float(b)) for nm, a, b in zip(L.params, lo, hi)}
    else:
        stderr = dict(zip(L.params, _asymptotic_stderr(L, X, yv, w, theta, space)))
        ci = {nm: (np.nan, np.nan) for nm in L.params}
    return stderr, ci


def _parametric_samples(law: Law, X, theta, w, resid, space: str, n_boot: int, rng: np.random.Generator
                        ) -> np.ndarray:
    """Data sets (n_boot, n) simulated from the fit: on the fitted scale, the fitted curve plus Gaussian noise of
    sd sd_b / sqrt(w_i), with sd_b^2 = s^2 (n - p) / chi2_{n-p} drawn for each data set and s^2 the residual
    variance sum w r^2 / (n - p) (see fit_law: this carries the uncertainty of s itself into the intervals)."""
    n, p = resid.size, len(theta)
    dof = n - p
    s2 = float(np.sum(w * resid ** 2) / dof)
    sd = np.sqrt(s2 * dof / rng.chisquare(dof, size=n_boot))
    eps = rng.standard_normal((n_boot, n)) * sd[:, None] / np.sqrt(w)[None, :]
    return from_space(to_space(law.func(X, *theta), space)[None, :] + eps, space)


def _resample_scheme(sub: pd.DataFrame, xkey) -> tuple[str, int]:
    """How `_bootstrap_samples` resamples this table, and how many units it draws from:
    ("within-x", fewest seeds at any x), ("seeds", number of seeds) or ("rows", number of rows)."""
    has_seed = "seed" in sub.columns and sub["seed"].notna().all() and sub["seed"].nunique() >= 2
    if has_seed and xkey is not None:
        per_x = pd.DataFrame({"x": np.asarray(xkey), "s": sub["seed"].to_numpy()}).groupby("x")["s"].nunique()
        if len(per_x) >= 2 and (per_x >= 2).all():
            return "within-x", int(per_x.min())
    if has_seed:
        return "seeds", int(sub["seed"].nunique())
    return "rows", len(sub)


def _distinct_top(G: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best grid points, skipping points adjacent in the grid to one already chosen."""
    order = np.argsort(score)
    chosen: list[int] = []
    span = np.ptp(G, axis=0) if len(G) > 1 else np.ones(G.shape[1])
    span = np.where(span > 0, span, 1.0)
    for i in order:
        if all(np.max(np.abs(G[i] - G[j]) / span) > 0.15 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == k:
            break
    return np.array(chosen if chosen else [int(order[0])])


def _bootstrap_samples(sub: pd.DataFrame, y: np.ndarray, n_boot: int, rng: np.random.Generator,
                       xkey=None) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap resamples as (weights (n_boot, n), values (n_boot, n)).

    - Every x measured with several seeds (each (x, seed) an independent training run): seeds are resampled within
      each x, so every size keeps its number of runs (a stratified bootstrap). Drawing m from m underestimates the
      spread by a factor (m - 1) / m, which matters for 2 or 3 seeds; so the drawn values are re-centred on the
      x's mean and their deviations scaled by sqrt(m / (m - 1)) (Davison & Hinkley 1997, section 3.7, eq. 3.20).
    - Otherwise, a `seed` column with several values: whole seeds are resampled (a cluster bootstrap: rows that
      share a seed, such as the checkpoints of one run, share its noise; Davison & Hinkley 1997, section 3.8).
    - Otherwise rows are resampled one by one.
    fit_law uses these only with at least MIN_RESAMPLE_UNITS seeds (at each x, or in all); with fewer its intervals
    are parametric (`_parametric_samples`).
    """
    n = len(sub)
    y = np.asarray(y, dtype=float)
    scheme, _ = _resample_scheme(sub, xkey)
    if scheme == "within-x":
        Y = np.empty((n_boot, n))
        codes = pd.factorize(np.asarray(xkey))[0]
        for g in range(codes.max() + 1):
            rows = np.flatnonzero(codes == g)
            m = rows.size
            draws = rng.integers(0, m, size=(n_boot, m))
            mean = y[rows].mean()
            Y[:, rows] = mean + np.sqrt(m / (m - 1.0)) * (y[rows][draws] - mean)
        return np.ones((n_boot, n)), Y
    Y = np.broadcast_to(y, (n_boot, n))
    if scheme == "seeds":
        codes, uniq = pd.factorize(sub["seed"])
        draws = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
        counts = np.stack([np.bincount(d, minlength=len(uniq)) for d in draws])
        return counts[:, codes].astype(float), Y
    draws = rng.integers(0, n, size=(n_boot, n))
    return np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float), Y


def _bootstrap_starts(law: Law, X, Y, Wb, theta, bounds) -> np.ndarray:
    """Start every resample at the full-data fit, and also at its own best grid point when that is cheap (its
    linear parameters clipped into their bounds, which `batched_lm` then keeps)."""
    P0 = np.tile(theta, (Wb.shape[0], 1))
    plo = np.array([bounds.get(nm, (-np.inf, np.inf))[0] for nm in law.params], dtype=float)
    phi = np.array([bounds.get(nm, (-np.inf, np.inf))[1] for nm in law.params], dtype=float)
    Y = np.broadcast_to(Y, Wb.shape)
    G = law.grid(X, bounds)
    n = Y.shape[1]
    if len(law.nonlinear) and np.all(Wb == Wb[:1]):
        # every resample has the same weights (resampled values, not rows): one projector serves them all
        P = Projector.build(design(law, X, G), Wb[0])
        g = np.argmin(P.rss(Y), axis=1)
        Pg = np.clip(assemble(law, G[g], P.coefs(Y, g)), plo, phi)
        f0 = law.func(X, *[P0[:, j:j + 1] for j in range(P0.shape[1])])
        fg = law.func(X, *[Pg[:, j:j + 1] for j in range(Pg.shape[1])])
        better = np.sum(Wb * (Y - fg) ** 2, axis=1) < np.sum(Wb * (Y - f0) ** 2, axis=1)
        P0[better] = Pg[better]
    elif len(law.nonlinear) and Wb.shape[0] * len(G) * n * len(law.linear) ** 2 < 3e8:
        D = design(law, X, G)
        norms = np.sqrt(np.sum(D * D, axis=1))
        norms = np.where(norms > 0, norms, 1.0)
        Dn = np.where(np.isfinite(D), D, 0.0) / norms[:, None, :]
        M = np.einsum("gnl,bn,gnm->bglm", Dn, Wb, Dn, optimize=True)
        r = np.einsum("gnl,bn->bgl", Dn, Wb * Y, optimize=True)
        Lc = M.shape[-1]
        ridge = 1e-10 * np.trace(M, axis1=2, axis2=3)[..., None, None] * np.eye(Lc)
        c = solve_small(M + ridge, r)
        rss = np.sum(Wb * Y * Y, axis=1)[:, None] - np.sum(c * r, axis=2)
        g = np.argmin(rss, axis=1)
        lin = c[np.arange(len(g)), g] / norms[g]
        Pg = np.clip(assemble(law, G[g], lin), plo, phi)
        # keep whichever start is better for that resample (by the weighted RSS it gives)
        f0 = law.func(X, *[P0[:, j:j + 1] for j in range(P0.shape[1])])
        fg = law.func(X, *[Pg[:, j:j + 1] for j in range(Pg.shape[1])])
        better = np.sum(Wb * (Y - fg) ** 2, axis=1) < np.sum(Wb * (Y - f0) ** 2, axis=1)
        P0[better] = Pg[better]
    return P0


def _asymptotic_stderr(law: Law, X, y, w, theta, space: str) -> list[float]:
    """Standard errors from the Jacobian on the fitted scale: sqrt(diag(s^2 (J^T W J)^-1)), s^2 = RSS / (n - p)
    (no bootstrap)."""
    n, p = len(y), len(theta)
    if n <= p:
        return [np.nan] * p

    def f(t):
        return to_space(law.func(X, *t), space)

    f0 = f(theta)
    J = np.empty((n, p))
    for j in range(p):
        h = 1e-6 * max(1.0, abs(theta[j]))
        t = theta.copy()
        t[j] += h
        J[:, j] = (f(t) - f0) / h
    r = to_space(y, space) - f0
    s2 = np.sum(w * r * r) / (n - p)
    try:
        cov = s2 * np.linalg.pinv(J.T @ (J * w[:, None]))
    except np.linalg.LinAlgError:
        return [np.nan] * p
    return [float(np.sqrt(c)) if c >= 0 else np.nan for c in np.diag(cov)]


# ------------------------------------------------------------------------------------------------ compute optimal
def compute_optimal(fit: FitResult, C) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal model size and data for budgets C (FLOPs), with C = 6 N D.

    Hoffmann et al. 2022, eq. 4: N*(C) = G (C/6)^a, D*(C) = G^-1 (C/6)^b, with G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta / (alpha + beta), b = alpha / (alpha + beta). Vectorised over C; returns (N*, D*).
    """
    if not isinstance(fit, FitResult) or fit.law != "chinchilla":
        raise ValueError("compute_optimal needs a chinchilla FitResult (fit_law(df, 'chinchilla', (N, D), loss))")
    Cv = np.asarray(C, dtype=float)
    if np.any(~np.isfinite(Cv)) or np.any(Cv <= 0):
        raise ValueError("compute budgets C must be positive finite FLOP counts")
    A, B, al, be = (fit.params[k] for k in ("A", "B", "alpha", "beta"))
    if min(A, B, al, be) <= 0:
        raise ValueError(f"compute_optimal needs A, B, alpha, beta > 0; this fit has A={A:g}, B={B:g}, "
                         f"alpha={al:g}, beta={be:g}")
    G = (al * A / (be * B)) ** (1.0 / (al + be))
    N = G * (Cv / 6.0) ** (be / (al + be))
    D = (Cv / 6.0) ** (al / (al + be)) / G
    return N, D


__all__ = ["FitResult", "fit_law", "compute_optimal", "information_criteria", "LAWS"]
