"""The numerical solvers under `analysis.fit` (its module doc says how a fit is made): the fitted scales (linear, log,
log(1 + y)); variable projection over a grid of the non-linear parameters with the linear ones solved exactly
inside their bounds; bounded point refinement (least squares and Huber); the Chinchilla log-sum-exp objective with
its batched iteratively-reweighted Gauss-Newton (Besiroglu et al. 2024); and the vectorised Levenberg-Marquardt
loop every bootstrap resample is refitted with. Pure numpy and scipy, no tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from analysis.laws import Law, get_law


# ------------------------------------------------------------------------------------------------- fitted scales
def to_space(v, space: str) -> np.ndarray:
    """Values on the scale a fit is made on: y ("linear"), log y ("log") or log(1 + y) ("log1p").

    Values outside the transform's domain map to a very low finite number (about -690 for log, -35 for log1p), so a
    model that leaves the domain gets a large residual rather than a NaN.
    """
    v = np.asarray(v, dtype=float)
    if space == "log":
        return np.log(np.maximum(v, 1e-300))
    if space == "log1p":
        return np.log1p(np.maximum(v, -1.0 + 1e-15))
    return v


def from_space(t, space: str) -> np.ndarray:
    """Inverse of `to_space`."""
    t = np.asarray(t, dtype=float)
    if space == "log":
        return np.exp(t)
    if space == "log1p":
        return np.expm1(t)
    return t


def space_weights(y: np.ndarray, w: np.ndarray, space: str) -> np.ndarray:
    """Weights that make a least-squares fit on y's own scale approximate one on the fitted scale: to first order
    g(f) - g(y) = g'(y) (f - y), so w g'(y)^2 (Gauss-Newton linearised at the data). Used to rank grid starts and
    solve their linear parameters, never for the final fit."""
    if space == "log":
        return w / np.maximum(np.abs(y), 1e-300) ** 2
    if space == "log1p":
        return w / np.maximum(1.0 + y, 1e-300) ** 2
    return w


# ------------------------------------------------------------------------------------------- variable projection
def _nl_columns(theta: np.ndarray) -> list[np.ndarray]:
    """Split (G, q) non-linear parameter sets into q columns of shape (G, 1) that broadcast against x."""
    return [theta[:, j:j + 1] for j in range(theta.shape[1])]


def design(law: Law, x: np.ndarray, theta_nl: np.ndarray) -> np.ndarray:
    """The linear-parameter columns for each non-linear parameter set: (G, n, L)."""
    theta_nl = np.atleast_2d(np.asarray(theta_nl, dtype=float))
    if theta_nl.shape[1] == 0:
        d = law.basis(x)
        return np.broadcast_to(d, (theta_nl.shape[0],) + d.shape)
    return law.basis(x, *_nl_columns(theta_nl))


@dataclass
class Projector:
    """Weighted least-squares projections onto span(design) for a batch of designs (variable projection).

    For data y with weights w, the residual sum of squares after solving the linear parameters exactly is
    ||z||^2 - ||Q^T z||^2, z = sqrt(w) y, where Q is an orthonormal basis of the columns of sqrt(w) X. Q comes from
    Gram-Schmidt with re-orthogonalisation (Giraud et al. 2005, "Rounding error analysis of the classical Gram-Schmidt
    orthogonalization process"), batched over designs: the designs have 1 to 3 columns, where this is much cheaper
    than a batched SVD. A column whose remainder is below 1e-9 of its norm is dropped (its coefficient is 0), so a
    degenerate design cannot fit noise.
    """

    Q: np.ndarray  # (G, n, L)
    R: np.ndarray  # (G, L, L) upper triangular, scaled columns; zero rows/cols for dropped columns
    norms: np.ndarray  # (G, L)
    sw: np.ndarray  # (n,)
    QT: np.ndarray  # (G * L, n): Q stacked for one matrix product per batch

    @classmethod
    def build(cls, D: np.ndarray, w: np.ndarray) -> "Projector":
        sw = np.sqrt(np.asarray(w, dtype=float))
        Dw = np.asarray(D, dtype=float) * sw[None, :, None]
        Dw = np.where(np.isfinite(Dw), Dw, 0.0)
        norms = np.sqrt(np.einsum("gnl,gnl->gl", Dw, Dw))  # (G, L)
        safe = np.where(norms > 0, norms, 1.0)
        A = Dw / safe[:, None, :]
        G, n, L = A.shape
        Q = np.zeros_like(A)
        R = np.zeros((G, L, L))
        for j in range(L):
            v = A[:, :, j].copy()
            for _ in range(2):  # twice is enough (Giraud et al. 2005)
                for i in range(j):
                    c = np.einsum("gn,gn->g", Q[:, :, i], v)
                    R[:, i, j] += c
                    v -= c[:, None] * Q[:, :, i]
            r = np.sqrt(np.einsum("gn,gn->g", v, v))
            keep = (r > 1e-9) & (norms[:, j] > 0)
            R[:, j, j] = np.where(keep, r, 0.0)
            Q[:, :, j] = np.where(keep[:, None], v / np.where(keep, r, 1.0)[:, None], 0.0)
        QT = np.ascontiguousarray(Q.transpose(0, 2, 1).reshape(G * L, n))
        return cls(Q, R, np.where(norms > 0, norms, np.inf), sw, QT)

    def rss(self, Y: np.ndarray) -> np.ndarray:
        """Weighted RSS for every data row of Y (B, n) and every design: (B, G)."""
        Z = np.atleast_2d(Y) * self.sw
        G, _, L = self.Q.shape
        proj = (self.QT @ Z.T).reshape(G, L, Z.shape[0])  # this order is the fast one for small n
        fitted = proj[:, 0] ** 2
        for l in range(1, L):
            fitted += proj[:, l] ** 2
        return np.maximum(np.einsum("bn,bn->b", Z, Z)[:, None] - fitted.T, 0.0)

    def coefs(self, y: np.ndarray, g: np.ndarray | int) -> np.ndarray:
        """Linear parameters for data rows y (B, n) at design indices g (B,): (B, L), by back substitution."""
        Z = np.atleast_2d(y) * self.sw
        g = np.broadcast_to(np.asarray(g), (Z.shape[0],))
        proj = np.einsum("bnl,bn->bl", self.Q[g], Z)
        R = self.R[g]
        L = R.shape[-1]
        c = np.zeros_like(proj)
        for j in range(L - 1, -1, -1):
            acc = proj[:, j] - np.einsum("bk,bk->b", R[:, j, j + 1:], c[:, j + 1:])
            d = R[:, j, j]
            c[:, j] = np.where(d > 0, acc / np.where(d > 0, d, 1.0), 0.0)
        return c / self.norms[g]

    def best(self, y: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The k lowest-RSS design indices for one data row y, and their RSS."""
        r = self.rss(y[None])[0]
        idx = np.argsort(r)[:k]
        return idx, r[idx]


def _linear_bounds(law: Law, bounds: dict | None) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([(bounds or {}).get(n, (-np.inf, np.inf))[0] for n in law.linear], dtype=float)
    hi = np.array([(bounds or {}).get(n, (-np.inf, np.inf))[1] for n in law.linear], dtype=float)
    return lo, hi


def profile_linear(law: Law, x, y, w, grid: np.ndarray, bounds: dict | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For every row of `grid` (non-linear values), the linear parameters that minimise the weighted RSS, kept in
    their `bounds` when any are given: (RSS (G,), linear parameters (G, L)).

    Without bounds on the linear parameters this is the plain variable projection (`Projector`). With them it is a
    least-squares problem with box constraints on a few variables, solved exactly by trying every active set: each
    bounded parameter free, at its lower or at its upper bound, the free ones solved by projection onto the rest of
    the design. The problem is convex, so its optimum is the lowest-RSS candidate whose free parameters fall inside
    their bounds (the active-set characterisation of box-constrained least squares; Stark & Parker 1995, "Bounded-
    variable least-squares: an algorithm and applications", Comput. Stat. 10:129). With 1 to 3 linear parameters
    that is at most 27 batched projections.
    """
    y = np.asarray(y, dtype=float)
    w = np.asarray(w, dtype=float)
    grid = np.atleast_2d(grid)
    D = design(law, x, grid)
    G, n, L = D.shape
    P = Projector.build(D, w)
    lin = P.coefs(np.broadcast_to(y, (G, n)), np.arange(G))
    rss = P.rss(y)[0]
    lo, hi = _linear_bounds(law, bounds)
    bounded = np.flatnonzero(np.isfinite(lo) | np.isfinite(hi))
    if bounded.size == 0:
        return rss, lin
    Df = np.where(np.isfinite(D), D, 0.0)
    sw = np.sqrt(w)

    def feasible(c):
        tol = 1e-10 * (1.0 + np.abs(c))
        return np.all((c >= lo - tol) & (c <= hi + tol), axis=1)

    best = np.where(feasible(lin), rss, np.inf)
    best_lin = lin.copy()
    for choice in product((0, 1, 2), repeat=bounded.size):  # 0: free, 1: at the lower bound, 2: at the upper
        if not any(choice):
            continue
        vals = {int(j): (lo[j] if c == 1 else hi[j]) for j, c in zip(bounded, choice) if c}
        if not all(np.isfinite(v) for v in vals.values()):
            continue
        c = np.zeros((G, L))
        resid = np.broadcast_to(y, (G, n)).copy()
        for j, v in vals.items():
            c[:, j] = v
            resid -= v * Df[:, :, j]
        free = [j for j in range(L) if j not in vals]
        if free:
            Pf = Projector.build(D[:, :, free], w)
            c[:, free] = Pf.coefs(resid, np.arange(G))
            Z = resid * sw
            proj = np.einsum("gnl,gn->gl", Pf.Q, Z)
            r = np.maximum(np.einsum("gn,gn->g", Z, Z) - np.einsum("gl,gl->g", proj, proj), 0.0)
        else:
            r = np.einsum("gn,gn->g", resid * sw, resid * sw)
        take = feasible(c) & (r < best)
        best = np.where(take, r, best)
        best_lin[take] = c[take]
    return best, best_lin


def assemble(law: Law, theta_nl: np.ndarray, lin: np.ndarray) -> np.ndarray:
    """Full parameter vectors (B, p) in `law.params` order from non-linear (B, q) and linear (B, L) parts."""
    theta_nl = np.atleast_2d(theta_nl)
    lin = np.atleast_2d(lin)
    out = np.empty((max(theta_nl.shape[0], lin.shape[0]), len(law.params)))
    nl, li = law.nonlinear, law.linear
    for j, name in enumerate(law.params):
        out[:, j] = lin[:, li.index(name)] if name in li else theta_nl[:, nl.index(name)]
    return out


def grid_fit(law: Law, x, y, w=None, grid=None, bounds=None):
    """Best grid point with exact linear parameters (kept in `bounds` where given for them): (full parameter
    vector, weighted RSS)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(y.shape[-1]) if w is None else np.asarray(w, dtype=float)
    grid = law.grid(x, bounds) if grid is None else np.atleast_2d(grid)
    rss, lin = profile_linear(law, x, y, w, grid, bounds)
    g = int(np.argmin(rss))
    return assemble(law, grid[g:g + 1], lin[g:g + 1])[0], float(rss[g])


def guess(law: str | Law, x, y, w=None, bounds: dict | None = None) -> dict[str, float]:
    """Starting values for `law` (lmfit's `guess`): the best point of its grid, with the linear parameters solved
    exactly. Returns {parameter name: value}."""
    law = get_law(law)
    theta, _ = grid_fit(law, np.asarray(x, dtype=float), np.asarray(y, dtype=float), w=w, bounds=bounds)
    return dict(zip(law.params, map(float, theta)))


def zoom_fit(law: Law, x, y, w, grid: np.ndarray, *, levels: int = 3, m: int = 5, bounds: dict | None = None):
    """Refine the best point of a grid by zooming: around it, a finer grid spanning the neighbouring grid values of
    each non-linear parameter (log-spaced for positive ones), `levels` times, each step m points per parameter.
    Returns (full parameter vector, weighted RSS). Deterministic and cheap: one batched projection per level.
    Bounds that name linear parameters keep them inside (`profile_linear`).
    """
    grid = np.atleast_2d(grid)
    lin_lo, lin_hi = _linear_bounds(law, bounds)
    if np.isfinite(lin_lo).any() or np.isfinite(lin_hi).any():
        def best_of(Gs):
            rs, ls = profile_linear(law, x, y, w, Gs, bounds)
            i = int(np.argmin(rs))
            return i, float(rs[i]), ls[i]
    else:
        def best_of(Gs):
            Pb = Projector.build(design(law, x, Gs), w)
            i, rs = Pb.best(y)
            i = int(i[0])
            return i, float(rs[0]), Pb.coefs(y[None], i)[0]
    g, r0, lin_best = best_of(grid)
    q = grid.shape[1]
    if q == 0:
        return assemble(law, grid[g:g + 1], lin_best[None])[0], r0
    names = law.nonlinear
    zg = _to_z(law, names, grid)
    centre = zg[g].copy()
    lo_b = np.full(q, -np.inf) if bounds is None else _z_bounds(law, names, bounds)[0]
    hi_b = np.full(q, np.inf) if bounds is None else _z_bounds(law, names, bounds)[1]
    half = np.empty(q)
    for j in range(q):
        vals = np.unique(zg[:, j])
        step = np.min(np.diff(vals)) if vals.size > 1 else 0.0
        half[j] = step
    best_theta, best_rss = grid[g], r0
    for _ in range(levels):
        axes = [np.clip(np.linspace(centre[j] - half[j], centre[j] + half[j], m), lo_b[j], hi_b[j]) if half[j] > 0
                else np.array([centre[j]]) for j in range(q)]
        mesh = np.meshgrid(*axes, indexing="ij")
        Zg = np.stack([a.ravel() for a in mesh], axis=1)
        Gf = _from_z(law, names, Zg)
        i, rr, li = best_of(Gf)
        if rr <= best_rss:
            best_theta, best_rss, lin_best = Gf[i], rr, li
            centre = Zg[i]
        half = half * 2.0 / (m - 1)
    return assemble(law, best_theta[None], lin_best[None])[0], best_rss


# ------------------------------------------------------------------------------------------ transformed coordinates
def _to_z(law: Law, names: Sequence[str], values: np.ndarray) -> np.ndarray:
    """Optimiser coordinates: log10 for the law's positive parameters, unchanged otherwise."""
    z = np.array(values, dtype=float, copy=True)
    for j, n in enumerate(names):
        if n in law.positive:
            z[..., j] = np.log10(np.maximum(z[..., j], 1e-300))
    return z


def _from_z(law: Law, names: Sequence[str], z: np.ndarray) -> np.ndarray:
    v = np.array(z, dtype=float, copy=True)
    for j, n in enumerate(names):
        if n in law.positive:
            v[..., j] = 10.0 ** v[..., j]
    return v


def _z_bounds(law: Law, names: Sequence[str], bounds: dict) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([bounds.get(n, (-np.inf, np.inf))[0] for n in names], dtype=float)
    hi = np.array([bounds.get(n, (-np.inf, np.inf))[1] for n in names], dtype=float)
    return _to_z(law, names, lo), _to_z(law, names, hi)


# ---------------------------------------------------------------------------------------------------- point fits
def refine_l2(law: Law, x, y, w, starts_nl: np.ndarray, bounds: dict, grid: np.ndarray | None = None,
               space: str = "linear"):
    """Least squares on the fitted scale (`to_space`) from several non-linear starts (and the zoomed optimum of
    `grid`, when given): linear parameters solved exactly at each start (within their bounds; on a log scale by the
    linearised weights of `space_weights`), then all parameters refined together by Levenberg-Marquardt
    (`batched_lm`, all starts in one batch); the best wins. Returns (parameters, weighted RSS on that scale)."""
    starts_nl = np.atleast_2d(starts_nl)
    we = space_weights(y, w, space)
    if law.nonlinear and grid is not None:
        # the zoomed grid optimum is a robust extra start (LM alone can stall at a bound or in a flat valley)
        zt, _ = zoom_fit(law, x, y, we, grid, bounds=bounds)
        starts_nl = np.vstack([starts_nl, [zt[law.params.index(n)] for n in law.nonlinear]])
    rss, lin = profile_linear(law, x, y, we, starts_nl, bounds)
    P0 = assemble(law, starts_nl, lin)
    if not law.nonlinear and space == "linear":
        return P0[0], float(rss[0])
    k = starts_nl.shape[0]
    theta, cost = batched_lm(law, x, np.tile(y, (k, 1)), np.tile(w, (k, 1)), P0, bounds, space=space)
    i = int(np.argmin(cost))
    return theta[i], float(2 * cost[i])


def _huber(r, delta):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _huber_grad(r, delta):
    return np.clip(r, -delta, delta)


def refine_huber(law: Law, x, y, w, starts: np.ndarray, bounds: dict, delta: float, space: str):
    """L-BFGS-B on sum_i w_i Huber(g(f(x_i)) - g(y_i)), g the fitted scale (`to_space`), over all parameters."""
    names = law.params
    zlo, zhi = _z_bounds(law, names, bounds)
    target = to_space(y, space)
    floor = {"log": 0.0, "log1p": -1.0}.get(space, -np.inf)

    def obj(z):
        f = law.func(x, *_from_z(law, names, z))
        if np.any(~np.isfinite(f)) or np.any(f <= floor):
            return 1e10
        return float(np.sum(w * _huber(to_space(f, space) - target, delta)))

    best, best_cost = None, np.inf
    for s in starts:
        z0 = np.clip(_to_z(law, names, s), zlo, zhi)
        r = minimize(obj, z0, method="L-BFGS-B", bounds=list(zip(zlo, zhi)),
                     options={"maxiter": 5000, "ftol": 1e-14, "gtol": 1e-12})
        if r.fun < best_cost:
            best, best_cost = r.x, float(r.fun)
    return _from_z(law, names, best), best_cost


# ------------------------------------------------------------------------------------------------ Chinchilla (Epoch)
def _lse_objective(z, lN, lD, logL, w, delta):
    """Besiroglu et al. 2024 objective and its gradient: sum w Huber(LSE(a - al lN, b - be lD, e) - log L)."""
    a, b, e, al, be = z
    U = np.stack([a - al * lN, b - be * lD, np.full_like(lN, e)])
    top = U.max(axis=0)
    pred = top + np.log(np.sum(np.exp(U - top), axis=0))  # log-sum-exp, written out: scipy's is slow here
    r = pred - logL
    h = w * _huber_grad(r, delta)
    S = np.exp(U - pred)
    g = np.array([h @ S[0], h @ S[1], h @ S[2], -(h * S[0]) @ lN, -(h * S[1]) @ lD])
    return float(np.sum(w * _huber(r, delta))), g


def _lse_objective_batch(Z, lN, lD, logL, delta):
    a, b, e, al, be = (Z[:, j:j + 1] for j in range(5))
    U = np.stack(np.broadcast_arrays(a - al * lN, b - be * lD, e + 0 * lN))
    return np.sum(_huber(logsumexp(U, axis=0) - logL, delta), axis=1)


EPOCH_GRID = {"alpha": np.arange(0, 2.01, 0.5), "beta": np.arange(0, 2.01, 0.5), "e": np.arange(-1, 1.01, 0.5),
              "a": np.arange(0, 25.1, 5), "b": np.arange(0, 25.1, 5)}


def chinchilla_starts(grid: dict | None) -> np.ndarray:
    g = {**EPOCH_GRID, **(grid or {})}
    mesh = np.meshgrid(g["a"], g["b"], g["e"], g["alpha"], g["beta"], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def lse_irls(Z0: np.ndarray, lN, lD, logL, W: np.ndarray, delta: float, n_iter: int = 400,
              e_bounds=(-np.inf, np.inf)) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the Besiroglu et al. objective for many weightings at once (bootstrap resamples, or many starts).

    Z0: (B, 5) starts (a, b, e, alpha, beta); W: (B, n) weights. Iteratively reweighted Gauss-Newton (Huber's
    weights min(1, delta/|r|), Holland & Welsch 1977) with Levenberg-Marquardt damping, the analytic Jacobian of the
    log-sum-exp, and a step kept only where it lowers that row's objective; rows stop once their steps vanish.
    e_bounds: e = log E is kept in these bounds (a step is clipped to them).
    """
    Z = np.array(Z0, dtype=float, copy=True)
    e_lo, e_hi = e_bounds
    Z[:, 2] = np.clip(Z[:, 2], e_lo, e_hi)
    B, n = Z.shape[0], lN.size
    W = np.broadcast_to(W, (B, n))
    logL_all = np.broadcast_to(logL, (B, n))

    def pred(Zs, logL):
        U = np.stack([Zs[:, 0:1] - Zs[:, 3:4] * lN, Zs[:, 1:2] - Zs[:, 4:5] * lD,
                      np.broadcast_to(Zs[:, 2:3], (Zs.shape[0], n))], axis=1)
        top = U.max(axis=1, keepdims=True)
        E = np.exp(U - top)
        tot = E.sum(axis=1, keepdims=True)
        return (top + np.log(tot))[:, 0] - logL, E / tot

    r, S = pred(Z, logL_all)
    cost = np.sum(W * _huber(r, delta), axis=1)
    lam = np.full(B, 1e-3)
    active = np.ones(B, dtype=bool)
    eye = np.eye(5)
    for _ in range(n_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        Sa, ra, Wa = S[idx], r[idx], W[idx]
        J = np.stack([Sa[:, 0], Sa[:, 1], Sa[:, 2], -Sa[:, 0] * lN, -Sa[:, 1] * lD], axis=2)
        JW = J * (Wa * np.minimum(1.0, delta / np.maximum(np.abs(ra), 1e-300)))[:, :, None]
        A = np.einsum("bni,bnj->bij", JW, J)
        g = np.einsum("bni,bn->bi", JW, ra)
        dA = np.einsum("bii->bi", A)
        M = A + (lam[idx, None] * np.maximum(dA, 1e-12))[:, :, None] * eye
        try:
            step = -np.linalg.solve(M, g[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = -g / np.maximum(dA, 1e-12)
        step = np.where(np.isfinite(step), step, 0.0)
        Zn = Z[idx] + step
        Zn[:, 2] = np.clip(Zn[:, 2], e_lo, e_hi)
        rn, Sn = pred(Zn, logL_all[idx])
        cn = np.sum(Wa * _huber(rn, delta), axis=1)
        ok = cn < cost[idx]
        acc = idx[ok]
        Z[acc], S[acc], r[acc], cost[acc] = Zn[ok], Sn[ok], rn[ok], cn[ok]
        lam[idx] = np.clip(np.where(ok, lam[idx] / 3.0, lam[idx] * 4.0), 1e-12, 1e12)
        tiny = np.all(np.abs(step) < 1e-10 * (1.0 + np.abs(Zn)), axis=1)
        active[idx[tiny | (lam[idx] >= 1e12)]] = False
    return Z, cost


def fit_chinchilla_huber(X, y, w, delta, starts, n_starts, z0=None, e_bounds=(-np.inf, np.inf)):
    """Point estimate: the best `n_starts` grid starts (by objective) refined together by `lse_irls`, then the
    best of them polished by L-BFGS-B with the analytic gradient (the optimiser Besiroglu et al. used).
    e_bounds: bounds on e = log E (E > 0 always holds here, as E = exp(e))."""
    lN, lD, logL = np.log(X[0]), np.log(X[1]), np.log(y)
    if z0 is None:
        cost = _lse_objective_batch(starts, lN, lD, logL, delta)
        cand = starts[np.argsort(cost)[:n_starts]]
        Zc, cc = lse_irls(cand, lN, lD, logL, w[None], delta, e_bounds=e_bounds)
        z0 = Zc[int(np.argmin(cc))]
    lim = [(None, None)] * 5
    if np.isfinite(e_bounds).any():
        lim[2] = tuple(float(v) if np.isfinite(v) else None for v in e_bounds)
        z0 = np.array(z0, dtype=float, copy=True)
        z0[2] = np.clip(z0[2], *e_bounds)
    r = minimize(_lse_objective, z0, args=(lN, lD, logL, w, delta), jac=True, method="L-BFGS-B",
                 bounds=lim if np.isfinite(e_bounds).any() else None,
                 options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20})
    return r.x, float(r.fun)


def lse_to_params(z):
    a, b, e, al, be = z
    return np.array([np.exp(e), np.exp(a), np.exp(b), al, be])  # E, A, B, alpha, beta


# ----------------------------------------------------------------------------------------- vectorised refits (LM)
def solve_small(M: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Solve batches of 1x1 or 2x2 systems in closed form (M (..., L, L), r (..., L)); LAPACK for larger ones.
    A singular system gives zeros (the caller treats that as no step / no fit)."""
    L = M.shape[-1]
    if L == 1:
        d = M[..., 0, 0]
        return np.where(d != 0, r[..., 0] / np.where(d != 0, d, 1.0), 0.0)[..., None]
    if L == 2:
        a, b, c, d = M[..., 0, 0], M[..., 0, 1], M[..., 1, 0], M[..., 1, 1]
        det = a * d - b * c
        ok = det != 0
        det = np.where(ok, det, 1.0)
        x0 = np.where(ok, (d * r[..., 0] - b * r[..., 1]) / det, 0.0)
        x1 = np.where(ok, (a * r[..., 1] - c * r[..., 0]) / det, 0.0)
        return np.stack([x0, x1], axis=-1)
    try:
        return np.linalg.solve(M, r[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.zeros_like(r)
        for i in np.ndindex(M.shape[:-2]):
            out[i] = np.linalg.lstsq(M[i], r[i], rcond=None)[0]
        return out


def batched_lm(law: Law, x, Y, W, P0, bounds: dict, *, loss="l2", delta=1e-3, log_resid=False, n_iter=100,
               space: str | None = None):
    """Levenberg-Marquardt on many data sets at once: rows of Y (B, n) with weights W (B, n), from P0 (B, p).

    Residuals are on the scale `space` ("linear", "log", "log1p"; `log_resid=True` is "log"). Huber losses use
    iteratively reweighted least squares inside the same loop (Holland & Welsch 1977); a step is kept only where it
    lowers that replicate's objective, and a replicate stops once its steps vanish. Positive parameters move on a
    log10 scale; every parameter stays in its bounds: a parameter at a bound whose step points outwards is held
    there and the step re-solved for the others (an active-set step, as in bounded-variable least squares; Stark &
    Parker 1995). The Jacobian is by forward differences. Returns the refitted parameters (B, p) and objective
    values (B,).
    """
    space = space or ("log" if log_resid else "linear")
    names = law.params
    zlo, zhi = _z_bounds(law, names, bounds)
    Z = np.clip(_to_z(law, names, np.atleast_2d(P0)), zlo, zhi)
    B, p = Z.shape
    Y = np.broadcast_to(np.atleast_2d(Y), (B, np.atleast_2d(Y).shape[1]))
    W = np.broadcast_to(np.atleast_2d(W), Y.shape)
    target = to_space(Y, space)

    def model(Zb):
        f = np.broadcast_to(law.func(x, *[c[:, None] for c in _from_z(law, names, Zb).T]), (Zb.shape[0], Y.shape[1]))
        return np.where(np.isfinite(f), to_space(f, space), 1e30)

    def objective(f, tg, Wa):
        r = f - tg
        return np.sum(Wa * (0.5 * r * r if loss == "l2" else _huber(r, delta)), axis=1)

    f = model(Z)
    cost = objective(f, target, W)
    lam = np.full(B, 1e-3)
    active = np.ones(B, dtype=bool)
    eye = np.eye(p)
    for _ in range(n_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        Za, fa, ta, Wa = Z[idx], f[idx], target[idx], W[idx]
        r = ta - fa
        Wi = Wa if loss == "l2" else Wa * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
        h = 1e-6 * np.maximum(1.0, np.abs(Za))
        J = np.empty((idx.size, Y.shape[1], p))
        for j in range(p):
            Zj = Za.copy()
            Zj[:, j] += h[:, j]
            J[:, :, j] = (model(Zj) - fa) / h[:, j:j + 1]
        JW = J * Wi[:, :, None]
        A = np.einsum("bnp,bnq->bpq", JW, J)
        g = np.einsum("bnp,bn->bp", JW, r)
        dA = np.einsum("bpp->bp", A)
        M = A + (lam[idx, None] * np.maximum(dA, 1e-12))[:, :, None] * eye
        step = solve_small(M, g)
        step = np.where(np.isfinite(step), step, 0.0)
        held = ((Za <= zlo) & (step < 0)) | ((Za >= zhi) & (step > 0))
        rows = np.flatnonzero(held.any(axis=1))
        if rows.size:
            hr = held[rows]
            Mr = np.where(hr[:, :, None] | hr[:, None, :], 0.0, M[rows]) + hr[:, :, None] * eye
            sr = solve_small(Mr, np.where(hr, 0.0, g[rows]))
            step[rows] = np.where(np.isfinite(sr), sr, 0.0)
        Zn = np.clip(Za + step, zlo, zhi)
        fn = model(Zn)
        cn = objective(fn, ta, Wa)
        before = cost[idx]  # a copy: the stopping rule compares with the cost before this step
        ok = cn < before
        acc = idx[ok]
        Z[acc], f[acc], cost[acc] = Zn[ok], fn[ok], cn[ok]
        lam[idx] = np.clip(np.where(ok, lam[idx] / 3.0, lam[idx] * 4.0), 1e-12, 1e12)
        moved = np.abs(Zn - Za)
        done = np.all(moved < 1e-9 * (1.0 + np.abs(Za)), axis=1) & ok
        done |= ok & (before - cn <= 1e-12 * before)  # converged: the step no longer lowers the cost
        done |= lam[idx] >= 1e12
        active[idx[done]] = False
    return _from_z(law, names, Z), cost
