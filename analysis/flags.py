"""Emergence flags: is a capability's curve a jump, and does the evidence survive statistics and a continuous metric?

`flag_curve(x, y, higher_is_better=...)` judges one curve; `flag_emergence(df)` judges every (task, metric) of a
results table, one row each, with the numbers that made the verdict.

The verdict for a curve (seeds are first averaged per x; the curve is oriented so that up means better):
- `inconclusive` with fewer than `min_sizes` (4) distinct x; when the model comparison (1 and 2 below) finds an
  abrupt change that is a drop, or one whose breakthroughness is not unusual for the smooth model (3 fails); or
  when a jump rests on a single size at either end (fewer than `min_side` (2) sizes on one side of it);
- `flat` when no model beats a constant by a BIC difference of `flat_margin` (2);
- `emergent` when all of these hold:
  1. the best jump model (logistic in log x, a one-break broken power law, a hinge) beats the best smooth model
     (linear in log x, power law, hyperbolic saturation) by delta_bic >= `bic_margin` (6: "strong" evidence on
     Kass & Raftery's 1995 scale);
  2. that difference is unlikely under the smooth model: lrt_p <= `alpha` (0.05), from a parametric bootstrap;
  3. the curve's BIG-bench breakthroughness is unlikely under the smooth model: breakthroughness_p <= `alpha`;
- `smooth` otherwise (the model comparison does not favour a jump: 1 or 2 fails).

Noise. Each point's variance is measured, not assumed: the pooled variance across seeds at the same x and the
squared standard error the table records (binomial for proportions), whichever is larger, divided by the number of
seeds averaged. Where the best fitting model still leaves more scatter than that (chi2 / dof > 1) the variance is
scaled up by that factor (a quasi-likelihood dispersion, Burnham & Anderson 2002, section 6.2); where nothing is
measured, the residual variance of the better of the two best models is used.

Likelihood-ratio test. The usual chi-square reference is invalid here: a jump's location does not exist under the
smooth model (Davies 1977, "Hypothesis testing when a nuisance parameter is present only under the alternative",
Biometrika 64:247). So its null distribution is simulated (a parametric bootstrap, McLachlan 1987, Applied
Statistics 36:318): `n_boot` curves are drawn from the best smooth fit with the measured noise, both model classes
are refitted to each, and lrt_p is the share whose statistic is at least the observed one. The statistic is the
difference in BIC between the best smooth and the best jump model (the log-likelihood ratio less the parameter
penalty), which also handles the two classes having different numbers of parameters. The same simulated curves
calibrate breakthroughness. Refits in the simulations use the fixed grid of each model (variable projection), and
the observed statistic is computed the same way, so the test compares like with like.

Jump location. jump_at is the location parameter of the best jump model (logistic midpoint, hinge knee, break
d1), refined by least squares; [jump_lo, jump_hi] is the 95% percentile interval of that location over `n_boot`
curves simulated from the jump fit, widened to the two measured sizes around jump_at: sizes are discrete, and a
jump between two of them cannot be placed more precisely than between them (and by one grid step, the resolution
of the simulated refits).

This module imports numpy, scipy and pandas only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import schema
from analysis.fit import Projector, assemble, design, zoom_fit
from analysis.laws import LAWS, Law, bnsl_law

SMOOTH = ("linear_log", "power", "saturating")
JUMP = ("logistic", "bnsl", "hinge")
CONTINUOUS_FOR_MIRAGE = ("answer_nll", "token_accuracy", "edit_distance")
FLAG_COLUMNS = ["task", "metric", "x", "verdict", "jump_at", "jump_lo", "jump_hi", "jump_size", "breakthroughness",
                "breakthroughness_p", "delta_bic", "lrt_p", "seed_agreement", "mirage", "n_sizes", "evidence"]
EXTRA_COLUMNS = ["delta_aicc", "smooth_model", "jump_model", "noise_scale", "em_measured", "em_predicted",
                 "answer_length"]
# Axes along which a run is one point (its final checkpoint); along any other axis every checkpoint is a point.
SIZE_AXES = ("n_params", "n_params_nonembed", "n_layer", "d_model", "flops", "tokens")
KEEP_STATUSES = ("ok", "imported")
DROP_RUN_STATUSES = ("diverged", "failed")


# ------------------------------------------------------------------------------------------------ breakthroughness
def breakthroughness(y, floor_var: float = 0.0) -> np.ndarray:
    """BIG-bench breakthroughness of curves sorted by x (Srivastava et al. 2022, section 3.4 and appendix B, as
    restated by Schaeffer et al. 2023, eq. 1):

        B = sign(argmax_i y_i - argmin_i y_i) * (max_i y_i - min_i y_i) / sqrt(median_i (y_i - y_{i-1})^2)

    y: (n,) or (B, n), already oriented so that higher is better. Guard: the median squared step is floored at
    `floor_var` (the variance of the difference of two measurements), so that a run of identical values (a row of
    exact zeros) does not divide by zero; with floor_var = 0 a zero median gives inf (or 0 for a constant curve).
    """
    Y = np.atleast_2d(np.asarray(y, dtype=float))
    rng = Y.max(axis=1) - Y.min(axis=1)
    sign = np.where(np.argmax(Y, axis=1) >= np.argmin(Y, axis=1), 1.0, -1.0)
    med = np.median(np.diff(Y, axis=1) ** 2, axis=1)
    den = np.sqrt(np.maximum(med, floor_var))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(rng == 0, 0.0, sign * rng / den)
    return out if np.ndim(y) > 1 else out[0]


# ---------------------------------------------------------------------------------------------------- the models
@dataclass
class _Model:
    name: str
    kind: str  # "flat", "smooth" or "jump"
    law: Law
    grid: np.ndarray  # (G, q) non-linear parameter sets

    @property
    def p(self) -> int:
        return len(self.law.params)


def _models(x: np.ndarray, grid_scale: float = 1.0) -> list[_Model]:
    """The candidate models, with grids suited to flagging: jump locations inside the measured range, a monotone
    broken power law (c0, c1 >= 0, so it cannot fit a one-size spike), and a power law free to accelerate
    (alpha down to -1: y rising like x^1 is smooth, however steep it looks on a log axis)."""
    t = np.log10(x)
    lo, hi = float(t.min()), float(t.max())

    def m(k):
        return max(3, int(round(k * grid_scale)))

    inner = np.linspace(lo, hi, m(31))
    k_grid = np.logspace(0, np.log10(80.0), m(10))
    mods = [
        _Model("constant", "flat", LAWS["constant"], np.zeros((1, 0))),
        _Model("linear_log", "smooth", LAWS["linear_log"], np.zeros((1, 0))),
        _Model("power", "smooth", LAWS["power"], np.linspace(-1.0, 3.0, m(41))[:, None]),
        _Model("saturating", "smooth", LAWS["saturating"], (10 ** np.linspace(lo - 2, hi + 2, m(41)))[:, None]),
        _Model("logistic", "jump", LAWS["logistic"],
               np.stack([g.ravel() for g in np.meshgrid(k_grid, 10 ** inner, indexing="ij")], axis=1)),
        _Model("hinge", "jump", LAWS["hinge"], (10 ** inner[:-1])[:, None]),
    ]
    c0 = np.array([0.0, 0.2, 0.6])
    c1 = np.array([0.3, 1.0, 3.0])
    d = 10 ** np.linspace(lo, hi, m(11))
    f = np.array([0.05, 0.25])
    g = np.meshgrid(c0, c1, d, f, indexing="ij")
    mods.append(_Model("bnsl", "jump", bnsl_law(1), np.stack([a.ravel() for a in g], axis=1)))
    return mods


def _bounds_for(model: _Model, x: np.ndarray) -> dict:
    """Refinement bounds matching the flag grids (so a refined fit stays a model of the same kind)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if model.name == "logistic":
        return {"k": (1.0, 80.0), "x0": (lo, hi)}
    if model.name == "hinge":
        return {"h": (lo, hi)}
    if model.name == "bnsl":
        return {"c0": (0.0, 0.6), "c1": (0.3, 3.0), "d1": (lo, hi), "f1": (0.05, 0.25)}
    if model.name == "power":
        return {"alpha": (-1.0, 3.0)}
    if model.name == "saturating":
        return {"s": (lo / 100, hi * 100)}
    return {}


