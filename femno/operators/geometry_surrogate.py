r"""Geometry surrogates as files: train, save, check on any mesh (``femno eval``).

The models of :mod:`femno.operators.geometry_models` carry no mesh. This module gives
them what a user needs before trusting one on a new domain:

* :func:`train_geometry_model` trains ``spon-mg`` (with geometry features) or
  ``sdf-deeponet`` on a geometry dataset and saves it with
  :func:`~femno.operators.checkpoint.save_model`, recording in ``meta["geometry_data"]``
  what it was trained on (:func:`geometry_meta`): problem, shapes, the range of mesh
  sizes, the coefficient range, the coordinate box and the domain areas.
* :func:`geometry_warnings` compares new items with that record and names, per sample,
  where the model extrapolates: a mesh size outside the trained range (by more than
  25 %), a shape it never saw, coefficients outside the trained range, vertices outside
  the trained coordinate box, a domain area outside the trained range.
* :func:`evaluate_geometry_model` runs a model on every finished sample of a geometry
  dataset: relative :math:`L^2` errors in the mass norm (overall and per shape), the
  error on the Dirichlet dofs, the worst samples, time per sample, warnings.
* :func:`mesh_item` makes an item from a user's own mesh and coefficient (signed
  distance from the mesh's boundary facets, :func:`~femno.fem.geometry.mesh_sdf`), so
  :func:`geometry_predict` runs on any 2-D triangle mesh.
"""

from __future__ import annotations

import time

import numpy as np
import skfem

from femno.datagen.store import DatasetStore
from femno.errors import InputError
from femno.fem.geometry import mesh_sdf
from femno.operators.checkpoint import save_model
from femno.operators.fe_data import mesh_size
from femno.operators.geometry_models import (
    SDFDeepONet,
    deeponet_predict,
    geometry_item,
    geometry_samples,
    relative_errors,
    spon_predict,
    train_geometry_spon,
    train_sdf_deeponet,
)
from femno.operators.spon import SPONMG

__all__ = ["GEOMETRY_ARCHS", "train_geometry_model", "geometry_meta", "geometry_warnings",
           "geometry_predict", "evaluate_geometry_model", "mesh_item", "is_geometry_model",
           "predict_on_mesh"]

GEOMETRY_ARCHS = ("spon-mg", "sdf-deeponet")
#: relative slack on the trained mesh-size range before a mesh counts as unseen
H_SLACK = 1.25


def _item_stats(it) -> dict:
    pts = it["points"]
    area = float(it["M"].sum()) / it["basis"].nodal_dofs.shape[0]  # 1^T M 1 per component
    coef = it["x"][0]
    return {"h": mesh_size(it["basis"].mesh), "coef_min": float(coef.min()),
            "coef_max": float(coef.max()), "lo": pts.min(0), "hi": pts.max(0), "area": area}


def geometry_meta(items, *, problem: str, data: str | None = None) -> dict:
    """What a model was trained on (plain values for ``meta["geometry_data"]``)."""
    st = [_item_stats(it) for it in items]
    shapes = sorted({str(it["shape"]) for it in items if it.get("shape") is not None})
    return {"problem": problem, "components": int(items[0]["basis"].nodal_dofs.shape[0]),
            "samples": len(items), "data": data, "shapes": shapes,
            "h": [min(s["h"] for s in st), max(s["h"] for s in st)],
            "coefficient": [min(s["coef_min"] for s in st), max(s["coef_max"] for s in st)],
            "box": [np.min([s["lo"] for s in st], 0).tolist(),
                    np.max([s["hi"] for s in st], 0).tolist()],
            "area": [min(s["area"] for s in st), max(s["area"] for s in st)]}


