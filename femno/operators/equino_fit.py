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
:func:`femno.operators.equino_train.train_equino` uses both with ``init="lm"``.  This module
works on any model with EquiNO's attributes and does not import :mod:`.equino`
(the training driver lives there, so the two modules import each other one way).

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

__all__ = ["reduced_solve", "fit_coefficients"]

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
