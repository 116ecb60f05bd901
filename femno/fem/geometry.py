r"""Random 2-D domains and their meshes, for datasets over many geometries.

A :class:`Domain` is a planar straight-line graph inside the unit box
:math:`[0, 1]^2`: an outer polygon, optional polygonal holes, and a signed distance
:math:`\phi(x)` (negative inside, zero on the boundary, positive outside).
:func:`sample_domain` draws one of the shapes

* ``"disk"``: a disk with a perturbed boundary,
  :math:`r(\vartheta) = r_0 \bigl(1 + \sum_{k=2}^{4} a_k \cos(k\vartheta + \varphi_k)\bigr)`,
  :math:`a_k \sim U(0, 0.08)`, :math:`r_0 = 0.45 / (1 + \sum_k a_k)`;
* ``"lshape"`` / ``"tshape"``: L and T polygons with random arm widths, rotated;
* ``"holes"``: a square with one to three circular holes that neither touch each
  other nor the outer boundary.

:func:`mesh_domain` meshes it with Shewchuk's Triangle (PyPI ``triangle``; the
``femno[geometry]`` extra): a quality constrained Delaunay triangulation (minimum angle
30 degrees) with triangle areas at most :math:`\sqrt{3} h^2 / 4`.

>>> import numpy as np
>>> dom = sample_domain("holes", np.random.default_rng(0))
>>> m = mesh_domain(dom, h=0.1)
>>> bool(np.all(dom.sdf(m.p.T) < 1e-12))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import skfem

from femno.errors import InputError

__all__ = ["SHAPES", "Domain", "sample_domain", "mesh_domain", "mesh_sdf", "segment_distance"]

#: shapes :func:`sample_domain` draws
SHAPES = ("disk", "lshape", "tshape", "holes")


@dataclass
class Domain:
    """A polygonal domain with holes.

    Attributes
    ----------
    kind : str
        The shape's name (one of :data:`SHAPES` or ``"polygon"``).
    loops : list of ndarray, each (n_i, 2) float64
        Boundary loops, the outer one first, then the holes (vertices in order, closed).
    holes : ndarray, shape (n_holes, 2)
        One point inside each hole (for the mesher).
    params : dict
        The drawn shape parameters (JSON-able).
    """

    kind: str
    loops: list
    holes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    params: dict = field(default_factory=dict)

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Vertices (V, 2) and boundary segments (S, 2), int, of all loops."""
        verts, segs, off = [], [], 0
        for loop in self.loops:
            n = len(loop)
            verts.append(loop)
            idx = off + np.arange(n)
            segs.append(np.c_[idx, np.roll(idx, -1)])
            off += n
        return np.vstack(verts), np.vstack(segs)

    def sdf(self, points) -> np.ndarray:
        r"""Signed distance :math:`\phi` at ``points`` (n, 2): negative inside, shape (n,)."""
        x = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        V, S = self.segments()
        a, b = V[S[:, 0]], V[S[:, 1]]
        inside = np.zeros(len(x), dtype=bool)
        for lo in range(0, len(S), 256):  # blocks of segments bound the (n, 256) temporaries
            A, B = a[lo:lo + 256], b[lo:lo + 256]
            # even-odd rule: a ray to +x crosses the segments whose y-range holds the point
            y0, y1 = A[:, 1][None], B[:, 1][None]
            cross = (y0 > x[:, 1:2]) != (y1 > x[:, 1:2])
            with np.errstate(divide="ignore", invalid="ignore"):
                xc = A[:, 0][None] + (x[:, 1:2] - y0) * (B[:, 0] - A[:, 0])[None] / (y1 - y0)
            inside ^= (np.sum(cross & (xc > x[:, :1]), axis=1) % 2).astype(bool)
        d = segment_distance(x, a, b)
        return np.where(inside, -d, d)

    def area(self) -> float:
        """Area of the outer polygon minus the holes (shoelace formula)."""
        def shoelace(p):
            return 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))
        return shoelace(self.loops[0]) - sum(shoelace(p) for p in self.loops[1:])


def segment_distance(points, a, b) -> np.ndarray:
    """Euclidean distance (n,) from each of ``points`` (n, 2) to the nearest of the
    segments ``a[s]``-``b[s]`` (a, b: (S, 2))."""
    x = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    d = np.full(len(x), np.inf)
    for lo in range(0, len(a), 256):  # blocks of segments bound the (n, 256) temporaries
        A, B = a[lo:lo + 256], b[lo:lo + 256]
        e = B - A
        rel = x[:, None, :] - A[None]
        s = np.clip(np.einsum("nsk,sk->ns", rel, e) / np.einsum("sk,sk->s", e, e), 0, 1)
        diff = rel - s[..., None] * e[None]
        d = np.minimum(d, np.sqrt(np.einsum("nsk,nsk->ns", diff, diff)).min(axis=1))
    return d


def mesh_sdf(mesh) -> np.ndarray:
    r"""Signed distance :math:`\phi` (n_vertices,) of a 2-D mesh's vertices to its own
    boundary (its boundary facets): :math:`-\operatorname{dist}(x, \partial\Omega)`, 0 on
    the boundary. For the meshes of :func:`mesh_domain` it equals :meth:`Domain.sdf`
    there up to the boundary's resolution.

    >>> import skfem
    >>> phi = mesh_sdf(skfem.MeshTri().refined(2))
    >>> float(phi.min()), bool(phi.max() == 0)
    (-0.5, True)
    """
    f = mesh.facets[:, mesh.boundary_facets()]
    return -segment_distance(mesh.p.T, mesh.p[:, f[0]].T, mesh.p[:, f[1]].T)


def _circle(c, r, n) -> np.ndarray:
    t = 2 * np.pi * np.arange(n) / n
    return np.c_[c[0] + r * np.cos(t), c[1] + r * np.sin(t)]


