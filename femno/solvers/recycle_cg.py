"""Deflated (preconditioned) conjugate gradients with a recycled deflation space.

Saad, Yeung, Erhel & Guyomarc'h (2000), "A deflated version of the conjugate
gradient algorithm", with a preconditioner ``M`` (SPD, fixed) and the deflation
space ``W`` harvested from the previous solve (Ritz vectors of :math:`M^{-1}A`) and
carried in a :class:`DeflationSpace`.

>>> import numpy as np, scipy.sparse as sp
>>> A = sp.diags(np.r_[np.geomspace(1e-4, 1e-2, 5), np.linspace(1, 2, 295)], format="csr")
>>> space = DeflationSpace()
>>> its = [deflated_cg(A, b, k=5, recycle=space)[1]["iterations"]
...        for b in np.random.default_rng(0).standard_normal((2, 300))]
>>> space.k, its[1] < its[0]
(5, True)
"""

from __future__ import annotations

import math

import numpy as np

from femno.errors import InputError
from femno.solvers.base import check_tolerances
from femno.solvers.krylov import default_maxiter
from femno.solvers.recycle_ops import CarriedSpace, SerialOps, check_system, same_operator

__all__ = ["DeflationSpace", "deflated_cg", "deflated_cg_core"]


DIVERGENCE = 1e3
"""Deflated CG gives up its carried space once the residual exceeds this factor times
the smallest seen (CG's residual is not monotone, but not by three orders)."""


def _a_orthonormal_transform(F, drop_tol=1e-10):
    """``T`` (rows) with ``T F T^T = I`` on the numerically non-null part of SPD ``F``."""
    F = 0.5 * (F + F.T)
    w, Q = np.linalg.eigh(F)
    keep = w > drop_tol * max(w.max(), 0.0) if w.size else w > 0
    return (Q[:, keep] / np.sqrt(w[keep])).T


