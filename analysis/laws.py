"""Scaling laws: pure curve functions, their parameter names, bounds and grids of starting values.

Each law follows lmfit's shape (STYLE.md, 9): a pure function whose docstring gives the formula and its source, the
names of its parameters, a grid of starting values, and default bounds. `analysis.fit.fit_law` fits any of them and
`analysis.solver.guess` gives starting values from the grid. This module is data only: it imports nothing from
`analysis.fit` (which depends on it).

Every law here is *separable*: some parameters enter linearly (an offset, an amplitude) and the rest non-linearly
(exponents, locations). Given the non-linear ones, the linear ones are solved exactly by least squares; that is
variable projection (Golub & Pereyra 1973, "The differentiation of pseudo-inverses and nonlinear least squares
problems whose variables separate", SIAM J. Numer. Anal. 10:413). `basis(x, *nonlinear)` returns the columns that
multiply the linear parameters, and `grid(x)` a grid of non-linear starting values; together they make fits fast
(a whole grid of starts costs one batched projection) and stable (no starting value is needed for amplitudes).

x is a 1-D array of positive numbers (model size, tokens, FLOPs, loss), except for `chinchilla`, whose x is a pair
(N, D) stacked as an array of shape (2, n). Parameters broadcast: pass arrays of shape (B, 1) to evaluate B parameter
sets at once, which the bootstrap uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import expit

LN10 = float(np.log(10.0))


@dataclass(frozen=True)
class Law:
    """A curve family y = func(x, *params), separable into linear and non-linear parameters.

    params: all parameter names, in the order `func` takes them.
    linear: the names that enter linearly; `basis(x, *nonlinear)` returns the matching columns, so that
        func(x, *params) == basis(x, *nonlinear) @ [linear values].
    nonlinear: the others, in order. `positive` lists the non-linear ones that are strictly positive and are searched
        on a log10 scale (locations in x units, sharpness).
    bounds(x): default (low, high) for each non-linear parameter, given the data's x.
    grid(x, bounds): an array (G, len(nonlinear)) of starting values covering those bounds.
    location: the parameter that says where the curve changes regime, in x units (jump models), or None.
    levels: the linear parameters that are values of y the curve reaches (an asymptote, a floor, a ceiling, a flat
        level); `fit_law(..., y_bounds=(lo, hi))` keeps them inside the metric's range.
    """

    name: str
    params: tuple[str, ...]
    linear: tuple[str, ...]
    func: Callable[..., np.ndarray]
    basis: Callable[..., np.ndarray]
    bounds: Callable[[np.ndarray], dict[str, tuple[float, float]]]
    grid_sizes: dict[str, int]
    formula: str
    source: str
    positive: tuple[str, ...] = ()
    location: str | None = None
    levels: tuple[str, ...] = ()
    n_inputs: int = 1
    log_x: bool = True  # the law needs x > 0 (it uses log x or a power of x)
    extra: dict = field(default_factory=dict)  # "lm_starts": how many distinct grid points fit_law refines (3)

    @property
    def nonlinear(self) -> tuple[str, ...]:
        return tuple(p for p in self.params if p not in self.linear)

    def grid(self, x: np.ndarray, bounds: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
        """A full-factorial grid of non-linear starting values, (G, n_nonlinear); log-spaced for positive ones."""
        b = self.bounds(x) if bounds is None else {**self.bounds(x), **bounds}
        axes = []
        for name in self.nonlinear:
            lo, hi = b[name]
            m = self.grid_sizes.get(name, 9)
            if name in self.positive:
                axes.append(np.logspace(np.log10(lo), np.log10(hi), m))
            else:
                axes.append(np.linspace(lo, hi, m))
        if not axes:
            return np.zeros((1, 0))
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def __call__(self, x, *params):
        return self.func(x, *params)


def _span(x: np.ndarray) -> tuple[float, float, float]:
    """log10 of the smallest and largest x and the range in decades (at least 0.1 to keep grids non-degenerate)."""
    t = np.log10(np.asarray(x, dtype=float).ravel())
    lo, hi = float(np.min(t)), float(np.max(t))
    return lo, hi, max(hi - lo, 0.1)


def _ones_like(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.ones(1), np.broadcast_shapes(np.shape(x), np.shape(like)))


# ---------------------------------------------------------------------------------------------------------- power
def power(x, E, A, alpha):
    """Power law with an irreducible term: y = E + A * x^(-alpha).

    Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", eq. 1.1-1.3) and Hoffmann et al. 2022 (the
    one-variable form of their eq. 2). E is the limit as x grows; with A < 0 the same form rises towards a ceiling E.
    """
    x = np.asarray(x, dtype=float)
    return E + A * np.power(x, -np.asarray(alpha, dtype=float))


def _power_basis(x, alpha):
    x = np.asarray(x, dtype=float)
    g = np.power(x, -np.asarray(alpha, dtype=float))
    return np.stack([_ones_like(x, g), g], axis=-1)


# ----------------------------------------------------------------------------------------------------- chinchilla
def chinchilla(X, E, A, B, alpha, beta):
    """Chinchilla loss law: L(N, D) = E + A / N^alpha + B / D^beta.

    Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", eq. 2 (approach 3). X is (N, D):
    parameters and training tokens, shape (2, n).
    """
    X = np.asarray(X, dtype=float)
    return E + A * np.power(X[0], -np.asarray(alpha, dtype=float)) + B * np.power(X[1], -np.asarray(beta, dtype=float))


def _chinchilla_basis(X, alpha, beta):
    X = np.asarray(X, dtype=float)
    gn = np.power(X[0], -np.asarray(alpha, dtype=float))
    gd = np.power(X[1], -np.asarray(beta, dtype=float))
    gn, gd = np.broadcast_arrays(gn, gd)
    return np.stack([np.ones_like(gn), gn, gd], axis=-1)


# ------------------------------------------------------------------------------------------------------- logistic
def _sigmoid_log(x, k, x0):
    """1 / (1 + (x/x0)^(-k)) = expit(k ln10 (log10 x - log10 x0)), computed without overflow."""
    x = np.asarray(x, dtype=float)
    return expit(np.asarray(k, dtype=float) * (np.log(x) - np.log(np.asarray(x0, dtype=float))))


def logistic(x, floor, ceiling, k, x0):
    """Logistic in log10 x with a floor and a ceiling: y = floor + (ceiling - floor) / (1 + (x / x0)^(-k)).

    Equivalently floor + (ceiling - floor) * sigmoid(k ln10 (log10 x - log10 x0)): a sigmoid in log x, the usual
    description of an emergent ability's curve (Wei et al. 2022, "Emergent Abilities of Large Language Models";
    fitted in this form by e.g. Ruan et al. 2024, "Observational Scaling Laws", eq. 5). x0 is the midpoint (x units),
    k the sharpness: the rise from 10% to 90% of the jump spans 2 log10(9) / k = 1.91 / k decades of x.
    """
    s = _sigmoid_log(x, k, x0)
    return floor + (ceiling - floor) * s


def _logistic_basis(x, k, x0):
    s = _sigmoid_log(x, k, x0)
    return np.stack([1.0 - s, s], axis=-1)


# ----------------------------------------------------------------------------------------------------- saturating
def saturating(x, a, b, s):
    """Hyperbolic saturation: y = a + b * x / (x + s).

    The Michaelis-Menten / Hill (coefficient 1) curve (Michaelis & Menten 1913; Hill 1910): it rises like x^1 well
    below s and approaches a + b like b s / x well above it. In log x it is the `logistic` with k fixed at 1, so the
    10-90% rise spans 1.91 decades: the smooth benchmark a sharper jump has to beat.
    """
    return a + b * _sigmoid_log(x, 1.0, s)


def _saturating_basis(x, s):
    g = _sigmoid_log(x, 1.0, s)
    return np.stack([_ones_like(x, g), g], axis=-1)


# ---------------------------------------------------------------------------------------------------------- hinge
def hinge(x, a, b, h):
    """Flat, then linear in log10 x past a knee h: y = a + b * max(0, log10(x / h)).

    The piecewise-linear shape of "near chance below a scale, then improving" (Wei et al. 2022, Fig. 2); a broken-
    stick regression (e.g. Muggeo 2003, "Estimating regression models with unknown break-points", Stat. Med. 22).
    """
    x = np.asarray(x, dtype=float)
    return a + b * np.maximum(0.0, np.log10(x) - np.log10(np.asarray(h, dtype=float)))


def _hinge_basis(x, h):
    x = np.asarray(x, dtype=float)
    g = np.maximum(0.0, np.log10(x) - np.log10(np.asarray(h, dtype=float)))
    return np.stack([_ones_like(x, g), g], axis=-1)


# ----------------------------------------------------------------------------------------------------- linear_log
def linear_log(x, a, b):
    """Linear in log10 x: y = a + b * log10(x). The simplest smooth trend on a log axis."""
    return a + b * np.log10(np.asarray(x, dtype=float))


def _linear_log_basis(x):
    t = np.log10(np.asarray(x, dtype=float))
    return np.stack([np.ones_like(t), t], axis=-1)


# ------------------------------------------------------------------------------------------------------- constant
def constant(x, a):
    """y = a: no dependence on x (the 'flat' reference model)."""
    return a + 0.0 * np.asarray(x, dtype=float)


def _constant_basis(x):
    return np.ones(np.shape(x) + (1,))


# ----------------------------------------------------------------------------------------------------------- bnsl
def _bnsl_log_g(x, c0, breaks):
    """log of x^(-c0) * prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i), using log1p(exp(z)) = logaddexp(0, z)."""
    lx = np.log(np.asarray(x, dtype=float))
    out = -np.asarray(c0, dtype=float) * lx
    for c, d, f in breaks:
        f = np.asarray(f, dtype=float)
        z = (lx - np.log(np.asarray(d, dtype=float))) / f
        out = out - np.asarray(c, dtype=float) * f * np.logaddexp(0.0, z)
    return np.clip(out, -700.0, 700.0)


def _bnsl_breaks(rest):
    return [tuple(rest[3 * i:3 * i + 3]) for i in range(len(rest) // 3)]


def bnsl_law(n_breaks: int = 1) -> Law:
    """Broken neural scaling law with `n_breaks` breaks (Caballero et al. 2022, "Broken Neural Scaling Laws", eq. 1):

        y = a + b * x^(-c0) * prod_{i=1..n} (1 + (x / d_i)^(1 / f_i))^(-c_i * f_i)

    Each break i at x = d_i changes the log-log slope by c_i; f_i sets how sharp the break is (small f: sharp).
    """
    if not isinstance(n_breaks, (int, np.integer)) or n_breaks < 1:
        raise ValueError(f"bnsl needs a whole number of breaks >= 1, got {n_breaks!r}")
    names = ["a", "b", "c0"]
    for i in range(1, n_breaks + 1):
        names += [f"c{i}", f"d{i}", f"f{i}"]

    def func(x, a, b, c0, *rest):
        return a + b * np.exp(_bnsl_log_g(x, c0, _bnsl_breaks(rest)))

    def basis(x, c0, *rest):
        g = np.exp(_bnsl_log_g(x, c0, _bnsl_breaks(rest)))
        return np.stack([_ones_like(x, g), g], axis=-1)

    def bounds(x):
        lo, hi, r = _span(x)
        b = {"c0": (-1.0, 3.0)}
        for i in range(1, n_breaks + 1):
            b[f"c{i}"] = (-2.0, 6.0)
            b[f"d{i}"] = (10 ** lo, 10 ** hi)
            b[f"f{i}"] = (0.02, 2.0)
        return b

    sizes = {"c0": 5}
    for i in range(1, n_breaks + 1):
        sizes.update({f"c{i}": 5, f"d{i}": 9, f"f{i}": 3})
    func.__doc__ = bnsl_law.__doc__
    return Law(
        name="bnsl" if n_breaks == 1 else f"bnsl{n_breaks}", params=tuple(names), linear=("a", "b"), func=func,
        basis=basis, bounds=bounds, grid_sizes=sizes,
        formula="y = a + b x^(-c0) prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i)",
        source="Caballero et al. 2022, Broken Neural Scaling Laws, eq. 1",
        positive=tuple(n for n in names if n[0] in "df"), location="d1", levels=("a",),
        # its least-squares objective has many local minima (Caballero et al. 2022, appendix A.6 fit from a wide
        # grid): refine more of the best grid points than the other laws need
        extra={"lm_starts": 24})


def _power_bounds(x):
    return {"alpha": (0.0, 3.0)}


def _chinchilla_bounds(X):
    return {"alpha": (0.0, 2.0), "beta": (0.0, 2.0)}


def _logistic_bounds(x):
    lo, hi, r = _span(x)
    pad = max(1.0, 0.5 * r)  # a midpoint beyond the data is allowed (backtests extrapolate), within reason
    return {"k": (0.2, 60.0), "x0": (10 ** (lo - pad), 10 ** (hi + pad))}


def _saturating_bounds(x):
    lo, hi, r = _span(x)
    pad = max(1.0, 0.5 * r)
    return {"s": (10 ** (lo - pad), 10 ** (hi + pad))}


def _hinge_bounds(x):
    lo, hi, r = _span(x)
    return {"h": (10 ** lo, 10 ** hi)}


LAWS: dict[str, Law] = {
    "power": Law("power", ("E", "A", "alpha"), ("E", "A"), power, _power_basis, _power_bounds, {"alpha": 31},
                 formula="y = E + A x^(-alpha)",
                 source="Kaplan et al. 2020, eq. 1.1-1.3; Hoffmann et al. 2022, eq. 2 (one variable)",
                 levels=("E",)),
    "chinchilla": Law("chinchilla", ("E", "A", "B", "alpha", "beta"), ("E", "A", "B"), chinchilla,
                      _chinchilla_basis, _chinchilla_bounds, {"alpha": 21, "beta": 21},
                      formula="L = E + A / N^alpha + B / D^beta",
                      source="Hoffmann et al. 2022, Training Compute-Optimal Large Language Models, eq. 2",
                      n_inputs=2, levels=("E",)),
    "logistic": Law("logistic", ("floor", "ceiling", "k", "x0"), ("floor", "ceiling"), logistic, _logistic_basis,
                    _logistic_bounds, {"k": 15, "x0": 41},
                    formula="y = floor + (ceiling - floor) / (1 + (x/x0)^(-k))",
                    source="sigmoid in log x (Wei et al. 2022; Ruan et al. 2024, eq. 5)",
                    positive=("k", "x0"), location="x0", levels=("floor", "ceiling")),
    "bnsl": bnsl_law(1),
    "linear_log": Law("linear_log", ("a", "b"), ("a", "b"), linear_log, _linear_log_basis, lambda x: {}, {},
                      formula="y = a + b log10(x)", source="linear trend on a log axis"),
    "saturating": Law("saturating", ("a", "b", "s"), ("a", "b"), saturating, _saturating_basis, _saturating_bounds,
                      {"s": 41}, formula="y = a + b x / (x + s)",
                      source="Michaelis & Menten 1913; Hill 1910 (coefficient 1)", positive=("s",), levels=("a",)),
    "hinge": Law("hinge", ("a", "b", "h"), ("a", "b"), hinge, _hinge_basis, _hinge_bounds, {"h": 41},
                 formula="y = a + b max(0, log10(x/h))", source="broken-stick regression (Muggeo 2003)",
                 positive=("h",), location="h", levels=("a",)),
    "constant": Law("constant", ("a",), ("a",), constant, _constant_basis, lambda x: {}, {},
                    formula="y = a", source="no trend", log_x=False, levels=("a",)),
}


def get_law(law: str | Law, **options) -> Law:
    """Look up a law by name; `bnsl` takes `breaks=k` for k breaks."""
    if isinstance(law, Law):
        return law
    if not isinstance(law, str) or law not in LAWS:
        raise ValueError(f"unknown law {law!r}; choose one of {', '.join(sorted(LAWS))}")
    if law == "bnsl" and options.get("breaks", 1) != 1:
        return bnsl_law(options["breaks"])
    return LAWS[law]
