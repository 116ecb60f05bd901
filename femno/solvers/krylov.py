"""Krylov methods in numpy that record their residual history natively.

Every method has the signature::

    x, info = method(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0,
                     maxiter=None, callback=None, **method_opts)

``A`` is anything with ``A @ x`` (sparse matrix, dense array, ``LinearOperator``),
``M`` a callable ``r -> z = M^{-1} r`` or None. The iteration stops when

.. math:: \\|r_k\\|_2 \\le \\max(\\mathrm{rtol}\\,\\|b\\|_2,\\ \\mathrm{atol}).

``info`` is a dict with ``iterations`` (matrix-vector products, the initial
residual not counted), ``residuals`` (relative residual history
``||r_k|| / ||b||`` including entry 0), ``residual_kind`` (``"true"`` or
``"recursive"``), and ``reason`` (``"rtol"``, ``"maxiter"``, ``"breakdown"`` or
``"zero rhs"``). Methods that update the residual recursively (CG, FCG, MINRES)
verify the true residual before declaring convergence and continue from it if
the two have drifted apart, so ``reason == "rtol"`` always means the *true*
residual meets the tolerance.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy.linalg import solve_triangular

from femno.solvers.base import check_tolerances

__all__ = ["cg", "fcg", "gmres", "fgmres", "minres", "default_maxiter"]

_EPS = np.finfo(np.float64).eps


def default_maxiter(n: int) -> int:
    """Default iteration limit: ``10 n``, at least 20 and at most 20 000.

    >>> default_maxiter(5), default_maxiter(10**6)
    (50, 20000)
    """
    return int(min(max(10 * n, 20), 20_000))


class _Setup:
    """Shared preamble: shapes, tolerances, initial residual, history."""

    def __init__(self, A, b, x0, M, rtol, atol, maxiter):
        rtol, atol = check_tolerances(rtol, atol)
        self.A = A
        self.b = np.asarray(b, dtype=np.float64).ravel()
        n = self.b.shape[0]
        self.M = (lambda r: r) if M is None else M
        self.maxiter = default_maxiter(n) if maxiter is None else int(maxiter)
        if self.maxiter < 0:
            raise ValueError(f"maxiter must be >= 0, got {maxiter!r}")
        self.bnorm = float(np.linalg.norm(self.b))
        self.tol = max(rtol * self.bnorm, atol)
        if x0 is None:
            self.x = np.zeros(n)
            self.r = self.b.copy()
        else:
            self.x = np.array(x0, dtype=np.float64).ravel()
            self.r = self.b - self.matvec(self.x)
        self.rnorm = float(np.linalg.norm(self.r))
        self.history = [self._rel(self.rnorm)]

    def matvec(self, v):
        return np.asarray(self.A @ v, dtype=np.float64).ravel()

    def precond(self, r):
        return np.asarray(self.M(r), dtype=np.float64).ravel()

    def _rel(self, rnorm):
        return rnorm / self.bnorm if self.bnorm > 0 else rnorm

    def record(self, rnorm):
        self.rnorm = float(rnorm)
        self.history.append(self._rel(self.rnorm))

    def converged(self):
        return self.rnorm <= self.tol

    def true_check(self):
        """Recompute the true residual; replace the last recorded entry with it."""
        self.r = self.b - self.matvec(self.x)
        self.rnorm = float(np.linalg.norm(self.r))
        self.history[-1] = self._rel(self.rnorm)
        return self.converged()

    def zero_rhs(self):
        if self.bnorm == 0.0:
            self.x[:] = 0.0
            self.rnorm = 0.0
            self.history = [0.0]
            return True
        return False

    def info(self, iterations, reason, kind):
        return {
            "iterations": int(iterations),
            "residuals": [float(h) for h in self.history],
            "residual_kind": kind,
            "reason": reason,
        }


def _bad(value) -> bool:
    return not np.isfinite(value)


def cg(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None):
    """Preconditioned conjugate gradients for symmetric positive definite ``A``.

    With ``z_k = M^{-1} r_k`` the recurrences are

    .. math::

        \\alpha_k = \\frac{r_k^T z_k}{p_k^T A p_k},\\quad
        x_{k+1} = x_k + \\alpha_k p_k,\\quad r_{k+1} = r_k - \\alpha_k A p_k,\\quad
        p_{k+1} = z_{k+1} + \\frac{r_{k+1}^T z_{k+1}}{r_k^T z_k} p_k .

    ``M`` must be a fixed SPD operator (otherwise use :func:`fcg`). A non-positive
    curvature ``p^T A p`` or ``r^T z`` stops with ``reason="breakdown"``.
    The residual history is the recursive one (``residual_kind="recursive"``).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(50, 50), format="csr")
    >>> x, info = cg(A, np.ones(50), rtol=1e-10)
    >>> info["reason"], info["iterations"] <= 50, bool(np.linalg.norm(A @ x - 1) < 1e-8)
    ('rtol', True, True)
    """
    s = _Setup(A, b, x0, M, rtol, atol, maxiter)
    if s.zero_rhs():
        return s.x, s.info(0, "zero rhs", "true")
    if s.converged():
        return s.x, s.info(0, "rtol", "true")
    it, reason = 0, "maxiter"
    z = s.precond(s.r)
    rz = float(s.r @ z)
    p = z.copy()
    while it < s.maxiter:
        if not rz > 0 or _bad(rz):  # preconditioner not SPD (or r = 0 in M-norm)
            reason = "breakdown"
            break
        q = s.matvec(p)
        pq = float(p @ q)
        it += 1
        if not pq > 0 or _bad(pq):  # matrix not SPD
            s.history.append(s.history[-1])
            reason = "breakdown"
            break
        alpha = rz / pq
        s.x += alpha * p
        s.r -= alpha * q
        s.record(np.linalg.norm(s.r))
        if callback is not None:
            callback(s.x)
        if s.converged():
            if s.true_check():
                reason = "rtol"
                break
            z = s.precond(s.r)  # residual replacement: restart from the true residual
            rz = float(s.r @ z)
            p = z.copy()
            continue
        z = s.precond(s.r)
        rz_new = float(s.r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return s.x, s.info(it, reason, "recursive")


def fcg(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None, mmax=1):
    """Flexible conjugate gradients (Notay 2000) with truncation ``mmax``.

    The new direction is ``A``-orthogonalised against the last ``mmax`` ones,

    .. math::

        d_k = z_k - \\sum_{i=k-m_k}^{k-1}
              \\frac{z_k^T q_i}{d_i^T q_i} d_i,\\qquad q_i = A d_i,\\quad
        \\alpha_k = \\frac{d_k^T r_k}{d_k^T q_k},\\quad m_k = \\min(k, \\mathrm{mmax}),

    so the preconditioner ``M`` may vary from one iteration to the next (an AMG
    cycle with a nonsymmetric smoother, an inner Krylov solve, a neural network).
    ``mmax=1`` is the Polak-Ribiere-like variant; for a fixed SPD ``M`` it gives
    the same iterates as :func:`cg` in exact arithmetic.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(40, 40), format="csr")
    >>> x, info = fcg(A, np.ones(40), M=lambda r: r / 2.5, mmax=2)
    >>> info["reason"], info["residuals"][-1] <= 1e-8
    ('rtol', True)
    """
    if int(mmax) < 1:
        raise ValueError(f"mmax must be >= 1, got {mmax!r}")
    s = _Setup(A, b, x0, M, rtol, atol, maxiter)
    if s.zero_rhs():
        return s.x, s.info(0, "zero rhs", "true")
    if s.converged():
        return s.x, s.info(0, "rtol", "true")
    it, reason = 0, "maxiter"
    past = deque(maxlen=int(mmax))  # (d_i, q_i, d_i^T q_i)
    while it < s.maxiter:
        z = s.precond(s.r)
        d = z.copy()
        for di, qi, dqi in past:
            d -= (float(z @ qi) / dqi) * di
        q = s.matvec(d)
        dq = float(d @ q)
        it += 1
        if not dq > 0 or _bad(dq):
            s.history.append(s.history[-1])
            reason = "breakdown"
            break
        alpha = float(d @ s.r) / dq
        s.x += alpha * d
        s.r -= alpha * q
        past.append((d, q, dq))
        s.record(np.linalg.norm(s.r))
        if callback is not None:
            callback(s.x)
        if s.converged():
            if s.true_check():
                reason = "rtol"
                break
            past.clear()
    return s.x, s.info(it, reason, "recursive")


def _givens(a: float, b: float):
    r = float(np.hypot(a, b))
    if r == 0.0:
        return 1.0, 0.0, 0.0
    return a / r, b / r, r


def _gmres(A, b, x0, M, rtol, atol, maxiter, callback, restart, flexible):
    restart = int(restart)
    if restart < 1:
        raise ValueError(f"restart must be >= 1, got {restart!r}")
    s = _Setup(A, b, x0, M, rtol, atol, maxiter)
    if s.zero_rhs():
        return s.x, s.info(0, "zero rhs", "true")
    if s.converged():
        return s.x, s.info(0, "rtol", "true")
    n = s.b.shape[0]
    m = min(restart, n)
    it, reason = 0, "maxiter"
    V = np.empty((m + 1, n))
    Z = np.empty((m, n)) if flexible else None
    H = np.zeros((m + 1, m))
    cs, sn = np.zeros(m), np.zeros(m)
    while it < s.maxiter:
        beta = s.rnorm
        V[0] = s.r / beta
        g = np.zeros(m + 1)
        g[0] = beta
        H[:] = 0.0
        j, lucky = 0, False
        for j in range(m):
            z = s.precond(V[j])
            if flexible:
                Z[j] = z
            w = s.matvec(z)
            it += 1
            for i in range(j + 1):  # modified Gram-Schmidt
                H[i, j] = float(w @ V[i])
                w -= H[i, j] * V[i]
            H[j + 1, j] = float(np.linalg.norm(w))
            for i in range(j):  # previous rotations
                t = cs[i] * H[i, j] + sn[i] * H[i + 1, j]
                H[i + 1, j] = -sn[i] * H[i, j] + cs[i] * H[i + 1, j]
                H[i, j] = t
            hnext = H[j + 1, j]
            cs[j], sn[j], H[j, j] = _givens(H[j, j], hnext)
            H[j + 1, j] = 0.0
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            if _bad(g[j + 1]):
                s.history.append(s.history[-1])
                reason = "breakdown"
                break
            s.record(abs(g[j + 1]))
            if hnext <= 4 * _EPS * beta:  # invariant subspace: exact solution in K_j
                lucky = True
                break
            V[j + 1] = w / hnext
            if s.converged() or it >= s.maxiter:
                break
        k = j + 1
        R = H[:k, :k]
        diag = np.abs(np.diag(R))
        if reason == "breakdown" or diag.min() <= _EPS * diag.max():
            y = np.linalg.lstsq(R, g[:k], rcond=None)[0]  # singular: least squares
            singular = True
        else:
            y = solve_triangular(R, g[:k], lower=False, check_finite=False)
            singular = False
        if flexible:
            s.x += Z[:k].T @ y
        else:
            s.x += s.precond(V[:k].T @ y)
        previous = beta
        converged = s.true_check()  # true residual at every restart
        if callback is not None:
            callback(s.x)
        if converged:
            reason = "rtol"
            break
        if reason == "breakdown" or ((singular or lucky) and s.rnorm >= previous):
            reason = "breakdown"  # no progress possible from here
            break
    return s.x, s.info(it, reason, "true")


def gmres(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None,
          restart=30):
    """Restarted GMRES(m) with right preconditioning.

    Each cycle builds an orthonormal basis ``V_m`` of
    :math:`\\mathcal{K}_m(A M^{-1}, r_0)` by Arnoldi with modified Gram-Schmidt,
    ``A M^{-1} V_m = V_{m+1} \\bar H_m``, reduces :math:`\\bar H_m` to triangular
    form with Givens rotations and sets

    .. math:: x = x_0 + M^{-1} V_m y,\\qquad
              y = \\arg\\min_y \\|\\beta e_1 - \\bar H_m y\\|_2 .

    With right preconditioning the Givens residual *is* the true residual
    ``||b - A x_k||`` (in exact arithmetic), so the history is monotone and of
    kind ``"true"``; the residual is recomputed exactly at every restart.
    ``maxiter`` counts inner iterations. ``M`` must be a fixed operator (else use
    :func:`fgmres`).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.3, 2.0, -0.7], [-1, 0, 1], shape=(60, 60), format="csr")
    >>> x, info = gmres(A, np.ones(60), restart=20)
    >>> info["reason"], bool(np.linalg.norm(A @ x - 1) <= 1e-8 * np.sqrt(60))
    ('rtol', True)
    """
    return _gmres(A, b, x0, M, rtol, atol, maxiter, callback, restart, flexible=False)


def fgmres(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None,
           restart=30):
    """Flexible GMRES(m) (Saad 1993): right preconditioning that may vary.

    Like :func:`gmres` but the preconditioned vectors ``z_j = M_j^{-1} v_j`` are
    stored, ``A Z_m = V_{m+1} \\bar H_m`` and the update is ``x = x_0 + Z_m y``,
    so ``M`` may change at every iteration (inner solves, nonlinear
    preconditioners). Costs ``m`` extra vectors.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.3, 2.0, -0.7], [-1, 0, 1], shape=(60, 60), format="csr")
    >>> x, info = fgmres(A, np.ones(60), M=lambda r: r / 2.0)
    >>> info["reason"], info["residual_kind"]
    ('rtol', 'true')
    """
    return _gmres(A, b, x0, M, rtol, atol, maxiter, callback, restart, flexible=True)


def minres(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None):
    """Preconditioned MINRES (Paige & Saunders 1975) for symmetric, possibly indefinite ``A``.

    Lanczos on the preconditioned operator with an SPD ``M`` and a QR
    factorisation of the tridiagonal matrix by Givens rotations give iterates
    minimising :math:`\\|b - A x_k\\|_{M^{-1}}` over :math:`x_0 + \\mathcal{K}_k`.
    The 2-norm residual is updated recursively (``r_k = r_{k-1} - \\phi_k A w_k``
    with ``A w_k`` from the same three-term recurrence as ``w_k``), so the stop
    test and ``info["residuals"]`` use ``||r||_2`` like the other methods
    (monotone without preconditioner); the monotone ``M^{-1}``-norm estimate,
    relative to its initial value, is in ``info["preconditioned_residuals"]``.
    ``r^T M^{-1} r < 0`` (``M`` not SPD) stops with ``reason="breakdown"``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(50, 50)) - 0.5 * sp.eye(50)
    >>> x, info = minres(A.tocsr(), np.ones(50), rtol=1e-10)
    >>> info["reason"], bool(np.linalg.norm(A @ x - 1) <= 1e-9 * np.sqrt(50))
    ('rtol', True)
    """
    s = _Setup(A, b, x0, M, rtol, atol, maxiter)
    if s.zero_rhs():
        out = s.info(0, "zero rhs", "true")
        out["preconditioned_residuals"] = [0.0]
        return s.x, out
    n = s.b.shape[0]
    pres = [1.0]

    def done(it, reason):
        out = s.info(it, reason, "recursive" if it else "true")
        out["preconditioned_residuals"] = pres
        return s.x, out

    if s.converged():
        return done(0, "rtol")
    it, reason = 0, "maxiter"
    while True:  # one pass per (re)start from the true residual s.r
        r1 = s.r.copy()
        y = s.precond(r1)
        beta1 = float(r1 @ y)
        if not beta1 > 0 or _bad(beta1):
            return done(it, "breakdown")
        beta1 = np.sqrt(beta1)
        oldb, beta, dbar, epsln, phibar = 0.0, beta1, 0.0, 0.0, beta1
        cs, sn = -1.0, 0.0
        w, w2 = np.zeros(n), np.zeros(n)
        aw, aw2 = np.zeros(n), np.zeros(n)
        r2 = r1
        pres_scale = pres[-1] / beta1
        restart = False
        while it < s.maxiter:
            v = y / beta
            av = s.matvec(v)
            it += 1
            y = av.copy()
            if oldb > 0:
                y -= (beta / oldb) * r1
            alfa = float(v @ y)
            y -= (alfa / beta) * r2
            r1, r2 = r2, y
            y = s.precond(r2)
            oldb = beta
            beta2 = float(r2 @ y)
            if beta2 < 0 or _bad(beta2) or _bad(alfa):
                s.history.append(s.history[-1])
                return done(it, "breakdown")
            beta = np.sqrt(beta2)
            oldeps = epsln
            delta = cs * dbar + sn * alfa
            gbar = sn * dbar - cs * alfa
            epsln = sn * beta
            dbar = -cs * beta
            gamma = float(np.hypot(gbar, beta))
            if gamma == 0.0:  # singular tridiagonal: no further progress
                s.history.append(s.history[-1])
                return done(it, "breakdown")
            cs, sn = gbar / gamma, beta / gamma
            phi = cs * phibar
            phibar = sn * phibar
            w1, w2 = w2, w
            w = (v - oldeps * w1 - delta * w2) / gamma
            aw1, aw2 = aw2, aw
            aw = (av - oldeps * aw1 - delta * aw2) / gamma
            s.x += phi * w
            s.r -= phi * aw
            s.record(np.linalg.norm(s.r))
            pres.append(abs(phibar) * pres_scale)
            if callback is not None:
                callback(s.x)
            lanczos_end = beta <= 10 * _EPS * beta1
            if s.converged() or lanczos_end:
                if s.true_check():
                    return done(it, "rtol")
                restart = True
                break
        if not restart:
            return done(it, reason)