class DeflationSpace(CarriedSpace):
    """Deflation space ``W`` (``n x k``) with ``AW = A W`` and :math:`W^T A W = I`.

    Stored row-wise: a basis ``Wr`` (``k x n``), ``AWr = Wr A`` for the current
    matrix and ``Einv`` (``k x k``), the (pseudo-)inverse of :math:`E = W^T A W`
    (``None`` when ``W`` is A-orthonormal, as right after a harvest). On a new
    matrix ``AW`` is recomputed (one block product, ``k`` columns) and only the
    small ``E`` is re-factorised, so the basis is not rewritten; a new
    preconditioner only drops ``MAW`` (:math:`M^{-1} A W`, needed to harvest the
    next space). After a harvest ``AW`` and ``MAW`` are kept as small
    coefficient matrices over the solve's basis and formed only if the next solve
    has the same matrix (a new matrix recomputes ``AW`` anyway).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags(np.arange(1.0, 41.0), format="csr")
    >>> s = DeflationSpace(np.random.default_rng(0).standard_normal((40, 4))).for_matrix(A)
    >>> bool(np.allclose(s.W.T @ A @ s.W, np.eye(4)))
    True
    """

    BASIS, LABEL = "Wr", "W"

    def clear(self):
        """Forget the space."""
        super().clear()
        self._AWr = self._MAWr = None
        self.T = self.Einv = None  # T E T^T = I on the kept part; Einv = T^T T
        self._lazy = None  # (Y, AS, MAS): AWr = Y AS, MAWr = Y MAS, formed on demand
        # adaptive harvest (``harvest=None``): harvest while the space is young or when
        # the iteration count has drifted above its value right after the last harvest
        self.solves = self.harvests = 0
        self.harvest_next = True
        self.ref_its = None

    def _schedule(self, harvested: bool, iterations: int):
        """Decide whether the next solve harvests (adaptive mode)."""
        self.solves += 1
        if harvested:
            self.harvests += 1
            self.ref_its = None
            self.harvest_next = self.harvests < self.YOUNG
        elif self.ref_its is None:
            self.ref_its = iterations
            self.harvest_next = False
        else:
            self.harvest_next = iterations > self.DRIFT * self.ref_its

    #: adaptive harvest: the first YOUNG solves harvest; later ones when the iterations
    #: exceed DRIFT times those of the first solve after the last harvest
    YOUNG = 3
    DRIFT = 1.15

    @property
    def AWr(self):
        """``A W`` row-wise for the current matrix (formed from a harvest on demand)."""
        if self._AWr is None and self._lazy is not None:
            Y, AS, _ = self._lazy
            self._AWr = Y @ AS
        return self._AWr

    @property
    def MAWr(self):
        """:math:`M^{-1} A W` row-wise, or ``None`` when unknown for the current pair."""
        if self._MAWr is None and self._lazy is not None and self._lazy[2] is not None:
            Y, _, MAS = self._lazy
            self._MAWr = Y @ MAS
        return self._MAWr

    @MAWr.setter
    def MAWr(self, value):
        self._MAWr = value
        if value is None and self._lazy is not None:
            self._lazy = self._lazy[:2] + (None,)

    def _orthonormal(self, X):
        return None if X is None else (X if self.T is None else self.T @ X).T

    @property
    def W(self):
        """A-orthonormal basis (``n x k``) of the space for the current matrix."""
        return self._orthonormal(self.Wr)

    @property
    def AW(self):
        return self._orthonormal(self.AWr)

    def prepare(self, ops, *, M=None, force=False):
        """Make the space current for the operator of ``ops`` (and preconditioner ``M``).

        Same matrix: nothing to do (``A W`` formed from the last harvest if needed).
        New matrix: ``A W`` by one block product (``last_setup_matvecs = k``),
        :math:`E = W^T A W` and ``Einv``; numerically dependent directions of ``W``
        (relative eigenvalue of ``E`` below 1e-10) are dropped.
        """
        self.last_setup_matvecs = 0
        if self.k == 0:
            return self
        if not force and self._key is not None and ops.matches(self._key):
            if not same_operator(self._M, M):
                self.MAWr, self._M = None, M
            return self
        AWr = _block_matvec(ops, self.Wr)
        self.last_setup_matvecs = len(AWr)
        T = _a_orthonormal_transform(ops.gram(self.Wr, AWr))
        Wr = self.Wr
        if len(T) < len(Wr):  # numerically dependent directions: drop them
            Wr, AWr, T = T @ Wr, T @ AWr, None
        self.store(ops, Wr, AWr, None, M=M)
        if T is not None:
            self.T, self.Einv = T, T.T @ T
        self.refreshes += 1
        return self

    def store(self, ops, Wr, AWr, MAWr, *, M=None, lazy=None):
        """Keep ``Wr`` (A-orthonormal unless :attr:`Einv` is set after this call) with
        ``AWr`` and ``MAWr`` (or ``lazy = (Y, AS, MAS)`` giving them as ``Y AS``,
        ``Y MAS``)."""
        self.T = self.Einv = None
        self._lazy = lazy
        if Wr is None or len(Wr) == 0:
            self.Wr = self._AWr = self._MAWr = None
            self._key = self._lazy = None
            return
        self.Wr = np.ascontiguousarray(Wr)
        self._AWr = None if AWr is None else np.ascontiguousarray(AWr)
        self._MAWr = None if MAWr is None else np.ascontiguousarray(MAWr)
        self._key = ops.fingerprint()
        self._M = M


def _block_matvec(ops, Xr):
    """Rows of ``A X^T`` (``Xr`` row-wise, ``p x n``): one sparse block product when
    the ops object holds a serial matrix, else ``p`` products."""
    if isinstance(ops, SerialOps):
        return np.ascontiguousarray(np.asarray(ops.A @ Xr.T, dtype=np.float64).T)
    return np.array([ops.matvec(x) for x in Xr])


