r"""EquiNO training and evaluation against FE snapshots.

:func:`train_equino` fits an :class:`~femno.operators.equino.EquiNO` (the model lives in
:mod:`femno.operators.equino`; the coefficient fits and reduced solves it starts from in
:mod:`femno.operators.equino_fit`) on the physics loss over strain samples;
:func:`relative_errors` scores a model on held-out snapshots.
"""

from __future__ import annotations

import numpy as np
import torch

from femno.errors import InputError
from femno.operators.equino import EquiNO

__all__ = ["train_equino", "relative_errors"]


def relative_errors(model: EquiNO, data: dict, *, batch: int = 16) -> dict:
    r"""Relative L2 errors (%) per test sample of EquiNO against FE snapshots.

    Fields: ``u_x``, ``u_y`` (fluctuation at the nodes), ``sigma_xx``, ``sigma_yy``,
    ``sigma_xy`` (POD stress at the integration points) and ``stress`` (homogenized
    stress vector).

    With ``data["rve"]`` (an :class:`~femno.fem.RVEMesh`) the errors of the total
    displacement :math:`u = \bar\varepsilon x + \tilde u` (``u_x_total``, ``u_y_total``,
    the macro part exact) are added.

    Returns
    -------
    dict
        field -> ndarray (S,) of errors in percent.
    """
    S = data["strain"].shape[0]
    names = ["u_x", "u_y", "sigma_xx", "sigma_yy", "sigma_xy", "stress"]
    X = data["rve"].nodes if data.get("rve") is not None else None
    errs = {k: [] for k in names + (["u_x_total", "u_y_total"] if X is not None else [])}

    def rel(a, b):
        return 100.0 * np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-300)

    for lo in range(0, S, batch):
        sl = slice(lo, min(lo + batch, S))
        f = model.fields(data["strain"][sl])
        fu, fs = data["fluctuation"][sl], data["stress_ip"][sl]
        errs["u_x"].append(rel(f["fluctuation"][..., 0], fu[..., 0]))
        errs["u_y"].append(rel(f["fluctuation"][..., 1], fu[..., 1]))
        for j, name in enumerate(("sigma_xx", "sigma_yy", "sigma_xy")):
            errs[name].append(rel(f["stress_ip"][..., j], fs[..., j]))
        errs["stress"].append(rel(f["stress"], data["stress"][sl]))
        if X is not None:
            e = data["strain"][sl]
            macro = np.stack([e[:, None, 0] * X[:, 0] + 0.5 * e[:, None, 2] * X[:, 1],
                              0.5 * e[:, None, 2] * X[:, 0] + e[:, None, 1] * X[:, 1]], axis=-1)
            for j, name in enumerate(("u_x_total", "u_y_total")):
                errs[name].append(rel(macro[..., j] + f["fluctuation"][..., j],
                                      macro[..., j] + fu[..., j]))
    return {k: np.concatenate(v) for k, v in errs.items()}


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

    With ``init="lm"`` the networks are first fitted
    (:func:`~femno.operators.equino_fit.fit_coefficients`, ``fit_epochs`` Adam +
    ``fit_lbfgs_iters`` L-BFGS) to the per-strain minimizers of the same physics loss
    (:func:`~femno.operators.equino_fit.reduced_solve`, ``lm_iters``) at all training
    strains; the physics-loss phase (``epochs``, ``lbfgs_iters``; 0 and 0 skip it) then only
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
        Weighting of the coefficient fit across strains
        (:func:`~femno.operators.equino_fit.fit_coefficients`).
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
    from femno.operators.equino_fit import SMALL_STRAIN_SCALES, fit_coefficients, reduced_solve
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
