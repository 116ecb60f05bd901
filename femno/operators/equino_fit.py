r"""EquiNO initialization by per-strain reduced solves (Levenberg–Marquardt), then a fit.

The EquiNO loss (:meth:`femno.operators.equino.EquiNO.loss`) decouples over strains:
for one macro strain :math:`\bar e` it is a small nonlinear least-squares problem in
the :math:`2r` POD coefficients.  With an orthonormal stress basis :math:`\Phi_\sigma`
the optimal stress coefficients are the projection
:math:`c_\sigma = \Phi_\sigma^T \sigma^{c}(\varepsilon)` of the constitutive stress at
:math:`\varepsilon = \bar e + (B\Phi_u) c_u`, which leaves :math:`r` unknowns:

.. math::

    \min_{c_u} \tfrac{1}{n_{ip}} \|R(c_u)\|^2, \qquad
    R = (I - \Phi_\sigma\Phi_\sigma^T)\, \sigma^c(\bar e + B\Phi_u c_u) / s,

with the Gauss–Newton matrix :math:`H = A^T A - (\Phi_\sigma^T A)^T(\Phi_\sigma^T A)`,
:math:`A = \mathbb{C}(\varepsilon)\, B\Phi_u / s` (material tangent at every ip),
gradient :math:`A^T R`, and Levenberg–Marquardt damping
:math:`(H + \lambda\,\mathrm{diag} H)\,\delta = -A^T R`.  This is the published
physics-informed loss, minimized per strain to convergence (the network training
stalls ~200x above that minimum, see ``benchmarks/results/equino.md``), on as many
collocation strains as wanted: no FE solve is needed.

:func:`fit_coefficients` then fits the two MLPs to the coefficients (supervised,
float64, Adam then L-BFGS through :func:`femno.operators.training.fit`).
:func:`femno.operators.equino.train_equino` uses both with ``init="lm"``.

>>> import numpy as np
>>> from femno.multiscale.rve_solver import RVESolver
>>> from femno.multiscale.rve_assembly import laminate_rve
>>> from femno.operators.equino import EquiNO
>>> solver = RVESolver(laminate_rve([0.5, 0.5], nx=2, ny=2))
>>> snaps = [solver.solve(e, tangent=False) for e in np.eye(3) * 0.01]
>>> model = EquiNO.from_snapshots(solver, np.stack([s.fluctuation for s in snaps]),
...                               np.stack([s.stress_ip for s in snaps]), modes=3)
>>> out = reduced_solve(model, np.eye(3) * 0.01, progress=False)  # at the snapshot strains
>>> c_fe = model.phi_u.numpy().T @ np.stack([s.fluctuation.ravel() for s in snaps]).T
>>> out["cu"].shape, bool(out["loss"].max() < 1e-20), bool(np.allclose(out["cu"], c_fe.T))
((3, 3), True, True)
"""

from __future__ import annotations

import numpy as np
import torch

from femno.errors import InputError

__all__ = ["reduced_solve", "fit_coefficients", "train_equino"]

#: magnitude range (fractions of the sampling box) of ``collocation_small`` strains
SMALL_STRAIN_SCALES = (0.01, 0.5)


def _operators(model):
    """Numpy copies of the model's POD operators and its material groups."""
    n_ip, r = model.config["n_ip"], model.config["modes"]
    bphi = model.b_phi_u.detach().cpu().numpy().reshape(n_ip, 3, r)
    phis = model.phi_s.detach().cpu().numpy()
    s = float(model.stress_scale)
    groups = [(law, idx.cpu().numpy()) for law, idx in model._material_groups()]
    return bphi, phis, s, groups


def _state(e, cu, bphi, phis, s, groups, *, jacobian: bool):
    r"""Residual R (k, 3 n_ip), loss (k,), with ``jacobian`` A (k, 3 n_ip, r) (else None),
    and the stress coefficients :math:`\Phi_\sigma^T\sigma^c` (k, r)."""
    k, (n_ip, _, r) = len(e), bphi.shape
    eps = e[:, None, :] + (cu @ bphi.reshape(-1, r).T).reshape(k, n_ip, 3)
    sig = np.empty_like(eps)
    C = np.empty(eps.shape + (3,)) if jacobian else None
    for law, idx in groups:
        out = law.stress_and_tangent(eps[:, idx].reshape(-1, 3))
        sig[:, idx] = out[0].reshape(k, -1, 3)
        if jacobian:
            C[:, idx] = out[1].reshape(k, -1, 3, 3)
    v = sig.reshape(k, -1) / s
    y = v @ phis
    R = v - y @ phis.T
    loss = np.einsum("kj,kj->k", R, R) / n_ip
    if not jacobian:
        return R, loss, None, y * s
    A = np.matmul(C, bphi)  # (k, n_ip, 3, r)
    A /= s
    return R, loss, A.reshape(k, 3 * n_ip, r), y * s