def deflated_cg_core(ops, b, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None,
                     k=10, recycle=None, harvest=None, M=None, thick_restart=True):
    """Deflated PCG on an ops object; see :func:`deflated_cg`."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise InputError(f"deflation dimension k must be a non-negative integer, got {k!r}")
    k = int(k)
    space = DeflationSpace() if recycle is None else recycle
    adaptive = harvest is None
    if adaptive:
        harvest = max(2 * k, 20) if (recycle is None or space.harvest_next) else 0
    harvest = int(harvest)
    if harvest < 0:
        raise InputError(f"harvest must be >= 0, got {harvest!r}")
    rtol, atol = check_tolerances(rtol, atol)
    b = np.asarray(b, dtype=np.float64).ravel()
    nloc = b.shape[0]
    maxiter = default_maxiter(ops.n) if maxiter is None else int(maxiter)
    bnorm = ops.norm(b)
    tol = max(rtol * bnorm, atol)
    rel = (lambda v: v / bnorm) if bnorm > 0 else (lambda v: v)
    setup_mv = 0

    def info(it, reason, kind):
        return {"iterations": int(it), "residuals": [float(h) for h in hist],
                "residual_kind": kind, "reason": reason, "recycle": space,
                "setup_matvecs": int(setup_mv)}

    if bnorm == 0.0:
        hist = [0.0]
        return np.zeros(nloc), info(0, "zero rhs", "true")
    x = np.zeros(nloc) if x0 is None else np.array(x0, dtype=np.float64).ravel()
    r = b.copy() if x0 is None else b - ops.matvec(x)
    hist = [rel(ops.norm(r))]
    if k > 0 and space.k > 0:
        space.prepare(ops, M=M)
        setup_mv = space.last_setup_matvecs
        Wr, AWr, Einv = space.Wr[:k], space.AWr[:k], space.Einv
        if Einv is not None and len(Wr) < space.k:  # a leading part of a non-orthonormal W
            T = _a_orthonormal_transform(ops.gram(Wr, AWr))
            Wr, AWr, Einv = T @ Wr, T @ AWr, None
    else:
        Wr = AWr = np.zeros((0, nloc))
        Einv = None
    deflate = len(Wr) > 0

    # local bindings (the loop is dominated by per-call overhead at ~10^4 unknowns)
    matvec, precond, dots = ops.matvec, ops.precond, ops.dots
    if isinstance(ops, SerialOps):
        def dot(u, v):
            return float(u @ v)

        def norm(v):
            return math.sqrt(float(v @ v))
    else:
        def dot(u, v):
            return float(dots(u[None], v)[0])

        norm = ops.norm

    def coeffs(Xr, v):  # (W^T A W)^{-1} X^T v for X = W or A W
        c = dots(Xr, v)
        return c if Einv is None else Einv @ c

    def start(x, r):  # x += W (W^T A W)^{-1} W^T r
        if deflate:
            c = coeffs(Wr, r)
            x, r = x + c @ Wr, r - c @ AWr
        z = precond(r)
        p = z - coeffs(AWr, z) @ Wr if deflate else z.copy()
        return x, r, z, p

    x, r, z, p = start(x, r)
    if deflate:
        hist.append(rel(norm(r)))
    rz = dot(r, z)
    collect = k > 0 and harvest > 0
    if deflate and collect:
        MAWr = space.MAWr
        if MAWr is None or len(MAWr) < space.k or Einv is not space.Einv:
            MAWr = np.array([ops.precond(v) for v in AWr])
            if Einv is space.Einv:
                space.MAWr = MAWr
        MAWr = MAWr[: len(Wr)]
    # harvest basis S with A S and M^{-1} A S in preallocated row blocks: W, then the
    # first `harvest` directions (window), or compressed to `keep` Ritz vectors whenever
    # full (thick restart)
    keep = 2 * k  # vectors kept at a thick restart of the harvest
    cap = (keep if thick_restart else len(Wr)) + harvest
    if collect:
        S, AS, MAS = (np.empty((cap, nloc)) for _ in range(3))
        count = len(Wr) if deflate else 0
        if deflate:
            S[:count], AS[:count], MAS[:count] = Wr, AWr, MAWr
    else:
        count = 0
    it, reason, kind = 0, "maxiter", "true"
    if hist[-1] * (bnorm if bnorm > 0 else 1.0) <= tol:
        reason = "rtol"
    while reason != "rtol" and it < maxiter:
        if not rz > 0 or not math.isfinite(rz):
            reason = "breakdown"
            break
        q = matvec(p)
        it += 1
        kind = "recursive"
        pq = dot(p, q)
        if not pq > 0 or not math.isfinite(pq):
            hist.append(hist[-1])
            reason = "breakdown"
            break
        alpha = rz / pq
        x += alpha * p
        r -= alpha * q
        z_new = precond(r)
        if collect and count < cap:
            S[count], AS[count] = p, q
            np.subtract(z, z_new, out=MAS[count])
            MAS[count] /= alpha  # M^{-1} q by linearity of M
            count += 1
            if thick_restart and count == cap:
                Y = _ritz(ops, S, AS, MAS, k, restart=True)
                count = len(Y)
                S[:count], AS[:count], MAS[:count] = Y @ S, Y @ AS, Y @ MAS
        z = z_new
        rnorm = norm(r)
        hist.append(rel(rnorm))
        if callback is not None:
            callback(x)
        if deflate and hist[-1] > DIVERGENCE * min(hist):
            reason = "deflation diverged"  # W nearly A-dependent for this matrix
            break
        if rnorm <= tol:
            r = b - matvec(x)  # true residual check
            rnorm = norm(r)
            hist[-1] = rel(rnorm)
            if rnorm <= tol:
                reason = "rtol"
                break
            x, r, z, p = start(x, r)  # residual replacement: restart
            rz = dot(r, z)
            continue
        rz_new = dot(r, z)
        p = z + (rz_new / rz) * p
        if deflate:
            p -= coeffs(AWr, z) @ Wr  # row-major (k, n): c @ Wr, not Wr.T @ c
        rz = rz_new
    if reason in ("deflation diverged", "breakdown") and deflate:
        # a carried space that no longer suits the matrix (high-contrast zoo family:
        # residual 4.5e5 after 3000 iterations): forget it and run plain PCG from zero,
        # harvesting a fresh space, with what is left of the iteration budget
        space.clear()
        x2, info2 = deflated_cg_core(ops, b, rtol=rtol, atol=atol,
                                     maxiter=max(maxiter - it, 1), callback=callback, k=k,
                                     recycle=space, harvest=max(2 * k, 20) if k else 0,
                                     M=M, thick_restart=thick_restart)
        info2["iterations"] += it
        info2["residuals"] = [float(h) for h in hist] + info2["residuals"]
        info2["setup_matvecs"] += int(setup_mv)
        info2["deflation_reset"] = True
        return x2, info2
    if collect and count > 0:
        # only W is formed now; A W and M^{-1} A W only if the next solve has this matrix
        Y = _ritz(ops, S[:count], AS[:count], MAS[:count], k)
        space.store(ops, Y @ S[:count], None, None, M=M,
                    lazy=(Y, AS[:count], MAS[:count]))
    if k > 0 and recycle is not None:
        space._schedule(collect and count > 0, it)
    return x, info(it, reason, kind)


def _ritz(ops, S, AS, MAS, k, *, restart=False):
    """Smallest Ritz vectors of :math:`M^{-1}A` (A-inner product) in ``span(S)``.

    Solves :math:`(AS)^T M^{-1} (AS)\\, y = \\lambda\\, S^T A S\\, y` and returns the
    coefficients ``Y`` (rows) of the ``k`` smallest, A-orthonormal: the Ritz vectors
    are the rows of ``Y S`` (with ``A`` times them ``Y AS``, ``M^{-1} A`` times them
    ``Y MAS``). With
    ``restart=True`` (thick restart inside a solve, as in eigCG of Stathopoulos &
    Orginos 2010) the ``k`` smallest Ritz vectors of ``span(S)`` *and* of
    ``span(S[:-1])`` are kept (up to ``2k`` vectors), which keeps the locally
    optimal direction and lets the Ritz vectors keep improving over the solve.
    """
    F = ops.gram(S, AS)
    G = ops.gram(AS, MAS)
    F, G = 0.5 * (F + F.T), 0.5 * (G + G.T)

    def smallest(F, G):
        d = 1.0 / np.sqrt(np.maximum(np.abs(np.diag(F)), 1e-300))
        T = _a_orthonormal_transform(F * d[:, None] * d[None, :]) * d[None, :]  # T F T^T = I
        if len(T) == 0:
            return T
        lam, Y = np.linalg.eigh(T @ G @ T.T)
        return Y[:, :k].T @ T

    Y = smallest(F, G)
    if restart and len(S) > 1:
        Y2 = smallest(F[:-1, :-1], G[:-1, :-1])
        Y = np.vstack([Y, np.hstack([Y2, np.zeros((len(Y2), 1))])])
        Y = _a_orthonormal_transform(Y @ F @ Y.T) @ Y
    return Y


def deflated_cg(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None,
                k=10, recycle=None, harvest=None, thick_restart=True):
    """Deflated preconditioned CG (Def-CG) for sequences of SPD systems.

    With a deflation space ``W`` and :math:`E = W^T A W` (``I`` after a
    harvest), the initial guess is corrected so that :math:`W^T r_0 = 0`, and the
    search directions are kept A-orthogonal to ``W``:

    .. math::

        x_0 \\mathrel{+}= W E^{-1} W^T r_0,\\quad z_j = M^{-1} r_j,\\quad
        p_{j} = z_j + \\beta_{j-1} p_{j-1} - W \\mu_j,\\quad
        \\mu_j = E^{-1} (AW)^T z_j,

    with the usual :math:`\\alpha_j = r_j^T z_j / p_j^T A p_j`,
    :math:`\\beta_j = r_{j+1}^T z_{j+1} / r_j^T z_j`. CG then effectively works on
    :math:`M^{-1}A` with the eigenvalues captured by ``W`` removed.

    Harvest (eigCG-like, Stathopoulos & Orginos 2010, no extra matrix products):
    the directions :math:`p_j`, :math:`A p_j` and
    :math:`M^{-1} A p_j = (z_j - z_{j+1})/\\alpha_j` (from the recurrences) are
    collected next to ``W``; the Ritz pairs of :math:`M^{-1}A` in the A-inner
    product over that basis ``S`` solve

    .. math:: (AS)^T M^{-1} (AS)\\, y = \\lambda\\, S^T A S\\, y .

    ``S`` holds ``W`` and the first ``harvest`` directions of the solve (or, with
    ``thick_restart=True``, is compressed whenever full, see below); at the end the
    ``k`` smallest Ritz vectors become the next ``W`` (A-orthonormal, with ``AW``
    and :math:`M^{-1}AW` known, so a solve with the same matrix needs no setup).
    Over a sequence the space keeps improving, since each harvest starts from the
    previous ``W``. A new matrix costs ``k`` products (``AW``, one sparse block
    product on a serial matrix, reported in ``info["setup_matvecs"]``), the
    ``k x k`` Gram matrix :math:`E = W^T A W` and, when the solve harvests, ``k``
    preconditioner applications (:math:`M^{-1}AW`). ``W`` itself is not rewritten
    for the new matrix: the projections use :math:`E^{-1}` (``k x k``), which
    saves two ``k x k x n`` products per system over re-A-orthonormalising it.
    A harvest forms only the new ``W``; ``AW`` and :math:`M^{-1}AW` are formed
    from the solve's basis only if the next solve has the same matrix.

    Parameters
    ----------
    A : sparse matrix or array, SPD
    b : ndarray
    x0, M, rtol, atol, maxiter, callback
        As for :func:`femno.solvers.krylov.cg` (``M`` fixed SPD).
    k : int
        Dimension of the deflation space (``0``: plain PCG).
    recycle : DeflationSpace, optional
        Carried between solves, updated in place (``info["recycle"]``).
    harvest : int, optional
        Directions collected (after ``W``) for the Ritz extraction, ``h``. ``None``
        (default): ``h = max(2k, 20)`` while the carried space is young (its first
        :attr:`DeflationSpace.YOUNG` harvests) and afterwards only when a solve
        needed more than :attr:`DeflationSpace.DRIFT` times the iterations of
        the first solve after the last harvest (the space has gone stale: the
        matrices drifted); otherwise ``W`` is reused as is. A harvest costs
        ``k`` preconditioner applications (:math:`M^{-1}AW` for a new matrix) and
        dense products with ``k + h`` vectors, which at :math:`10^4` unknowns is
        worth tens of CG iterations. ``harvest=0`` never updates ``W``; an integer
        always harvests. Memory ``3 (k + h)`` vectors.
    thick_restart : bool
        Harvest over the whole solve (eigCG-like thick restarts: whenever the
        basis holds ``2k + h`` vectors it is compressed to the ``k`` smallest Ritz
        vectors of the basis and of the basis minus its last vector) instead of
        over the first ``h`` directions only. Better Ritz vectors from one solve,
        at the cost of a compression every ``h`` iterations.

    Returns
    -------
    x : ndarray
    info : dict
        As for :func:`femno.solvers.krylov.cg`, plus ``recycle`` and ``setup_matvecs``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(100, 100), format="csr")
    >>> x, info = deflated_cg(A, np.ones(100), k=4, rtol=1e-10)
    >>> info["reason"], info["recycle"].k, bool(np.linalg.norm(A @ x - 1) < 1e-8)
    ('rtol', 4, True)
    """
    A, b, x0 = check_system(A, b, x0)
    return deflated_cg_core(SerialOps(A, M), b, x0=x0, rtol=rtol, atol=atol, maxiter=maxiter,
                            callback=callback, k=k, recycle=recycle, harvest=harvest, M=M,
                            thick_restart=thick_restart)