# ------------------------------------------------------------------------------------------------ per-curve data
@dataclass
class _Curve:
    x: np.ndarray  # distinct x, sorted
    y: np.ndarray  # seed mean per x, oriented (higher is better)
    v: np.ndarray  # variance of each mean (before the dispersion factor)
    measured: bool  # whether v comes from measurements
    v_seed: np.ndarray  # variance of one seed's measurement at each x (its stderr^2, else the seeds' spread)
    n_seeds: np.ndarray  # seeds per x
    seed_curves: np.ndarray | None  # (S, n) oriented per-seed values when every seed has every x
    seed_lists: list  # [(x, y)] per seed, for seeds with gaps
    dropped: int  # rows dropped (non-finite or x <= 0)
    offset: float = 0.0  # y (and the seed curves) are stored as (y - offset) / scale; v as v / scale^2
    scale: float = 1.0


def _prepare(x, y, higher_is_better, seeds, stderr) -> _Curve:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    n0 = x.size
    se = None if stderr is None else np.asarray(stderr, dtype=float).ravel()
    if se is not None and se.shape != x.shape:
        raise ValueError(f"stderr must have one value per point, got {se.size} for {x.size} points")
    sd = None if seeds is None else np.asarray(pd.Series(seeds).astype("string").fillna("<NA>"), dtype=object)
    if sd is not None and sd.shape != x.shape:
        raise ValueError(f"seeds must have one value per point, got {sd.size} for {x.size} points")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok] * (1.0 if higher_is_better else -1.0)
    se = None if se is None else se[ok]
    sd = np.zeros(x.size, dtype=object) if sd is None else sd[ok]
    ux, inv = np.unique(x, return_inverse=True)
    n = ux.size
    counts = np.bincount(inv, minlength=n).astype(float)
    ybar = np.bincount(inv, weights=y, minlength=n) / np.maximum(counts, 1)
    # pooled variance across seeds at the same x (only x with >= 2 seeds contribute)
    dev2 = (y - ybar[inv]) ** 2
    dof = np.sum(np.maximum(counts - 1, 0))
    s2 = float(np.sum(dev2) / dof) if dof > 0 else 0.0
    se2 = np.zeros(n)
    if se is not None:
        fin = np.isfinite(se)
        se2 = np.bincount(inv[fin], weights=se[fin] ** 2, minlength=n) / np.maximum(
            np.bincount(inv[fin], minlength=n), 1)
    v = np.maximum(s2, se2) / np.maximum(counts, 1)
    measured = bool(np.any(v > 0))

    def floored(var):
        # exact zeros (a proportion of 0 has binomial stderr 0) would give infinite weight: floor them
        pos = var[var > 0]
        return np.maximum(var, 0.1 * np.median(pos)) if pos.size else np.ones(n)

    v = floored(v) if measured else np.ones(n)
    # judged on its own, a seed's noise is its measurement error, not the spread between seeds (which includes
    # the very differences in behaviour that seed_agreement counts)
    v_seed = floored(se2) if np.any(se2 > 0) else (np.full(n, s2) if s2 > 0 else np.ones(n))
    # per-seed curves
    useeds = pd.unique(sd)
    seed_curves, seed_lists = None, []
    if len(useeds) >= 2:
        full = True
        rows = []
        for s in useeds:
            m = sd == s
            xs, ys = x[m], y[m]
            order = np.argsort(xs)
            xs, ys = xs[order], ys[order]
            seed_lists.append((xs, ys))
            if xs.size != n or not np.array_equal(xs, ux):
                full = False
            else:
                rows.append(ys)
        if full:
            seed_curves = np.array(rows)
    # every model is affine in y (offset and amplitude are linear parameters) and breakthroughness is scale-free,
    # so y is standardised: fits and thresholds then behave the same for a loss in nats or a proportion
    offset = float(np.median(ybar)) if n else 0.0
    scale = float(np.ptp(ybar)) if n and np.ptp(ybar) > 0 else 1.0
    if not np.isfinite(scale) or scale <= 0 or scale > 1e150:  # its square (a variance scale) must be finite too
        raise ValueError("y spans a range too large to represent; rescale the metric")
    ybar = (ybar - offset) / scale
    if seed_curves is not None:
        seed_curves = (seed_curves - offset) / scale
    seed_lists = [(xs, (ys - offset) / scale) for xs, ys in seed_lists]
    if measured:
        v = v / scale ** 2
    if measured or s2 > 0 or np.any(se2 > 0):
        v_seed = v_seed / scale ** 2
    return _Curve(ux, ybar, v, measured, v_seed, counts, seed_curves, seed_lists, int(n0 - ok.sum()), offset, scale)