def reduced_solve(model, strains, *, iters: int = 40, tol: float = 1e-8, block: int = 8,
                  c0=None, progress: bool = True) -> dict:
    r"""Per-strain minimizers of the EquiNO physics loss (see the module docstring).

    Parameters
    ----------
    model : femno.operators.equino.EquiNO
        Supplies the POD bases, the material laws and the stress scale (not the networks).
    strains : ndarray, shape (n, 3)
        Macro strains.
    iters : int, keyword-only
        Levenberg–Marquardt iterations at most per strain.
    tol : float, keyword-only
        A strain is done when a step lowers its loss by less than ``tol`` times the loss
        (relative), or the loss is below ``1e-30``.
    block : int, keyword-only
        Strains solved together (vectorized; memory ~ ``block * n_ip * 3 * r * 8`` bytes
        times a few).
    c0 : ndarray (n, r), optional, keyword-only
        Initial displacement coefficients (default 0: no fluctuation).
    progress : bool, keyword-only
        tqdm bar over blocks.

    Returns
    -------
    dict
        ``cu``, ``cs`` (n, r) coefficients, ``loss`` (n,) per-strain loss (mean over ips,
        as :meth:`EquiNO.loss`), ``iterations`` (n,) int.
    """
    from femno.multiscale.materials import check_strains

    E = check_strains(strains, what="strains")
    if iters < 1 or block < 1:
        raise InputError(f"need iters >= 1 and block >= 1, got {iters}, {block}")
    bphi, phis, s, groups = _operators(model)
    r = bphi.shape[2]
    cu_all = np.zeros((len(E), r)) if c0 is None else np.array(c0, dtype=np.float64)
    if cu_all.shape != (len(E), r):
        raise InputError(f"c0 must have shape ({len(E)}, {r}), got {cu_all.shape}")
    loss_all, its = np.zeros(len(E)), np.zeros(len(E), dtype=np.int64)
    starts = range(0, len(E), block)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="EquiNO reduced LM solves", unit="block")
    for lo in starts:
        sl = slice(lo, min(lo + block, len(E)))
        e, cu = E[sl], cu_all[sl].copy()
        lam = np.full(len(e), 1e-6)
        active = np.ones(len(e), bool)
        R, loss, A, _ = _state(e, cu, bphi, phis, s, groups, jacobian=True)
        for _ in range(iters):
            if not active.any():
                break
            its[sl] += active
            At = A.transpose(0, 2, 1)
            PA = phis.T @ A  # (k, r, r), BLAS
            H = At @ A - PA.transpose(0, 2, 1) @ PA
            g = (At @ R[..., None])[..., 0]
            Hd = H + lam[:, None, None] * np.einsum("krr->kr", H)[:, :, None] * np.eye(r)
            step = -np.linalg.solve(Hd, g[..., None])[..., 0]
            step[~active] = 0.0
            R1, loss1, A1, _ = _state(e, cu + step, bphi, phis, s, groups, jacobian=True)
            better = (loss1 < loss) & active
            rel = np.where(better, (loss - loss1) / np.maximum(loss, 1e-300), 0.0)
            cu[better], R[better], A[better] = cu[better] + step[better], R1[better], A1[better]
            loss = np.where(better, loss1, loss)
            lam = np.where(better, np.maximum(lam * 0.3, 1e-12), lam * 10.0)
            active &= ~((better & (rel < tol)) | (loss < 1e-30) | (lam > 1e8))
        cu_all[sl], loss_all[sl] = cu, loss
    cs = np.concatenate([_state(E[lo:lo + block], cu_all[lo:lo + block], bphi, phis, s, groups,
                                jacobian=False)[3] for lo in range(0, len(E), block)])
    return {"cu": cu_all, "cs": cs, "loss": loss_all, "iterations": its}


