r"""Operator learning across geometries: models trained on many meshes at once.

Data: a geometry dataset (``femno generate PROBLEM --geometry``), one mesh per sample.
:func:`geometry_samples` turns its rows into per-mesh training items (P1 basis,
Dirichlet dofs, encoded inputs, target, mass matrix). Two models with the same
interface, ``predict(item) -> (N,)`` on the item's own mesh:

* **SPON-MG with geometry features** (:func:`train_geometry_spon`):
  :class:`femno.operators.spon.SPONMG` with input channels ``coefficient`` and
  ``sdf`` (signed distance), positions and edge vectors in the dataset's common
  coordinate box (``positions="absolute"``, ``edges="absolute"``), so one model sees
  where each domain lies and how large it is; trained over all meshes, one graph
  (with its coarse hierarchy) built per mesh and cached. The Dirichlet data hold
  exactly (SPON's decoder).
* **SDF-trunk DeepONet** (:class:`SDFDeepONet`, the geometry-aware DeepONet
  baseline): branch MLP of the coefficient and the signed distance at a fixed
  16 x 16 grid of sensors over the unit box (the coefficient is 0 outside the
  domain), trunk MLP of :math:`(x, y, \phi(x))`, output
  :math:`u(x) = \max(-\phi(x), 0)\,\sum_k \beta_k \tau_k(x)`, which vanishes on
  :math:`\partial\Omega` (Dirichlet data exact for scalar problems clamped on
  the whole boundary); for elasticity, clamped on part of the boundary, the factor
  is the distance to the clamped vertices (exact there, free elsewhere).

For elasticity both models also read the body force's direction (the dataset's
``inputs/load``): SPON-MG as two constant input channels, the DeepONet in its branch.

Errors are relative :math:`L^2` errors in the FE mass norm,
:math:`\|u_h - u\|_M / \|u\|_M`, on each sample's own mesh.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import skfem
import torch
from scipy.spatial import cKDTree
from torch import nn

from femno.datagen.geometry_rows import read_geometry_row
from femno.datagen.store import DatasetStore
from femno.errors import InputError
from femno.operators.checkpoint import register_model
from femno.operators.fe_torch import mass_matrix
from femno.operators.layers import mlp
from femno.operators.spon import SPONMG

__all__ = ["geometry_samples", "geometry_item", "train_geometry_spon", "SDFDeepONet",
           "train_sdf_deeponet", "relative_errors", "spon_predict", "deeponet_predict",
           "X_CHANNELS"]

_BIND_STATE = ("graph", "graph_n", "graph_n_in", "graph_dirichlet", "_edge_scale", "_lumped",
               "_bound_to", "hierarchy", "coarse", "n_levels")
#: names of the rows of an item's ``x``
X_CHANNELS = ("coefficient", "sdf", "load_x", "load_y")
_SENSORS = np.stack(np.meshgrid(np.linspace(0.05, 0.95, 16), np.linspace(0.05, 0.95, 16),
                                indexing="ij"), -1).reshape(-1, 2)


def geometry_samples(path, rows=None) -> list[dict]:
    """Training items of a geometry dataset (all finished rows, or ``rows``).

    Each item: ``basis`` (P1, vector for elasticity), ``dirichlet`` (dof indices),
    ``clamp`` (n_vertices,) bool (vertices where u is prescribed), ``x``
    (C, n_vertices) float64 with rows :data:`X_CHANNELS` (coefficient, sdf; and for
    elasticity the body force's two components as constant fields), ``load`` (2,),
    ``y`` (N,) float64 dof vector, ``M`` (N, N) mass matrix, ``points``
    (n_vertices, 2), ``sdf`` (n_vertices,).
    """
    store = DatasetStore.open(path)
    geo = store.manifest.get("layout", {}).get("geometry")
    if geo is None:
        raise InputError(f"{str(path)!r} is not a geometry dataset (femno generate --geometry)")
    rows = store.done_rows() if rows is None else np.asarray(rows, dtype=np.int64)
    return [geometry_item(read_geometry_row(store.root, row, geo["shapes"]),
                          vector=geo["components"] == 2) | {"row": int(row)} for row in rows]


def geometry_item(sample: dict, *, vector: bool = False) -> dict:
    """A model item from one unpadded sample (a row read by
    :func:`~femno.datagen.geometry_rows.read_geometry_row`, or a user's mesh,
    :func:`~femno.operators.geometry_surrogate.mesh_item`); see :func:`geometry_samples`."""
    mesh = sample["mesh"]
    elem = skfem.ElementVector(skfem.ElementTriP1()) if vector else skfem.ElementTriP1()
    basis = skfem.CellBasis(mesh, elem)
    y = None
    if sample.get("solution") is not None:
        sol = np.asarray(sample["solution"]).reshape(mesh.p.shape[1], -1)
        y = np.zeros(basis.N)
        for k in range(sol.shape[1]):
            y[basis.nodal_dofs[k]] = sol[:, k]
    clamp = np.asarray(sample["dirichlet"], dtype=bool)
    dirichlet = basis.nodal_dofs[:, clamp].ravel()
    sdf, coef = np.asarray(sample["sdf"], float), np.asarray(sample["coefficient"], float)
    x = [coef, sdf]
    load = np.zeros(2)
    if vector:  # the body-force direction, one constant field per component
        load = np.asarray(sample.get("load", load), dtype=np.float64).reshape(2)
        x += [np.full_like(coef, load[0]), np.full_like(coef, load[1])]
    return {"basis": basis, "dirichlet": np.sort(dirichlet), "x": np.stack(x), "y": y,
            "M": mass_matrix(basis), "points": mesh.p.T, "sdf": sdf, "clamp": clamp,
            "load": load, "shape": sample.get("shape")}


def relative_errors(predict, items) -> np.ndarray:
    r""":math:`\|u_h - u\|_M / \|u\|_M` of ``predict(item)`` (N,) for each item, shape (S,)."""
    errs = []
    for it in items:
        e = predict(it) - it["y"]
        errs.append(np.sqrt(e @ (it["M"] @ e) / (it["y"] @ (it["M"] @ it["y"]))))
    return np.asarray(errs)


def _schedule(opt, lr, frac):
    """Warm-up over the first 5 %, then cosine decay to lr / 100; ``frac`` in [0, 1] is the
    share of the budget spent (epochs, or seconds when a time limit is set)."""
    frac = min(max(frac, 0.0), 1.0)
    f = frac / 0.05 if frac < 0.05 else 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (frac - 0.05) / 0.95))
    for group in opt.param_groups:
        group["lr"] = lr * max(f, 0.01)


def _spent(t0, time_limit, step, steps):
    return (time.perf_counter() - t0) / time_limit if time_limit else step / steps


def _resumed(checkpoint, resume, fingerprint):
    """The training state saved at ``checkpoint`` when resuming, else None.

    The state records the run's settings (``fingerprint``); a state of another run
    (other architecture, width, seed, data size or budget) is refused, not mixed in.
    """
    if not resume or checkpoint is None or not Path(checkpoint).is_file():
        return None
    st = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if st.get("fingerprint") != fingerprint:
        raise InputError(f"{str(checkpoint)!r} holds the state of another training run "
                         f"({st.get('fingerprint')}); this run is {fingerprint}. Remove it "
                         "or train without --resume")
    return st


def _start(checkpoint, resume, fingerprint, model, opt, set_rng):
    """``(hist, t0, step, start_epoch)`` of a fresh run, or of the run saved at
    ``checkpoint`` when resuming: weights, optimizer and the shuffling generator
    (``set_rng(state)``) restored, ``t0`` moved back by the time already spent."""
    hist, t0, step, start = {"loss": []}, time.perf_counter(), 0, 0
    st = _resumed(checkpoint, resume, fingerprint)
    if st is not None:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        set_rng(st["rng"])
        hist, step, start = st["hist"], st["step"], st["epoch"]
        t0 -= st["elapsed"]
    hist["resumed_from"] = start
    return hist, t0, step, start


def _save_state(checkpoint, fingerprint, model, opt, *, epoch, step, elapsed, hist, rng):
    """Write the training state after an epoch (atomically: a kill never leaves half a
    file); ``rng`` is the shuffling generator's state."""
    if checkpoint is None:
        return
    from femno.operators.checkpoint import atomic_torch_save

    atomic_torch_save({"fingerprint": fingerprint, "model": model.state_dict(),
                       "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                       "elapsed": elapsed, "hist": hist, "rng": rng}, checkpoint)


# -- SPON-MG over many meshes ------------------------------------------------------------
def _bind(model, it):
    """Bind ``model`` to item ``it``'s mesh, building its graph once and caching it."""
    state = it.get("_spon_state")
    if state is not None and state[0] is model:
        for k, v in state[1].items():
            setattr(model, k, v)
        return model
    model.bind(it["basis"], it["dirichlet"])
    it["_spon_state"] = (model, {k: getattr(model, k) for k in _BIND_STATE if hasattr(model, k)})
    return model


def _spon_x(model, it) -> np.ndarray:
    """The item's input channels the model takes, (C, n_vertices)."""
    return it["x"][[X_CHANNELS.index(c) for c in model.config["channels"]]]


def spon_predict(model, it) -> np.ndarray:
    """The model's (N,) float64 prediction on item ``it``'s own mesh."""
    _bind(model, it)
    with torch.no_grad():
        x = torch.as_tensor(_spon_x(model, it)[None])
        return model(x, torch.zeros(1, it["basis"].N, dtype=torch.float64))[0].double().numpy()


def _mass_loss(pred, it):
    M = it.get("_M_torch")
    if M is None:
        coo = it["M"].tocoo()
        M = it["_M_torch"] = torch.sparse_coo_tensor(
            torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64),
            torch.as_tensor(coo.data), size=coo.shape).coalesce()
    y = torch.as_tensor(it["y"])
    e = pred.double() - y
    return (e @ (M @ e)) / (y @ (M @ y))


def train_geometry_spon(items, *, width=32, layers=4, fine_layers=2, epochs=30, batch=8,
                        lr=2e-3, seed=0, time_limit=None, geometry_features=True, log=None,
                        checkpoint=None, resume=False):
    r"""Train SPON-MG on items of many meshes; the loss is the mean squared relative
    :math:`L^2` (mass-norm) error over a batch of meshes.

    ``geometry_features=False`` is the ablation: no signed distance (the coefficient,
    and for elasticity the load, as the only input channels), positions scaled to each mesh's bounding box and edge vectors in units of
    each mesh's mean edge length (SPON-MG's defaults for a single mesh).

    ``checkpoint``: the training state is written there after every epoch;
    ``resume=True`` continues it (weights, optimizer, shuffling, epochs and the time
    already spent, so the schedule and the budget go on where they stopped).

    Returns the model (float32 weights, bound to the last mesh it saw) and a history
    dict (``loss`` per epoch, ``seconds``, ``resumed_from``: the epoch a resumed run
    started at).
    """
    if not items:
        raise InputError("no training items")
    torch.manual_seed(seed)
    vector = isinstance(items[0]["basis"].elem, skfem.ElementVector)
    geo = bool(geometry_features)
    channels = ["coefficient", "sdf"] if geo else ["coefficient"]
    if vector:
        channels += ["load_x", "load_y"]
    model = SPONMG(channels=channels,
                   n_components=2 if vector else 1, dim=2, width=width, layers=layers,
                   fine_layers=fine_layers, edges="absolute" if geo else "mesh",
                   positions="absolute" if geo else "box", family="geometry")
    model = model.float()
    X = torch.as_tensor(np.concatenate([_spon_x(model, it) for it in items], axis=1)[None])
    Y = torch.as_tensor(np.concatenate([it["y"] for it in items])[None])
    model.fit_normalization(X, Y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * int(np.ceil(len(items) / batch))
    rng = np.random.default_rng(seed)
    fingerprint = {"arch": "spon-mg", "width": width, "layers": layers, "seed": seed,
                   "samples": len(items), "time_limit": time_limit, "epochs": epochs,
                   "geometry_features": geo}
    hist, t0, step, start = _start(checkpoint, resume, fingerprint, model, opt,
                                   lambda state: setattr(rng.bit_generator, "state", state))
    for ep in range(start, epochs):
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break  # a resumed run whose budget is spent
        order, total = rng.permutation(len(items)), 0.0
        for lo in range(0, len(items), batch):
            _schedule(opt, lr, _spent(t0, time_limit, step, steps))
            step += 1
            opt.zero_grad()
            loss = 0.0
            for j in order[lo:lo + batch]:
                it = items[j]
                _bind(model, it)
                x = torch.as_tensor(_spon_x(model, it)[None])
                pred = model(x, torch.zeros(1, it["basis"].N, dtype=torch.float64))[0]
                loss = loss + _mass_loss(pred, it) / len(order[lo:lo + batch])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(order[lo:lo + batch])
        hist["loss"].append(total / len(items))
        if log:
            log(f"spon-mg epoch {ep + 1}/{epochs}: loss {hist['loss'][-1]:.3e}")
        _save_state(checkpoint, fingerprint, model, opt, epoch=ep + 1, step=step,
                    elapsed=time.perf_counter() - t0, hist=hist, rng=rng.bit_generator.state)
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    hist["seconds"] = time.perf_counter() - t0
    return model, hist


# -- SDF-trunk DeepONet -------------------------------------------------------------------
@register_model("sdf-deeponet")
class SDFDeepONet(nn.Module):
    r"""DeepONet with a signed-distance trunk: :math:`u(x) = \phi_-(x) \sum_k \beta_k(a,
    \phi|_S)\,\tau_k(x, \phi(x))`, :math:`\phi_- = \max(-\phi, 0)`, for ``n_components``
    output components (each with its own ``p`` trunk features). For vector problems
    clamped on part of the boundary (elasticity) the factor is the distance to the
    clamped vertices instead, and ``n_extra`` inputs (the load) join the branch."""

    def __init__(self, *, p=64, width=128, n_components=1, n_extra=0):
        super().__init__()
        self.p, self.nc = p, n_components
        self.config = {"p": int(p), "width": int(width), "n_components": int(n_components),
                       "n_extra": int(n_extra)}
        self.branch = mlp(2 * len(_SENSORS) + int(n_extra), p * n_components, width=width,
                          hidden=3)
        self.trunk = mlp(3, p * n_components, width=width, hidden=3)
        self.register_buffer("a_mean", torch.zeros(()))
        self.register_buffer("a_std", torch.ones(()))
        self.register_buffer("y_scale", torch.ones(()))

    def forward(self, sensors, xq, mask_factor, extra=None):
        """sensors (B, 2, S), xq (B, P, 3), mask_factor (B, P), extra (B, n_extra) or
        None -> (B, P, nc)."""
        z = sensors.flatten(1)
        if self.config["n_extra"]:
            z = torch.cat([z, extra], dim=1)
        b = self.branch(z).view(-1, 1, self.nc, self.p)
        t = self.trunk(xq).view(xq.shape[0], xq.shape[1], self.nc, self.p)
        return (b * t).sum(-1) * mask_factor[..., None] * self.y_scale


def _deeponet_inputs(it, a_mean=0.0, a_std=1.0):
    pts, sdf, coef = it["points"], it["sdf"], it["x"][0]
    tree = it.get("_tree") or cKDTree(pts)
    it["_tree"] = tree
    d_s, nn_idx = tree.query(_SENSORS)
    # phi(s) <= phi(v) + |s - v| for the nearest vertex v (1-Lipschitz): an upper bound of
    # the signed distance at the sensor, exact to O(h) inside the domain
    phi_s = sdf[nn_idx] + d_s
    inside = phi_s < 0
    a_s = np.where(inside, (np.log(np.maximum(coef[nn_idx], 1e-12)) - a_mean) / a_std, 0.0)
    if it["basis"].nodal_dofs.shape[0] > 1:  # clamped on part of the boundary only
        ct = it.get("_ctree") or cKDTree(pts[it["clamp"]])
        it["_ctree"] = ct
        mask = np.where(it["clamp"], 0.0, ct.query(pts)[0])
    else:  # boundary vertices carry |sdf| ~ 1e-17: snap them so that u = 0 there exactly
        mask = np.where(sdf > -1e-12, 0.0, -sdf)
    return np.stack([a_s, phi_s]), np.c_[pts, sdf], mask


def _to_nodes(y, it):
    """Stored dof vector (N,) -> nodal (P, nc)."""
    nd = it["basis"].nodal_dofs
    return np.stack([y[nd[k]] for k in range(nd.shape[0])], axis=1)


def _from_nodes(u, it):
    nd = it["basis"].nodal_dofs
    y = np.zeros(it["basis"].N)
    for k in range(nd.shape[0]):
        y[nd[k]] = u[:, k]
    return y


def train_sdf_deeponet(items, *, p=64, width=128, epochs=300, batch=16, lr=1e-3, seed=0,
                       time_limit=None, log=None, checkpoint=None, resume=False):
    """Train :class:`SDFDeepONet` on items of many meshes (padded batches, masked loss);
    ``checkpoint`` / ``resume`` as for :func:`train_geometry_spon`."""
    torch.manual_seed(seed)
    nc = items[0]["basis"].nodal_dofs.shape[0]
    model = SDFDeepONet(p=p, width=width, n_components=nc,
                        n_extra=2 if nc > 1 else 0)  # float32 weights
    logs = np.concatenate([np.log(np.maximum(it["x"][0], 1e-12)) for it in items])
    a_mean, a_std = float(logs.mean()), float(logs.std() + 1e-12)
    model.a_mean.fill_(a_mean)
    model.a_std.fill_(a_std)
    model.y_scale.fill_(float(np.sqrt(np.mean(np.concatenate([it["y"] for it in items]) ** 2))))
    P = max(len(it["points"]) for it in items)
    S, Q, F, T, W, E = [], [], [], [], [], []
    for it in items:
        s, q, f = _deeponet_inputs(it, a_mean, a_std)
        n = len(q)
        S.append(s)
        E.append(it["load"])
        Q.append(np.pad(q, ((0, P - n), (0, 0))))
        F.append(np.pad(f, (0, P - n)))
        T.append(np.pad(_to_nodes(it["y"], it), ((0, P - n), (0, 0))))
        # lumped mass per node: the discrete L2 weights of the loss
        W.append(np.pad(np.asarray(it["M"].sum(axis=1)).ravel()[it["basis"].nodal_dofs[0]],
                        (0, P - n)))
    S, Q, F, T, W, E = (torch.as_tensor(np.asarray(a), dtype=torch.float32)
                        for a in (S, Q, F, T, W, E))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * int(np.ceil(len(items) / batch))
    g = torch.Generator().manual_seed(seed)
    fingerprint = {"arch": "sdf-deeponet", "width": width, "p": p, "seed": seed,
                   "samples": len(items), "time_limit": time_limit, "epochs": epochs}
    hist, t0, step, start = _start(checkpoint, resume, fingerprint, model, opt, g.set_state)
    for ep in range(start, epochs):
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break  # a resumed run whose budget is spent
        order, total = torch.randperm(len(items), generator=g), 0.0
        for lo in range(0, len(items), batch):
            _schedule(opt, lr, _spent(t0, time_limit, step, steps))
            step += 1
            j = order[lo:lo + batch]
            pred = model(S[j], Q[j], F[j], E[j])
            err = (((pred - T[j]) ** 2).sum(-1) * W[j]).sum(1)
            den = ((T[j] ** 2).sum(-1) * W[j]).sum(1)
            loss = (err / den).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(j)
        hist["loss"].append(total / len(items))
        if log and (ep + 1) % max(1, epochs // 10) == 0:
            log(f"sdf-deeponet epoch {ep + 1}/{epochs}: loss {hist['loss'][-1]:.3e}")
        if checkpoint is not None and ((ep + 1) % 10 == 0 or ep + 1 == epochs or (
                time_limit is not None and time.perf_counter() - t0 > time_limit)):
            _save_state(checkpoint, fingerprint, model, opt, epoch=ep + 1, step=step,
                        elapsed=time.perf_counter() - t0, hist=hist, rng=g.get_state())
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
    hist["seconds"] = time.perf_counter() - t0
    return model, hist


def deeponet_predict(model, it) -> np.ndarray:
    """The model's (N,) float64 prediction on item ``it``'s own mesh."""
    s, q, f = _deeponet_inputs(it, float(model.a_mean), float(model.a_std))
    with torch.no_grad():
        u = model(*(torch.as_tensor(a[None], dtype=torch.float32)
                    for a in (s, q, f, it["load"])))[0]
    return _from_nodes(u.double().numpy(), it)
