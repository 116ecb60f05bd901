r"""Training and evaluation of any FE operator model (SPON, FNO, DeepONet) on FE data.

The loss and the reported error are the mean relative :math:`L^2` error in the
mass-matrix norm, :math:`\|M^{1/2}(u_\theta - u)\| / \|M^{1/2} u\|`
(:func:`femno.operators.fe_data.rel_l2`), on :class:`~femno.operators.fe_data.FEData`;
the loop itself is :func:`femno.operators.training.fit`.
"""

from __future__ import annotations

import torch

from femno.errors import InputError

__all__ = ["fit_operator", "evaluate_operator"]


def _tensors(data):
    if data.Y is None:
        raise InputError("the data has no solutions (Y)")
    return torch.utils.data.TensorDataset(data.X, data.lift, data.Y)


def fit_operator(model, train, val=None, **fit_options):
    r"""Train an FE operator model on :class:`~femno.operators.fe_data.FEData` with the
    mean relative :math:`L^2` error in the mass-matrix norm as loss (and validation).

    ``fit_options`` go to :func:`femno.operators.training.fit` (``epochs``,
    ``batch_size``, ``lr``, ``seed``, ``device``, ``checkpoint``, ``resume``, ...).
    Returns its :class:`~femno.operators.training.TrainResult`.
    """
    from femno.operators.fe_data import rel_l2
    from femno.operators.surrogate import model_forward
    from femno.operators.training import fit, pick_device

    device = pick_device(fit_options.get("device"))
    fit_options["device"] = device
    M = train.mass_torch(dtype=torch.float64, device=device)

    def loss_fn(m, batch):
        X, L, Y = batch
        return rel_l2(model_forward(m, X, L), Y, M).mean()

    val_fn = None
    if val is not None and val.n_samples:
        val_fn = lambda m: float(evaluate_operator(m, val, device=device)["rel_l2"])  # noqa: E731
    return fit(model, loss_fn, _tensors(train), val_fn=val_fn, **fit_options)


def evaluate_operator(model, data, *, device=None, batch_size: int = 64) -> dict:
    """Errors of ``model`` on ``data`` (FEData with ``Y``).

    Returns ``rel_l2`` (mean relative L2 error, mass-matrix norm), ``rel_l2_max``,
    ``boundary_max`` (max abs error on the Dirichlet dofs), ``pred`` (n, n_dofs) float64
    ndarray and ``seconds`` (forward passes only).
    """
    import time

    from femno.operators.surrogate import model_forward

    if data.Y is None:
        raise InputError("the data has no solutions (Y)")
    device = next(iter(model.parameters())).device if device is None else torch.device(device)
    model.eval()
    preds, t = [], 0.0
    with torch.no_grad():
        for a in range(0, data.n_samples, batch_size):
            X = data.X[a:a + batch_size].to(device)
            L = data.lift[a:a + batch_size].to(device)
            t0 = time.perf_counter()
            P = model_forward(model, X, L)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t += time.perf_counter() - t0
            preds.append(P.detach().cpu().double())
    pred = torch.cat(preds).numpy()
    e = data.errors(pred)
    return {"rel_l2": float(e["rel_l2"].mean()), "rel_l2_max": float(e["rel_l2"].max()),
            "boundary_max": e["boundary_max"], "pred": pred, "seconds": t}
