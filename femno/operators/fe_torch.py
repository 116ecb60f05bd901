r"""FE structure for torch models: sparse matrices, FE norms, the dof graph, coarse levels.

* :func:`mass_matrix`, :func:`rel_l2`: the FE mass matrix and the relative error in
  its norm (numpy or torch, differentiable).
* :func:`to_torch_sparse`: scipy sparse -> coalesced torch COO tensor.
* :func:`dof_graph`: directed edges :math:`(i, j)`, :math:`i \ne j`, between the dofs
  that share an element (both directions), from ``basis.element_dofs``.
* :func:`edge_features`: relative positions :math:`(x_j - x_i)/h` and lengths
  :math:`|x_j - x_i|/h`, :math:`h` the mean edge length (resolution-free scale).
* :func:`prolongation`: the FE interpolation :math:`P_{ij} = \phi^c_j(x_i)` of a coarse
  Lagrange space at fine points (exact for nested spaces: a coarse FE function
  :math:`u_c` equals :math:`P u_c` at the fine dofs).
* :func:`coarse_level`: a coarse level for any mesh: given a coarse mesh (e.g. the
  one a refined mesh was made from) its P1 space, otherwise a P1 space on the
  Delaunay triangulation of a subset of the fine vertices (convex hull vertices,
  then a greedy maximal independent set of the vertex graph, repeated ``levels``
  times), with :math:`P` by barycentric interpolation (linear extrapolation from
  the nearest simplex for points outside the coarse hull).  Restriction is
  :math:`P^T`.

>>> from femno.fem.mesh import unit_square, refine
>>> from femno.fem.spaces import make_basis
>>> coarse = make_basis(unit_square(2), "P1")
>>> fine = make_basis(refine(unit_square(2), 1), "P1")
>>> P = prolongation(coarse, fine.doflocs)
>>> u = coarse.doflocs[0] + 2 * coarse.doflocs[1]
>>> bool(np.allclose(P @ u, fine.doflocs[0] + 2 * fine.doflocs[1]))
True
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.sparse as sp
import skfem
import torch
from skfem.helpers import dot

from femno.errors import InputError

__all__ = ["mass_matrix", "rel_l2", "to_torch_sparse", "to_torch_csr", "dof_graph", "edge_features", "prolongation", "coarse_level",
           "coarse_hierarchy", "CoarseLevel", "coarsen_points"]


@skfem.BilinearForm
def _mass_scalar(u, v, w):
    return u * v


@skfem.BilinearForm
def _mass_vector(u, v, w):
    return dot(u, v)


def mass_matrix(basis) -> sp.csr_matrix:
    r"""FE mass matrix :math:`M_{ij} = \int_\Omega \phi_i \cdot \phi_j`, csr (N, N) float64."""
    vector = isinstance(basis.elem, skfem.ElementVector)
    return (_mass_vector if vector else _mass_scalar).assemble(basis).tocsr()


def rel_l2(pred, target, mass, *, eps: float = 1e-300):
    r"""Per-sample relative :math:`L^2` error :math:`\|u-v\|_M / \|v\|_M`, :math:`\|w\|_M^2 = w^T M w`.

    Parameters
    ----------
    pred, target : torch.Tensor or ndarray, shape (S, N) or (N,)
    mass : scipy sparse (N, N), or torch sparse tensor (N, N) for torch inputs
    eps : float
        Guards against a zero target (then the absolute norm is returned).

    Returns
    -------
    Same kind as the inputs, shape (S,) (or a scalar for 1-D inputs); differentiable
    for torch.
    """
    if isinstance(pred, torch.Tensor):
        if not isinstance(mass, torch.Tensor):
            mass = to_torch_sparse(mass, dtype=pred.dtype, device=pred.device)
        p2, t2 = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
        e = p2 - t2
        num = (e * torch.sparse.mm(mass, e.T).T).sum(-1)
        den = (t2 * torch.sparse.mm(mass, t2.T).T).sum(-1)
        out = torch.sqrt(num.clamp_min(0) / den.clamp_min(eps))
        return out.reshape(pred.shape[:-1])
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    e = np.atleast_2d(pred - target)
    t = np.atleast_2d(target)
    num = np.einsum("sn,sn->s", e, (mass @ e.T).T)
    den = np.einsum("sn,sn->s", t, (mass @ t.T).T)
    out = np.sqrt(np.maximum(num, 0) / np.maximum(den, eps))
    return out.reshape(pred.shape[:-1])


def to_torch_sparse(A, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """A scipy sparse matrix as a coalesced torch sparse COO tensor of ``dtype``."""
    A = sp.coo_matrix(A)
    idx = torch.as_tensor(np.vstack([A.row, A.col]).astype(np.int64))
    val = torch.as_tensor(A.data, dtype=dtype)
    with torch.sparse.check_sparse_tensor_invariants(False):
        return torch.sparse_coo_tensor(idx, val, A.shape, device=device).coalesce()


def to_torch_csr(A, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """A scipy sparse matrix as a torch sparse CSR tensor of ``dtype`` (``A @ v`` on CPU or GPU).

    >>> import scipy.sparse as sp
    >>> to_torch_csr(sp.eye(3)).to_dense().diagonal().tolist()
    [1.0, 1.0, 1.0]
    """
    import warnings

    A = sp.csr_matrix(A)
    A.sort_indices()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(torch.as_tensor(A.indptr, dtype=torch.int64),
                                       torch.as_tensor(A.indices, dtype=torch.int64),
                                       torch.as_tensor(A.data, dtype=dtype),
                                       size=A.shape, device=device)


def dof_graph(element_dofs: np.ndarray, n: int | None = None) -> np.ndarray:
    """Directed edges (2, E) int64 between dofs sharing an element, no self loops, sorted.

    ``element_dofs``: (n_local, n_elements) as ``basis.element_dofs``.

    >>> dof_graph(np.array([[0], [1], [2]])).T.tolist()
    [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    """
    t = np.asarray(element_dofs, dtype=np.int64)
    k = t.shape[0]
    a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    keep = a != b
    src, dst = t[a[keep]].ravel(), t[b[keep]].ravel()
    n = int(t.max()) + 1 if n is None else int(n)
    key = np.unique(src * n + dst)
    return np.vstack([key // n, key % n])


def edge_features(pos: np.ndarray, edges: np.ndarray, *,
                  scale: float | None = None) -> tuple[np.ndarray, float]:
    """Edge features (E, dim + 1): ``[(x_dst - x_src)/h, |x_dst - x_src|/h]`` and ``h``.

    ``h`` is ``scale`` if given, else the mean edge length."""
    d = pos[edges[1]] - pos[edges[0]]
    length = np.linalg.norm(d, axis=1)
    h = float(scale) if scale is not None else (float(length.mean()) if length.size else 1.0)
    h = h if h > 0 else 1.0
    return np.column_stack([d / h, length / h]), h


def prolongation(coarse_basis, points: np.ndarray) -> sp.csr_matrix:
    r"""Interpolation of a scalar coarse FE space at points: csr (n_points, N_c).

    ``points``: (dim, n_points), e.g. the fine ``basis.doflocs``.  Every point must
    lie in the coarse mesh (:class:`InputError` otherwise).
    """
    if isinstance(coarse_basis.elem, skfem.ElementVector):
        raise InputError("prolongation needs a scalar coarse space")
    try:
        P = coarse_basis.probes(np.asarray(points, dtype=np.float64))
    except ValueError as exc:
        raise InputError(f"points outside the coarse mesh: {exc}") from exc
    P = sp.csr_matrix(P)
    P.eliminate_zeros()
    return P


def coarsen_points(points: np.ndarray, edges: np.ndarray, *, levels: int = 1,
                   keep=None) -> np.ndarray:
    """Indices of a coarse subset of ``points`` (n, dim) by greedy independent sets.

    ``edges`` (2, E) is the vertex graph; vertices in ``keep`` (and the convex-hull
    vertices) are taken first; each level takes a maximal independent set of the
    previous level's graph (squared graph distance >= 2), which in 2-D keeps about
    a quarter of the vertices per level.
    """
    from scipy.spatial import ConvexHull

    n = points.shape[0]
    hull = ConvexHull(points).vertices if n > points.shape[1] + 1 else np.arange(n)
    first = np.unique(np.concatenate([hull, np.asarray([] if keep is None else keep, int)]))
    idx = np.arange(n)
    A = sp.csr_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(n, n))
    for _ in range(int(levels)):
        m = idx.size
        sub = A[idx][:, idx].tocsr()
        local_first = np.nonzero(np.isin(idx, first))[0]
        order = np.concatenate([local_first, np.setdiff1d(np.arange(m), local_first)])
        taken, blocked = np.zeros(m, bool), np.zeros(m, bool)
        forced = set(local_first.tolist())
        for v in order:
            if not blocked[v] or v in forced:
                taken[v] = True
                blocked[sub.indices[sub.indptr[v]:sub.indptr[v + 1]]] = True
        idx = idx[taken]
        A = (A @ A).tocsr()  # next level connects vertices two steps apart
        A.setdiag(0)
        A.eliminate_zeros()
    return idx


def _barycentric(tri, points: np.ndarray) -> sp.csr_matrix:
    """P1 interpolation on a scipy Delaunay triangulation at points (n, dim)."""
    from scipy.spatial import cKDTree

    dim = points.shape[1]
    s = tri.find_simplex(points)
    out = s < 0
    if out.any():  # nearest simplex by centroid, linear extrapolation
        cent = tri.points[tri.simplices].mean(axis=1)
        s[out] = cKDTree(cent).query(points[out])[1]
    T = tri.transform[s]
    lam = np.einsum("nij,nj->ni", T[:, :dim], points - T[:, dim])
    lam = np.column_stack([lam, 1.0 - lam.sum(axis=1)])
    rows = np.repeat(np.arange(points.shape[0]), dim + 1)
    P = sp.csr_matrix((lam.ravel(), (rows, tri.simplices[s].ravel())),
                      shape=(points.shape[0], tri.points.shape[0]))
    P.data[np.abs(P.data) < 1e-14] = 0.0
    P.eliminate_zeros()
    return P


@dataclasses.dataclass
class CoarseLevel:
    """A coarse level: nodes, their graph and the prolongation to the fine dofs.

    Attributes
    ----------
    pos : ndarray (n_c, dim)
        Coarse node positions.
    edges : ndarray (2, E_c)
    boundary : ndarray (n_c,) bool
        Coarse nodes on the fine mesh boundary.
    P : scipy csr (n_fine_dofs, n_c)
        Prolongation; restriction is ``P.T``.
    mesh : skfem.Mesh
        The coarse mesh.
    """

    pos: np.ndarray
    edges: np.ndarray
    boundary: np.ndarray
    P: sp.csr_matrix
    mesh: object


def coarse_level(mesh, fine_points: np.ndarray, *, coarse=None, levels: int = 1) -> CoarseLevel:
    """Coarse level for ``mesh`` (see the module docstring).

    Parameters
    ----------
    mesh : skfem.Mesh
        Fine mesh.
    fine_points : ndarray (dim, N)
        Fine dof locations (rows of ``P``).
    coarse : skfem.Mesh, optional, keyword-only
        Coarse mesh covering the fine one (e.g. ``mesh`` was made by refining it); its
        P1 (Q1) space is the coarse space.  Default: built by :func:`coarsen_points`.
    levels : int, keyword-only
        Independent-set rounds of the automatic coarsening.

    Examples
    --------
    >>> from femno.fem.mesh import unstructured_square
    >>> m = unstructured_square(8, seed=0)
    >>> lvl = coarse_level(m, m.p)
    >>> bool(np.allclose(lvl.P @ (3 * lvl.pos[:, 0] - lvl.pos[:, 1]), 3 * m.p[0] - m.p[1]))
    True
    """
    from femno.fem.spaces import make_basis

    fine_points = np.asarray(fine_points, dtype=np.float64)
    bnodes = mesh.boundary_nodes()
    if coarse is not None:
        if not isinstance(coarse, skfem.Mesh):
            raise InputError(f"coarse must be a skfem Mesh, got {type(coarse).__name__}")
        cb = make_basis(coarse)
        P = prolongation(cb, fine_points)
        bc = np.zeros(cb.N, bool)
        bc[coarse.boundary_nodes()] = True
        return CoarseLevel(pos=cb.doflocs.T.copy(), edges=dof_graph(cb.element_dofs, cb.N),
                           boundary=bc, P=P, mesh=coarse)
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise InputError(f"levels must be an integer >= 1, got {levels!r}")
    bmask = np.zeros(mesh.p.shape[1], bool)
    bmask[bnodes] = True
    return _auto_level(mesh.p.T, dof_graph(mesh.t, mesh.p.shape[1]), bmask, fine_points,
                       rounds=int(levels))


#: a coarse level must have at most this share of the previous level's nodes (else the
#: hierarchy stops there: meshes whose boundary dominates, such as small disks)
MIN_REDUCTION = 0.85


def coarse_hierarchy(mesh, fine_points: np.ndarray, *, coarse=None, levels: int | None = None,
                     coarsest: int = 64) -> list[CoarseLevel]:
    """Nested coarse levels: the first as :func:`coarse_level` (one coarsening round, or
    the given ``coarse`` mesh), each next one an automatic coarsening of the previous;
    level ``k``'s ``P`` maps to level ``k-1``'s nodes.

    ``levels``: a fixed number of levels; default (``None``): coarsen until the coarsest
    level has at most about ``coarsest`` nodes (so that meshes of one domain at
    different resolutions end at a similar coarse resolution; at most 8 levels).  A mesh
    that cannot be coarsened further (a level would keep more than :data:`MIN_REDUCTION`
    of the previous one's nodes, e.g. a small disk whose boundary nodes dominate) gets
    fewer levels (a ``RuntimeWarning`` when ``levels`` was fixed) instead of an error.

    >>> from femno.fem.mesh import unstructured_square
    >>> m = unstructured_square(16, seed=0)
    >>> [lvl.pos.shape[0] for lvl in coarse_hierarchy(m, m.p, levels=3)]
    [84, 22, 7]
    >>> [lvl.pos.shape[0] for lvl in coarse_hierarchy(m, m.p, coarsest=30)]
    [84, 22]
    """
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, (int, np.integer))
                               or levels < 1):
        raise InputError(f"levels must be an integer >= 1 or None, got {levels!r}")
    if isinstance(coarsest, bool) or not isinstance(coarsest, (int, np.integer)) or coarsest < 4:
        raise InputError(f"coarsest must be an integer >= 4, got {coarsest!r}")
    out = [coarse_level(mesh, fine_points, coarse=coarse, levels=1)]
    while (len(out) < levels) if levels is not None else (
            len(out) < 8 and out[-1].pos.shape[0] > 1.87 * coarsest):
        prev = out[-1]
        try:
            nxt = _auto_level(prev.pos, prev.edges, prev.boundary, prev.pos.T, rounds=1)
        except InputError:  # nothing left to coarsen (e.g. only boundary nodes remain)
            nxt = None
        if nxt is None or nxt.pos.shape[0] > MIN_REDUCTION * prev.pos.shape[0]:
            # the mesh supports no deeper level: stop (shared-weight levels need no fixed
            # depth) instead of refusing the mesh
            if levels is not None:
                warnings.warn(f"the mesh supports {len(out)} coarse level(s), not {levels}: "
                              f"level {len(out)} has {prev.pos.shape[0]} nodes and coarsening "
                              "it again removes almost none", RuntimeWarning, stacklevel=2)
            break
        out.append(nxt)
    return out


def _auto_level(pts, edges, bmask, fine_points, *, rounds) -> CoarseLevel:
    """Automatic coarse level of points (n, dim) with graph ``edges`` (module docstring)."""
    from scipy.spatial import Delaunay

    keep = coarsen_points(pts, edges, levels=rounds, keep=None)
    cpts = pts[keep]
    if cpts.shape[0] <= pts.shape[1] + 1 or cpts.shape[0] == pts.shape[0]:
        raise InputError(f"{pts.shape[0]} nodes are too few to coarsen again; use fewer "
                         "levels or the plain 'spon'")
    tri = Delaunay(cpts)
    P = _barycentric(tri, np.asarray(fine_points, dtype=np.float64).T)
    cmesh_cls = {2: skfem.MeshTri1, 3: skfem.MeshTet1}.get(pts.shape[1])
    if cmesh_cls is None:
        raise InputError("automatic coarsening supports 2-D and 3-D meshes")
    simplices = tri.simplices.astype(np.int64)
    edges = dof_graph(simplices.T, cpts.shape[0])
    try:  # a proper skfem mesh when the orientation allows it (for plotting / inspection)
        if pts.shape[1] == 2:
            p = cpts[simplices]
            neg = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
                   - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])) < 0
            simplices[neg] = simplices[neg][:, [0, 2, 1]]
        cmesh = cmesh_cls(np.ascontiguousarray(cpts.T), np.ascontiguousarray(simplices.T))
    except Exception:  # noqa: BLE001 - the mesh object is informative only
        cmesh = None
    return CoarseLevel(pos=cpts.copy(), edges=edges, boundary=np.asarray(bmask)[keep], P=P,
                       mesh=cmesh)
