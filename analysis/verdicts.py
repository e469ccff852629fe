"""Verdicts from the jump test: one curve (`flag_curve`), the runs of one size along training (`flag_along`), and
false-discovery-rate control across the rows of a table (`apply_fdr`).

`analysis.jumps` holds the definition, the noise model and the calibrated width test; this module turns its result
into a verdict row (the columns of `analysis.jumps.FLAG_COLUMNS` and `EXTRA_COLUMNS`) with the checks a verdict needs
(plateaus observed; spacing as evidence, never an override), the choice of noise model (one curve, or runs at
two levels judged by their share, `analysis.share`), the model-free cross-check, the per-run test, and an
evidence sentence generated from the numbers. `analysis.flags` (tables across sizes) and `analysis.views` (along
training, against loss) both build on it; it imports neither.

This module imports numpy, scipy and pandas only.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from scipy.special import expit

from analysis import jumps, perrun
from analysis.fmt import sentence as fmt
from analysis.jumps import ALPHA, EXTRA_COLUMNS, FLAG_COLUMNS, MIN_SIDE, MIN_SIZES, N_BOOT, W0, Curves
from analysis.options import FlagOptions
from analysis.perrun import loss_alignment
from analysis.share import share_test
from analysis.stats import benjamini_hochberg, breakthroughness, measurement_variance

CONTINUOUS_FOR_MIRAGE = ("answer_nll", "token_accuracy", "edit_distance")
# Axes along which a run is one point (its final checkpoint); along any other axis every checkpoint is a point.
SIZE_AXES = ("n_params", "n_params_nonembed", "n_layer", "d_model", "flops", "tokens")
LOSS_TASK, LOSS_METRIC = "lm", "loss"


DECADE_TOL = 1e-3  # decades: sizes 0.25 apart are not "more than 0.25" apart because of rounding in N
SEPARATION = 4.0  # Ashman's D of the two groups of runs below which no two-level model is tried without evidence


def noise_mode(per: dict, m: np.ndarray, ybar: np.ndarray) -> str:
    """Which noise model judges runs across sizes, from the per-run test (`analysis.perrun.per_run_test`), before any
    width is fitted:

    - "share": runs at two levels (per_run abrupt; or undetermined only because no size was caught mid-transition,
      with two well separated groups of runs): the share at the high level, binomial counts (`analysis.share`);
    - "both": undetermined although sizes were caught mid-transition, with two well separated groups: the data
      cannot say whether runs split or move together, so both models judge and each claim needs both
      (an intersection-union test, calibrated whichever is true);
    - "mean": one curve with between-run scatter (per_run gradual, or no two separated groups)."""
    if per.get("per_run") == "abrupt":
        return "share"
    sep = per.get("separation", np.nan)
    if per.get("per_run") != "undetermined" or not (np.isfinite(sep) and sep >= SEPARATION):
        return "mean"
    lo, hi = per["levels"]
    u = (np.asarray(ybar, float) - lo) / (hi - lo)
    mid = (u > 0.1) & (u < 0.9)
    if not mid.any() and np.any(m >= 3):
        return "share"
    return "both"


def _share_in_units(res: jumps.WidthTest, per: dict, t: np.ndarray, ybar: np.ndarray, m: np.ndarray,
                    lb: float, ub: float) -> jumps.WidthTest:
    """A share test's result with its floor and ceiling in the metric's (oriented) units, kept inside its bounds
    (lb, ub), each size's mean `ybar`, and the variance of that mean under the fitted share:
    E[y | N] = low + (high - low) pi(N)."""
    lo, hi = per["levels"]
    sd_lo, sd_hi = per["level_sd"]
    amp = hi - lo
    a, b = float(res.floor[0]), float(res.ceiling[0])
    pi = a + (b - a) * expit(jumps.LN9X2 * (t - res.t0[0]) / max(res.width, 1e-12))
    var_mean = (amp ** 2 * pi * (1 - pi) + (1 - pi) * sd_lo ** 2 + pi * sd_hi ** 2) / m
    return replace(res, floor=np.clip([lo + amp * a], lb, ub), ceiling=np.clip([lo + amp * b], lb, ub),
                   ybar=ybar, var_mean=var_mean)


def _intersect(a: jumps.WidthTest, b: jumps.WidthTest, prefer_a: bool) -> jumps.WidthTest:
    """Two models' results as one claim that needs both: the larger p-value each way, the union of the intervals;
    the estimates (width, location, levels, each size's mean) of the one the per-run test leans to."""
    base = a if prefer_a else b
    return replace(base, width_lo=min(a.width_lo, b.width_lo), width_hi=max(a.width_hi, b.width_hi),
                   t0_lo=np.minimum(a.t0_lo, b.t0_lo), t0_hi=np.maximum(a.t0_hi, b.t0_hi),
                   p_value=max(a.p_value, b.p_value), p_smooth=max(a.p_smooth, b.p_smooth),
                   p_flat=min(a.p_flat, b.p_flat), n_boot=min(a.n_boot, b.n_boot))


def _decide(res, p_flat, n_low, n_high, gap, w0, alpha, min_side, rise, width_text, size_word, unit,
            what: str = "point(s)", whose: str = "the") -> tuple[str, str, str]:
    """The verdict, its evidence sentence and its short reason (the `reason` column). Spacing is evidence, not an override: where the calibrated test rejects
    W >= W0 the rise is a jump however far apart the sizes are (the test's null already holds every rise W0 wide
    that fits between them); only where it cannot reject is wide spacing the reason it could not."""
    narrow = res.width_hi < w0 and res.p_value <= alpha
    wide_gap = gap > w0 / 2 + DECADE_TOL
    if p_flat > alpha:
        return ("flat", f"nothing rises beyond noise: the best curve beats a constant with p = {fmt(p_flat, 2)}",
                "no rise beyond noise")
    if narrow and n_low >= min_side and n_high >= min_side:
        why = f"a jump: {rise}; {width_text}"
        if wide_gap:
            why += (f"; {whose} {size_word} around the rise are {fmt(gap, 2)} {unit} apart, and the test rejects a "
                    "rise W0 wide across them")
        return "emergent", why, "narrower than W0"
    if narrow:
        side = "floor" if n_low < min_side else "ceiling"
        return "inconclusive", (f"narrower than W0, but {whose} {side} is not observed ({n_low} {what} on the floor, "
                                f"{n_high} on the ceiling; {min_side} each are needed): {rise}; {width_text}"), \
            f"{side} not observed"
    if res.width_lo > w0 and res.p_smooth <= alpha:
        return "smooth", f"a gradual rise: {rise}; {width_text}", "wider than W0"
    if wide_gap:
        return "inconclusive", (f"the test cannot tell, and {whose} {size_word} around the rise are {fmt(gap, 2)} "
                                f"{unit} apart, more than W0/2 = {fmt(w0 / 2, 2)}: too far apart to resolve W0; "
                                f"{rise}; {width_text}"), f"{size_word} too far apart"
    return "inconclusive", f"the interval of W straddles W0: {rise}; {width_text}", "W's interval straddles W0"


def _blank(x_name, verdict, evidence, n_sizes=0, n_runs=0, w0=W0, reason="") -> dict:
    row = {c: np.nan for c in FLAG_COLUMNS + EXTRA_COLUMNS if c not in ("task", "metric")}
    row.update(x=x_name, verdict=verdict, evidence=evidence, n_sizes=int(n_sizes), n_runs=int(n_runs), reason=reason,
               per_run="undetermined", mirage=pd.NA, loss_separates=pd.NA, share_by_size="", noise="", w0=w0,
               q_family="")
    return row


def _levels(bounds: tuple[float, float], y: np.ndarray) -> tuple[float, float]:
    """Where a fitted floor and ceiling may lie: inside the metric's bounds, and no further than half the observed
    range beyond the data (an unbounded metric's plateau is not extrapolated from a curve's far tail)."""
    if not np.size(y):
        return bounds
    lo, hi, span = float(np.min(y)), float(np.max(y)), float(np.ptp(y))
    return max(bounds[0], lo - 0.5 * span), min(bounds[1], hi + 0.5 * span)


def _bounds(bounds, hib: bool) -> tuple[float, float]:
    lo, hi = bounds if bounds is not None else (None, None)
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    return (lo, hi) if hib else (-hi, -lo)


# ---------------------------------------------------------------------------------------------------- flag_curve
def _binomial_measure(n, vm, sign, binomial_noise):
    """How a draw measures a run whose metric is a proportion: the share correct of its n examples (binomial),
    for the runs with a whole n whose given standard error is no larger than the binomial one; the others normal
    with their own variance `vm`. Levels and values are oriented (sign)."""
    n = np.asarray(n, float)
    whole = np.isfinite(n) & (n >= 1)
    nn = np.where(whole, np.round(n), 1).astype(np.int64)
    binom = whole & (np.abs(n - nn) < 1e-6) & binomial_noise
    sd = np.sqrt(vm)

    def measure(rng, level):
        p = np.clip(sign * level, 0.0, 1.0)
        out = sign * level + sd * rng.standard_normal(level.shape)
        return np.where(binom, sign * rng.binomial(nn, p) / nn, out)
    return measure


def flag_curve(x, y, *, higher_is_better: bool, seeds=None, stderr=None, n=None, bounds=None, loss=None,
               x_name: str = "x", w0: float = W0, alpha: float = ALPHA, n_boot: int = N_BOOT, seed: int = 0,
               min_sizes: int = MIN_SIZES, min_side: int = MIN_SIDE, axis: str = "log") -> dict:
    """Judge one curve: emergent, smooth, inconclusive or flat (see `analysis.jumps`).

    x, y: one value per measurement. With `seeds` (a label per measurement) and several measurements at some x,
    every measurement is one run and the curve judged is the mean of the runs at each x (across sizes); otherwise
    every measurement is a point of one curve. stderr, n: per-measurement standard error and number of examples
    (for a proportion, the binomial variance from n is a floor under stderr^2). bounds: (lo, hi) of the metric, in
    its own units (None for unbounded); fitted floors and ceilings stay inside. loss: optional held-out loss per
    measurement (run), for the loss at which runs acquire the ability. Returns a dict of the flag columns (without
    task and metric; `q_value` equals `p_value` for a single curve). Points with non-finite x or y, or x <= 0, are
    left out, and the evidence says how many. axis: "log" (widths in decades of x, the default), "linear" (widths in
    units of x) or "reversed" (units of x, lower x more capable: the loss view, where x is a loss in nats).
    """
    if axis not in ("log", "linear", "reversed"):
        raise ValueError(f"axis must be 'log', 'linear' or 'reversed', got {axis!r}")
    FlagOptions(w0=w0, alpha=alpha, n_boot=n_boot)  # the settings' one validation (OptionsError, a ValueError)
    if min_sizes < 3:
        raise ValueError(f"min_sizes must be at least 3, got {min_sizes!r}")
    x, y, se, nn, sd, ls, note = _finite_points(x, y, stderr, n, seeds, loss, axis)
    hib = bool(higher_is_better)
    yo = y if hib else -y
    lb, ub = _levels(_bounds(bounds, hib), yo)
    raw_lo, raw_hi = (bounds if bounds is not None else (None, None))
    bounded01 = raw_lo is not None and raw_hi is not None and raw_lo == 0 and raw_hi == 1
    vm = measurement_variance(y, se, nn, bounded01)
    t = np.log10(x) if axis == "log" else (x if axis == "linear" else -x)
    unit = "decades" if axis == "log" else f"units of {x_name}"
    ux, inv = np.unique(t, return_inverse=True)
    n_sizes = int(ux.size)
    if n_sizes < min_sizes:
        return _blank(x_name, "inconclusive", f"{n_sizes} distinct {x_name} value(s): at least {min_sizes} are "
                      f"needed to judge a rise{note}", n_sizes, x.size, w0,
                      f"not enough data: {n_sizes} {x_name} value(s), {min_sizes} needed")
    if not np.ptp(y) < 1e150 or not np.ptp(t) < 1e150:  # its square (a variance) must be finite too
        raise ValueError("the values span a range too large to represent; rescale the metric")
    if np.ptp(y) == 0:
        r = _blank(x_name, "flat", f"all {y.size} values are identical ({fmt(y[0])}){note}", n_sizes, x.size, w0,
                   "all values identical")
        r["breakthroughness"] = 0.0
        return r
    m = np.bincount(inv).astype(float)
    runs_mode = sd is not None and np.any(m > 1)
    measured = bool(np.any(vm > 0))
    if runs_mode and not measured:
        vm = np.zeros_like(vm)
    curves = _curves(runs_mode, measured, bounded01, hib, t, ux, inv, m, y, yo, vm, se, nn, lb, ub)
    res, res_mean, res_share, per, mode = _width(curves, runs_mode, ux, inv, yo, vm, m, lb, ub, w0, n_boot, seed)

    # ---- the curve and its checks, in the metric's own units
    if runs_mode:
        ybar, var_mean = res.ybar, res.var_mean
    else:
        ybar = np.bincount(inv, weights=yo) / m
        var_mean = res.dispersion * (np.bincount(inv, weights=vm) / m ** 2 if measured else np.ones(n_sizes) / m)
    s_size = expit(jumps.LN9X2 * (ux - res.t0[0]) / res.width)
    n_low, n_high, gap = perrun.plateaus_and_gap(ux, s_size, w0)
    F, C = float(res.floor[0]), float(res.ceiling[0])
    floor_u, ceil_u = (F, C) if hib else (-F, -C)
    step, allowed, step_p = perrun.steepest_step(ux, ybar, var_mean, F, C, w0)
    bt = float(breakthroughness(ybar))
    share, share_w, share_why, align = _runs_summary(runs_mode, per, ux, ls)

    # ---- verdict
    p_flat = res.p_flat
    W, Wlo, Whi = res.width, res.width_lo, res.width_hi
    jump_at, jlo, jhi = _to_x(res.t0[0], res.t0_lo[0], res.t0_hi[0], axis)
    noise = _noise_text(mode, runs_mode, measured, hib, res, res_mean, res_share, per)
    size_word = "sizes" if x_name in SIZE_AXES else "points"
    width_text = (f"W = {fmt(W, 2)} {unit} [{fmt(Wlo, 2)}, {fmt(Whi, 2)}] against W0 = {fmt(w0, 2)} "
                  f"(p = {fmt(res.p_value, 2)} for W < W0, {fmt(res.p_smooth, 2)} for W > W0; parametric bootstrap, "
                  f"{res.n_boot} draws at W = W0)")
    rise_text = (f"{'rises' if hib else 'falls'} from {fmt(floor_u)} to {fmt(ceil_u)} around {x_name} = {fmt(jump_at)} "
                 f"[{fmt(jlo)}, {fmt(jhi)}]")
    verdict, why, reason = _decide(res, p_flat, n_low, n_high, gap, w0, alpha, min_side, rise_text, width_text,
                                   size_word, unit, what="point(s)")
    if p_flat > alpha:
        why += f" (range {fmt(np.ptp(y))})"
    runs_text = (f"{n_sizes} {size_word} x {fmt(np.median(m), 2)} runs" if runs_mode
                 else f"{n_sizes} {size_word}")
    evidence = f"{verdict}: {why}; {runs_text}" + _step_text(step, allowed, step_p)
    if runs_mode:
        evidence += _runs_text(per, share, share_w, share_why, unit)
    evidence += _loss_text(align) + note
    return {"x": x_name, "verdict": verdict, "jump_at": jump_at, "jump_lo": jlo, "jump_hi": jhi, "width": W,
            "width_lo": Wlo, "width_hi": Whi, "n_sizes": n_sizes, "n_runs": int(x.size), "per_run": per["per_run"],
            "p_value": res.p_value, "q_value": res.p_value, "breakthroughness": bt, "mirage": pd.NA,
            "loss_at_jump": align["loss_at_jump"], "evidence": evidence, "reason": reason, "w0": w0, "floor": floor_u,
            "ceiling": ceil_u, "p_smooth": res.p_smooth, "p_flat": p_flat, "step_max": step,
            "step_allowed": allowed, "step_p": step_p, "share_by_size": share, "share_width": share_w,
            "per_run_p": per.get("per_run_p", np.nan),
            "loss_separates": pd.NA if align["loss_separates"] is None else bool(align["loss_separates"]),
            "em_measured": np.nan, "em_predicted": np.nan, "answer_length": np.nan, "noise": noise, "q_family": "",
            "_transition": _transition_span(ux, ybar, F, C)}


def _finite_points(x, y, stderr, n, seeds, loss, axis: str) -> tuple:
    """flag_curve's inputs as flat arrays, one value per point, without the points whose x or y is missing or not
    finite (or x <= 0 on a log axis): (x, y, stderr, n, seeds, loss, note), the last four None where not given and
    note the evidence's words on the points left out ("" when none were)."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")

    def per_point(a, name):
        if a is None:
            return None
        a = np.asarray(a, dtype=object if name == "seeds" else float).ravel()
        if a.shape != x.shape:
            raise ValueError(f"{name} must have one value per point, got {a.size} for {x.size} points")
        return a

    se, nn, sd, ls = per_point(stderr, "stderr"), per_point(n, "n"), per_point(seeds, "seeds"), per_point(loss, "loss")
    ok = np.isfinite(x) & np.isfinite(y) & ((x > 0) if axis == "log" else True)
    dropped = int(x.size - ok.sum())
    note = (f" ({dropped} point(s) with missing values{' or x <= 0' if axis == 'log' else ''} left out)"
            if dropped else "")
    kept = [None if a is None else a[ok] for a in (se, nn, sd, ls)]
    return (x[ok], y[ok], *kept, note)


def _curves(runs_mode: bool, measured: bool, bounded01: bool, hib: bool, t, ux, inv, m, y, yo, vm, se, nn,
            lb: float, ub: float) -> Curves:
    """What the width test fits: the runs at each size (each measured as a proportion of its n examples where the
    metric is one), or one curve of points in order of x."""
    if runs_mode:
        vm_of = measure = None
        if measured and bounded01 and nn is not None and np.isfinite(nn).any():  # binomial: follows the value
            sign = 1.0 if hib else -1.0
            vm_of = lambda Y: measurement_variance(sign * Y, se, nn, True)  # noqa: E731
            measure = _binomial_measure(nn, vm, sign, vm <= 1.05 * measurement_variance(y, None, nn, True))
        return Curves("runs", [ux], lb, ub, size_of_run=inv, run_y=yo, run_vm=vm, m=m, vm_of=vm_of,
                      measure=measure)
    order = np.argsort(t, kind="stable")
    return Curves("single", [t[order]], lb, ub, y=[yo[order]], vm=[vm[order]], measured=measured)


def _width(curves: Curves, runs_mode: bool, ux, inv, yo, vm, m, lb: float, ub: float, w0: float, n_boot: int,
           seed: int) -> tuple:
    """The width test under the noise model the per-run test picks before any width is fitted (`noise_mode`): runs
    at two levels (the share of runs at the high one, binomial counts) or one curve with between-run scatter.
    Returns (the result judged, the one-level result, the share's result, the per-run test, the mode); a model
    that was not fitted is None."""
    per, mode = {"per_run": "undetermined", "per_run_p": np.nan, "why": "one run per size"}, "mean"
    if runs_mode:
        ybar0 = np.bincount(inv, weights=yo) / m
        per = perrun.per_run_test(inv, yo, vm, ybar0, float(ybar0.min()), float(ybar0.max()), seed=seed)
        mode = noise_mode(per, m, ybar0)
    res_mean = jumps.width_test(curves, w0=w0, n_boot=n_boot, seed=seed) if mode != "share" else None
    res, res_share = res_mean, None
    if mode != "mean":
        res_share = share_test(ux, per["k"], per["m"], w0=w0, n_boot=n_boot, seed=seed)
        res = _share_in_units(res_share, per, ux, ybar0, m, lb, ub)
        if mode == "both":
            res = _intersect(res, res_mean, prefer_a=bool(per["per_run_p"] <= per["p_gradual"]))
    return res, res_mean, res_share, per, mode


def _runs_summary(runs_mode: bool, per: dict, ux, ls) -> tuple[str, float, str, dict]:
    """The runs that acquired it at each size ("k/m ..."), the width of that share's rise and why it has none, and
    the held-out loss that separates the runs that acquired it (`analysis.perrun.loss_alignment`)."""
    share, share_w, share_why = "", np.nan, ""
    align = {"loss_at_jump": np.nan, "loss_separates": None}
    if runs_mode:
        share = " ".join(f"{int(k)}/{int(mm)}" for k, mm in zip(per["k"], per["m"]))
        share_w, share_why = perrun.share_rise(ux, per["k"], per["m"])
        if ls is not None and np.isfinite(ls).any():
            align = loss_alignment(per["acquired"], ls)
    return share, share_w, share_why, align


# ------------------------------------------------------------------------------------------ the evidence sentence
def _noise_text(mode: str, runs_mode: bool, measured: bool, hib: bool, res, res_mean, res_share, per: dict) -> str:
    """The `noise` column: which noise model judged the curve, in words (`noise_mode`)."""
    if mode == "mean":
        noise = ("runs per size: binomial per run + between-run variance at each size, moderated "
                 f"(phi {fmt(res.phi, 2)})" if runs_mode else
                 ("one point per x: measurement error x residual dispersion" if measured
                  else "one point per x: residual variance (no measurement error given)"))
    else:
        (lo_l, hi_l), (lo_sd, hi_sd) = per["levels"], per["level_sd"]
        sgn = 1.0 if hib else -1.0
        noise = (f"runs at two levels ({fmt(sgn * lo_l)} sd {fmt(lo_sd, 2)} and {fmt(sgn * hi_l)} sd {fmt(hi_sd, 2)}, "
                 "each measured from its own runs): the share at the high level as binomial counts per size")
        if mode == "both":
            noise += ("; per run undetermined, so the one-level model (between-run variance at each size, phi "
                      f"{fmt(res_mean.phi, 2)}) must agree: each bound and p-value is the more cautious of the two "
                      f"(W = {fmt(res_share.width, 2)} from the share, {fmt(res_mean.width, 2)} from one level; the "
                      f"estimate shown is the {'share' if per['per_run_p'] <= per['p_gradual'] else 'one-level'} "
                      "model's, which the per-run test leans to)")
    if res.dispersion > 1.5:
        noise += f"; dispersion {fmt(res.dispersion, 3)}"
    return noise


def _step_text(step: float, allowed: float, step_p: float) -> str:
    """The evidence's clause on the steepest step between adjacent sizes ("" where there is none)."""
    if not np.isfinite(step):
        return ""
    return f"; steepest step {fmt(step, 2)} of the amplitude where W0 allows {fmt(allowed, 2)} (p = {fmt(step_p, 2)})"


def _runs_text(per: dict, share: str, share_w: float, share_why: str, unit: str) -> str:
    """The evidence's clauses on the runs at each size: the per-run test and the share of runs that acquired it."""
    text = f"; per run: {per['per_run']}"
    if np.isfinite(per.get("per_run_p", np.nan)):
        text += f" (two levels vs one: p = {fmt(per['per_run_p'], 2)}, reverse p = {fmt(per['p_gradual'], 2)})"
    elif per.get("why"):
        text += f" ({per['why']})"
    text += f"; runs that acquired it per size: {share}"
    if np.isfinite(share_w):
        text += f", rising over {fmt(share_w, 2)} {unit}"
    else:
        text += {"adjacent": ", rising between adjacent sizes", "wide": ", barely rising over the sizes measured",
                 "no rise": ""}[share_why]
    return text


def _loss_text(align: dict) -> str:
    """The evidence's clause on the held-out loss at which runs acquire it ("" without losses)."""
    if align["loss_separates"] is None:
        return ""
    if align["loss_separates"]:
        return (f"; held-out loss {fmt(align['loss_at_jump'])} separates the runs that acquired it from "
                f"those that did not ({align['n']} runs)")
    return (f"; no single held-out loss separates the runs that acquired it (the best, "
            f"{fmt(align['loss_at_jump'])}, misplaces {align['errors']} of {align['n']})")


def flag_along(runs: list[dict], *, higher_is_better: bool, bounds=None, x_name: str = "tokens", w0: float = W0,
               alpha: float = ALPHA, n_boot: int = N_BOOT, seed: int = 0, min_sizes: int = MIN_SIZES,
               min_side: int = MIN_SIDE) -> list[dict]:
    """Judge the curves of several runs along training together: they share one width W (the runs of one model
    size learn at the same sharpness) and each keeps its own floor, ceiling and location (a seed moves when a run
    acquires the ability, not how abruptly). One result per run, in the order given.

    runs: dicts with "x" (checkpoints' tokens, steps or FLOPs) and "y", and optionally "stderr" and "n". A run with
    fewer than `min_sizes` checkpoints with x > 0 is judged `inconclusive` on its own and left out of the fit.
    The width's bounds and p-values are those of the joint fit; the verdict of each run also needs its own floor and
    ceiling observed; checkpoints around its rise more than W0/2 apart are named as the reason only where the test
    cannot reject.
    """
    hib = bool(higher_is_better)
    lb, ub = _bounds(bounds, hib)
    raw_lo, raw_hi = (bounds if bounds is not None else (None, None))
    bounded01 = raw_lo is not None and raw_hi is not None and raw_lo == 0 and raw_hi == 1
    out: list[dict | None] = [None] * len(runs)
    ts, ys, vms, idx = [], [], [], []
    for k, r in enumerate(runs):
        x = np.asarray(r["x"], float)
        y = np.asarray(r["y"], float)
        se = r.get("stderr")
        nn = r.get("n")
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
        n_pts = int(np.unique(x[ok]).size)
        if n_pts < min_sizes:
            out[k] = _blank(x_name, "inconclusive", f"{n_pts} checkpoint(s) with {x_name} > 0: at least "
                            f"{min_sizes} are needed to judge a rise", n_pts, n_pts, w0,
                            f"not enough data: {n_pts} checkpoint(s), {min_sizes} needed")
            continue
        order = np.argsort(x[ok], kind="stable")
        vm = measurement_variance(y[ok], None if se is None else np.asarray(se, float)[ok],
                                  None if nn is None else np.asarray(nn, float)[ok], bounded01)
        ts.append(np.log10(x[ok][order]))
        ys.append((y[ok] if hib else -y[ok])[order])
        vms.append(vm[order])
        idx.append(k)
    if not idx:
        return out
    if any(not np.ptp(y) < 1e150 or not np.ptp(t) < 1e150 for y, t in zip(ys, ts)):
        raise ValueError("the values span a range too large to represent; rescale the metric")
    if all(np.ptp(y) == 0 for y in ys):
        for k in idx:
            out[k] = _blank(x_name, "flat", "every value of every run is the same", len(runs[k]["x"]), 1, w0,
                            "all values identical")
        return out
    measured = all(np.any(v > 0) for v in vms)
    lb, ub = _levels((lb, ub), np.concatenate(ys))
    curves = Curves("single", ts, lb, ub, y=ys, vm=vms, measured=measured)
    res = jumps.width_test(curves, w0=w0, n_boot=n_boot, seed=seed)
    width_text = (f"W = {fmt(res.width, 2)} decades [{fmt(res.width_lo, 2)}, {fmt(res.width_hi, 2)}], shared by "
                  f"{len(idx)} run(s), against W0 = {fmt(w0, 2)} (p = {fmt(res.p_value, 2)} for W < W0, "
                  f"{fmt(res.p_smooth, 2)} for W > W0; parametric bootstrap, {res.n_boot} draws at W = W0)")
    for j, k in enumerate(idx):
        t, y = ts[j], ys[j]
        s_fit = expit(jumps.LN9X2 * (t - res.t0[j]) / res.width)
        n_low, n_high, gap = perrun.plateaus_and_gap(t, s_fit, w0)
        F, C = float(res.floor[j]), float(res.ceiling[j])
        floor_u, ceil_u = (F, C) if hib else (-F, -C)
        at, lo, hi = 10 ** res.t0[j], 10 ** res.t0_lo[j], 10 ** res.t0_hi[j]
        rise = (f"{'rises' if hib else 'falls'} from {fmt(floor_u)} to {fmt(ceil_u)} around {x_name} = {fmt(at)} [{fmt(lo)}, {fmt(hi)}]")
        verdict, why, reason = _decide(res, res.p_flat, n_low, n_high, gap, w0, alpha, min_side, rise, width_text,
                                       "checkpoints", "decades", what="checkpoint(s)", whose="this run's")
        out[k] = {"x": x_name, "verdict": verdict, "jump_at": at, "jump_lo": lo, "jump_hi": hi, "width": res.width,
                  "width_lo": res.width_lo, "width_hi": res.width_hi, "n_sizes": int(t.size), "n_runs": 1,
                  "per_run": "undetermined", "p_value": res.p_value, "q_value": res.p_value,
                  "breakthroughness": float(breakthroughness(y)), "mirage": pd.NA, "loss_at_jump": np.nan,
                  "evidence": f"{verdict}: {why}; {t.size} checkpoints", "reason": reason, "w0": w0,
                  "floor": floor_u,
                  "ceiling": ceil_u, "p_smooth": res.p_smooth, "p_flat": res.p_flat, "step_max": np.nan,
                  "step_allowed": np.nan, "step_p": np.nan, "share_by_size": "", "share_width": np.nan,
                  "per_run_p": np.nan, "loss_separates": pd.NA, "em_measured": np.nan, "em_predicted": np.nan,
                  "answer_length": np.nan, "q_family": "",
                  "noise": ("measurement error x residual dispersion" if measured else "residual variance")
                  + (f"; dispersion {fmt(res.dispersion, 3)}" if res.dispersion > 1.5 else "")}
    return out


def _to_x(t0, lo, hi, axis):
    """A location and its interval from the test's axis back to x."""
    if axis == "log":
        return 10 ** t0, 10 ** lo, 10 ** hi
    if axis == "linear":
        return t0, lo, hi
    return -t0, -hi, -lo


def _transition_span(t, ybar, F, C) -> np.ndarray:
    """[lo, hi] in log10 x: the rise's span around its steepest step between adjacent sizes, from the last size
    still on the floor (mean within 10% of the amplitude) to the first on the ceiling (within 10%); empty when the
    curve does not rise."""
    if not C > F or t.size < 2:
        return np.array([])
    u = (ybar - F) / (C - F)
    j = int(np.argmax(np.diff(u)))
    low = np.where(u[: j + 1] <= 0.1)[0]
    high = np.where(u[j + 1:] >= 0.9)[0]
    lo = int(low.max()) if low.size else 0
    hi = j + 1 + int(high.min()) if high.size else t.size - 1
    return np.array([t[lo], t[hi]])


def apply_fdr(rows: pd.DataFrame, alpha: float = ALPHA, groups=None, families=None) -> pd.DataFrame:
    """q-values across the rows (each group of rows counts as one test when `groups` is given; with `families`, a
    label per row, Benjamini-Hochberg runs within each family apart), and an emergent verdict that does not survive
    them becomes inconclusive, with the reason in its evidence."""
    if not len(rows):
        rows["q_value"] = pd.Series(dtype=float)
        return rows
    fam = pd.Series(["all"] * len(rows) if families is None else list(families), index=rows.index, dtype=object)
    p = rows["p_value"].to_numpy(float)
    q = np.full(len(rows), np.nan)
    n_tests = {}
    for f in pd.unique(fam):
        sel = (fam == f).to_numpy()
        idx = np.where(sel)[0]
        if groups is None:
            q[idx] = benjamini_hochberg(p[idx])
            n_tests[f] = int(np.isfinite(p[idx]).sum())
        else:
            g = pd.Series(list(groups), dtype=object).iloc[idx].reset_index(drop=True)
            first = ~g.duplicated().to_numpy()
            qg = benjamini_hochberg(p[idx][first])
            lookup = dict(zip(g[first], qg))
            q[idx] = [lookup[x] for x in g]
            n_tests[f] = int(g[np.isfinite(p[idx])].nunique())
    rows = rows.copy()
    rows["q_value"] = q
    lost = (rows["verdict"] == "emergent") & ~(rows["q_value"] <= alpha)
    for i in rows.index[lost]:
        where = (f"the table's {n_tests[fam[i]]} tests" if families is None else
                 f"the {n_tests[fam[i]]} test(s) of its family ({fam[i]})")
        rows.loc[i, "verdict"] = "inconclusive"
        rows.loc[i, "reason"] = "narrower than W0, not significant in its family"
        rows.loc[i, "evidence"] = ("inconclusive: " + str(rows.loc[i, "evidence"]).split(": ", 1)[-1]
                                   + f"; not significant across {where} (q = "
                                   f"{fmt(rows.loc[i, 'q_value'], 2)} > {fmt(alpha, 2)}, Benjamini-Hochberg)")
    return rows