def geometry_warnings(meta: dict, items) -> tuple[list[str], np.ndarray]:
    """Extrapolation warnings of ``items`` against a model's ``meta["geometry_data"]``.

    Returns the warnings (one str per kind of mismatch, naming how many samples and
    the worst value) and a (S,) bool array, True where a sample is outside.
    """
    if not meta:
        return ["the model records no training data (trained outside femno): no "
                "extrapolation check"], np.zeros(len(items), dtype=bool)
    st = [_item_stats(it) for it in items]
    hl, hh = meta["h"]
    cl, ch = meta["coefficient"]
    al, ah = meta["area"]
    lo, hi = np.asarray(meta["box"][0]), np.asarray(meta["box"][1])
    tol = 1e-9 + 0.02 * float(np.max(hi - lo))
    checks = {
        "mesh size h": ([s["h"] for s in st], lambda v: v < hl / H_SLACK or v > hh * H_SLACK,
                        f"[{hl:.3g}, {hh:.3g}]"),
        "coefficient": ([(s["coef_min"], s["coef_max"]) for s in st],
                        lambda v: v[0] < cl - 0.05 * abs(cl) or v[1] > ch + 0.05 * abs(ch),
                        f"[{cl:.3g}, {ch:.3g}]"),
        "domain area": ([s["area"] for s in st], lambda v: v < al / H_SLACK or v > ah * H_SLACK,
                        f"[{al:.3g}, {ah:.3g}]"),
        "coordinates": ([(s["lo"], s["hi"]) for s in st],
                        lambda v: bool(np.any(v[0] < lo - tol) or np.any(v[1] > hi + tol)),
                        f"the box {lo.round(3).tolist()}-{hi.round(3).tolist()}"),
    }
    out, flag = [], np.zeros(len(items), dtype=bool)
    for name, (vals, bad, trained) in checks.items():
        hit = np.array([bad(v) for v in vals], dtype=bool)
        if hit.any():
            flag |= hit
            shown = ", ".join(_fmt(vals[i]) for i in np.flatnonzero(hit)[:3])
            out.append(f"{int(hit.sum())} of {len(items)} samples have {name} outside the "
                       f"training range {trained} (e.g. {shown}): the model extrapolates there")
    shapes = set(meta.get("shapes") or [])
    unseen = np.array([it.get("shape") is not None and str(it["shape"]) not in shapes
                       for it in items], dtype=bool)
    if shapes and unseen.any():
        flag |= unseen
        names = sorted({str(items[i]["shape"]) for i in np.flatnonzero(unseen)})
        out.append(f"{int(unseen.sum())} of {len(items)} samples have shapes the model never "
                   f"saw ({', '.join(names)}; trained on {', '.join(sorted(shapes))})")
    return out, flag


def _fmt(v) -> str:
    if isinstance(v, tuple) and np.ndim(v[0]) == 0:
        return f"{v[0]:.3g}..{v[1]:.3g}"
    if isinstance(v, tuple):
        return f"{np.round(v[0], 3).tolist()}-{np.round(v[1], 3).tolist()}"
    return f"{v:.3g}"


def is_geometry_model(model) -> bool:
    """True for models trained by :func:`train_geometry_model` (or its functions)."""
    return isinstance(model, SDFDeepONet) or (isinstance(model, SPONMG)
                                             and model.config.get("family") == "geometry")


def geometry_predict(model, it) -> np.ndarray:
    """Prediction (N,) float64 of a geometry model on item ``it``'s own mesh."""
    if isinstance(model, SDFDeepONet):
        return deeponet_predict(model, it)
    if is_geometry_model(model):
        return spon_predict(model, it)
    raise InputError(f"{type(model).__name__} is not a geometry model (train it with "
                     "`femno train geometry`)")


def _check_problem(model, meta, problem, components):
    if meta and meta.get("problem") not in (None, problem):
        raise InputError(f"the model was trained on {meta['problem']!r}, the data is {problem!r}")
    nc = model.config.get("n_components", 1)
    if nc != components:
        raise InputError(f"the model predicts {nc} components, the data has {components}")