def fit_coefficients(model, strains, cu, cs, *, epochs: int = 500, lbfgs_iters: int = 1000,
                     lr: float = 3e-3, seed: int = 0, device=None, progress: bool = True,
                     weighting: str = "absolute", floor: float = 1e-3):
    r"""Fit the two MLPs of ``model`` to POD coefficients (supervised, in place).

    Minimizes the mean squared error of the per-mode normalized coefficients (the
    networks' raw outputs, :math:`c/s` with the model's ``scale_u``, ``scale_s``) plus the
    relative squared error of the homogenized stress :math:`A_\sigma c_\sigma` (what a
    macro solver uses):

    .. math::

        \mathrm{mean}\,\big\|\mathrm{net}_u(x) - c_u/s_u\big\|^2
        + \mathrm{mean}\,\big\|\mathrm{net}_\sigma(x) - c_\sigma/s_\sigma\big\|^2
        + \frac{\sum_k \|A_\sigma (s_\sigma\odot\mathrm{net}_\sigma(x_k) - c_{\sigma,k})\|^2}
               {\sum_k \|A_\sigma c_{\sigma,k}\|^2},
        \qquad x = \bar e / 0.04,

    by :func:`femno.operators.training.fit` (Adam ``epochs`` full-batch, then L-BFGS).

    With ``weighting="relative"`` every strain's three terms are instead divided by its
    own target norm, :math:`\|s_u\odot(\mathrm{net}_u - c_u/s_u)\|^2 /
    (\|c_u\|^2 + \delta_u)` and likewise for :math:`c_\sigma` and the homogenized
    stress, with :math:`\delta = (\text{floor})^2` times the mean squared target norm.
    Since the POD bases are orthonormal these are the squared relative field errors of
    each strain, i.e. the quantity whose median the accuracy table reports, and small
    strains (which a macro problem mostly sees, and which an absolute loss hardly
    weights) count as much as large ones.

    Parameters
    ----------
    model : femno.operators.equino.EquiNO
    strains : ndarray (n, 3)
    cu, cs : ndarray (n, r)
        Target coefficients (e.g. from :func:`reduced_solve`).
    weighting : {"absolute", "relative"}, keyword-only
        Loss weighting across strains (see above).
    floor : float, keyword-only
        Relative floor of the per-strain norms with ``weighting="relative"`` (a strain
        whose target is ``floor`` times the rms target weighs at most ``1/floor**2``).

    Returns
    -------
    femno.operators.training.TrainResult
    """
    from femno.operators.training import fit

    f64 = torch.float64
    e = torch.as_tensor(np.asarray(strains), dtype=f64)
    tu = torch.as_tensor(np.asarray(cu), dtype=f64)
    ts = torch.as_tensor(np.asarray(cs), dtype=f64)
    if not (e.shape[0] == tu.shape[0] == ts.shape[0]) or e.shape[1:] != (3,):
        raise InputError(f"strains {tuple(e.shape)}, cu {tuple(tu.shape)}, cs {tuple(ts.shape)} "
                         "do not match")
    if weighting not in ("absolute", "relative"):
        raise InputError(f"weighting must be 'absolute' or 'relative', got {weighting!r}")
    if not floor > 0:
        raise InputError(f"floor must be > 0, got {floor}")
    avg = model.avg_s.detach().cpu()
    h = ts @ avg.T
    nh = float((h ** 2).sum(-1).mean())
    su, ss = model.scale_u.detach().cpu(), model.scale_s.detach().cpu()
    if weighting == "relative":  # per-strain 1 / (|target|^2 + floor^2 mean |target|^2)

        def weights(t):
            n2 = (t ** 2).sum(-1)
            return 1.0 / (n2 + floor ** 2 * n2.mean())

        w = torch.stack([weights(tu), weights(ts), weights(h)], dim=1)
        wu, ws = su ** 2, ss ** 2  # coefficient errors in physical (orthonormal-basis) units
    else:
        w = torch.stack([torch.full((len(e),), 1.0 / tu.shape[1]),
                         torch.full((len(e),), 1.0 / ts.shape[1]),
                         torch.full((len(e),), 1.0 / nh)], dim=1)
        wu, ws = torch.ones_like(su), torch.ones_like(ss)
    data = torch.utils.data.TensorDataset(e, tu / su, ts / ss, h, w)

    def loss_fn(m, b):
        ou, os_ = m._net(m.net_u, b[0]), m._net(m.net_s, b[0])
        hom = (os_ * m.scale_s) @ m.avg_s.T
        terms = torch.stack([(((ou - b[1]) ** 2) * wu.to(ou)).sum(-1),
                             (((os_ - b[2]) ** 2) * ws.to(ou)).sum(-1),
                             ((hom - b[3]) ** 2).sum(-1)], dim=1)
        return (terms * b[4]).sum(-1).mean()

    return fit(model, loss_fn, data, epochs=epochs, batch_size=None, lr=lr,
               lbfgs_iters=lbfgs_iters, seed=seed, device=device, progress=progress,
               desc="EquiNO coefficient fit")


