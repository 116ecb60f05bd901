r"""Meshes: structured generators, refinement and file input.

All meshes are scikit-fem meshes (:class:`skfem.MeshTri1`, :class:`skfem.MeshQuad1`,
...) with ``float64`` coordinates ``mesh.p`` of shape ``(dim, n_vertices)`` and
connectivity ``mesh.t`` of shape ``(n_local, n_elements)``.

The 8-node quadrilateral RVE format of SPEC §2 lives in :mod:`femno.fem.rve`;
:func:`load_rve` and :class:`RVEMesh` are re-exported here.

>>> m = unit_square(4)
>>> m.p.shape, m.t.shape
((2, 25), (3, 32))
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import skfem

from femno.errors import InputError
from femno.fem.rve import RVEMesh, load_rve

__all__ = ["unit_square", "lshape", "refine", "unstructured_square", "unstructured_disk", "load_mesh",
           "load_rve", "RVEMesh"]

_CELLS = {"tri": skfem.MeshTri1, "quad": skfem.MeshQuad1}


def _check_n(n, name="n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"{name} must be an integer >= 1, got {n!r}")
    return int(n)


def _mesh_class(cell: str):
    try:
        return _CELLS[cell]
    except (KeyError, TypeError):
        raise InputError(f"unknown cell {cell!r}; valid cells: {sorted(_CELLS)}") from None


def unit_square(n: int, *, cell: str = "tri") -> skfem.Mesh:
    r"""Structured mesh of the unit square :math:`[0, 1]^2`.

    Parameters
    ----------
    n : int
        Number of cells per side (>= 1).
    cell : {"tri", "quad"}, keyword-only
        ``"tri"`` splits each of the :math:`n^2` squares into two triangles
        (:class:`skfem.MeshTri1`, :math:`2n^2` elements); ``"quad"`` gives
        :class:`skfem.MeshQuad1` with :math:`n^2` elements.

    Returns
    -------
    skfem.MeshTri1 or skfem.MeshQuad1
        :math:`(n+1)^2` vertices, float64 coordinates.

    Examples
    --------
    >>> unit_square(2, cell="quad").t.shape
    (4, 4)
    """
    n = _check_n(n)
    cls = _mesh_class(cell)
    x = np.linspace(0.0, 1.0, n + 1)
    return cls.init_tensor(x, x)


def lshape(n: int, *, cell: str = "tri") -> skfem.Mesh:
    r"""Structured mesh of the L-shaped domain :math:`[0,1]^2 \setminus (1/2, 1]^2`.

    The re-entrant corner is at :math:`(1/2, 1/2)`; the domain has area 3/4.

    Parameters
    ----------
    n : int
        Cells per side of the enclosing unit square; rounded up to the next even
        number so that the re-entrant corner is a mesh vertex.
    cell : {"tri", "quad"}, keyword-only
        Element shape, as in :func:`unit_square`.

    Returns
    -------
    skfem.MeshTri1 or skfem.MeshQuad1

    Examples
    --------
    >>> m = lshape(2, cell="quad")
    >>> m.t.shape[1], m.p.shape[1]
    (3, 8)
    """
    n = _check_n(n)
    n += n % 2
    m = unit_square(n, cell=cell)
    c = m.p[:, m.t].mean(axis=1)
    return m.remove_elements(np.nonzero((c[0] > 0.5) & (c[1] > 0.5))[0])


def refine(mesh: skfem.Mesh, times: int = 1) -> skfem.Mesh:
    """Uniformly refine ``mesh`` ``times`` times (``times = 0`` returns it unchanged).

    >>> refine(unit_square(1), 2).t.shape[1]
    32
    """
    if not isinstance(mesh, skfem.Mesh):
        raise InputError(f"refine expects a skfem Mesh, got {type(mesh).__name__}")
    if isinstance(times, bool) or not isinstance(times, (int, np.integer)) or times < 0:
        raise InputError(f"times must be an integer >= 0, got {times!r}")
    return mesh.refined(int(times)) if times else mesh


def _delaunay_mesh(points: np.ndarray) -> skfem.MeshTri1:
    """Delaunay triangulation of 2-D points (n, 2) as a MeshTri1 (counter-clockwise)."""
    from scipy.spatial import Delaunay

    t = Delaunay(points).simplices.astype(np.int64)
    p = points[t]
    area = ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1])
            - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0]))
    t[area < 0] = t[area < 0][:, [0, 2, 1]]
    return skfem.MeshTri1(np.ascontiguousarray(points.T), np.ascontiguousarray(t.T))


def _check_jitter(jitter) -> float:
    try:
        j = float(jitter)
    except (TypeError, ValueError):
        raise InputError(f"jitter must be a number in [0, 0.4], got {jitter!r}") from None
    if not 0.0 <= j <= 0.4:
        raise InputError(f"jitter must be in [0, 0.4], got {jitter!r}")
    return j


def unstructured_square(n: int, *, seed: int = 0, jitter: float = 0.3) -> skfem.MeshTri1:
    r"""Unstructured triangle mesh of the unit square :math:`[0, 1]^2`.

    The :math:`(n-1)^2` interior vertices of an :math:`n \times n` grid are moved by
    independent uniform offsets of at most ``jitter`` times the spacing :math:`h = 1/n`
    in each coordinate; the :math:`4n` boundary vertices stay evenly spaced.  The
    triangles are the Delaunay triangulation (no sliver: with ``jitter <= 0.4`` no
    three vertices are collinear except on the boundary).

    Parameters
    ----------
    n : int
        Vertices per side minus one (>= 2); about :math:`2n^2` triangles.
    seed : int, keyword-only
        Seed of the offsets (same seed, same mesh).
    jitter : float, keyword-only
        Relative offset in [0, 0.4]; 0 gives a (Delaunay-split) structured grid.

    Examples
    --------
    >>> m = unstructured_square(8, seed=1)
    >>> m.p.shape[1], m.t.shape[1], len(m.boundary_nodes())
    (81, 128, 32)
    """
    n = _check_n(n)
    if n < 2:
        raise InputError(f"n must be >= 2, got {n}")
    j = _check_jitter(jitter)
    x = np.linspace(0.0, 1.0, n + 1)
    X, Y = np.meshgrid(x, x, indexing="ij")
    pts = np.column_stack([X.ravel(), Y.ravel()])
    inner = np.all((pts > 0.0) & (pts < 1.0), axis=1)
    rng = np.random.default_rng(seed)
    pts[inner] += rng.uniform(-j, j, size=(int(inner.sum()), 2)) / n
    return _delaunay_mesh(pts)


def unstructured_disk(n: int, *, seed: int = 0, jitter: float = 0.3,
                      radius: float = 1.0) -> skfem.MeshTri1:
    r"""Unstructured triangle mesh of the disk of radius ``radius`` centred at the origin.

    :math:`\lceil 2\pi n \rceil` vertices evenly spaced on the circle (spacing about
    :math:`h = r/n`), interior vertices on a jittered grid of spacing :math:`h` kept at
    least :math:`h/2` inside, Delaunay triangulation.  The polygonal domain has the
    boundary vertices on the circle.

    Parameters
    ----------
    n : int
        Resolution: about ``n`` cells along a radius (>= 2).
    seed, jitter : keyword-only
        As in :func:`unstructured_square`.
    radius : float, keyword-only

    Examples
    --------
    >>> m = unstructured_disk(6)
    >>> bool(abs(np.hypot(*m.p[:, m.boundary_nodes()]) - 1).max() < 1e-12)
    True
    """
    n = _check_n(n)
    if n < 2:
        raise InputError(f"n must be >= 2, got {n}")
    j = _check_jitter(jitter)
    r = float(radius)
    if not np.isfinite(r) or r <= 0:
        raise InputError(f"radius must be positive, got {radius!r}")
    h = r / n
    k = int(np.ceil(2 * np.pi * n))
    th = 2 * np.pi * np.arange(k) / k
    bnd = r * np.column_stack([np.cos(th), np.sin(th)])
    x = np.arange(-n, n + 1) * h
    X, Y = np.meshgrid(x, x, indexing="ij")
    pts = np.column_stack([X.ravel(), Y.ravel()])
    rng = np.random.default_rng(seed)
    pts = pts + rng.uniform(-j, j, size=pts.shape) * h
    pts = pts[np.hypot(pts[:, 0], pts[:, 1]) < r - 0.5 * h]
    return _delaunay_mesh(np.vstack([bnd, pts]))


_SUPPORTED = ("triangle", "quad", "tetra", "hexahedron")


def load_mesh(path: str | os.PathLike) -> skfem.Mesh:
    """Read a mesh file with meshio and convert it to a scikit-fem mesh.

    Supported cells: ``triangle``, ``quad`` (2-D; a z column that is identically
    zero is dropped), ``tetra`` and ``hexahedron`` (3-D).  When a file contains
    several kinds, the 3-D cells win, then triangles, then quads; other cells
    (lines, vertices) and physical tags are ignored, and unused points are dropped.

    Parameters
    ----------
    path : str or path-like
        Any file meshio can read (``.msh``, ``.vtk``, ``.vtu``, ``.xdmf``, ...).

    Returns
    -------
    skfem.Mesh

    Raises
    ------
    InputError
        If the file does not exist, cannot be parsed, or holds no supported cells.
    """
    import meshio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"mesh file {str(path)!r} does not exist")
    sink = io.StringIO()
    try:
        # meshio prints diagnostics and calls sys.exit(1) when no reader succeeds
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            m = meshio.read(path)
    except (Exception, SystemExit) as exc:  # meshio raises many exception types
        detail = str(exc) if not isinstance(exc, SystemExit) else ""
        detail = detail or " ".join(sink.getvalue().split()) or "unknown or corrupt format"
        raise InputError(f"cannot read mesh file {str(path)!r}: {detail}") from None
    kinds = [c.type for c in m.cells]
    kind = next((k for k in ("tetra", "hexahedron", "triangle", "quad") if k in kinds), None)
    if kind is None:
        raise InputError(
            f"mesh file {str(path)!r} holds no supported cells (found {sorted(set(kinds))}; "
            f"supported: {list(_SUPPORTED)})"
        )
    pts = np.asarray(m.points, dtype=np.float64)
    if not np.all(np.isfinite(pts)):
        raise InputError(f"mesh file {str(path)!r} has non-finite point coordinates")
    if kind in ("triangle", "quad") and pts.shape[1] == 3:
        if np.any(pts[:, 2] != 0.0):
            raise InputError(f"mesh file {str(path)!r}: 2-D cells but non-zero z coordinates")
        pts = pts[:, :2]
    cells = np.concatenate([c.data for c in m.cells if c.type == kind]).astype(np.int64)
    if cells.size and (cells.min() < 0 or cells.max() >= len(pts)):
        raise InputError(f"mesh file {str(path)!r}: cell node index out of range")
    # drop points not used by the chosen cells (e.g. gmsh geometry points)
    used, inv = np.unique(cells, return_inverse=True)
    cells = inv.reshape(cells.shape)
    pts = pts[used]
    from skfem.io.meshio import INV_HEX_MAPPING, MESH_TYPE_MAPPING

    t = cells.T
    if kind == "hexahedron":
        t = t[INV_HEX_MAPPING[:8]]
    try:
        return MESH_TYPE_MAPPING[kind](np.ascontiguousarray(pts.T), np.ascontiguousarray(t))
    except Exception as exc:
        raise InputError(f"mesh file {str(path)!r}: invalid {kind} mesh: {exc}") from exc