# ---------------------------------------------------------------------------------------------------- scoring
def _chi2(projs: list[Projector], Y: np.ndarray) -> list[np.ndarray]:
    """Per model: (B, G) weighted RSS for the rows of Y."""
    return [P.rss(Y) for P in projs]


def _score(models, chi2_min: list[np.ndarray], n: int, measured: bool):
    """From per-model minimum chi2 (each (B,)), the dispersion, BICs and class winners for every row.

    Returns dict with bic (M, B), aicc (M, B), c (B,), best smooth / jump indices (B,) and delta_bic (B,).
    """
    C2 = np.stack(chi2_min)  # (M, B)
    p = np.array([m.p for m in models])[:, None]
    eligible = (n - p[:, 0]) >= 1
    kinds = np.array([m.kind for m in models])
    big = np.inf

    def class_best(kind, crit):
        sel = np.where((kinds == kind) & eligible)[0]
        if sel.size == 0:
            return None
        return sel[np.argmin(crit[sel], axis=0)]

    # raw BIC (unit dispersion) to pick each class's best model for the dispersion estimate
    raw = C2 + p * np.log(n)
    s_idx, j_idx = class_best("smooth", raw), class_best("jump", raw)
    dof = n - p[:, 0]
    cols = np.arange(C2.shape[1])
    cands = [C2[i, cols] / dof[i] for i in (s_idx, j_idx) if i is not None]
    if cands:
        disp = np.min(np.stack(cands), axis=0)
    else:
        disp = np.ones(C2.shape[1])
    floor = 1.0 if measured else 1e-12
    disp = np.maximum(disp, floor)
    chi = C2 / disp
    bic = chi + p * np.log(n)
    with np.errstate(divide="ignore"):
        pen = np.where((n - p - 1) > 0, 2 * p * (p + 1) / np.maximum(n - p - 1, 1), big)
    aicc = chi + 2 * p + pen
    bic[~eligible] = big
    aicc[~eligible] = big
    s_idx, j_idx = class_best("smooth", bic), class_best("jump", bic)
    f_idx = [i for i, m in enumerate(models) if m.kind == "flat"][0]
    out = {"bic": bic, "aicc": aicc, "disp": disp, "smooth": s_idx, "jump": j_idx, "flat": f_idx}
    if s_idx is not None and j_idx is not None:
        with np.errstate(invalid="ignore"):  # inf - inf: AICc undefined for both (too few points)
            out["delta_bic"] = bic[s_idx, cols] - bic[j_idx, cols]
            out["delta_aicc"] = aicc[s_idx, cols] - aicc[j_idx, cols]
    return out


