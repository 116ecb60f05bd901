r"""``femno generate PROBLEM --geometry``: a resumable dataset over random domains.

Every sample draws its own domain (:func:`femno.fem.geometry.sample_domain`), meshes it
(:func:`femno.fem.geometry.mesh_domain`, Triangle), draws its coefficient or source,
assembles P1 with scikit-fem and solves by sparse Cholesky (CHOLMOD where installed,
else ``spsolve``), recording the true relative residual. Problems, on a domain
:math:`\Omega` with random field :math:`g` (a stationary Gaussian field on the unit box,
so one realisation is a function of :math:`x`, whatever the mesh):

* ``poisson``: :math:`-\Delta u = f` in :math:`\Omega`, :math:`u = 0` on
  :math:`\partial\Omega`, :math:`f = 1 + g`;
* ``darcy``: :math:`-\nabla\cdot(a \nabla u) = 1`, :math:`u = 0` on
  :math:`\partial\Omega`, :math:`a = e^{g}`;
* ``elasticity``: plane strain, :math:`-\nabla\cdot\sigma(u) = b` with Young's modulus
  :math:`E = e^{g}`, :math:`\nu = 0.3`, a unit body force :math:`b` in a random
  direction, clamped where :math:`x \le x_{\min} + 0.1` on the boundary, traction-free
  elsewhere.

Meshes differ in size, so per-sample arrays are padded to the largest mesh of the
dataset (``NaN`` for floats, ``-1`` for indices) and ``mesh/n_points``,
``mesh/n_cells`` give each sample's sizes:

==========================  =====================  ===========================================
array                       shape                  content
==========================  =====================  ===========================================
``mesh/points``             (N, P, 2)              vertices (= P1 dofs' nodes)
``mesh/cells``              (N, C, 3)              triangles (vertex indices)
``mesh/n_points|n_cells``   (N,)                   sizes of sample N's mesh
``mesh/boundary``           (N, P)                 vertex on :math:`\partial\Omega`
``mesh/dirichlet``          (N, P)                 vertex where :math:`u` is prescribed
``inputs/sdf``              (N, P)                 signed distance to :math:`\partial\Omega`
``inputs/coefficient``      (N, P)                 :math:`f`, :math:`a` or :math:`E` at vertices
``inputs/shape``            (N,)                   index into ``layout["geometry"]["shapes"]``
``inputs/load``             (N, 2)                 body force (elasticity; else 0)
``solution``                (N, P, ncomp)          nodal values (ncomp 1 or 2)
``stats/residual|time``     (N,)                   true relative residual, seconds
==========================  =====================  ===========================================

The same settings give the same dataset bit for bit; a killed run resumes like any
femno dataset (blocks are written, fsynced and marked).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
import scipy.sparse as sp
import skfem
from skfem.helpers import ddot, dot, sym_grad, trace

from femno.datagen.generate import (
    _int,
    _progress,
    _versions,
    open_or_create,
)
from femno.datagen.geometry_rows import read_geometry_row
from femno.datagen.store import DatasetStore, writer_lock
from femno.errors import InputError
from femno.fem.geometry import SHAPES, mesh_domain, mesh_sdf, sample_domain
from femno.fem.random_fields import GaussianRandomField

__all__ = ["GEOMETRY_PROBLEMS", "generate_geometry_dataset", "geometry_sample", "load_geometry_sample"]

GEOMETRY_PROBLEMS = ("poisson", "darcy", "elasticity")
GEOMETRY_IDENTITY = ("problem", "samples", "seed", "block", "shapes", "h", "length",
                     "variance", "rtol", "mesh")
_NU = 0.3
_BOX = (np.zeros(2), np.ones(2))


@skfem.BilinearForm
def _laplace(u, v, w):
    return w.a * dot(u.grad, v.grad)


@skfem.LinearForm
def _load(v, w):
    return w.f * v


@skfem.BilinearForm
def _elastic(u, v, w):
    lam = w.E * _NU / ((1 + _NU) * (1 - 2 * _NU))
    mu = w.E / (2 * (1 + _NU))
    return lam * trace(sym_grad(u)) * trace(sym_grad(v)) + 2 * mu * ddot(sym_grad(u), sym_grad(v))


@skfem.LinearForm
def _body(v, w):
    return w.b0 * v[0] + w.b1 * v[1]


def _rngs(seed: int, i: int):
    """Independent streams for sample ``i``: geometry, field, load."""
    return [np.random.default_rng([seed, i, k]) for k in range(3)]


def geometry_sample(settings: dict, i: int, mesh=None) -> dict:
    """Draw, mesh and solve sample ``i`` of a geometry dataset (deterministic in ``settings``).

    With ``mesh`` (a user's ``skfem.MeshTri``, the dataset's ``mesh`` setting) every
    sample uses it: only the coefficient (and load) is drawn, the shape is ``"user"``
    and the signed distance is the distance to its boundary facets.

    Returns a dict with the ``skfem.MeshTri`` (``mesh``), ``shape``, ``domain``, the nodal
    ``coefficient`` (P,), ``sdf`` (P,), ``boundary`` and ``dirichlet`` masks (P,), ``load``
    (2,), ``solution`` (P, ncomp), ``residual`` and ``time``.
    """
    t0 = time.perf_counter()
    rg, rf, rl = _rngs(int(settings["seed"]), int(i))
    shapes = settings["shapes"]
    kind = shapes[int(rg.integers(len(shapes)))]
    if mesh is None:
        dom = sample_domain(kind, rg)
        mesh = mesh_domain(dom, h=sample_h(settings, i))
        sdf = dom.sdf(mesh.p.T)
    else:
        dom, sdf = None, mesh_sdf(mesh)
    problem = settings["problem"]
    vector = problem == "elasticity"
    elem = skfem.ElementVector(skfem.ElementTriP1()) if vector else skfem.ElementTriP1()
    basis = skfem.CellBasis(mesh, elem)
    # one field realisation at the quadrature points and the vertices together
    qp = np.asarray(basis.mapping.F(basis.X)).reshape(2, -1).T  # (ne * nq, 2)
    grf = GaussianRandomField(length=settings["length"], variance=settings["variance"])
    # the unit box (all generated domains lie in it), grown to hold a user's mesh
    box = (np.minimum(_BOX[0], mesh.p.min(axis=1)), np.maximum(_BOX[1], mesh.p.max(axis=1)))
    g = grf.sample(np.vstack([qp, mesh.p.T]), rf, bbox=box)
    gq, gn = g[: len(qp)].reshape(basis.dx.shape), g[len(qp):]
    load = np.zeros(2)
    if problem == "poisson":
        coef = 1.0 + gn
        K, f = _laplace.assemble(basis, a=1.0), _load.assemble(basis, f=1.0 + gq)
    elif problem == "darcy":
        coef = np.exp(gn)
        K, f = _laplace.assemble(basis, a=np.exp(gq)), _load.assemble(basis, f=1.0)
    else:
        coef = np.exp(gn)
        ang = float(rl.uniform(0, 2 * np.pi))
        load = np.array([np.cos(ang), np.sin(ang)])
        K = _elastic.assemble(basis, E=np.exp(gq))
        f = _body.assemble(basis, b0=load[0], b1=load[1])
    bnd = np.zeros(mesh.p.shape[1], dtype=bool)
    bnd[mesh.boundary_nodes()] = True
    if vector:
        x0 = mesh.p[0].min()
        clamp = bnd & (mesh.p[0] <= x0 + 0.1)
        D = basis.nodal_dofs[:, clamp].ravel()
    else:
        clamp = bnd
        D = basis.nodal_dofs[0, clamp]
    free = np.setdiff1d(np.arange(basis.N), D)
    A = sp.csc_matrix(K[free][:, free])
    b = np.asarray(f[free], dtype=np.float64)
    x = np.zeros(basis.N)
    x[free] = _spd_solve(A, b)
    res = float(np.linalg.norm(b - A @ x[free]) / max(np.linalg.norm(b), 1e-300))
    u = x[basis.nodal_dofs].T if vector else x[:, None]  # (P, ncomp)
    return {"mesh": mesh, "shape": shapes.index(kind), "domain": dom, "coefficient": coef,
            "sdf": sdf, "boundary": bnd, "dirichlet": clamp, "load": load,
            "solution": u, "residual": res, "time": time.perf_counter() - t0}


def _spd_solve(A, b):
    try:
        from sksparse.cholmod import cholesky
    except ImportError:
        from scipy.sparse.linalg import spsolve

        return spsolve(A, b)
    return cholesky(A)(b)


def generate_geometry_dataset(problem, *, samples, out, shapes=SHAPES, h=0.04, seed=0,
                              block=16, length=0.2, variance=0.5, rtol=1e-8, mesh=None,
                              progress=True) -> dict:
    r"""Generate (or resume) a dataset of ``samples`` solves, each on its own random domain.

    Parameters
    ----------
    problem : {"poisson", "darcy", "elasticity"}
        The PDE (see the module docstring).
    samples : int, keyword-only
        Number of samples ``N``.
    out : path, keyword-only
        Dataset directory; an existing one with the same settings is resumed.
    shapes : sequence of str, keyword-only
        Shapes drawn uniformly per sample (subset of :data:`femno.fem.geometry.SHAPES`);
        hold some out of a training set to test on unseen geometries.
    h : float or (float, float), keyword-only
        Target mesh size (edge length), or a range ``(lo, hi)`` from which each sample
        draws its own (uniformly, from its own seeded stream): training data at several
        resolutions.
    seed, block : int, keyword-only
        Seed of everything; samples per stored block.
    length, variance : float, keyword-only
        Correlation length and variance of the Gaussian field :math:`g`.
    rtol : float, keyword-only
        A sample counts as converged when its true relative residual is at most ``rtol``.
    mesh : path or skfem.MeshTri, optional, keyword-only
        A user's 2-D triangle mesh (any file meshio reads): every sample is solved on it
        (``shapes`` and ``h`` are then not used; the shape is ``"user"``), so that
        ``femno eval`` can check a geometry surrogate on that mesh before it is trusted.

    Returns
    -------
    dict
        ``samples, done, total_s, samples_per_s, max_residual, failures, max_points,
        path, message, repaired_blocks``.

    Examples
    --------
    >>> import tempfile, os
    >>> d = os.path.join(tempfile.mkdtemp(), "geo")
    >>> s = generate_geometry_dataset("darcy", samples=3, out=d, h=0.1, block=2,
    ...                               progress=False)
    >>> s["done"], s["failures"]
    (3, 0)
    """
    t0 = time.perf_counter()
    if problem not in GEOMETRY_PROBLEMS:
        raise InputError(f"--geometry works for: {', '.join(GEOMETRY_PROBLEMS)}; got {problem!r}")
    samples, block, seed = _int(samples, "samples", 1), _int(block, "block", 1), _int(seed, "seed", 0)
    shapes = list(dict.fromkeys(shapes))
    bad = [s for s in shapes if s not in SHAPES]
    if not shapes or bad:
        raise InputError(f"shapes must be a non-empty subset of {', '.join(SHAPES)}; got {bad or shapes}")
    if isinstance(h, (list, tuple, np.ndarray)):
        if len(h) == 1:
            h = h[0]
        elif len(h) != 2 or not all(isinstance(v, (int, float)) and np.isfinite(v) and v > 0
                                    for v in h) or not h[0] < h[1]:
            raise InputError(f"h must be a positive number or a range (lo, hi) with "
                             f"0 < lo < hi, got {h!r}")
    h_setting = [float(h[0]), float(h[1])] if isinstance(h, (list, tuple, np.ndarray)) else h
    for name, v in (("h", h_setting if not isinstance(h_setting, list) else h_setting[0]),
                    ("length", length), ("variance", variance), ("rtol", rtol)):
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
            raise InputError(f"{name} must be a positive number, got {v!r}")
    if out is None or str(out) == "":
        raise InputError("out must be a directory path")
    user_mesh, mesh_id = _user_mesh(mesh)
    if user_mesh is not None:
        shapes = ["user"]
    settings = {"family": problem, "problem": problem, "samples": samples, "seed": seed, "block": block,
                "shapes": shapes,
                "h": h_setting if isinstance(h_setting, list) else float(h_setting),
                "length": float(length),
                "variance": float(variance), "rtol": float(rtol), "mode": "geometry",
                "mesh": mesh_id}
    with writer_lock(out):
        return _generate(settings, out=out, progress=progress, t0=t0, mesh=user_mesh)


def _user_mesh(mesh):
    """``(skfem.MeshTri or None, identity dict or None)`` of the ``mesh`` argument."""
    if mesh is None:
        return None, None
    import hashlib

    path = None
    if not isinstance(mesh, skfem.Mesh):
        from femno.fem.mesh import load_mesh

        path, mesh = str(mesh), load_mesh(mesh)
    if not isinstance(mesh, skfem.MeshTri):
        raise InputError(f"geometry datasets need a 2-D triangle mesh, got {type(mesh).__name__}")
    mesh = skfem.MeshTri(np.ascontiguousarray(mesh.p, dtype=np.float64),
                         np.ascontiguousarray(mesh.t, dtype=np.int64))
    digest = hashlib.sha256(mesh.p.tobytes() + mesh.t.tobytes()).hexdigest()[:16]
    return mesh, {"path": path, "points": int(mesh.p.shape[1]), "cells": int(mesh.t.shape[1]),
                  "sha256": digest}


def sample_h(settings: dict, i: int) -> float:
    """Mesh size of sample ``i``: the setting, or a draw from its range (own stream, so a
    dataset with one ``h`` is unchanged)."""
    h = settings["h"]
    if not isinstance(h, list):
        return float(h)
    u = np.random.default_rng([int(settings["seed"]), int(i), 0x4D455348]).random()
    return float(h[0] + (h[1] - h[0]) * u)


def _sizes(settings, mesh=None) -> tuple[int, int]:
    """Largest vertex and triangle counts over all samples (meshing only, milliseconds each)."""
    if mesh is not None:
        return mesh.p.shape[1], mesh.t.shape[1]
    P = C = 0
    for i in range(settings["samples"]):
        rg = _rngs(settings["seed"], i)[0]
        kind = settings["shapes"][int(rg.integers(len(settings["shapes"])))]
        m = mesh_domain(sample_domain(kind, rg), h=sample_h(settings, i))
        P, C = max(P, m.p.shape[1]), max(C, m.t.shape[1])
    return P, C


def _create(settings, out, mesh=None):
    P, C = _sizes(settings, mesh)
    nc = 2 if settings["problem"] == "elasticity" else 1
    arrays = {"mesh/points": ((P, 2), "f8"), "mesh/cells": ((C, 3), "i8"),
              "mesh/n_points": ((), "i8"), "mesh/n_cells": ((), "i8"),
              "mesh/boundary": ((P,), "bool"), "mesh/dirichlet": ((P,), "bool"),
              "inputs/sdf": ((P,), "f8"), "inputs/coefficient": ((P,), "f8"),
              "inputs/shape": ((), "i8"), "inputs/load": ((2,), "f8"),
              "solution": ((P, nc), "f8"), "sample_index": ((), "i8"),
              "stats/residual": ((), "f8"), "stats/time": ((), "f8"),
              "stats/converged": ((), "bool")}
    layout = {"element": "P1", "dim": 2, "mesh_type": "MeshTri1",
              "inputs": ["coefficient", "load", "sdf", "shape"],
              "row_order": "rows are samples in index order; sample_index[row] = row",
              "geometry": {"shapes": settings["shapes"], "h": settings["h"],
                           "max_points": P, "max_cells": C, "components": nc,
                           "padding": "NaN (floats), -1 (indices), False (masks) past "
                                      "mesh/n_points and mesh/n_cells"},
              "spd": True, "symmetric": True, "fixed_matrix": False}
    manifest = {"format": "femno-dataset", "format_version": 1, "settings": settings,
                "layout": layout, "versions": _versions(),
                "resolved": {"method": "direct", "pc": "none",
                             "explanation": "sparse Cholesky per sample (a new mesh each)",
                             "solver_options": {}},
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return DatasetStore.create(out, manifest=manifest, arrays=arrays, static={})


def _generate(settings, *, out, progress, t0, mesh=None):
    store, repaired, message = open_or_create(out, settings, GEOMETRY_IDENTITY,
                                              lambda: _create(settings, out, mesh))
    geo = store.manifest["layout"]["geometry"]
    P, C = geo["max_points"], geo["max_cells"]
    pending = [b for b in range(store.n_blocks) if b not in store.done_blocks()]
    todo = sum(store.rows(b)[1] - store.rows(b)[0] for b in pending)
    bar = _progress(store.samples, store.samples - todo, progress,
                    f"{settings['problem']} on " + ("the user's mesh" if mesh is not None
                                                    else "random domains"))
    done, worst, failures = 0, 0.0, 0
    try:
        for b in pending:
            lo, hi = store.rows(b)
            data = {k: [] for k in store.manifest["arrays"]}
            for i in range(lo, hi):
                s = geometry_sample(settings, i, mesh)
                m = s["mesh"]
                n, c = m.p.shape[1], m.t.shape[1]
                if n > P or c > C:  # pragma: no cover - _sizes meshed the same domains
                    raise RuntimeError(f"sample {i}: mesh larger than the dataset's padding")
                ok = bool(s["residual"] <= settings["rtol"])
                failures += not ok
                worst = max(worst, s["residual"])
                row = {"mesh/points": _pad(m.p.T, P, np.nan), "mesh/cells": _pad(m.t.T, C, -1),
                       "mesh/n_points": n, "mesh/n_cells": c,
                       "mesh/boundary": _pad(s["boundary"], P, False),
                       "mesh/dirichlet": _pad(s["dirichlet"], P, False),
                       "inputs/sdf": _pad(s["sdf"], P, np.nan),
                       "inputs/coefficient": _pad(s["coefficient"], P, np.nan),
                       "inputs/shape": s["shape"], "inputs/load": s["load"],
                       "solution": _pad(s["solution"], P, np.nan), "sample_index": i,
                       "stats/residual": s["residual"], "stats/time": s["time"],
                       "stats/converged": ok}
                for k, v in row.items():
                    data[k].append(v)
                bar.update(1)
            store.write_block(b, {k: np.asarray(v) for k, v in data.items()})
            store.mark_done(b, {"samples": hi - lo, "method": "direct",
                                "failures": int(sum(not c for c in data["stats/converged"]))})
            done += hi - lo
    finally:
        bar.close()
    total = time.perf_counter() - t0
    return {"samples": store.samples, "done": done, "total_s": total,
            "samples_per_s": done / total if total > 0 else 0.0, "max_residual": worst,
            "failures": failures, "max_points": P, "path": str(store.path),
            "message": message, "repaired_blocks": repaired}


def _pad(a, n: int, fill):
    a = np.asarray(a)
    out = np.full((n, *a.shape[1:]), fill, dtype=a.dtype if fill is not np.nan else np.float64)
    out[: len(a)] = a
    return out


def load_geometry_sample(path, row: int) -> dict:
    """Sample ``row`` of a geometry dataset, unpadded (:func:`read_geometry_row`)."""
    store = DatasetStore.open(path)
    return read_geometry_row(store.root, row, store.manifest["layout"]["geometry"]["shapes"])
