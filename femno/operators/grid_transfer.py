r"""Transfers between finite-element spaces and regular grids (for grid-based operators).

An FE function is sampled on an ``s`` x ``s`` grid over a bounding box by a sparse
*probe* matrix (skfem ``basis.probes``; grid points outside the domain get 0), and a
grid function is brought back to FE dof locations by a sparse *bilinear* matrix.  The
FNO baseline (:mod:`femno.operators.baselines`) applies both with :func:`_padded`
index/weight tables and :func:`_gather` (fixed row length: fast batched torch gathers).

>>> import numpy as np
>>> grid_points([0.0, 0.0], [1.0, 1.0], 3).shape
(9, 2)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from femno.errors import InputError

__all__ = ["grid_points", "probe_matrix", "bilinear_matrix"]


def grid_points(lo, hi, s: int) -> np.ndarray:
    """Vertices of an ``s`` x ``s`` grid on the box ``[lo, hi]``, shape (s*s, 2), float64.

    Point ``(i, j)`` (``x`` index ``i``, ``y`` index ``j``) is row ``i * s + j``.

    >>> grid_points([0, 0], [1, 1], 2).tolist()
    [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 2:
        raise InputError(f"grid resolution must be an integer >= 2, got {s!r}")
    x = np.linspace(float(lo[0]), float(hi[0]), s)
    y = np.linspace(float(lo[1]), float(hi[1]), s)
    X, Y = np.meshgrid(x, y, indexing="ij")
    return np.column_stack([X.ravel(), Y.ravel()])


def probe_matrix(basis, points) -> sp.csr_matrix:
    """Sparse ``(n_points, basis.N)`` evaluation matrix of FE functions at ``points``.

    ``points``: (n_points, 2).  Rows of points outside the mesh are zero (the FE
    function is extended by 0).  Uses skfem's ``basis.probes``.
    """
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64).T)
    n = pts.shape[1]
    rows = []

    def probe(idx):
        try:
            P = sp.coo_matrix(basis.probes(pts[:, idx]))
        except ValueError:  # some point outside the mesh: split until located
            if idx.size == 1:
                return
            half = idx.size // 2
            probe(idx[:half])
            probe(idx[half:])
            return
        rows.append(sp.coo_matrix((P.data, (idx[P.row], P.col)), shape=(n, basis.N)))

    probe(np.arange(n))
    out = sum(rows[1:], rows[0]) if rows else sp.coo_matrix((n, basis.N))
    return sp.csr_matrix(out)


def bilinear_matrix(lo, hi, s: int, points) -> sp.csr_matrix:
    """Sparse ``(n_points, s*s)`` bilinear interpolation from grid vertices to ``points``.

    Points are clipped to the box; the grid is :func:`grid_points` ``(lo, hi, s)``.

    >>> W = bilinear_matrix([0, 0], [1, 1], 2, [[0.25, 0.5]])
    >>> W.toarray().round(3).tolist()
    [[0.375, 0.375, 0.125, 0.125]]
    """
    pts = np.asarray(points, dtype=np.float64)
    lo, hi = np.asarray(lo, dtype=np.float64)[:2], np.asarray(hi, dtype=np.float64)[:2]
    span = np.where(hi > lo, hi - lo, 1.0)
    t = np.clip((pts[:, :2] - lo) / span, 0.0, 1.0) * (s - 1)
    i0 = np.minimum(np.floor(t).astype(np.int64), s - 2)
    f = t - i0
    rows, cols, vals = [], [], []
    r = np.arange(len(pts))
    for di in (0, 1):
        for dj in (0, 1):
            wx = f[:, 0] if di else 1.0 - f[:, 0]
            wy = f[:, 1] if dj else 1.0 - f[:, 1]
            rows.append(r)
            cols.append((i0[:, 0] + di) * s + (i0[:, 1] + dj))
            vals.append(wx * wy)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(pts), s * s))


def _padded(M: sp.csr_matrix, k: int | None = None):
    """CSR rows as padded ``(rows, k)`` index and weight arrays (for a torch gather)."""
    M = sp.csr_matrix(M)
    counts = np.diff(M.indptr)
    k = max(int(counts.max(initial=0)), 1) if k is None else k
    if counts.max(initial=0) > k:
        raise InputError(f"a transfer row has {counts.max()} nonzeros, more than {k}")
    idx = np.zeros((M.shape[0], k), dtype=np.int64)
    w = np.zeros((M.shape[0], k))
    rows = np.repeat(np.arange(M.shape[0]), counts)
    pos = np.arange(M.nnz) - np.repeat(M.indptr[:-1], counts)
    idx[rows, pos], w[rows, pos] = M.indices, M.data
    return idx, w


def _gather(v: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(..., n) -> (..., rows)``: sum_k w[r, k] v[..., idx[r, k]]."""
    return (v[..., idx] * w).sum(-1)