def _fit_curve(models, projs, Y):
    """Grid fits of every model to each row of Y: per-model (min chi2 (B,), argmin (B,))."""
    mins, args = [], []
    for R in _chi2(projs, Y):
        g = np.argmin(R, axis=1)
        mins.append(R[np.arange(R.shape[0]), g])
        args.append(g)
    return mins, args


def _location(model: _Model, theta: np.ndarray) -> float:
    name = model.law.location
    return float(theta[model.law.params.index(name)])


def _fmt(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "nan"
    return f"{v:.3g}"


def _empty_result(x_name, verdict, evidence, n_sizes) -> dict:
    return {"x": x_name, "verdict": verdict, "jump_at": np.nan, "jump_lo": np.nan, "jump_hi": np.nan,
            "jump_size": np.nan, "breakthroughness": np.nan, "breakthroughness_p": np.nan, "delta_bic": np.nan,
            "lrt_p": np.nan, "seed_agreement": np.nan, "mirage": pd.NA, "n_sizes": int(n_sizes),
            "evidence": evidence, "delta_aicc": np.nan, "smooth_model": "", "jump_model": "",
            "noise_scale": np.nan}


# ---------------------------------------------------------------------------------------------------- flag_curve
def flag_curve(x, y, *, higher_is_better: bool, seeds=None, stderr=None, x_name: str = "x", n_boot: int = 200,
               alpha: float = 0.05, bic_margin: float = 6.0, flat_margin: float = 2.0, min_sizes: int = 4,
               min_side: int = 2, seed: int = 0, grid_scale: float = 1.0) -> dict:
    """Judge one curve: is it an emergent jump, smooth, flat, or inconclusive? (see the module docstring)

    x, y: equal-length arrays, one value per measurement (several seeds may share an x). higher_is_better: the
    metric's direction. seeds: optional seed label per measurement (seed_agreement needs >= 2 seeds). stderr:
    optional standard error per measurement. x_name: written to the result's "x". n_boot: simulated curves for
    lrt_p, breakthroughness_p and the location interval. Returns a dict with the flag columns (without task and
    metric) plus delta_aicc, smooth_model, jump_model and noise_scale (the dispersion factor applied to the
    measured variance). Points with a non-finite x or y, or x <= 0, are left out.
    """
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a whole number >= 1, got {n_boot!r}")
    if not (0 < alpha < 1):
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    if min_sizes < 3:
        raise ValueError(f"min_sizes must be at least 3, got {min_sizes!r}")
    if not grid_scale > 0:
        raise ValueError(f"grid_scale must be positive, got {grid_scale!r}")
    cv = _prepare(x, y, bool(higher_is_better), seeds, stderr)
    n = cv.x.size
    note = f" ({cv.dropped} point(s) with missing values or x <= 0 left out)" if cv.dropped else ""
    if n < min_sizes:
        return _empty_result(x_name, "inconclusive",
                             f"only {n} distinct {x_name} value(s); at least {min_sizes} are needed to tell a jump "
                             f"from a smooth trend{note}", n)
    if np.ptp(cv.y) == 0:
        r = _empty_result(x_name, "flat", f"all {n} values are identical ({_fmt(cv.offset)}){note}", n)
        r["breakthroughness"] = 0.0
        return r
    rng = np.random.default_rng(seed)
    models = _models(cv.x, grid_scale)
    w = 1.0 / cv.v
    projs = [Projector.build(design(m.law, cv.x, m.grid), w) for m in models]

    # ---- observed: grid fits, dispersion, criteria
    mins, args = _fit_curve(models, projs, cv.y[None])
    sc = _score(models, mins, n, cv.measured)
    if sc["smooth"] is None or sc["jump"] is None:
        return _empty_result(x_name, "inconclusive", f"{n} sizes are too few to fit the models{note}", n)
    si, ji, fi = int(sc["smooth"][0]), int(sc["jump"][0]), sc["flat"]
    disp = float(sc["disp"][0])
    bic = sc["bic"][:, 0]
    delta_bic = float(sc["delta_bic"][0])
    delta_aicc = float(sc["delta_aicc"][0])
    floor_var = 2.0 * disp * float(np.min(cv.v)) if cv.measured else 0.0
    bt = float(breakthroughness(cv.y, floor_var))
    sm, jm = models[si], models[ji]

    def refined(mi):
        m = models[mi]
        theta, _ = zoom_fit(m.law, cv.x, cv.y, w, m.grid, bounds=_bounds_for(m, cv.x))
        return theta

    theta_s = refined(si)
    f_s = sm.law.func(cv.x, *theta_s)
    theta_j = refined(ji)
    f_j = jm.law.func(cv.x, *theta_j)
    jump_at = _location(jm, theta_j)
    jump_size = float(f_j[-1] - f_j[0]) * cv.scale
    sd_noise = np.sqrt(disp * cv.v)

    # ---- null simulations from the best smooth fit: lrt_p and breakthroughness_p
    Ys = f_s[None] + sd_noise[None] * rng.standard_normal((n_boot, n))
    mins_s, _ = _fit_curve(models, projs, Ys)
    sc_s = _score(models, mins_s, n, cv.measured)
    lrt_p = float((1 + np.sum(sc_s["delta_bic"] >= delta_bic)) / (n_boot + 1))
    bt_s = breakthroughness(Ys, floor_var)
    bt_p = float((1 + np.sum(bt_s >= bt)) / (n_boot + 1))

    # ---- location interval from simulations of the jump fit
    Yj = f_j[None] + sd_noise[None] * rng.standard_normal((n_boot, n))
    Rj = projs[ji].rss(Yj)
    gj = np.argmin(Rj, axis=1)
    loc_col = jm.law.nonlinear.index(jm.law.location)
    locs = np.log10(jm.grid[gj, loc_col])
    # the refits place the location on the grid: widen by one grid step so that quantisation cannot exclude the truth
    gstep = float(np.min(np.diff(np.unique(np.log10(jm.grid[:, loc_col]))))) if jm.grid.shape[0] > 1 else 0.0
    with np.errstate(over="ignore"):
        lo_q, hi_q = 10 ** (np.quantile(locs, 0.025) - gstep), 10 ** (np.quantile(locs, 0.975) + gstep)
    below = cv.x[cv.x <= jump_at]
    above = cv.x[cv.x >= jump_at]
    jump_lo = float(min(lo_q, below.max() if below.size else cv.x[0], jump_at))
    jump_hi = float(max(hi_q, above.min() if above.size else cv.x[-1], jump_at))

    # ---- seeds on their own
    seed_agreement = np.nan
    n_agree = 0
    if cv.seed_lists and len(cv.seed_lists) >= 2:
        shows = []
        if cv.seed_curves is not None:
            S = cv.seed_curves
            projs_k = [Projector.build(design(m.law, cv.x, m.grid), 1.0 / cv.v_seed) for m in models]
            mins_k, args_k = _fit_curve(models, projs_k, S)
            sc_k = _score(models, mins_k, n, cv.measured)
            for b in range(S.shape[0]):
                jb = int(sc_k["jump"][b])
                lin = projs_k[jb].coefs(S[b][None], args_k[jb][b])[0]
                th = assemble(models[jb].law, models[jb].grid[args_k[jb][b]][None], lin[None])[0]
                fk = models[jb].law.func(cv.x, *th)
                shows.append(bool(sc_k["delta_bic"][b] >= bic_margin and fk[-1] - fk[0] > 0))
        if not shows:
            for xs, ys in cv.seed_lists:
                ux = np.unique(xs)
                if ux.size < min_sizes:
                    shows.append(False)
                    continue
                se_s = np.sqrt(np.interp(np.log10(xs), np.log10(cv.x), cv.v_seed)) if cv.measured else None
                r = flag_curve(xs, ys, higher_is_better=True, stderr=se_s, n_boot=1, bic_margin=bic_margin,
                               min_sizes=min_sizes, min_side=0, grid_scale=grid_scale)
                shows.append(bool(np.isfinite(r["delta_bic"]) and r["delta_bic"] >= bic_margin
                                  and r["jump_size"] > 0))
        n_agree = int(np.sum(shows))
        seed_agreement = float(np.mean(shows))

    # ---- verdict
    flat = bool(bic[fi] - min(bic[si], bic[ji]) < flat_margin)
    abrupt = delta_bic >= bic_margin and lrt_p <= alpha
    significant = abrupt and bt_p <= alpha
    n_below = int(np.sum(cv.x < jump_at))
    n_above = int(np.sum(cv.x > jump_at))
    stats = (f"best jump model {jm.name} vs best smooth model {sm.name}: delta_bic={_fmt(delta_bic)} "
             f"(lrt_p={_fmt(lrt_p)}), breakthroughness={_fmt(bt)} (p={_fmt(bt_p)}), {n} sizes")
    if disp > 1.5:
        stats += f", measured noise scaled by a dispersion factor {_fmt(disp)}"
    if flat:
        verdict = "flat"
        evidence = (f"no model beats a constant by delta_bic >= {_fmt(flat_margin)} "
                    f"(range {_fmt(np.ptp(cv.y) * cv.scale)}, noise sd {_fmt(float(np.median(sd_noise)) * cv.scale)}); "
                    f"{stats}")
    elif abrupt and jump_size <= 0:
        verdict = "inconclusive"
        evidence = f"abrupt change is a drop, not an improvement (size {_fmt(jump_size)}); {stats}"
    elif abrupt and not significant:
        verdict = "inconclusive"
        evidence = (f"the jump model fits better, but breakthroughness is not unusual for the smooth model "
                    f"(p={_fmt(bt_p)} > {_fmt(alpha)}); {stats}")
    elif significant and (n_below < min_side or n_above < min_side):
        verdict = "inconclusive"
        evidence = (f"jump at {x_name}={_fmt(jump_at)} has {n_below} size(s) below and {n_above} above; at least "
                    f"{min_side} on each side are needed to tell it from one outlying size; {stats}")
    elif significant:
        verdict = "emergent"
        evidence = (f"jump of {_fmt(jump_size)} at {x_name}={_fmt(jump_at)} [{_fmt(jump_lo)}, {_fmt(jump_hi)}]; "
                    f"{stats}")
    else:
        verdict = "smooth"
        why = []
        if delta_bic < bic_margin:
            why.append(f"delta_bic {_fmt(delta_bic)} < {_fmt(bic_margin)}")
        if lrt_p > alpha:
            why.append(f"lrt_p {_fmt(lrt_p)} > {_fmt(alpha)}")
        evidence = f"a smooth law explains the curve ({'; '.join(why)}); {stats}"
    if np.isfinite(seed_agreement):
        evidence += f"; {n_agree} of {len(cv.seed_lists)} seeds show a jump on their own"
    evidence += note
    return {"x": x_name, "verdict": verdict, "jump_at": jump_at, "jump_lo": jump_lo, "jump_hi": jump_hi,
            "jump_size": jump_size, "breakthroughness": bt, "breakthroughness_p": bt_p, "delta_bic": delta_bic,
            "lrt_p": lrt_p, "seed_agreement": seed_agreement, "mirage": pd.NA, "n_sizes": int(n),
            "evidence": evidence, "delta_aicc": delta_aicc, "smooth_model": sm.name, "jump_model": jm.name,
            "noise_scale": disp}


# ------------------------------------------------------------------------------------------------ flag_emergence
def _measured_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that hold a measurement: status ok/imported, finite value, from a run that neither diverged nor failed."""
    bad_runs = df.loc[df["status"].isin(DROP_RUN_STATUSES), "run_id"].dropna().unique()
    keep = df["status"].isin(KEEP_STATUSES) & np.isfinite(df["value"].astype(float)) & ~df["run_id"].isin(bad_runs)
    return df[keep]


def _last_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's final checkpoint (max step per run_id); rows without a step count as one checkpoint."""
    step = df["step"].astype("Float64").fillna(-1.0)
    last = step.groupby(df["run_id"].fillna("<NA>")).transform("max")
    return df[step == last]


def _exact_match_from_tokens(em: pd.DataFrame, tok: pd.DataFrame, x: str, length) -> tuple[float, float, float]:
    """Exact match predicted from token accuracy as p^L at the largest x (Schaeffer et al. 2023, section 2: with
    independent per-token errors, a whole answer of L tokens is right with probability p^L).

    length: the answer length in tokens, or None to fit an effective L = argmin_L sum_x (EM_x - p_x^L)^2 over the
    sizes (a length far from the real one says the token errors are not independent). Returns (measured EM at the
    largest x, predicted EM there, L used).
    """
    a = em.groupby(x)["value"].mean()
    b = tok.groupby(x)["value"].mean()
    common = a.index.intersection(b.index)
    if len(common) == 0:
        return np.nan, np.nan, np.nan
    a, b = a.loc[common].sort_index(), b.loc[common].sort_index().clip(0.0, 1.0)
    if length is None or not np.isfinite(length):
        Ls = np.linspace(0.25, 64, 512)
        err = [np.sum((a.to_numpy() - b.to_numpy() ** L) ** 2) for L in Ls]
        length = float(Ls[int(np.argmin(err))])
    return float(a.iloc[-1]), float(b.iloc[-1] ** length), float(length)


def flag_emergence(df: pd.DataFrame, x: str = "n_params", *, answer_lengths: dict | None = None,
                   **options) -> pd.DataFrame:
    """Flag emergent jumps in a results table: one row per (task, metric), columns FLAG_COLUMNS + EXTRA_COLUMNS.

    df: a results table (analysis.schema). x: the axis, a numeric column of df. Along a size or compute axis
    (SIZE_AXES: n_params, n_params_nonembed, n_layer, d_model, flops, tokens) each run is one point, its final
    checkpoint; along any other column every checkpoint is a point. With x="loss" and no "loss" column, this is the
    loss view, `analysis.views.loss_view` (each checkpoint's held-out LM loss as x; Du et al. 2024).
    Rows whose status is not ok/imported or whose value is NaN are left out, and so are whole runs that diverged or
    failed. Seeds (the `seed` column) are averaged per x first; stderr feeds the noise estimate; each metric's
    direction comes from the metric registry (`analysis.schema.higher_is_better`).
    Every (task, metric) is judged, including the LM loss ("lm", "loss") and the mechanistic probe's metrics,
    except the LM loss against itself when x="loss".
    mirage (exact-match rows flagged emergent): True when the same task's continuous metrics (answer_nll,
    token_accuracy, edit_distance) are smooth and none jumps (the jump is likely an artefact of the all-or-nothing
    metric; Schaeffer et al. 2023), False when one of them jumps too, NA when none was judged. em_measured and
    em_predicted compare exact match at the largest x with token accuracy^L; L (answer_length) comes from
    `answer_lengths` {task: tokens} or an `answer_length` column, else it is fitted (see `_exact_match_from_tokens`).
    options go to `flag_curve` (n_boot, alpha, bic_margin, min_sizes, seed, ...).
    """
    if not isinstance(x, str):
        raise ValueError(f"x must be a column name, got {x!r}")
    if x == "loss" and isinstance(df, pd.DataFrame) and "loss" not in df.columns:
        from analysis.views import loss_view  # the loss view lives with the other views; it calls back into here

        return loss_view(df, **options)
    df_in = df
    df = schema.validate(df, where="flag_emergence input")
    if x not in df.columns:
        raise ValueError(f"x={x!r} is not a column of the results table; use one of {', '.join(SIZE_AXES)}, "
                         "'loss', or add the column")
    extra = [c for c in ("answer_length",) if isinstance(df_in, pd.DataFrame) and c in df_in.columns]
    xv = pd.to_numeric(df[x], errors="coerce")
    if df[x].notna().sum() and xv.notna().sum() < df[x].notna().sum():
        raise ValueError(f"column {x!r} must be numeric to serve as x")
    df = df.assign(**{x: xv.astype(float)})
    # a run's final checkpoint is chosen before unmeasured rows go: if its metric could not be measured there, the
    # run has no point for that metric (an earlier checkpoint is a less-trained model, not a stand-in)
    rows = _measured_rows(_last_checkpoints(df) if x in SIZE_AXES else df)
    rows = rows[np.isfinite(rows[x].to_numpy(float))]
    out = []
    keys = df[["task", "metric"]].dropna().drop_duplicates().sort_values(["task", "metric"])
    for task, metric in keys.itertuples(index=False):
        if x == "loss" and (task, metric) == ("lm", "loss"):
            continue
        hib = schema.higher_is_better(metric)
        g = rows[(rows["task"] == task) & (rows["metric"] == metric)]
        res = flag_curve(g[x].to_numpy(float), g["value"].to_numpy(float), higher_is_better=hib,
                         seeds=g["seed"].to_numpy(object) if g["seed"].notna().any() else None,
                         stderr=g["stderr"].to_numpy(float), x_name=x, **options)
        res.update({"task": task, "metric": metric})
        out.append(res)
    cols = FLAG_COLUMNS + EXTRA_COLUMNS
    flags = pd.DataFrame(out, columns=cols)
    flags["mirage"] = pd.Series([pd.NA] * len(flags), dtype="boolean")
    flags["em_measured"] = np.nan
    flags["em_predicted"] = np.nan
    flags["answer_length"] = np.nan
    # ---- mirage and the p^L comparison, task by task
    for i, r in flags.iterrows():
        spec = schema.METRICS.get(r["metric"])
        if spec is None or not spec.discontinuous:
            continue
        same = flags[(flags["task"] == r["task"]) & flags["metric"].isin(CONTINUOUS_FOR_MIRAGE)]
        judged = same[same["verdict"].isin(["smooth", "emergent"])]
        tok = rows[(rows["task"] == r["task"]) & (rows["metric"] == "token_accuracy")]
        em = rows[(rows["task"] == r["task"]) & (rows["metric"] == r["metric"])]
        if len(tok) and len(em):
            length = None
            if answer_lengths and r["task"] in answer_lengths:
                length = float(answer_lengths[r["task"]])
            elif extra:
                vals = pd.to_numeric(df_in.loc[(df_in["task"] == r["task"]), "answer_length"], errors="coerce")
                length = float(vals.median()) if vals.notna().any() else None
            m, p, L = _exact_match_from_tokens(em, tok, x, length)
            flags.loc[i, ["em_measured", "em_predicted", "answer_length"]] = [m, p, L]
        if r["verdict"] != "emergent":
            continue
        if judged.empty:
            note = "; mirage: NA (no continuous metric of this task could be judged)"
        elif (judged["verdict"] == "emergent").any():
            flags.loc[i, "mirage"] = False
            jumps = ", ".join(judged.loc[judged["verdict"] == "emergent", "metric"])
            note = f"; not a mirage: the continuous metric(s) {jumps} jump too"
        else:
            flags.loc[i, "mirage"] = True
            note = (f"; likely a mirage: the continuous metric(s) {', '.join(judged['metric'])} are smooth "
                    "(Schaeffer et al. 2023)")
        flags.loc[i, "evidence"] = str(r["evidence"]) + note
    flags["n_sizes"] = flags["n_sizes"].astype(int)
    return flags.reset_index(drop=True)
