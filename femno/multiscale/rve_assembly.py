r"""Vectorized pieces of the periodic RVE solver: Q8 geometry, B matrices, periodic dofs, CSR map.

Serendipity 8-node quadrilateral on :math:`[-1,1]^2` (corners counter-clockwise,
then mid-side nodes of edges 1-2, 2-3, 3-4, 4-1):

.. math::

    N_i &= \tfrac14 (1+\xi\xi_i)(1+\eta\eta_i)(\xi\xi_i+\eta\eta_i-1) \quad (\text{corners}),\\
    N_i &= \tfrac12 (1-\xi^2)(1+\eta\eta_i) \ (\xi_i = 0), \qquad
    N_i = \tfrac12 (1+\xi\xi_i)(1-\eta^2) \ (\eta_i = 0),

integrated with 3x3 Gauss points.  The strain-displacement matrix of an element at
an integration point maps the 16 element dofs :math:`[u_{1x}, u_{1y}, u_{2x}, \dots]`
to the engineering strain :math:`[\varepsilon_{xx}, \varepsilon_{yy}, \gamma_{xy}]`.

>>> import numpy as np
>>> N, dN = q8_shape(np.array([0.3]), np.array([-0.7]))
>>> round(float(N.sum()), 12), bool(np.abs(dN.sum(axis=1)).max() < 1e-12)
(1.0, True)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from femno.errors import InputError

__all__ = ["q8_shape", "gauss_3x3", "q8_geometry", "periodic_dof_map", "CSRPattern", "laminate_rve"]

_XI = np.array([-1.0, 1.0, 1.0, -1.0, 0.0, 1.0, 0.0, -1.0])
_ETA = np.array([-1.0, -1.0, 1.0, 1.0, -1.0, 0.0, 1.0, 0.0])


def gauss_3x3() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3x3 Gauss rule on [-1, 1]^2: ``xi (9,), eta (9,), weights (9,)`` (xi fastest)."""
    g = np.sqrt(0.6)
    p, w = np.array([-g, 0.0, g]), np.array([5.0, 8.0, 5.0]) / 9.0
    eta, xi = np.meshgrid(p, p, indexing="ij")
    return xi.ravel(), eta.ravel(), np.outer(w, w).ravel()


