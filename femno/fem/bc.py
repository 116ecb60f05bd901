r"""Boundary conditions: Dirichlet lifting, Neumann loads, periodic constraints.

Dirichlet
    :func:`apply_dirichlet` eliminates the prescribed dofs :math:`D` with
    :func:`skfem.condense`: :math:`A_{II} x_I = b_I - A_{ID} x_D`.
Neumann
    :func:`neumann_load` assembles :math:`\int_{\Gamma_N} g \cdot v \, ds` on a
    :class:`skfem.FacetBasis`.
Periodic
    :func:`periodic_projection` builds a 0/1 matrix :math:`P \in \mathbb{R}^{N\times M}`
    mapping the :math:`M` independent dofs to all :math:`N` dofs (a dof on the
    "max" face copies its partner on the "min" face), so that the periodic
    system is :math:`P^T A P\, y = P^T b`, :math:`x = P y`.

>>> import numpy as np, skfem
>>> from skfem.models.poisson import laplace, unit_load
>>> from femno.fem.mesh import unit_square
>>> from femno.fem.spaces import make_basis
>>> basis = make_basis(unit_square(8))
>>> A, b = laplace.assemble(basis), unit_load.assemble(basis)
>>> Af, bf, free, x_bc = apply_dirichlet(A, b, basis, value=1.0)
>>> x = x_bc.copy(); x[free] = skfem.solve(Af, bf)
>>> bool(np.all(x >= 1.0))
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import skfem

from femno.errors import InputError

__all__ = [
    "boundary_facets",
    "boundary_dofs",
    "dirichlet_values",
    "apply_dirichlet",
    "neumann_load",
    "periodic_master",
    "periodic_projection",
    "periodic_condense",
]


def boundary_facets(mesh: skfem.Mesh, facets=None) -> np.ndarray:
    """Resolve a facet selection to facet indices (int64, sorted).

    Parameters
    ----------
    mesh : skfem.Mesh
    facets : None, str, callable or array_like of int
        ``None``: all boundary facets; a string: a named boundary of ``mesh``
        (``mesh.boundaries``); a callable ``f(x) -> bool`` with ``x`` of shape
        ``(dim, n)`` evaluated at facet midpoints (boundary facets only);
        an array: facet indices.
    """
    if facets is None:
        return np.sort(mesh.boundary_facets()).astype(np.int64)
    if isinstance(facets, str):
        named = mesh.boundaries or {}
        if facets not in named:
            raise InputError(f"unknown boundary {facets!r}; mesh has {sorted(named)}")
        return np.sort(np.asarray(named[facets], dtype=np.int64))
    if callable(facets):
        return np.sort(mesh.facets_satisfying(facets, boundaries_only=True)).astype(np.int64)
    idx = np.asarray(facets, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= mesh.facets.shape[1]):
        raise InputError(f"facet indices out of range 0..{mesh.facets.shape[1] - 1}")
    return idx


def _components(basis) -> np.ndarray:
    """Component index (0 for scalar elements) of every dof, shape (N,), int64."""
    comp = np.zeros(basis.N, dtype=np.int64)
    if isinstance(basis.elem, skfem.ElementVector):
        for k, ix in enumerate(basis.split_indices()):
            comp[ix] = k
    return comp


def boundary_dofs(basis, facets=None, *, component: int | None = None) -> np.ndarray:
    """Dofs on the selected boundary facets (sorted, int64).

    Parameters
    ----------
    basis : skfem.CellBasis
    facets : see :func:`boundary_facets`
    component : int, optional, keyword-only
        For vector bases: keep only the dofs of this component (0-based).

    >>> from femno.fem.mesh import unit_square
    >>> from femno.fem.spaces import make_basis
    >>> boundary_dofs(make_basis(unit_square(2)), lambda x: x[0] == 0.0)
    array([0, 1, 2])
    """
    f = boundary_facets(basis.mesh, facets)
    dofs = np.unique(np.asarray(basis.get_dofs(facets=f).flatten(), dtype=np.int64))
    if component is not None:
        comp = _components(basis)
        if component < 0 or component > comp.max():
            raise InputError(f"component {component} out of range 0..{comp.max()}")
        dofs = dofs[comp[dofs] == component]
    return dofs


def dirichlet_values(basis, value, dofs: np.ndarray | None = None) -> np.ndarray:
    """Full-length vector holding prescribed values at ``dofs`` (zero elsewhere).

    Parameters
    ----------
    basis : skfem.CellBasis
        Lagrange-type basis (nodal interpolation at ``basis.doflocs``).
    value : float, array_like or callable
        A constant; a full-length array of shape ``(N,)``; or ``f(x)`` with ``x`` of
        shape ``(dim, n)`` returning shape ``(n,)`` (scalar bases) or ``(dim, n)``
        (vector bases).
    dofs : ndarray of int, optional
        Dofs to fill; default all boundary dofs.

    Returns
    -------
    ndarray, shape (N,), float64
    """
    if dofs is None:
        dofs = boundary_dofs(basis)
    x = np.zeros(basis.N)
    if callable(value):
        pts = basis.doflocs[:, dofs]
        val = np.asarray(value(pts), dtype=np.float64)
        if isinstance(basis.elem, skfem.ElementVector):
            if val.shape != (basis.elem.dim, len(dofs)):
                raise InputError(
                    f"Dirichlet value function must return shape ({basis.elem.dim}, n) "
                    f"for a vector basis, got {val.shape}"
                )
            val = val[_components(basis)[dofs], np.arange(len(dofs))]
        val = np.broadcast_to(val, (len(dofs),))
        x[dofs] = val
    else:
        val = np.asarray(value, dtype=np.float64)
        if val.ndim == 0:
            x[dofs] = float(val)
        elif val.shape == (basis.N,):
            x[dofs] = val[dofs]
        else:
            raise InputError(
                f"Dirichlet value must be a scalar, a callable or shape ({basis.N},), "
                f"got shape {val.shape}"
            )
    if not np.all(np.isfinite(x)):
        raise InputError("Dirichlet values contain NaN or inf")
    return x


def apply_dirichlet(
    A: sp.spmatrix,
    b: np.ndarray,
    basis,
    *,
    dofs: np.ndarray | None = None,
    value=0.0,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
    r"""Eliminate Dirichlet dofs: :math:`A_{II} x_I = b_I - A_{ID} x_D`.

    Parameters
    ----------
    A : sparse matrix, shape (N, N)
    b : ndarray, shape (N,)
    basis : skfem.CellBasis
    dofs : ndarray of int, optional, keyword-only
        Prescribed dofs; default all boundary dofs (:func:`boundary_dofs`).
    value : float, array or callable, keyword-only
        Prescribed values, see :func:`dirichlet_values`.

    Returns
    -------
    A_free : scipy.sparse.csr_matrix, shape (m, m), float64
    b_free : ndarray, shape (m,), float64
    free : ndarray, shape (m,), int64
        Indices of the free dofs.
    x_bc : ndarray, shape (N,), float64
        Prescribed values on ``dofs``, zero elsewhere.
    """
    if dofs is None:
        dofs = boundary_dofs(basis)
    dofs = np.asarray(dofs, dtype=np.int64)
    x_bc = dirichlet_values(basis, value, dofs)
    mask = np.ones(basis.N, dtype=bool)
    mask[dofs] = False
    free = np.nonzero(mask)[0]
    Af, bf = skfem.condense(A, np.asarray(b, dtype=np.float64), x=x_bc, I=free, expand=False)
    return sp.csr_matrix(Af, dtype=np.float64), np.asarray(bf, dtype=np.float64), free, x_bc


def neumann_load(
    basis, g: float | np.ndarray | Callable, *, facets=None, intorder: int | None = None
) -> np.ndarray:
    r"""Boundary load vector :math:`\ell_i = \int_{\Gamma_N} g \cdot \phi_i \, ds`.

    Parameters
    ----------
    basis : skfem.CellBasis
        Basis of the full space (its element and mesh are reused).
    g : float, array_like of shape (dim,), or callable
        Scalar flux (scalar bases), traction vector (vector bases), or ``g(x)`` with
        ``x`` of shape ``(dim, n_facets, n_qp)`` returning shape ``(n_facets, n_qp)``
        or ``(dim, n_facets, n_qp)``.
    facets : see :func:`boundary_facets`, keyword-only
        Default: the whole boundary.
    intorder : int, optional, keyword-only

    Returns
    -------
    ndarray, shape (N,), float64

    Examples
    --------
    >>> from femno.fem.mesh import unit_square
    >>> from femno.fem.spaces import make_basis
    >>> b = neumann_load(make_basis(unit_square(4)), 1.0)
    >>> round(float(b.sum()), 12)  # perimeter
    4.0
    """
    f = boundary_facets(basis.mesh, facets)
    fb = skfem.FacetBasis(basis.mesh, basis.elem, facets=f, intorder=intorder)
    vector = isinstance(basis.elem, skfem.ElementVector)
    x = np.asarray(fb.global_coordinates())
    gval = np.asarray(g(x) if callable(g) else g, dtype=np.float64)
    if vector:
        dim = basis.elem.dim
        gval = np.broadcast_to(
            gval.reshape((dim,) + (1,) * (x.ndim - 1)) if gval.shape == (dim,) else gval, x.shape
        )
    else:
        gval = np.broadcast_to(gval, x.shape[1:])
    if not np.all(np.isfinite(gval)):
        raise InputError("Neumann data contain NaN or inf")

    gval = np.ascontiguousarray(gval)

    @skfem.LinearForm
    def load(v, w):
        if vector:
            return sum(gval[k] * v[k] for k in range(gval.shape[0]))
        return gval * v

    return load.assemble(fb)


def periodic_master(basis, *, axes=None, tol: float = 1e-8) -> np.ndarray:
    """Representative dof of every dof under periodic identification.

    Dofs on the face ``x_d = max`` are identified with the dof of the same
    component at the same position on ``x_d = min`` (bounding box of the mesh),
    for every ``d`` in ``axes``.  Chains (corners) are resolved.

    Parameters
    ----------
    basis : skfem.CellBasis
        Lagrange-type basis (scalar or :class:`skfem.ElementVector`).
    axes : sequence of int, optional, keyword-only
        Periodic directions; default all.
    tol : float, keyword-only
        Matching tolerance relative to the bounding-box diameter.

    Returns
    -------
    ndarray, shape (N,), int64
        ``master[i] == i`` for independent dofs.

    Raises
    ------
    InputError
        If dofs on opposite faces do not match.
    """
    from scipy.spatial import cKDTree

    X = basis.doflocs
    dim = X.shape[0]
    axes = range(dim) if axes is None else axes
    lo, hi = basis.mesh.p.min(axis=1), basis.mesh.p.max(axis=1)
    eps = tol * float(np.linalg.norm(hi - lo))
    comp = _components(basis)
    master = np.arange(basis.N, dtype=np.int64)
    for d in axes:
        a = np.nonzero(np.abs(X[d] - lo[d]) <= eps)[0]
        b = np.nonzero(np.abs(X[d] - hi[d]) <= eps)[0]
        if len(a) != len(b):
            raise InputError(
                f"mesh is not periodic in direction {d}: {len(a)} dofs on the min face, "
                f"{len(b)} on the max face"
            )
        # key: other coordinates plus component (scaled so that components never match)
        scale = 10.0 * float(np.linalg.norm(hi - lo)) + 1.0
        key = np.vstack([np.delete(X, d, axis=0), comp * scale]).T
        dist, j = cKDTree(key[a]).query(key[b])
        if np.any(dist > eps):
            raise InputError(f"mesh is not periodic in direction {d}: unmatched dofs")
        master[b] = a[j]
    while True:
        nxt = master[master]
        if np.array_equal(nxt, master):
            break
        master = nxt
    return master


def periodic_projection(basis, *, axes=None, tol: float = 1e-8) -> sp.csr_matrix:
    """0/1 matrix ``P`` (N, M) from independent to all dofs (see :func:`periodic_master`).

    >>> from femno.fem.mesh import unit_square
    >>> from femno.fem.spaces import make_basis
    >>> periodic_projection(make_basis(unit_square(4))).shape
    (25, 16)
    """
    master = periodic_master(basis, axes=axes, tol=tol)
    indep, col = np.unique(master, return_inverse=True)
    N = basis.N
    return sp.csr_matrix((np.ones(N), (np.arange(N), col.ravel())), shape=(N, len(indep)))


def periodic_condense(A: sp.spmatrix, b: np.ndarray, P: sp.spmatrix):
    r"""Periodic system :math:`(P^T A P, P^T b)`; expand a solution with ``P @ y``."""
    return sp.csr_matrix(P.T @ A @ P), P.T @ np.asarray(b, dtype=np.float64)