def train_equino(snapshots, *, out=None, modes: int = 16, epochs: int | None = None,
                 lbfgs_iters: int | None = None, lr: float = 1e-3, batch_size: int | None = None,
                 collocation: int = 0, seed: int = 0, device=None, progress: bool = True,
                 expect_rve: str | None = None, materials: dict | None = None,
                 loss: str = "stress", resume: bool = False, init: str = "random",
                 lm_iters: int = 40, fit_epochs: int = 500, fit_lbfgs_iters: int = 10000,
                 collocation_small: int = 0, fit_weighting: str = "absolute",
                 zero_origin: bool = False) -> dict:
    """Build EquiNO from a snapshot dataset, train it, optionally save it.

    Training strains are the snapshot strains plus ``collocation`` extra Latin-hypercube
    strains (seed ``seed + 1``); the loss is :meth:`EquiNO.loss` (no stress labels),
    Adam for ``epochs`` then L-BFGS for ``lbfgs_iters`` via
    :func:`femno.operators.training.fit` (defaults 3000 and 1000; 0 and 0 with
    ``init="lm"``, where the physics phase did not help, see
    ``benchmarks/results/equino.md``).

    With ``init="lm"`` the networks are first fitted (:func:`fit_coefficients`,
    ``fit_epochs`` Adam + ``fit_lbfgs_iters`` L-BFGS) to the per-strain minimizers of
    the same physics loss (:func:`reduced_solve`, ``lm_iters``) at all training strains;
    the physics-loss phase (``epochs``, ``lbfgs_iters``; 0 and 0 skip it) then only
    fine-tunes.  Still no stress labels and no FE solves beyond the snapshots (for the
    POD bases), so thousands of ``collocation`` strains are cheap (RVE3: ~0.2 s each
    on one core).  Measured gains: ``benchmarks/results/equino.md``.

    Parameters
    ----------
    snapshots : path or dict
        Snapshot dataset directory or the dict of :func:`~femno.multiscale.snapshots.load_snapshots`.
    out : path, optional
        Model file written with :func:`~femno.operators.checkpoint.save_model`.
    materials : dict, optional
        Material laws by id (default those of SPEC §2).
    resume : bool, keyword-only
        With ``out``, the training state goes to ``out + ".state"`` after every epoch;
        ``resume=True`` continues an interrupted run from it.
    init : {"random", "lm"}, keyword-only
        Network initialization before the physics-loss phase (see above).
    lm_iters, fit_epochs, fit_lbfgs_iters : int, keyword-only
        Budgets of the ``init="lm"`` stages.
    collocation_small : int, keyword-only
        Further collocation strains drawn with log-uniform magnitudes between 1 % and
        50 % of the box (``lhs_strains(..., scales=(0.01, 0.5))``, seed ``seed + 2``):
        the small strains a macro problem mostly sees.
    fit_weighting : {"absolute", "relative"}, keyword-only
        Weighting of the coefficient fit across strains (:func:`fit_coefficients`).
    zero_origin : bool, keyword-only
        Networks with exactly zero output at zero strain (see :class:`EquiNO`).

    Returns
    -------
    dict
        ``model`` (the trained :class:`EquiNO`, not JSON-able; removed when ``out`` is
        given), ``train_seconds``, ``final_loss``, ``initial_loss`` (before the physics
        phase: after the coefficient fit with ``init="lm"``), ``n_train_strains``, ...;
        with ``init="lm"`` also ``random_init_loss``, ``lm_seconds``, ``lm_loss_median``
        (median per-strain minimum of the loss), ``fit_seconds``.
    """
    import time

    from femno.multiscale.rve_solver import RVESolver
    from femno.multiscale.snapshots import lhs_strains, load_snapshots
    from femno.operators.checkpoint import save_model
    from femno.operators.equino import EquiNO
    from femno.operators.training import fit, pick_device

    if init not in ("random", "lm"):
        raise InputError(f"init must be 'random' or 'lm', got {init!r}")
    if epochs is None:
        epochs = 3000 if init == "random" else 0
    if lbfgs_iters is None:
        lbfgs_iters = 1000 if init == "random" else 0
    data = snapshots if isinstance(snapshots, dict) else load_snapshots(snapshots)
    rve = data["rve"]
    if expect_rve is not None and rve.name != expect_rve:
        raise InputError(f"the snapshots are of RVE {rve.name!r}, not {expect_rve!r}")
    torch.manual_seed(int(seed))
    solver = RVESolver(rve, materials=materials)
    model = EquiNO.from_snapshots(solver, data["fluctuation"], data["stress_ip"], modes=modes,
                                  seed=seed, loss=loss, zero_origin=zero_origin)
    strains = data["strain"]
    bound = data.get("settings", {}).get("bound")
    if collocation:
        strains = np.concatenate([strains, lhs_strains(collocation, seed=seed + 1,
                                                       bound=float(bound or 0.04))])
    if collocation_small:
        strains = np.concatenate([strains, lhs_strains(collocation_small, seed=seed + 2,
                                                       bound=float(bound or 0.04),
                                                       scales=SMALL_STRAIN_SCALES)])
    # training range: the sampling box when known (it holds all strains), else their hull
    lo, hi = strains.min(axis=0), strains.max(axis=0)
    if bound is not None:
        lo, hi = np.minimum(lo, -float(bound)), np.maximum(hi, float(bound))
    model.config["train_bounds"] = [lo.tolist(), hi.tolist()]
    e = torch.as_tensor(strains, dtype=torch.float64)
    train = torch.utils.data.TensorDataset(e)
    dev = pick_device(device)
    model.to(dev)
    loss_rand = _mean_loss(model, e, dev)
    t0 = time.perf_counter()
    extra = {}
    if init == "lm":
        lm = reduced_solve(model, strains, iters=lm_iters, progress=progress)
        extra["lm_seconds"] = time.perf_counter() - t0
        extra["lm_loss_median"] = float(np.median(lm["loss"]))
        t1 = time.perf_counter()
        fit_coefficients(model, strains, lm["cu"], lm["cs"], epochs=fit_epochs,
                         lbfgs_iters=fit_lbfgs_iters, seed=seed, device=dev, progress=progress,
                         weighting=fit_weighting)
        extra["fit_seconds"] = time.perf_counter() - t1
        extra["random_init_loss"] = loss_rand
    loss0 = loss_rand if init == "random" else _mean_loss(model, e, dev)
    history = []
    if epochs or lbfgs_iters:
        res = fit(model, lambda m, b: m.loss(b[0]), train, epochs=epochs, batch_size=batch_size,
                  lr=lr, lbfgs_iters=lbfgs_iters, seed=seed, device=dev, progress=progress,
                  desc=f"EquiNO {rve.name}", resume=resume,
                  checkpoint=None if out is None else str(out) + ".state")
        history = res.history[-3:]
    seconds = time.perf_counter() - t0
    loss1 = _mean_loss(model, e, dev)
    meta = {"rve": rve.name, "snapshots": str(snapshots) if not isinstance(snapshots, dict) else "",
            "n_snapshots": int(data["strain"].shape[0]), "n_train_strains": int(e.shape[0]),
            "epochs": epochs, "lbfgs_iters": lbfgs_iters, "loss": loss, "lr": lr, "seed": seed,
            "initial_loss": loss0, "final_loss": loss1, "train_seconds": seconds,
            "device": str(dev), "init": init, "collocation": int(collocation),
            "collocation_small": int(collocation_small), "fit_weighting": fit_weighting,
            "zero_origin": bool(zero_origin), **extra}
    model.meta = meta
    out_dict = dict(meta)
    if out is not None:
        save_model(model, out)
        out_dict["out"] = str(out)
    else:
        out_dict["model"] = model
    out_dict["history_tail"] = history
    return out_dict


def _mean_loss(model, e: torch.Tensor, device, *, block: int = 64) -> float:
    """:meth:`EquiNO.loss` over all strains ``e``, evaluated in blocks (memory)."""
    with torch.no_grad():
        tot = sum(float(model.loss(e[i:i + block].to(device))) * len(e[i:i + block])
                  for i in range(0, len(e), block))
    return tot / max(len(e), 1)