def q8_shape(xi: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Serendipity shape functions and reference derivatives.

    Parameters
    ----------
    xi, eta : ndarray, shape (q,)

    Returns
    -------
    N : ndarray, shape (q, 8)
    dN : ndarray, shape (q, 8, 2)
        ``dN[..., 0] = dN/dxi``, ``dN[..., 1] = dN/deta``.
    """
    x, y = np.asarray(xi, float)[:, None], np.asarray(eta, float)[:, None]
    xi_i, eta_i = _XI[None, :], _ETA[None, :]
    xx, yy = x * xi_i, y * eta_i
    corner = (np.abs(xi_i) == 1) & (np.abs(eta_i) == 1)
    midx = xi_i == 0  # mid-side nodes of the horizontal edges
    N = np.where(corner, 0.25 * (1 + xx) * (1 + yy) * (xx + yy - 1),
                 np.where(midx, 0.5 * (1 - x**2) * (1 + yy), 0.5 * (1 + xx) * (1 - y**2)))
    dx = np.where(corner, 0.25 * xi_i * (1 + yy) * (2 * xx + yy),
                  np.where(midx, -x * (1 + yy), 0.5 * xi_i * (1 - y**2)))
    dy = np.where(corner, 0.25 * eta_i * (1 + xx) * (xx + 2 * yy),
                  np.where(midx, 0.5 * (1 - x**2) * eta_i, -y * (1 + xx)))
    return N, np.stack([dx, dy], axis=-1)


def q8_geometry(nodes: np.ndarray, elements: np.ndarray):
    r"""B matrices, integration weights and points of all elements at 3x3 Gauss points.

    Parameters
    ----------
    nodes : ndarray, shape (N, 2), float64
    elements : ndarray, shape (E, 8), int64 (0-based)

    Returns
    -------
    B : ndarray, shape (E, 9, 3, 16), float64
        Strain-displacement matrices (engineering shear).
    w : ndarray, shape (E, 9), float64
        Gauss weight times :math:`\det J`.
    x_ip : ndarray, shape (E, 9, 2), float64
        Physical coordinates of the integration points.

    Raises
    ------
    InputError
        If the Jacobian is not positive at some integration point (inverted or
        badly distorted element).
    """
    xi, eta, wg = gauss_3x3()
    N, dN = q8_shape(xi, eta)
    X = nodes[elements]  # (E, 8, 2)
    J = np.einsum("qak,eal->eqkl", dN, X)  # J[k, l] = dx_l/dxi_k
    det = J[..., 0, 0] * J[..., 1, 1] - J[..., 0, 1] * J[..., 1, 0]
    if np.any(det <= 0):
        e = int(np.nonzero((det <= 0).any(axis=1))[0][0])
        raise InputError(f"element {e + 1} has a non-positive Jacobian (inverted or distorted)")
    inv = np.empty_like(J)
    inv[..., 0, 0], inv[..., 1, 1] = J[..., 1, 1] / det, J[..., 0, 0] / det
    inv[..., 0, 1], inv[..., 1, 0] = -J[..., 0, 1] / det, -J[..., 1, 0] / det
    dNdx = np.einsum("eqkl,qal->eqak", inv, dN)  # dN_a/dx_k = sum_l (J^-1)_{kl} dN_a/dxi_l
    E = elements.shape[0]
    B = np.zeros((E, 9, 3, 16))
    B[:, :, 0, 0::2] = dNdx[..., 0]
    B[:, :, 1, 1::2] = dNdx[..., 1]
    B[:, :, 2, 0::2] = dNdx[..., 1]
    B[:, :, 2, 1::2] = dNdx[..., 0]
    return B, wg[None, :] * det, np.einsum("qa,eak->eqk", N, X)


def periodic_dof_map(rve) -> tuple[np.ndarray, np.ndarray, int]:
    """Reduced dof numbers of the periodic fluctuation with one fixed node.

    Nodes on the right/top edges are identified with their partners on the
    left/bottom edges (:meth:`femno.fem.RVEMesh.periodic_pairs`); the bottom-left
    corner node is fixed (zero fluctuation) to remove the rigid translation.

    Returns
    -------
    master : ndarray, shape (N,), int64
        Independent node represented by each node.
    dof : ndarray, shape (2 N,), int64
        Reduced dof of every full dof ``2 node + component``; ``-1`` for the fixed node.
    fixed : int
        The fixed node.
    """
    px, py = rve.periodic_pairs()
    master = np.arange(rve.n_nodes, dtype=np.int64)
    master[px[:, 1]] = px[:, 0]
    master[py[:, 1]] = py[:, 0]
    for _ in range(4):
        master = master[master]
    fixed = int(master[px[0, 0]])
    indep = np.unique(master)
    number = np.full(rve.n_nodes, -1, dtype=np.int64)
    keep = indep[indep != fixed]
    number[keep] = np.arange(keep.size)
    node_red = number[master]
    dof = np.full(2 * rve.n_nodes, -1, dtype=np.int64)
    ok = node_red >= 0
    nodes = np.nonzero(ok)[0]
    dof[2 * nodes] = 2 * node_red[ok]
    dof[2 * nodes + 1] = 2 * node_red[ok] + 1
    return master, dof, fixed


class CSRPattern:
    """Fixed map from element matrix entries to the data array of one CSR matrix.

    Built once from the element dof table (``-1`` marks eliminated dofs); then
    :meth:`matrix` sums element matrices into CSR data with one ``bincount``.

    Parameters
    ----------
    edof : ndarray, shape (E, k), int64
        Reduced dof of each element dof, ``-1`` if eliminated.
    n : int
        Size of the reduced system.

    >>> pat = CSRPattern(np.array([[0, 1], [1, -1]]), 2)
    >>> pat.matrix(np.ones((2, 2, 2))).toarray()
    array([[1., 1.],
           [1., 2.]])
    """

    def __init__(self, edof: np.ndarray, n: int):
        E, k = edof.shape
        rows = np.repeat(edof, k, axis=1).ravel()
        cols = np.tile(edof, (1, k)).ravel()
        self.mask = (rows >= 0) & (cols >= 0)
        key = rows[self.mask] * n + cols[self.mask]
        ukey, self.index = np.unique(key, return_inverse=True)
        self.n, self.nnz = n, ukey.size
        r = ukey // n
        self.indices = (ukey % n).astype(np.int32)
        self.indptr = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(r, minlength=n), out=self.indptr[1:])
        self.vmask = (edof >= 0).ravel()
        self.vindex = edof.ravel()[self.vmask]

    def matrix(self, Ke: np.ndarray) -> sp.csr_matrix:
        """CSR matrix (n, n) from element matrices ``Ke`` (E, k, k)."""
        data = np.bincount(self.index, weights=Ke.reshape(-1)[self.mask], minlength=self.nnz)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n, self.n))

    def vector(self, fe: np.ndarray) -> np.ndarray:
        """Reduced vector (n,) or (n, m) from element vectors ``fe`` (E, k) or (E, k, m)."""
        if fe.ndim == 2:
            return np.bincount(self.vindex, weights=fe.reshape(-1)[self.vmask], minlength=self.n)
        m = fe.shape[-1]
        flat = fe.reshape(-1, m)[self.vmask]
        return np.stack([np.bincount(self.vindex, weights=flat[:, j], minlength=self.n)
                         for j in range(m)], axis=1)


def laminate_rve(fractions, *, nx: int = 2, ny: int = 2, materials=None):
    """Layered unit cell ``[-0.5, 0.5]^2`` of horizontal layers as an 8-node quad RVE mesh.

    Parameters
    ----------
    fractions : sequence of float
        Thickness of each layer, bottom to top (normalized to sum 1).
    nx : int, keyword-only
        Elements along x.
    ny : int, keyword-only
        Elements across every layer.
    materials : sequence of int, optional, keyword-only
        Material id of each layer (default alternating 1, 2, 1, ...).

    Returns
    -------
    femno.fem.RVEMesh

    >>> rve = laminate_rve([0.3, 0.7], nx=2, ny=2)
    >>> rve.nodes.shape, rve.elements.shape, rve.material.tolist()
    ((37, 2), (8, 8), [1, 1, 1, 1, 2, 2, 2, 2])
    """
    from femno.fem.rve import RVEMesh

    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or f.size < 1 or np.any(f <= 0) or int(nx) < 1 or int(ny) < 1:
        raise InputError("need positive layer fractions and nx, ny >= 1")
    f = f / f.sum()
    mats = np.asarray(materials if materials is not None else [1 + (k % 2) for k in range(f.size)])
    if mats.shape != f.shape:
        raise InputError(f"{f.size} layers but {mats.size} material ids")
    edges = -0.5 + np.concatenate([[0.0], np.cumsum(f)])
    ycoarse = np.concatenate([np.linspace(a, b, ny + 1)[:-1] for a, b in zip(edges[:-1], edges[1:], strict=False)]
                             + [[0.5]])
    ys = np.concatenate([np.stack([ycoarse[:-1], 0.5 * (ycoarse[:-1] + ycoarse[1:])], 1).ravel(), [0.5]])
    xs = np.linspace(-0.5, 0.5, 2 * nx + 1)
    I, J = np.meshgrid(np.arange(xs.size), np.arange(ys.size), indexing="ij")
    keep = ~((I % 2 == 1) & (J % 2 == 1))
    number = np.full(I.shape, -1, dtype=np.int64)
    number[keep] = np.arange(int(keep.sum()))
    nodes = np.stack([xs[I[keep]], ys[J[keep]]], axis=1)
    i, j = np.meshgrid(2 * np.arange(nx), 2 * np.arange(ycoarse.size - 1), indexing="ij")
    i, j = i.ravel(), j.ravel()
    elems = np.stack([number[i, j], number[i + 2, j], number[i + 2, j + 2], number[i, j + 2],
                      number[i + 1, j], number[i + 2, j + 1], number[i + 1, j + 2],
                      number[i, j + 1]], axis=1)
    layer = np.repeat(np.arange(f.size), ny)[j // 2]
    order = np.lexsort((i, j))
    return RVEMesh(nodes=nodes, elements=elems[order], material=mats[layer][order].astype(np.int64),
                   name="laminate")
