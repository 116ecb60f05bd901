r"""Export trajectory datasets in the layouts other tools read: The Well and PDEBench.

Both formats hold fields on a uniform Cartesian grid, so the FE solution
:math:`u_h(t_n)` of every sample is evaluated at the grid points
(:meth:`skfem.CellBasis.probes`, exact evaluation of the FE function) on an
``nx x ny`` vertex grid of the domain's bounding box. The domain must be that box
(a grid point outside the mesh is an :class:`~femno.errors.InputError`). The
interpolation error is recorded per sample. It is the relative max-norm difference, over all
times, between :math:`u_h` at the dof locations and the bilinear interpolant of the
grid values there:

.. math:: e = \max_n \frac{\|u_h(t_n) - \Pi_{grid} u_h(t_n)\|_\infty}{\max_n \|u_h(t_n)\|_\infty}

It is 0 to rounding when the grid is the mesh's vertex grid (a structured P1 mesh).

``well`` writes ``OUT/data/train/<name>.hdf5`` in The Well's layout (file attributes
``dataset_name``, ``grid_type``, ``n_spatial_dims``, ``n_trajectories``; groups
``dimensions`` (``time``, ``x``, ``y``), ``boundary_conditions`` (the homogeneous Dirichlet
boundary as a ``WALL`` on both ends of ``x`` and of ``y``), ``scalars`` (``interpolation_error`` per sample), ``t0_fields/u``
of shape ``(N, T+1, nx, ny)``, empty ``t1_fields``/``t2_fields``), so that
``the_well.data.WellDataset(path=OUT, well_split_name="train")`` reads it.
``pdebench`` writes ``OUT/<name>.h5`` in the layout of PDEBench's 2-D
diffusion-reaction files: one group per sample ``"0000"``, ... with ``data`` of shape
``(T+1, nx, ny, 1)`` and ``grid/x``, ``grid/y``, ``grid/t``.

>>> import tempfile, os
>>> from femno.datagen.generate_trajectory import generate_trajectories
>>> d = tempfile.mkdtemp()
>>> _ = generate_trajectories("heat", samples=2, steps=3, out=os.path.join(d, "h"),
...                           family_options={"n": 4}, progress=False)
>>> s = export_dataset(os.path.join(d, "h"), os.path.join(d, "w"), format="well")
>>> s["shape"], s["max_interpolation_error"] < 1e-12
([2, 4, 5, 5], True)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from femno.datagen import runner
from femno.datagen.store import require_complete
from femno.errors import InputError, optional_import

__all__ = ["export_dataset", "FORMATS", "grid_values"]

FORMATS = ("well", "pdebench")


def _grid(fam, nx, ny):
    lo, hi = fam.mesh.p.min(axis=1), fam.mesh.p.max(axis=1)
    if fam.mesh.p.shape[0] != 2:
        raise InputError("export to a grid is implemented for 2-D meshes only")
    area = float(np.sum(fam.basis.dx)) if hasattr(fam.basis, "dx") else None
    box = float(np.prod(hi - lo))
    if area is not None and abs(area - box) > 1e-9 * box:
        raise InputError(f"the domain is not its bounding box (area {area:.6g} vs {box:.6g}); "
                         "grid formats (The Well, PDEBench) need a rectangular domain")
    x, y = np.linspace(lo[0], hi[0], nx), np.linspace(lo[1], hi[1], ny)
    return x, y


def grid_values(fam, U, nx, ny):
    """FE vectors ``U`` (shape ``(..., n_dofs)``) at the ``nx x ny`` vertex grid of the box.

    Returns ``(x, y, G, err)``: grid coordinates, values ``G`` of shape ``(..., nx, ny)``
    (``G[..., i, j]`` at ``(x[i], y[j])``, The Well's ``ij`` order) and the interpolation
    error of the module docstring.
    """
    from scipy.interpolate import RegularGridInterpolator

    x, y = _grid(fam, nx, ny)
    X, Y = np.meshgrid(x, y, indexing="ij")
    try:
        P = fam.basis.probes(np.vstack([X.ravel(), Y.ravel()])).tocsr()
    except ValueError as exc:  # a grid point outside the mesh
        raise InputError(f"a grid point lies outside the mesh ({exc}); grid formats need a "
                         "rectangular domain") from None
    U = np.asarray(U, dtype=np.float64)
    flat = U.reshape(-1, U.shape[-1])
    G = (P @ flat.T).T.reshape(*U.shape[:-1], nx, ny)
    back = np.empty_like(flat)
    pts = fam.basis.doflocs.T
    for k, g in enumerate(G.reshape(-1, nx, ny)):
        back[k] = RegularGridInterpolator((x, y), g)(pts)
    scale = max(float(np.abs(flat).max()), np.finfo(float).tiny)
    err = float(np.abs(back - flat).max() / scale)
    return x, y, G, err


def export_dataset(path, out, *, format="well", nx=None, ny=None, name=None) -> dict:
    """Write a complete trajectory dataset ``path`` as ``format`` under ``out``.

    Parameters
    ----------
    path : dataset directory written by ``femno generate FAMILY --steps T``.
    out : directory to write (created).
    format : {"well", "pdebench"}, keyword-only
    nx, ny : int, optional, keyword-only
        Grid points per direction (default: ``sqrt(n_vertices)``, the vertex grid of a
        structured square mesh).
    name : str, optional, keyword-only
        Dataset / file name (default ``femno_<family>``).

    Returns
    -------
    dict
        ``file``, ``format``, ``shape`` (of the exported field), ``max_interpolation_error``
        and the per-sample ``interpolation_error`` list.
    """
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    h5py = optional_import("h5py", extra="data", purpose="dataset export")
    store = require_complete(path)
    traj = store.manifest.get("layout", {}).get("trajectory")
    if not traj:
        raise InputError(f"{path} holds steady samples, not trajectories; export needs a "
                         "dataset written by `femno generate FAMILY --steps T`")
    s = store.manifest["settings"]
    fam = runner.load_family(s["family_spec"], s["family_options"])
    side = int(round(np.sqrt(fam.mesh.p.shape[1])))
    nx, ny = int(nx or side), int(ny or side)
    if nx < 2 or ny < 2:
        raise InputError(f"the grid needs at least 2 x 2 points, got {nx} x {ny}")
    name = name or f"femno_{s['family']}"
    root = store.root
    times = np.asarray(root["times"][:])
    order = np.argsort(np.asarray(root["sample_index"][:]))
    fields, errs = [], []
    for r in order:  # one trajectory at a time: never the whole array in memory twice
        x, y, G, e = grid_values(fam, np.asarray(root["solution"][int(r)]), nx, ny)
        fields.append(G)
        errs.append(e)
    U = np.stack(fields)
    out = Path(out)
    if format == "well":
        file = out / "data" / "train" / f"{name}.hdf5"
        file.parent.mkdir(parents=True, exist_ok=True)
        _write_well(h5py, file, name, U, times, x, y, np.array(errs), s, traj)
    else:
        out.mkdir(parents=True, exist_ok=True)
        file = out / f"{name}.h5"
        with h5py.File(file, "w") as f:
            f.attrs["source"] = "femno"
            for i in range(U.shape[0]):
                g = f.create_group(f"{i:04d}")
                g.create_dataset("data", data=U[i][..., None].astype(np.float32))
                g.attrs["interpolation_error"] = errs[i]
                grid = g.create_group("grid")
                grid.create_dataset("x", data=x.astype(np.float32))
                grid.create_dataset("y", data=y.astype(np.float32))
                grid.create_dataset("t", data=times.astype(np.float32))
    return {"file": str(file), "format": format, "shape": list(U.shape),
            "max_interpolation_error": float(max(errs)), "interpolation_error": errs}


def _write_well(h5py, file, name, U, times, x, y, errs, settings, traj):
    with h5py.File(file, "w") as f:
        f.attrs.update({"dataset_name": name, "grid_type": "cartesian", "n_spatial_dims": 2,
                        "n_trajectories": U.shape[0], "simulation_parameters": [],
                        "source": "femno", "scheme": f"{traj.get('scheme', 'theta')}, theta={traj['theta']}, dt={traj['dt']}",
                        "femno_family": settings["family"]})
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        for key, val in (("time", times), ("x", x), ("y", y)):
            d = dims.create_dataset(key, data=val)
            d.attrs.update({"sample_varying": False, "time_varying": key == "time"})
        bcs = f.create_group("boundary_conditions")
        for axis, coords in (("x", x), ("y", y)):  # one axis-aligned WALL per direction
            wall = bcs.create_group(f"{axis}_wall")
            mask = np.zeros(len(coords), dtype=bool)
            mask[[0, -1]] = True
            wall.attrs.update({"bc_type": "WALL", "associated_dims": [axis],
                               "associated_fields": ["u"], "sample_varying": False,
                               "time_varying": False})
            wall.create_dataset("mask", data=mask)
            wall.create_dataset("values", data=np.zeros(2))
        sc = f.create_group("scalars")
        sc.attrs["field_names"] = ["interpolation_error"]
        e = sc.create_dataset("interpolation_error", data=errs)
        e.attrs.update({"sample_varying": True, "time_varying": False})
        t0 = f.create_group("t0_fields")
        t0.attrs["field_names"] = ["u"]
        u = t0.create_dataset("u", data=U.astype(np.float32))
        u.attrs.update({"dim_varying": [True, True], "sample_varying": True,
                        "time_varying": True})
        for key in ("t1_fields", "t2_fields"):
            f.create_group(key).attrs["field_names"] = []