def train_geometry_model(data, *, arch="spon-mg", out=None, minutes=5.0, seed=0, width=None,
                         geometry_features=True, log=None, resume=False) -> tuple:
    """Train a geometry model on the dataset ``data`` (path) within ``minutes``.

    Returns ``(model, summary)``; with ``out`` the model is saved there, its
    ``meta["geometry_data"]`` from :func:`geometry_meta`.  ``width`` defaults to 32
    (``spon-mg``) / 128 (``sdf-deeponet``); the epoch budget is large and the
    time limit ends the run, with a cosine schedule over the time.  With ``out`` the
    training state goes to ``out + ".state"`` (every epoch for SPON-MG, every 10 for
    the DeepONet); ``resume=True`` continues an interrupted run from it, with the time
    it had already spent counted against ``minutes``.
    """
    if arch not in GEOMETRY_ARCHS:
        raise InputError(f"unknown geometry architecture {arch!r}; valid: {list(GEOMETRY_ARCHS)}")
    if not minutes or minutes <= 0:
        raise InputError(f"minutes must be > 0, got {minutes!r}")
    store = DatasetStore.open(data)
    geo = store.manifest["layout"].get("geometry")
    if geo is None:
        raise InputError(f"{str(data)!r} is not a geometry dataset (femno generate --geometry)")
    items = geometry_samples(data)
    if len(items) < 2:
        raise InputError(f"{str(data)!r} has {len(items)} finished samples; training needs >= 2")
    problem = store.manifest["settings"]["problem"]
    state = None if out is None else f"{out}.state"
    if resume and out is None:
        raise InputError("resume needs out (the training state lives next to the model)")
    if arch == "spon-mg":
        model, hist = train_geometry_spon(items, width=width or 32, epochs=10_000, seed=seed,
                                          time_limit=60.0 * minutes,
                                          geometry_features=geometry_features, log=log,
                                          checkpoint=state, resume=resume)
    else:
        model, hist = train_sdf_deeponet(items, width=width or 128, epochs=100_000, seed=seed,
                                         time_limit=60.0 * minutes, log=log,
                                         checkpoint=state, resume=resume)
    meta = {"geometry_data": geometry_meta(items, problem=problem, data=str(data)),
            "seed": seed, "seconds": hist["seconds"], "epochs": len(hist["loss"]),
            "loss": hist["loss"][-1]}
    train_err = relative_errors(lambda it: geometry_predict(model, it), items)
    summary = {"arch": arch, "samples": len(items), "epochs": len(hist["loss"]),
               "resumed_from_epoch": int(hist.get("resumed_from", 0)),
               "seconds": round(hist["seconds"], 1), "train_rel_l2_median": float(np.median(train_err))}
    model.meta = meta
    if out is not None:
        save_model(model, out)
        summary["out"] = str(out)
    return model, summary


def evaluate_geometry_model(model, data, *, worst: int = 5) -> dict:
    """Errors of a geometry ``model`` on every finished sample of geometry dataset ``data``.

    Returns a dict: ``samples``, ``rel_l2_mean|median|p90|max``, ``per_shape`` (shape ->
    median, samples), ``boundary_max`` (max abs error on Dirichlet dofs),
    ``worst`` (row, shape, rel_l2), ``seconds_per_sample``, ``warnings``,
    ``outside`` (samples flagged by :func:`geometry_warnings`) and, for plotting,
    ``rel_l2`` (S,), ``items`` and ``pred`` (lists).
    """
    store = DatasetStore.open(data)
    geo = store.manifest["layout"].get("geometry")
    if geo is None:
        raise InputError(f"{str(data)!r} is not a geometry dataset; use a FE model for it")
    meta = (getattr(model, "meta", None) or {}).get("geometry_data") or {}
    _check_problem(model, meta, store.manifest["settings"]["problem"], int(geo["components"]))
    items = geometry_samples(data)
    if not items:
        raise InputError(f"{str(data)!r} has no finished samples")
    model.eval()
    t0 = time.perf_counter()
    pred = [geometry_predict(model, it) for it in items]
    seconds = (time.perf_counter() - t0) / len(items)
    by_id = {id(it): p for it, p in zip(items, pred, strict=True)}
    err = relative_errors(lambda it: by_id[id(it)], items)
    bmax = max((float(np.abs(p[it["dirichlet"]] - it["y"][it["dirichlet"]]).max())
                if len(it["dirichlet"]) else 0.0) for p, it in zip(pred, items, strict=True))
    warns, flag = geometry_warnings(meta, items)
    shapes = np.array([str(it["shape"]) for it in items])
    order = np.argsort(err)[::-1][:worst]
    return {"samples": len(items), "rel_l2_mean": float(err.mean()),
            "rel_l2_median": float(np.median(err)), "rel_l2_p90": float(np.quantile(err, 0.9)),
            "rel_l2_max": float(err.max()),
            "per_shape": {s: {"median": float(np.median(err[shapes == s])),
                              "samples": int((shapes == s).sum())} for s in sorted(set(shapes))},
            "boundary_max": bmax,
            "worst": [{"row": int(items[i]["row"]), "shape": str(shapes[i]),
                       "rel_l2": float(err[i])} for i in order],
            "seconds_per_sample": seconds, "outside": int(flag.sum()), "warnings": warns,
            "rel_l2": err, "items": items, "pred": pred}


