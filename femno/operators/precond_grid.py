r"""Grid side of femno's CNN preconditioner: layout, scaling, Galerkin levels.

Everything here is fixed per matrix, not trained: the Jacobi scaling
(:func:`scaled_matrix`), the map between free dofs and a grid image
(:class:`GridLayout`), the 8-neighbour stencil image the network's gates read
(:func:`grid_stencil`), and the Galerkin hierarchy
:math:`A_{\ell+1} = R_\ell A_\ell R_\ell^T` of the Jacobi two-grid levels that
:class:`~femno.operators.precond_nets.MGCNN` can run above its network
(:func:`galerkin_hierarchy`), in two forms: float32 stencil images for the torch
path (training, GPU; :func:`stencil_levels`, :func:`_stencil_apply`) and float64
scipy matrices for CPU inference (:class:`JacobiLevels`).

Grid layout
-----------
:class:`~femno.operators.precond_nets.MGCNN` needs the free dofs of a structured
grid as an image.  For the ``poisson``/``darcy`` families with P1 or Q1 on
``unit_square(n)`` the free dofs are the :math:`(n-1)^2` interior nodes;
:meth:`GridLayout.from_coordinates` maps them to an :math:`(n-1) \times (n-1)`
image from their coordinates (any dof order), :meth:`GridLayout.from_matrix`
assumes lexicographic order (femno's meshes) and checks that the matrix couples
only grid neighbours.  Anything else (unstructured meshes, P2) is rejected with
:class:`~femno.errors.InputError`; the network itself is fully convolutional and
runs at any grid size.

>>> import numpy as np, scipy.sparse as sp
>>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(7, 7))
>>> A = (sp.kron(T, sp.eye(7)) + sp.kron(sp.eye(7), T)).tocsr()
>>> At, s = scaled_matrix(A)
>>> [(lv.shape, lv.A.shape, lv.R.shape) for lv in galerkin_hierarchy(At, GridLayout.from_matrix(A), 2)]
[((7, 7), (49, 49), (9, 49)), ((3, 3), (9, 9), (1, 9))]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from femno.errors import InputError

__all__ = ["GridLayout", "GridLevel", "JacobiLevels", "galerkin_hierarchy", "grid_stencil",
           "scaled_matrix", "stencil_levels"]


def scaled_matrix(A) -> tuple[sp.csr_matrix, np.ndarray]:
    r"""``(Ã, s)`` with :math:`s = D^{-1/2}` and :math:`\tilde A = S A S` (csr, float64).

    Raises :class:`InputError` for a non-positive diagonal (not SPD).
    """
    A = sp.csr_matrix(A, dtype=np.float64)
    d = A.diagonal()
    if not np.all(d > 0):
        i = int(np.flatnonzero(~(d > 0))[0])
        raise InputError(f"learned preconditioner: diagonal entry {i} is {d[i]:g} <= 0; "
                         "the matrix is not symmetric positive definite")
    s = 1.0 / np.sqrt(d)
    S = sp.diags(s)
    return sp.csr_matrix(S @ A @ S), s


class GridLayout:
    """Map between dof vectors ``(..., m)`` and grid images ``(..., H, W)``.

    ``image.reshape(-1)[k] = v[perm[k]]``.

    Parameters
    ----------
    perm : ndarray of int, shape (H * W,)
    shape : (int, int)
    """

    def __init__(self, perm, shape):
        self.shape = (int(shape[0]), int(shape[1]))
        self.perm = np.asarray(perm, dtype=np.int64)
        self.identity = bool(np.array_equal(self.perm, np.arange(self.perm.size)))
        self.inverse = np.argsort(self.perm)
        self._t = {}

    @classmethod
    def from_coordinates(cls, p, *, tol: float = 1e-8) -> GridLayout:
        """From dof coordinates ``p`` of shape ``(2, m)`` lying on a tensor grid."""
        p = np.asarray(p, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] != 2:
            raise InputError(f"grid layout needs 2-D dof coordinates (2, m), got {p.shape}")
        span = max(float(np.ptp(p[0])), float(np.ptp(p[1])), 1e-300)
        xs = np.unique(np.round(p[0] / (tol * span)))
        ys = np.unique(np.round(p[1] / (tol * span)))
        m = p.shape[1]
        if xs.size * ys.size != m:
            raise InputError(
                f"the {m} free dofs do not form a structured tensor grid ({xs.size} distinct x "
                f"by {ys.size} distinct y); the CNN preconditioner needs P1/Q1 on a structured "
                "grid (unit_square), use the message-passing kind 'precond-gnn' otherwise")
        i = np.searchsorted(xs, np.round(p[0] / (tol * span)))
        j = np.searchsorted(ys, np.round(p[1] / (tol * span)))
        k = i * ys.size + j
        if np.unique(k).size != m:
            raise InputError("two free dofs share a grid position: not a P1/Q1 structured grid")
        perm = np.empty(m, dtype=np.int64)
        perm[k] = np.arange(m)
        return cls(perm, (xs.size, ys.size))

    @classmethod
    def from_system(cls, system) -> GridLayout:
        """From a :class:`~femno.fem.families.LinearSystem` (its free dofs' coordinates)."""
        return cls.from_coordinates(np.asarray(system.basis.doflocs)[:2, system.free])

    @classmethod
    def from_matrix(cls, A) -> GridLayout:
        """Lexicographic square grid inferred from ``A`` (``m = s^2``), pattern checked.

        Every coupling :math:`|a_{ij}| > 10^{-12} \\sqrt{a_{ii} a_{jj}}` must join
        grid neighbours (9-point stencil at most).
        """
        A = sp.coo_matrix(A)
        m = A.shape[0]
        s = math.isqrt(m)
        if s * s != m:
            raise InputError(
                f"matrix of size {m} is not a square structured grid; the CNN preconditioner "
                "needs P1/Q1 on unit_square (pass a GridLayout for other grids, or use "
                "the message-passing kind 'precond-gnn')")
        d = np.abs(A.tocsr().diagonal())
        big = np.abs(A.data) > 1e-12 * np.sqrt(d[A.row] * d[A.col])
        r, c = A.row[big], A.col[big]
        if np.any(np.abs(r // s - c // s) > 1) or np.any(np.abs(r % s - c % s) > 1):
            raise InputError(
                "matrix couples dofs that are not neighbours on a lexicographic "
                f"{s} x {s} grid: not a structured-grid operator (use 'precond-gnn', or pass "
                "a GridLayout built from dof coordinates)")
        return cls(np.arange(m), (s, s))

    def to_image(self, v: torch.Tensor) -> torch.Tensor:
        if not self.identity:
            v = v[..., self._index(v.device, "perm")]
        return v.reshape(*v.shape[:-1], *self.shape)

    def from_image(self, img: torch.Tensor) -> torch.Tensor:
        v = img.reshape(*img.shape[:-2], -1)
        if not self.identity:
            v = v[..., self._index(v.device, "inverse")]
        return v

    def _index(self, device, which):
        key = (str(device), which)
        if key not in self._t:
            self._t[key] = torch.as_tensor(getattr(self, which), device=device)
        return self._t[key]



_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def grid_stencil(At: sp.csr_matrix, layout: GridLayout) -> np.ndarray:
    """Scaled couplings to the 8 grid neighbours, shape (8, H, W), float32 (0 if absent)."""
    H, W = layout.shape
    dof = layout.perm.reshape(H, W)
    out = np.zeros((8, H, W), dtype=np.float32)
    for c, (di, dj) in enumerate(_OFFSETS):
        i0, i1 = max(0, -di), H - max(0, di)
        j0, j1 = max(0, -dj), W - max(0, dj)
        if layout.identity:  # lexicographic: the coupling is on diagonal di * W + dj
            k = di * W + dj
            diag = np.zeros(H * W)
            diag[max(0, -k):H * W - max(0, k)] = At.diagonal(k)
            out[c, i0:i1, j0:j1] = diag.reshape(H, W)[i0:i1, j0:j1]
            continue
        rows = dof[i0:i1, j0:j1].ravel()
        cols = dof[i0 + di:i1 + di, j0 + dj:j1 + dj].ravel()
        out[c, i0:i1, j0:j1] = np.asarray(At[rows, cols]).reshape(i1 - i0, j1 - j0)
    return out


def _restriction_1d(n: int) -> sp.csr_matrix:
    """1-D full weighting ``(n // 2, n)`` of :meth:`~femno.operators.precond_nets.MGCNN._restrict`: coarse ``i`` = fine ``2i+1``."""
    nc = n // 2
    rows = np.repeat(np.arange(nc), 3)
    cols = 2 * rows + np.tile([0, 1, 2], nc)
    keep = cols < n
    return sp.csr_matrix((np.tile([0.5, 1.0, 0.5], nc)[keep], (rows[keep], cols[keep])),
                         shape=(nc, n))



def _stencil_apply(x: torch.Tensor, st: torch.Tensor, d) -> torch.Tensor:
    """:math:`A x` on images ``(B, 1, H, W)`` from 8-neighbour couplings and diagonal ``d``."""
    H, W = x.shape[-2:]
    xp = nn.functional.pad(x, (1, 1, 1, 1))
    y = x.clone() if d is None else x * d
    for c, (di, dj) in enumerate(_OFFSETS):  # in place on y: autograd needs only st, x
        y.addcmul_(st[:, c:c + 1], xp[..., 1 + di:1 + di + H, 1 + dj:1 + dj + W])
    return y


class GridLevel(NamedTuple):
    """One level of :func:`galerkin_hierarchy`: image ``shape`` (H, W), operator
    ``A`` (csr, :math:`HW \times HW`, image order), restriction ``R`` to the next level."""

    shape: tuple
    A: sp.csr_matrix
    R: sp.csr_matrix


def galerkin_hierarchy(At: sp.csr_matrix, layout: GridLayout, levels: int) -> list:
    r"""The ``levels`` finest grids of the Jacobi levels, float64, image order.

    Level 0 is the scaled matrix :math:`\tilde A` (unit diagonal) permuted to the
    image order of ``layout``; :math:`R_\ell` is the 2-D full weighting of
    :meth:`~femno.operators.precond_nets.MGCNN._restrict` (coarse node :math:`j` =
    fine :math:`2j+1`; :math:`P = R^T` is bilinear prolongation), of shape
    :math:`(H_{\ell+1} W_{\ell+1}, H_\ell W_\ell)` with
    :math:`H_{\ell+1} = \lfloor H_\ell / 2 \rfloor`, and
    :math:`A_{\ell+1} = R_\ell A_\ell R_\ell^T` (Galerkin).

    Returns
    -------
    list of GridLevel
    """
    H, W = layout.shape
    A = sp.csr_matrix(At if layout.identity else At[layout.perm][:, layout.perm])
    out = []
    for lvl in range(int(levels)):
        R = sp.kron(_restriction_1d(H), _restriction_1d(W), format="csr")
        out.append(GridLevel((H, W), A, R))
        if lvl + 1 < levels:
            A = sp.csr_matrix(R @ A @ R.T)
            H, W = H // 2, W // 2
    return out


def stencil_levels(levels: list) -> list:
    """Float32 stencil images of :func:`galerkin_hierarchy`'s operators (torch path).

    Returns ``[(stencil (1, 8, H, W), diagonal (1, 1, H, W) or None), ...]``: the
    8-neighbour couplings of :func:`grid_stencil`, the diagonal ``None`` on level 0
    (unit diagonal of the scaled matrix).
    """
    out = []
    for lvl, (shape, A, _) in enumerate(levels):
        st = grid_stencil(A, GridLayout(np.arange(A.shape[0]), shape))
        d = None if lvl == 0 else torch.as_tensor(
            A.diagonal().astype(np.float32)).reshape(1, 1, *shape)
        out.append((torch.as_tensor(st).unsqueeze(0), d))
    return out


class JacobiLevels:
    r"""The Jacobi two-grid levels of :class:`~femno.operators.precond_nets.MGCNN`
    in float64 with scipy matrices (CPU inference).

    On level :math:`\ell` with operator :math:`A_\ell`, diagonal :math:`D_\ell`,
    damping :math:`\omega` and coarse solver :math:`V_{\ell+1}`,

    .. math::

        x_1 = \omega D_\ell^{-1} r,\quad r_1 = r - A_\ell x_1,\quad
        e = R_\ell^T V_{\ell+1}(R_\ell r_1),\quad
        \alpha = \frac{e^T r_1}{e^T A_\ell e},\quad
        V_\ell(r) = x_1 + \alpha e + \omega D_\ell^{-1}(r_1 - \alpha A_\ell e),

    the formula of ``MGCNN._vcycle`` (float32 torch, stencil images), here with
    one sparse product per operator application instead of eight shifted image
    products: the same map up to float32 rounding, 3-5x cheaper on small grids
    where the torch path is per-operation overhead.

    Parameters
    ----------
    levels : list of GridLevel
        From :func:`galerkin_hierarchy`; ``len(levels)`` Jacobi levels.
    omega : float
        Jacobi damping.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(15, 15))
    >>> A = (sp.kron(T, sp.eye(15)) + sp.kron(sp.eye(15), T)).tocsr()
    >>> At, _ = scaled_matrix(A)
    >>> jl = JacobiLevels(galerkin_hierarchy(At, GridLayout.from_matrix(A), 2), omega=0.8)
    >>> Ac = jl.levels[-1].R @ jl.levels[-1].A @ jl.levels[-1].R.T  # 3x3 coarsest grid
    >>> exact = lambda v, shape: np.linalg.solve(Ac.toarray(), v)
    >>> r = np.ones(225)
    >>> x = jl(r, exact)  # a two-level V(1,1) cycle with an exact coarse solve
    >>> bool(np.linalg.norm(r - At @ x) < 0.5 * np.linalg.norm(r))
    True
    """

    def __init__(self, levels: list, *, omega: float):
        if not levels:
            raise InputError("JacobiLevels needs at least one level")
        self.levels = list(levels)
        self.omega = float(omega)
        self._ops = [(lv.A, lv.R, sp.csr_matrix(lv.R.T), self.omega / lv.A.diagonal())
                     for lv in self.levels]
        last = self.levels[-1]
        self.coarse_shape = (last.shape[0] // 2, last.shape[1] // 2)

    def __call__(self, r: np.ndarray, coarse: Callable) -> np.ndarray:
        """:math:`V_0(r)` for ``r`` of shape ``(H_0 W_0,)`` float64 (image order);
        ``coarse(v, shape)`` solves on the grid below the last level."""
        return self._cycle(np.asarray(r, dtype=np.float64), 0, coarse)

    def _cycle(self, r, lvl, coarse):
        if lvl == len(self._ops):
            return coarse(r, self.coarse_shape)
        A, R, P, wd = self._ops[lvl]
        x = wd * r
        r1 = r - A @ x
        e = P @ self._cycle(R @ r1, lvl + 1, coarse)
        ae = A @ e
        den = float(e @ ae)
        alpha = float(e @ r1) / den if den > 0 else 0.0
        r1 -= alpha * ae
        x += alpha * e
        x += wd * r1
        return x