def _resample(poly: np.ndarray, h: float) -> np.ndarray:
    """Insert vertices on every edge so that no boundary segment is longer than ``h``."""
    out = []
    for p, q in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        k = max(1, int(np.ceil(np.linalg.norm(q - p) / h)))
        out.append(p + (q - p) * (np.arange(k) / k)[:, None])
    return np.vstack(out)


def _rotate_into_box(poly: np.ndarray, angle: float, margin: float = 0.05) -> np.ndarray:
    """Rotate about the centroid, then scale and center into [margin, 1 - margin]^2."""
    c, s = np.cos(angle), np.sin(angle)
    p = (poly - poly.mean(axis=0)) @ np.array([[c, s], [-s, c]])
    lo, hi = p.min(axis=0), p.max(axis=0)
    scale = (1 - 2 * margin) / float(np.max(hi - lo))
    return (p - (lo + hi) / 2) * scale + 0.5


def sample_domain(kind: str, rng: np.random.Generator, *, n_boundary: int = 96) -> Domain:
    """Draw a random domain of shape ``kind`` (one of :data:`SHAPES`) from ``rng``.

    ``n_boundary``: vertices of curved loops (disk boundary, holes); the mesher adds more
    where its size bound asks. The domain lies in :math:`[0.05, 0.95]^2`.
    """
    if kind not in SHAPES:
        raise InputError(f"unknown shape {kind!r}; choose from {', '.join(SHAPES)}")
    if not isinstance(rng, np.random.Generator):
        raise InputError("rng must be a numpy.random.Generator")
    if kind == "disk":
        a = rng.uniform(0.0, 0.08, 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        t = 2 * np.pi * np.arange(n_boundary) / n_boundary
        # r0 (1 + sum a_k) <= 0.45: the disk stays in [0.05, 0.95]^2
        r = 0.45 / (1 + a.sum()) * (1 + sum(a[i] * np.cos((i + 2) * t + ph[i]) for i in range(3)))
        loop = np.c_[0.5 + r * np.cos(t), 0.5 + r * np.sin(t)]
        return Domain(kind, [loop], params={"amplitudes": a.tolist(), "phases": ph.tolist()})
    if kind in ("lshape", "tshape"):
        w1, w2 = rng.uniform(0.35, 0.65, 2)
        angle = float(rng.uniform(0, 2 * np.pi))
        if kind == "lshape":  # unit square minus the top-right corner w1 x w2
            poly = np.array([[0, 0], [1, 0], [1, 1 - w2], [1 - w1, 1 - w2], [1 - w1, 1], [0, 1]])
        else:  # a bar of height w2 on top of a stem of width w1
            x0, x1 = (1 - w1) / 2, (1 + w1) / 2
            poly = np.array([[x0, 0], [x1, 0], [x1, 1 - w2], [1, 1 - w2], [1, 1], [0, 1],
                             [0, 1 - w2], [x0, 1 - w2]])
        loop = _rotate_into_box(poly.astype(np.float64), angle)
        return Domain(kind, [loop], params={"w1": float(w1), "w2": float(w2), "angle": angle})
    # holes: rejection-sample non-overlapping circles in the square
    outer = np.array([[0.05, 0.05], [0.95, 0.05], [0.95, 0.95], [0.05, 0.95]])
    k = int(rng.integers(1, 4))
    circles: list[tuple[np.ndarray, float]] = []
    for _ in range(200):
        if len(circles) == k:
            break
        r = float(rng.uniform(0.06, 0.16))
        c = rng.uniform(0.05 + r + 0.05, 0.95 - r - 0.05, 2)
        if all(np.linalg.norm(c - c2) > r + r2 + 0.05 for c2, r2 in circles):
            circles.append((c, r))
    loops = [outer] + [_circle(c, r, max(12, int(n_boundary * r / 0.3))) for c, r in circles]
    return Domain("holes", loops, holes=np.array([c for c, _ in circles]),
                  params={"centers": [c.tolist() for c, _ in circles],
                          "radii": [r for _, r in circles]})


def mesh_domain(domain: Domain, *, h: float, min_angle: float = 30.0) -> skfem.MeshTri:
    r"""Quality triangular mesh of ``domain`` with edge lengths about ``h`` (Triangle).

    Boundary loops are resampled to segments of length :math:`\le h`, and triangle areas
    are bounded by :math:`\sqrt{3} h^2 / 4` (an equilateral triangle of side ``h``).
    Deterministic: the same domain and ``h`` give the same mesh.

    Returns
    -------
    skfem.MeshTri
        Vertices (2, n_vertices) float64, triangles (3, n_triangles) int64.
    """
    try:
        import triangle
    except ImportError as e:  # pragma: no cover - the extra is installed in CI
        raise ImportError("meshing random domains needs Triangle: pip install 'femno[geometry]' "
                          "(or pip install triangle)") from e
    h = float(h)
    if not (np.isfinite(h) and 1e-3 <= h <= 0.5):
        raise InputError(f"mesh size h must lie in [1e-3, 0.5], got {h!r}")
    loops = [_resample(loop, h) for loop in domain.loops]
    sub = Domain(domain.kind, loops, domain.holes, domain.params)
    V, S = sub.segments()
    pslg = {"vertices": V, "segments": S}
    if len(domain.holes):
        pslg["holes"] = np.asarray(domain.holes, dtype=np.float64)
    area = np.sqrt(3.0) / 4.0 * h * h
    out = triangle.triangulate(pslg, f"pq{min_angle:g}a{area:.10f}Q")
    p, t = np.asarray(out["vertices"], dtype=np.float64), np.asarray(out["triangles"], dtype=np.int64)
    return skfem.MeshTri(p.T.copy(), t.T.copy())
