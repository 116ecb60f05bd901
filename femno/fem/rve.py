r"""8-node quadrilateral RVE meshes (SPEC §2).

File format, for a prefix ``NAME``:

``NAME.nodes.csv``
    one row ``x, y`` per node (row ``i`` is node ``i``, 1-based in the element file).
``NAME.elems.csv``
    one row per element: ``id, material, n1, ..., n8`` with material 1 = matrix,
    2 = fibre, and 1-based node ids: four corners counter-clockwise, then the
    mid-side nodes of the edges 1-2, 2-3, 3-4, 4-1.

Mid-side nodes may lie on curved fibre boundaries; the geometry is the 8-node
serendipity isoparametric map.  :meth:`RVEMesh.to_skfem` turns it into a 9-node
:class:`skfem.MeshQuad2` whose centre node is the serendipity map's value at the
element centre,

.. math:: x_c = -\tfrac14 \sum_{i=1}^4 x_i + \tfrac12 \sum_{i=5}^8 x_i ,

which reproduces the serendipity geometry exactly (the serendipity space is a
subspace of :math:`Q_2`).

>>> rve = load_rve("RVE3")
>>> rve.nodes.shape, rve.elements.shape
((5713, 2), (1872, 8))
>>> round(rve.area(), 6)
1.0
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from femno.errors import InputError

__all__ = ["RVEMesh", "load_rve", "REFERENCE_RVES"]

REFERENCE_RVES = ("RVE1", "RVE2", "RVE3")


@dataclass
class RVEMesh:
    """An 8-node quadrilateral RVE mesh.

    Attributes
    ----------
    nodes : ndarray, shape (N, 2), float64
        Node coordinates.
    elements : ndarray, shape (E, 8), int64
        0-based node ids: 4 corners counter-clockwise, then mid-side nodes of the
        edges 1-2, 2-3, 3-4, 4-1.
    material : ndarray, shape (E,), int64
        Material id per element (1 = matrix, 2 = fibre).
    name : str
        Name of the RVE (file prefix stem).
    """

    nodes: np.ndarray
    elements: np.ndarray
    material: np.ndarray
    name: str = "rve"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_nodes(self) -> int:
        return self.nodes.shape[0]

    @property
    def n_elements(self) -> int:
        return self.elements.shape[0]

    def to_skfem(self):
        """Return the curved geometry as a 9-node :class:`skfem.MeshQuad2`.

        Elements keep their order, so ``self.material[e]`` is the material of
        element ``e`` of the returned mesh; the mesh also carries the subdomains
        ``"matrix"`` (material 1) and ``"fibre"`` (material 2).  Use
        :meth:`node_to_dof` to map RVE node ids to mesh ``doflocs`` columns.
        """
        if "mesh" not in self._cache:
            import skfem

            corners = self.nodes[self.elements[:, :4]]
            mids = self.nodes[self.elements[:, 4:]]
            centre = -0.25 * corners.sum(axis=1) + 0.5 * mids.sum(axis=1)
            doflocs = np.vstack([self.nodes, centre]).T
            t = np.vstack([self.elements.T, self.n_nodes + np.arange(self.n_elements)])
            mesh = skfem.MeshQuad2(np.ascontiguousarray(doflocs), np.ascontiguousarray(t))
            subs = {
                "matrix": np.nonzero(self.material == 1)[0].astype(np.int32),
                "fibre": np.nonzero(self.material == 2)[0].astype(np.int32),
            }
            self._cache["mesh"] = mesh.with_subdomains(subs)
        return self._cache["mesh"]

    def element_material(self) -> np.ndarray:
        """Material id of each element of :meth:`to_skfem` (shape (E,), int64)."""
        return self.material.copy()

    def node_to_dof(self) -> np.ndarray:
        """Map RVE node ids to columns of ``to_skfem().doflocs``.

        These are also the scalar dof numbers of a ``Q2`` or ``Q8``
        (:class:`skfem.ElementQuadS2`) basis on :meth:`to_skfem`.

        Returns
        -------
        ndarray, shape (N,), int64
        """
        if "node_map" not in self._cache:
            from skfem.assembly import Dofs

            mesh = self.to_skfem()
            edofs = Dofs(mesh, mesh.elem()).element_dofs
            out = np.full(self.n_nodes, -1, dtype=np.int64)
            for j in range(8):
                out[self.elements[:, j]] = edofs[j]
            self._cache["node_map"] = out
        return self._cache["node_map"]

    def _element_areas(self) -> np.ndarray:
        if "areas" not in self._cache:
            import skfem

            basis = skfem.CellBasis(self.to_skfem(), skfem.ElementQuadS2(), intorder=5)
            self._cache["areas"] = basis.dx.sum(axis=1)
        return self._cache["areas"]

    def area(self) -> float:
        r"""Total area :math:`\int_\Omega 1\,dx` with the curved geometry (3x3 Gauss)."""
        return float(self._element_areas().sum())

    def volume_fraction(self, material: int = 2) -> float:
        """Area fraction of the elements with the given material id (default fibre)."""
        a = self._element_areas()
        return float(a[self.material == material].sum() / a.sum())

    def periodic_pairs(self, *, tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
        """Match boundary nodes on opposite edges of the bounding box.

        Parameters
        ----------
        tol : float, keyword-only
            Matching tolerance relative to the bounding-box size.

        Returns
        -------
        pairs_x : ndarray, shape (Kx, 2), int64
            ``(left, right)`` node ids (0-based) with equal ``y``, sorted by ``y``.
        pairs_y : ndarray, shape (Ky, 2), int64
            ``(bottom, top)`` node ids with equal ``x``, sorted by ``x``.
            Corner nodes appear in both arrays.

        Raises
        ------
        InputError
            If the boundary nodes of opposite edges do not match (non-periodic mesh).
        """
        lo, hi = self.nodes.min(axis=0), self.nodes.max(axis=0)
        eps = tol * float(np.max(hi - lo))
        out = []
        for d, (a_name, b_name) in enumerate((("left", "right"), ("bottom", "top"))):
            other = 1 - d
            ia = np.nonzero(np.abs(self.nodes[:, d] - lo[d]) <= eps)[0]
            ib = np.nonzero(np.abs(self.nodes[:, d] - hi[d]) <= eps)[0]
            if len(ia) != len(ib) or len(ia) == 0:
                raise InputError(
                    f"RVE {self.name!r} is not periodic: {len(ia)} nodes on the {a_name} "
                    f"edge but {len(ib)} on the {b_name} edge"
                )
            ia = ia[np.argsort(self.nodes[ia, other], kind="stable")]
            ib = ib[np.argsort(self.nodes[ib, other], kind="stable")]
            gap = np.abs(self.nodes[ia, other] - self.nodes[ib, other])
            if np.any(gap > eps):
                k = int(np.argmax(gap))
                raise InputError(
                    f"RVE {self.name!r} is not periodic: node {ia[k] + 1} on the {a_name} edge "
                    f"has no partner on the {b_name} edge (mismatch {gap[k]:.3g})"
                )
            out.append(np.stack([ia, ib], axis=1).astype(np.int64))
        return out[0], out[1]


def _read_csv(path: Path, ncols: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"RVE {what} file {str(path)!r} does not exist")
    try:
        data = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except Exception as exc:
        raise InputError(f"cannot parse RVE {what} file {str(path)!r}: {exc}") from exc
    if data.shape[0] == 0:
        raise InputError(f"RVE {what} file {str(path)!r} is empty")
    if data.shape[1] != ncols:
        raise InputError(
            f"RVE {what} file {str(path)!r} has {data.shape[1]} columns, expected {ncols}"
        )
    return data


def load_rve(name_or_prefix: str | os.PathLike) -> RVEMesh:
    """Load an 8-node quadrilateral RVE mesh.

    Parameters
    ----------
    name_or_prefix : str or path-like
        ``"RVE1"``, ``"RVE2"`` or ``"RVE3"`` for the reference RVEs shipped with
        femno, or a path prefix ``P`` of user files ``P.nodes.csv`` and
        ``P.elems.csv``.

    Returns
    -------
    RVEMesh

    Raises
    ------
    InputError
        Missing or unparsable files, wrong column counts, non-finite coordinates,
        non-integer or out-of-range node ids, material ids < 1, or elements whose
        corners are not counter-clockwise.

    Examples
    --------
    >>> rve = load_rve("RVE2")
    >>> rve.n_nodes, rve.n_elements, sorted(set(rve.material.tolist()))
    (6433, 2112, [1, 2])
    """
    key = os.fspath(name_or_prefix)
    if key in REFERENCE_RVES:
        base = resources.files("femno.fem") / "data" / "rve"
        prefix = Path(str(base)) / key
    else:
        prefix = Path(key)
    name = prefix.name
    nodes = _read_csv(Path(f"{prefix}.nodes.csv"), 2, "nodes")
    elems = _read_csv(Path(f"{prefix}.elems.csv"), 10, "elements")
    if not np.all(np.isfinite(nodes)):
        bad = int(np.nonzero(~np.isfinite(nodes).all(axis=1))[0][0])
        raise InputError(f"RVE {name!r}: non-finite coordinates at node {bad + 1}")
    if not np.all(np.isfinite(elems)) or np.any(elems != np.round(elems)):
        raise InputError(f"RVE {name!r}: element file holds non-integer entries")
    elems = elems.astype(np.int64)
    conn = elems[:, 2:] - 1
    if conn.min() < 0 or conn.max() >= nodes.shape[0]:
        raise InputError(
            f"RVE {name!r}: node ids out of range (must be in 1..{nodes.shape[0]}, "
            f"found {conn.min() + 1}..{conn.max() + 1})"
        )
    material = elems[:, 1]
    if material.min() < 1:
        raise InputError(f"RVE {name!r}: material ids must be >= 1 (1 = matrix, 2 = fibre)")
    c = nodes[conn[:, :4]]
    x, y = c[..., 0], c[..., 1]
    signed = 0.5 * np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1)
    if np.any(signed <= 0):
        bad = int(np.nonzero(signed <= 0)[0][0])
        raise InputError(
            f"RVE {name!r}: element {bad + 1} has corners that are not counter-clockwise"
        )
    return RVEMesh(nodes=np.ascontiguousarray(nodes), elements=conn, material=material, name=name)
