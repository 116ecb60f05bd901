"""Deflated restarting of GCRO-DR: harmonic Ritz extraction of the next recycle space.

Split from :mod:`femno.solvers.recycle` (which runs the Arnoldi cycles). After a
cycle with recycle space :math:`C = \\tilde A U` (``kc`` vectors, :math:`C^T C = I`)
and Arnoldi basis :math:`V_{j+1}` of :math:`(I - C C^T)\\tilde A`, :math:`\\tilde A
= A M^{-1}`,

.. math:: \\tilde A \\hat V = \\hat W \\bar G, \\quad \\hat V = [U D, V_j], \\quad
          \\hat W = [C, V_{j+1}], \\quad
          \\bar G = \\begin{bmatrix} D & B_j \\\\ 0 & \\bar H_j \\end{bmatrix},

with :math:`D = \\mathrm{diag}(1/\\|u_i\\|)`. The ``k`` harmonic Ritz vectors of
smallest magnitude solve :math:`\\bar G^T \\bar G g = \\theta\\, \\bar G^T \\hat W^T
\\hat V g` (small dense problems, once per cycle); with ``P`` an orthonormal basis of
them and ``QR(G P) = Q R``, the new space is :math:`C = \\hat W Q`, :math:`U = \\hat V
P R^{-1}`, :math:`Z = M^{-1} U` (from the stored images, no preconditioner
application). The only products with ``n``-vectors are :math:`\\hat W^T U` (one block
reduction), the squared norms of ``U`` and the three ``k``-row block updates (two
when :math:`M = I`, where ``Z`` is ``U``); :class:`SpaceUpdate` makes the block
updates only when a block is needed, so the last cycle of a solve forms ``U`` alone.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from femno.solvers.recycle_ops import row_norms2

__all__ = ["harmonic_ritz", "update_space", "SpaceUpdate"]

_EPS = np.finfo(np.float64).eps


def harmonic_ritz(Gbar, WtV, k):
    """``k`` harmonic Ritz vectors of smallest magnitude: ``Gbar^T Gbar g = t Gbar^T WtV g``.

    Complex pairs contribute their real and imaginary parts; returns an
    orthonormal real basis ``P`` (columns), possibly with fewer than ``k`` columns.
    """
    p = Gbar.shape[1]
    k = min(k, p)
    if k == 0:
        return np.zeros((p, 0))
    try:
        theta, G = sla.eig(Gbar.T @ Gbar, Gbar.T @ WtV)
    except (np.linalg.LinAlgError, ValueError):
        return np.zeros((p, 0))
    mag = np.abs(theta)
    mag[~np.isfinite(mag)] = np.inf
    cols, used = [], np.zeros(p, bool)
    for i in np.argsort(mag, kind="stable"):
        if len(cols) >= k or not np.isfinite(mag[i]):
            break
        if used[i]:
            continue
        used[i] = True
        g = G[:, i]
        if abs(theta[i].imag) > 1e-12 * max(mag[i], _EPS):
            cols.append(g.real)
            if len(cols) < k:
                cols.append(g.imag)
            j = np.argmin(np.where(used, np.inf, np.abs(theta - np.conj(theta[i]))))  # conjugate
            used[j] = True
        else:
            cols.append(g.real)
    if not cols:
        return np.zeros((p, 0))
    Q, R = np.linalg.qr(np.array(cols).T)
    d = np.abs(np.diag(R))
    return Q[:, d > 1e-12 * d.max()]


class SpaceUpdate:
    """The next recycle space of one cycle, as small coefficients on that cycle's blocks.

    With ``T = (P R^{-1})^T`` split as ``[T_U, T_V]`` (``kc`` and ``jj`` columns),

    .. math:: C = Q^T \\hat W, \\quad U = T_V V_j + T_U D\\, U_{old}, \\quad
              Z = T_V (M^{-1} V_j) + T_U D\\, Z_{old}

    (row blocks). Nothing ``n``-long is formed until asked for: :meth:`project` applies
    the new space to a residual from the coefficients alone (matrix-vector products with
    the blocks), so a solve that converges after this cycle forms only ``U`` (the part a
    refresh for the next matrix needs) and leaves ``C`` and ``Z`` to :meth:`blocks`,
    called only if the same operator comes again. Holds references to the cycle's blocks
    (``Bas``, ``Zv``, old ``U``, ``Z``), which are never modified afterwards.
    """

    def __init__(self, ops, Bas, Zv, Ur, Zr, nb, kc, jj, Q, T, d, same):
        self.ops, self.Bas, self.Zv, self.Ur_old, self.Zr_old = ops, Bas, Zv, Ur, Zr
        self.nb, self.kc, self.jj, self.same = nb, kc, jj, same
        self.Q = Q
        self.TV = np.ascontiguousarray(T[:, kc:])
        self.TU = np.ascontiguousarray(T[:, :kc] * d) if kc else None
        self._U = None

    @property
    def k(self) -> int:
        return self.Q.shape[1]

    def U(self):
        """New ``U`` rows (formed once)."""
        if self._U is None:
            Un = self.TV @ self.Bas[self.kc:self.kc + self.jj]
            if self.kc:
                Un += self.TU @ self.Ur_old
            self._U = Un
        return self._U

    def C(self):
        """New ``C`` rows, :math:`Q^T \\hat W`."""
        return self.Q.T @ self.Bas[:self.nb]

    def Z(self):
        """New ``Z = M^{-1} U`` rows from the stored images (``U`` itself when ``M = I``)."""
        if self.same:
            return self.U()
        Zn = self.TV @ self.Zv[:self.jj]
        if self.kc:
            Zn += self.TU @ self.Zr_old
        return Zn

    def blocks(self):
        """``(U, Z, C)`` row blocks, ``Z is U`` when ``M = I``."""
        U = self.U()
        return U, (U if self.same else self.Z()), self.C()

    def project(self, r):
        """``(dx, dr)`` with :math:`c = C^T r`, ``dx = Z c``, ``dr = C c``, without forming ``C`` or ``Z``."""
        W = self.Bas[:self.nb]
        c = self.Q.T @ self.ops.dots(W, r)  # one reduction
        dr = (self.Q @ c) @ W
        dx = (self.TV.T @ c) @ self.Zv[:self.jj]
        if self.kc:
            dx += (self.TU.T @ c) @ self.Zr_old
        return dx, dr


def update_space(ops, Bas, Zv, H, Ur, Zr, kc, jj, k, lucky, *, same=False):
    """Harmonic Ritz extraction after a cycle (Parks et al. 2006, steps 12-16 / 27-31).

    ``Bas`` holds the rows ``[C; V_{j+1}]``, ``Zv`` the images :math:`M^{-1} v_i`
    (``same=True`` when :math:`M = I`: then ``Zv`` is ``V`` and ``Zr`` is ``Ur``), ``H``
    the ``[B_j; \\bar H_j]`` columns. Returns a :class:`SpaceUpdate` (the new ``U``,
    ``Z``, ``C`` as coefficients on these blocks), or ``None`` when no harmonic Ritz
    vector was found (keep the old space). The only product with ``n``-vectors made here
    is :math:`\\hat W^T U` (one block reduction) and the squared norms of ``U``.
    """
    nb = kc + jj + (0 if lucky else 1)  # rows of W_hat = [C, V_{j+1}]
    Gbar = np.zeros((nb, kc + jj))
    WtV = np.zeros((nb, kc + jj))
    Gbar[:, kc:] = H[:nb, :jj]
    WtV[kc:kc + jj, kc:] = np.eye(jj)
    d = None
    if kc:
        d = 1.0 / np.sqrt(np.maximum(row_norms2(ops, Ur), _EPS**2))
        Gbar[:kc, :kc] = np.diag(d)
        WtV[:, :kc] = ops.gram(Bas[:nb], Ur) * d
    P = harmonic_ritz(Gbar, WtV, k)
    if P.shape[1] == 0:
        return None
    Q, Rq = np.linalg.qr(Gbar @ P)
    dq = np.abs(np.diag(Rq))
    keep = dq > 1e-12 * dq.max()
    Q, Rq, P = Q[:, keep], Rq[np.ix_(keep, keep)], P[:, keep]
    T = sla.solve_triangular(Rq, P.T, trans="T", lower=False)  # (P R^{-1})^T
    return SpaceUpdate(ops, Bas, Zv, Ur, Zr, nb, kc, jj, Q, T, d, same)
