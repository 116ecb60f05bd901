"""Krylov subspace recycling: GCRO-DR and deflated CG for sequences of systems.

For a sequence :math:`A^{(i)} x^{(i)} = b^{(i)}` of similar systems (a parametric
family, SPEC §1 "sorted Krylov recycling"), the slowly converging part of the
spectrum is shared between neighbours. :func:`gcrodr` (general matrices) and
:func:`~femno.solvers.recycle_cg.deflated_cg` (SPD matrices) carry a small subspace
from one solve to the next in a :class:`RecycleSpace` /
:class:`~femno.solvers.recycle_cg.DeflationSpace` that the caller keeps and passes
again; :func:`femno.solvers.krylov` does this for you with ``recycle=True``.

Right preconditioning and the recycle space
-------------------------------------------
:func:`gcrodr` is right preconditioned, :math:`\\tilde A = A M^{-1}`, so the
monitored residual is the true one. Its recycle space lives in the *preconditioned*
space: ``U`` (``n x k``) with :math:`C = A M^{-1} U`, :math:`C^T C = I`. Alongside
it :class:`RecycleSpace` keeps :math:`Z = M^{-1} U` (the directions actually added
to ``x``). When the matrix or the preconditioner changes, ``U`` is carried and
:math:`Z = M_{new}^{-1} U`, :math:`C = A_{new} Z` are recomputed, followed by a thin
QR :math:`C = Q R`, :math:`C \\leftarrow Q`, :math:`U \\leftarrow U R^{-1}`,
:math:`Z \\leftarrow Z R^{-1}` (``k`` preconditioner applications and ``k`` matrix
products, reported in ``info["setup_matvecs"]``, not in ``iterations``).

Distributed systems use the same algorithm through an *ops* object
(:mod:`femno.solvers.recycle_ops`, :mod:`femno.solvers.recycle_petsc`).

>>> import numpy as np, scipy.sparse as sp
>>> A = sp.diags([-1.2, 2.0, -0.8], [-1, 0, 1], shape=(200, 200), format="csr")
>>> space = RecycleSpace()
>>> its = [gcrodr(A, b, m=20, k=5, recycle=space)[1]["iterations"]
...        for b in np.random.default_rng(0).standard_normal((3, 200))]
>>> space.k, its[2] < its[0]
(5, True)
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from femno.errors import InputError
from femno.solvers.base import check_tolerances
from femno.solvers.krylov import default_maxiter
from femno.solvers.recycle_cg import DeflationSpace, deflated_cg
from femno.solvers.recycle_ops import (
    CarriedSpace,
    SerialOps,
    identity_pc,
    matvec_rows,
    orthonormalize_block,
    precond_rows,
    same_operator,
)
from femno.solvers.recycle_ops import check_system as _check
from femno.solvers.recycle_ritz import harmonic_ritz as _harmonic_ritz  # noqa: F401
from femno.solvers.recycle_ritz import update_space as _update_space

__all__ = ["RecycleSpace", "gcrodr", "deflated_cg", "DeflationSpace", "gcrodr_core"]

_EPS = np.finfo(np.float64).eps


class RecycleSpace(CarriedSpace):
    """A recycle space ``U`` with ``C = A M^{-1} U``, ``C^T C = I``, carried between solves.

    Stored row-wise (``k x n``); :attr:`U`, :attr:`C`, :attr:`Z` are the usual
    ``n x k`` views. :attr:`Z` is :math:`M^{-1} U`, so :math:`A Z = C`.

    Attributes
    ----------
    k : int
        Number of recycled vectors (0 when empty).
    refreshes : int
        How often ``C`` was recomputed for a new matrix / preconditioner.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags(np.arange(1.0, 51.0), format="csr")
    >>> space = RecycleSpace(np.random.default_rng(1).standard_normal((50, 3)))
    >>> _ = space.for_matrix(A)
    >>> bool(np.allclose(space.C.T @ space.C, np.eye(3)) and np.allclose(A @ space.U, space.C))
    True
    """

    def clear(self):
        """Forget everything (the next solve starts without a recycle space)."""
        super().clear()
        self._Zr = self._Cr = None
        self._lazy = None  # SpaceUpdate whose C, Z are not formed yet (see store_update)
        self._work = {}  # reusable cycle buffers (see workspace)
        self._pending = None  # ops of a deferred CholeskyQR pass (serial only)

    # C and Z rows: formed from a pending SpaceUpdate on first use
    @property
    def Cr(self):
        if self._lazy is not None:
            self._form()
        return self._Cr

    @Cr.setter
    def Cr(self, value):
        self._Cr = value

    @property
    def Zr(self):
        if self._lazy is not None:
            self._form()
        return self._Zr

    @Zr.setter
    def Zr(self, value):
        self._Zr = value

    def workspace(self, name, shape):
        """A float64 buffer of ``shape`` kept for the next solve (contents undefined).

        :func:`gcrodr_core` takes its Arnoldi basis and image blocks from here, so a
        sequence of solves allocates them once instead of once per cycle (fresh
        megabyte-sized arrays cost page faults comparable to the block products).
        A pending ``C``, ``Z`` (which may refer to the buffers) is formed first.
        """
        if self._lazy is not None:
            self._form()
        buf = self._work.get(name)
        if buf is None or buf.shape != tuple(shape):
            buf = self._work[name] = np.empty(shape)
        return buf

    def _form(self):
        upd, self._lazy = self._lazy, None
        self._Zr = self.Ur if upd.same else np.ascontiguousarray(upd.Z())
        self._Cr = np.ascontiguousarray(upd.C())

    @property
    def U(self):
        self._settle()
        return None if self.Ur is None else self.Ur.T

    @property
    def C(self):
        self._settle()
        return None if self.Cr is None else self.Cr.T

    @property
    def Z(self):
        self._settle()
        return None if self.Zr is None else self.Zr.T

    def reorthonormalize(self, ops):
        """One CholeskyQR pass on ``C`` (``U``, ``Z`` alike), against round-off of the cycles.

        For serial ``ops`` (``ops.local_only``) the pass is deferred until the space
        is used again for the same operator or read through :attr:`U`, :attr:`C`,
        :attr:`Z`: a refresh for a new matrix re-orthonormalises :math:`A M^{-1} U`
        anyway, and gives the same space whether or not the pass was made (the pass
        is a triangular change of basis ``U <- L^{-1} U``, which the refresh's QR undoes).
        """
        if self.Ur is None:
            return
        if getattr(ops, "local_only", False):
            self._pending = ops
        else:
            self._reorth(ops)

    def _settle(self):
        if self._pending is not None:
            self._reorth(self._pending)

    def _reorth(self, ops):
        self._pending = None
        if self.Zr is self.Ur:  # (forms a pending C, Z)
            Cr, Ur = orthonormalize_block(ops, self.Cr, self.Ur, passes=1)
            Zr = Ur
        else:
            Cr, Ur, Zr = orthonormalize_block(ops, self.Cr, self.Ur, self.Zr, passes=1)
        self._set(Ur, Zr, Cr)

    def is_current(self, ops, M=None) -> bool:
        """True when ``C`` was built for the operator of ``ops`` and preconditioner ``M``."""
        return self.Ur is not None and ops.matches(self._key) and same_operator(self._M, M)

    def update_matrix(self, A, M=None):
        """Recompute ``C = A M^{-1} U`` for ``A`` unconditionally (the published SKR step)."""
        return self.prepare(SerialOps(A, M), M=M, force=True)

    def prepare(self, ops, *, M=None, force=False):
        """:meth:`for_matrix` on an ops object (serial or distributed)."""
        self.last_setup_matvecs = 0
        if self.Ur is None or self.k == 0:
            return self
        if not force and self.is_current(ops, M):
            if self._pending is not None:
                self._reorth(ops)
            return self
        self._pending = None  # the refresh below re-orthonormalises
        self._lazy = None  # and recomputes C, Z from U
        if identity_pc(ops):
            Cr, Ur = orthonormalize_block(ops, matvec_rows(ops, self.Ur), self.Ur)
            Zr = Ur
        else:
            Zr = precond_rows(ops, self.Ur)
            Cr, Ur, Zr = orthonormalize_block(ops, matvec_rows(ops, Zr), self.Ur, Zr)
        self.store(ops, Ur, Zr, Cr, M=M)
        self.refreshes += 1
        self.last_setup_matvecs = len(Zr)
        return self

    def store(self, ops, Ur, Zr, Cr, *, M=None):
        """Set the space (row blocks) as valid for the operator of ``ops``.

        ``Zr is Ur`` (identity preconditioner) is kept: one array serves both.
        """
        self._pending = self._lazy = None
        if Ur is None or len(Ur) == 0:
            self.Ur = self.Zr = self.Cr = None
            self._key = None
            return
        self._set(Ur, Zr, Cr)
        self._key = ops.fingerprint()
        self._M = M

    def store_update(self, ops, upd, *, M=None):
        """Keep the space of :class:`~femno.solvers.recycle_ritz.SpaceUpdate` ``upd``.

        Only ``U`` is formed now; ``C`` and ``Z`` are formed when first used, which
        happens only if the next solve has the same operator (a new matrix or
        preconditioner recomputes them from ``U`` in :meth:`prepare`).
        """
        self._pending = None
        U = upd.U()
        if len(U) == 0:
            self.store(ops, None, None, None, M=M)
            return
        self.Ur = np.ascontiguousarray(U)
        self._Zr = self._Cr = None
        self._lazy = upd
        self._key = ops.fingerprint()
        self._M = M

    def _set(self, Ur, Zr, Cr):
        self._lazy = None
        if len(Ur) == 0:
            self.Ur = self.Zr = self.Cr = None
            self._key = None
            return
        self.Ur, self.Cr = np.ascontiguousarray(Ur), np.ascontiguousarray(Cr)
        self.Zr = self.Ur if Zr is Ur else np.ascontiguousarray(Zr)


def _check_mk(m, k):
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise InputError(f"restart length m must be a positive integer, got {m!r}")
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise InputError(f"recycle dimension k must be a non-negative integer, got {k!r}")
    if k >= m:
        raise InputError(f"recycle dimension k={k} must be smaller than the restart length m={m}")
    return int(m), int(k)


def gcrodr_core(ops, b, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None,
                m=40, k=20, recycle=None, M=None):
    """GCRO-DR on an ops object (local row blocks); see :func:`gcrodr` for the method.

    ``b`` and ``x0`` are this rank's rows. ``M`` is only used to decide whether the
    recycle space must be refreshed (the preconditioner itself is ``ops.precond``).
    Returns ``(x_local, info)``.
    """
    m, k = _check_mk(m, k)
    rtol, atol = check_tolerances(rtol, atol)
    b = np.asarray(b, dtype=np.float64).ravel()
    nloc = b.shape[0]
    n = int(ops.n)  # global size
    maxiter = default_maxiter(n) if maxiter is None else int(maxiter)
    if recycle is None:
        recycle = RecycleSpace()
    bnorm = ops.norm(b)
    tol = max(rtol * bnorm, atol)
    rel = (lambda v: v / bnorm) if bnorm > 0 else (lambda v: v)

    def info(it, reason, extra=0):
        return {"iterations": int(it), "residuals": [float(h) for h in hist],
                "residual_kind": "true", "reason": reason, "recycle": recycle,
                "setup_matvecs": int(extra), "cycles": cycles}

    cycles = 0
    if bnorm == 0.0:
        hist = [0.0]
        return np.zeros(nloc), info(0, "zero rhs")
    x = np.zeros(nloc) if x0 is None else np.array(x0, dtype=np.float64).ravel()
    r = b.copy() if x0 is None else b - ops.matvec(x)
    hist = [rel(ops.norm(r))]
    m = min(m, n)
    k = min(k, m - 1)
    setup_mv = 0
    if k > 0 and recycle.k > 0:
        recycle.prepare(ops, M=M)
        setup_mv = recycle.last_setup_matvecs
    same = identity_pc(ops)  # M = I: Z is U, the Arnoldi images are V itself
    if k > 0 and recycle.k > 0:  # (may have lost all vectors in the refresh)
        Ur, Cr = recycle.Ur[:k], recycle.Cr[:k]
        Zr = Ur if recycle.Zr is recycle.Ur else recycle.Zr[:k]
    else:
        Ur, Cr = np.zeros((0, nloc)), np.zeros((0, nloc))
        Zr = Ur if same else np.zeros((0, nloc))

    def project(x, r, Cr, Zr):
        if len(Cr):
            c = ops.dots(Cr, r)
            x = x + Zr.T @ c
            r = r - Cr.T @ c
        return x, r

    x, r = project(x, r, Cr, Zr)
    upd = None  # the last cycle's new space while not formed (recycle_ritz.SpaceUpdate)
    rnorm = ops.norm(r)
    if len(Cr):
        hist.append(rel(rnorm))
    it, reason = 0, "maxiter"
    while True:
        if rnorm <= tol:
            reason = "rtol"
            break
        if it >= maxiter:
            break
        if upd is not None:
            Ur, Zr, Cr = upd.blocks()
            upd = None
        cycles += 1
        kc = len(Cr)
        steps = m - kc
        Bas = recycle.workspace("basis", (m + 1, nloc))  # kc + steps + 1 = m + 1 rows
        Bas[:kc] = Cr
        V = Bas[kc:]
        Zv = V if same else recycle.workspace("images", (m, nloc))[:steps]
        H = np.zeros((kc + steps + 1, steps))  # rows: [B; Hbar]
        R = np.zeros((steps + 1, steps))
        cs, sn = [0.0] * steps, [0.0] * steps  # Givens rotations (Python floats: IEEE double)
        g = np.zeros(steps + 1)
        beta = rnorm
        V[0] = r / beta
        g[0] = beta
        lucky = bad = False
        j = 0
        for j in range(steps):
            if same:
                w = ops.matvec(V[j])
            else:
                z = ops.precond(V[j])
                Zv[j] = z
                w = ops.matvec(z)
            it += 1
            p = kc + j + 1
            wn = ops.norm(w)
            h = ops.dots(Bas[:p], w)  # classical Gram-Schmidt (BLAS-2)
            w -= Bas[:p].T @ h
            hn = ops.norm(w)
            if hn < 0.7071 * wn:  # a second pass where the first cancelled (Kahan-Parlett)
                h2 = ops.dots(Bas[:p], w)
                w -= Bas[:p].T @ h2
                h += h2
                hn = ops.norm(w)
            H[:p, j] = h
            H[p, j] = hn
            col = h[kc:].tolist() + [hn]
            for i in range(j):
                c_, s_, a_, b_ = cs[i], sn[i], col[i], col[i + 1]
                col[i] = c_ * a_ + s_ * b_
                col[i + 1] = -s_ * a_ + c_ * b_
            rr = float(np.hypot(col[j], col[j + 1]))
            cs[j], sn[j] = (1.0, 0.0) if rr == 0.0 else (col[j] / rr, col[j + 1] / rr)
            col[j], col[j + 1] = rr, 0.0
            R[: j + 2, j] = col
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            if not np.isfinite(g[j + 1]):
                bad = True
                hist.append(hist[-1])
                break
            hist.append(rel(abs(g[j + 1])))
            if hn <= 4 * _EPS * beta:
                lucky = True
                break
            V[j + 1] = w / hn
            if abs(g[j + 1]) <= tol or it >= maxiter:
                break
        jj = j + 1
        Rj = R[:jj, :jj]
        dg = np.abs(np.diag(Rj))
        singular = bad or dg.min() <= _EPS * dg.max()
        if singular:
            y = np.linalg.lstsq(Rj, g[:jj], rcond=None)[0]
        else:
            y = sla.solve_triangular(Rj, g[:jj], lower=False, check_finite=False)
        x = x + Zv[:jj].T @ y
        if kc:
            x = x - Zr.T @ (H[:kc, :jj] @ y)
        upd = None
        if k > 0 and not bad:  # deflated restart: new recycle space (None: keep the old)
            upd = _update_space(ops, Bas, Zv, H, Ur, Zr, kc, jj, k, lucky, same=same)
            if upd is None:
                Cr = Bas[:kc].copy()  # (Bas is reused by the next cycle or solve)
        r = b - ops.matvec(x)
        if upd is None:
            x, r = project(x, r, Cr, Zr)
        else:  # projection onto the new space without forming it (formed if a cycle follows)
            dx, dr = upd.project(r)
            x, r = x + dx, r - dr
        previous, rnorm = rnorm, ops.norm(r)
        hist[-1] = rel(rnorm)
        if callback is not None:
            callback(x)
        if rnorm <= tol:
            reason = "rtol"
            break
        if bad or ((singular or lucky) and rnorm >= previous):
            reason = "breakdown"
            break
    if k > 0:
        if upd is not None:  # the last cycle's space: U formed, C and Z on first use
            recycle.store_update(ops, upd, M=M)
        else:
            recycle.store(ops, Ur, Zr, Cr, M=M)
        if cycles:  # one CholeskyQR pass against round-off accumulated over the cycles
            recycle.reorthonormalize(ops)  # (deferred for serial ops: see there)
    return x, info(it, reason, setup_mv)


def gcrodr(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None,
           m=40, k=20, recycle=None):
    """GCRO-DR(m, k): GMRES with deflated restarting and subspace recycling.

    Parks, de Sturler, Mackey, Johnson & Maiti (2006), right preconditioned
    (:math:`\\tilde A = A M^{-1}`, true residual monitored). With a recycle space
    :math:`C = \\tilde A U`, :math:`C^T C = I`, the iterate is first corrected,
    :math:`x \\mathrel{+}= M^{-1} U C^T r`, :math:`r \\mathrel{-}= C C^T r`, and each
    cycle runs ``m - k`` Arnoldi steps of :math:`(I - C C^T)\\tilde A`,

    .. math:: (I - C C^T)\\tilde A V_j = V_{j+1} \\bar H_j,\\quad B_j = C^T \\tilde A V_j,
              \\qquad y = \\arg\\min_y \\|\\beta e_1 - \\bar H_j y\\|,\\quad
              x \\mathrel{+}= M^{-1}(V_j y - U B_j y),

    so the cycle minimises the residual over :math:`\\mathrm{span}(U, V_j)`. The
    new ``U`` holds the ``k`` harmonic Ritz vectors of smallest magnitude of
    :math:`\\tilde A` in :math:`\\hat V = [U D, V_j]`, from
    :math:`\\bar G^T \\bar G g = \\theta \\bar G^T \\hat W^T \\hat V g`,
    :math:`\\bar G = \\begin{bmatrix} D & B_j \\\\ 0 & \\bar H_j\\end{bmatrix}`,
    :math:`\\hat W = [C, V_{j+1}]`, followed by ``QR(G P) = Q R``,
    :math:`C = \\hat W Q`, :math:`U = \\hat V P R^{-1}`. Without a recycle space the
    first cycle is GMRES(m) and ``k`` harmonic Ritz vectors of :math:`\\bar H_m`
    start the recycling. ``k = 0`` is plain GMRES(m).

    Parameters
    ----------
    A : sparse matrix, array or LinearOperator, shape (n, n)
    b : ndarray, shape (n,)
    x0 : ndarray, optional
    M : callable, optional
        ``r -> M^{-1} r``, a fixed operator (the Arnoldi vectors' images are
        stored, as in FGMRES, so no extra application is needed for the update).
    rtol, atol : float
        Stop when :math:`\\|b - A x\\| \\le \\max(\\mathrm{rtol}\\|b\\|, \\mathrm{atol})`.
    maxiter : int, optional
        Limit on Arnoldi matrix-vector products (default :func:`default_maxiter`).
    callback : callable, optional
        ``callback(x)`` after every cycle.
    m, k : int
        Restart length (Arnoldi steps of the first cycle; ``m - k`` later) and
        recycle dimension, ``0 <= k < m`` (else :class:`~femno.errors.InputError`).
    recycle : RecycleSpace, optional
        Carried space, updated in place (also returned in ``info["recycle"]``).
        Refreshed for a new matrix or preconditioner (``k`` extra matrix products,
        ``info["setup_matvecs"]``, not counted in ``iterations``).

    Returns
    -------
    x : ndarray
    info : dict
        ``iterations`` (Arnoldi matrix products), ``residuals`` (relative residual
        history, Givens estimates replaced by the true residual at every restart;
        with a carried space an extra entry for the projection of the initial
        guess), ``residual_kind="true"``, ``reason`` (``"rtol"``, ``"maxiter"``,
        ``"breakdown"``, ``"zero rhs"``), ``recycle``, ``setup_matvecs``, ``cycles``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.3, 2.0, -0.7], [-1, 0, 1], shape=(300, 300), format="csr")
    >>> x, info = gcrodr(A, np.ones(300), m=20, k=5, rtol=1e-10)
    >>> info["reason"], info["recycle"].k, bool(np.linalg.norm(A @ x - 1) < 1e-9 * np.sqrt(300))
    ('rtol', 5, True)
    """
    A, b, x0 = _check(A, b, x0)
    return gcrodr_core(SerialOps(A, M), b, x0=x0, rtol=rtol, atol=atol, maxiter=maxiter,
                       callback=callback, m=m, k=k, recycle=recycle, M=M)