def mesh_item(mesh, coefficient, *, problem: str = "darcy", dirichlet=None,
              load=None) -> dict:
    r"""An item on a user's 2-D triangle ``mesh`` for :func:`geometry_predict`.

    Parameters
    ----------
    mesh : skfem.MeshTri
        Any triangle mesh (coordinates in the training box, see the model's
        ``meta["geometry_data"]["box"]``).
    coefficient : ndarray (n_vertices,)
        :math:`f`, :math:`a` or :math:`E` at the vertices.
    problem : {"poisson", "darcy", "elasticity"}, keyword-only
    dirichlet : ndarray (n_vertices,) bool, optional, keyword-only
        Vertices where :math:`u = 0` is prescribed; default: the whole boundary
        (scalar problems) or the boundary vertices with :math:`x \le x_{\min} + 0.1`
        (elasticity), as in the datasets.
    load : array_like (2,), keyword-only
        Elasticity: the body force :math:`b` (a unit vector in the datasets); required.
    """
    if not isinstance(mesh, skfem.MeshTri):
        raise InputError(f"geometry models take 2-D triangle meshes (skfem.MeshTri), got "
                         f"{type(mesh).__name__}")
    coefficient = np.asarray(coefficient, dtype=np.float64)
    if coefficient.shape != (mesh.p.shape[1],):
        raise InputError(f"coefficient must have shape ({mesh.p.shape[1]},), got "
                         f"{coefficient.shape}")
    if not np.all(np.isfinite(coefficient)):
        raise InputError("coefficient has NaN or inf values")
    if problem not in ("poisson", "darcy", "elasticity"):
        raise InputError(f"unknown problem {problem!r}")
    if dirichlet is None:
        bnd = np.zeros(mesh.p.shape[1], dtype=bool)
        bnd[mesh.boundary_nodes()] = True
        dirichlet = bnd & (mesh.p[0] <= mesh.p[0].min() + 0.1) if problem == "elasticity" else bnd
    if problem == "elasticity" and (load is None or np.shape(load) != (2,)):
        raise InputError("elasticity needs load=(b_x, b_y), the body force")
    sample = {"mesh": mesh, "sdf": mesh_sdf(mesh), "coefficient": coefficient,
              "dirichlet": np.asarray(dirichlet, dtype=bool), "solution": None, "load": load}
    return geometry_item(sample, vector=problem == "elasticity")


def predict_on_mesh(model, mesh, coefficient, *, dirichlet=None, load=None) -> np.ndarray:
    """A geometry model's solution on a user's mesh, nodal values (n_vertices, ncomp).

    Warns (``RuntimeWarning``, "surrogate extrapolates: ...") where the mesh or the
    coefficient lies outside what the model was trained on (:func:`geometry_warnings`).
    The problem (and so the default Dirichlet vertices) is the model's own.
    """
    import warnings

    meta = (getattr(model, "meta", None) or {}).get("geometry_data") or {}
    problem = meta.get("problem") or ("elasticity" if model.config.get("n_components", 1) == 2
                                      else "darcy")
    it = mesh_item(mesh, coefficient, problem=problem, dirichlet=dirichlet, load=load)
    for w in geometry_warnings(meta, [it])[0]:
        warnings.warn(f"surrogate extrapolates: {w}", RuntimeWarning, stacklevel=2)
    u = geometry_predict(model, it)
    nd = it["basis"].nodal_dofs
    return np.stack([u[nd[k]] for k in range(nd.shape[0])], axis=1)
