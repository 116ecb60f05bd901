r"""Check a trained operator model on any dataset before trusting it (``femno eval``).

:func:`evaluate_model` runs a model (SPON binds to the dataset's mesh; FNO/DeepONet
need their training mesh) on every completed sample of an
:class:`~femno.operators.fe_data.FEData` and returns the relative :math:`L^2` error
statistics in the mass-matrix norm, the Dirichlet error, the worst samples and the
time per sample.  :func:`domain_report` compares the data with what the model was trained
on (recorded by :func:`~femno.operators.surrogate.data_meta`: mesh size, bounding box,
range of each encoded input channel) and returns one warning per mismatch: a surrogate
used on a coarser/finer mesh, another domain, or coefficients outside its training
range is extrapolating, and its error there is what this evaluation measures.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from femno.errors import InputError
from femno.operators.surrogate import (
    _mesh_independent,
    _model_data_meta,
    extrapolation_warnings,
    model_forward,
)

__all__ = ["evaluate_model", "domain_report"]

def domain_report(model, data) -> list[str]:
    """Warnings (list of str, empty when none) where ``data`` (:class:`FEData`) lies outside
    the model's training data (:func:`~femno.operators.surrogate.extrapolation_warnings`)."""
    return extrapolation_warnings(_model_data_meta(model), data.mesh, data.X, data.channels)


def evaluate_model(model, data, *, batch_size: int = 64, worst: int = 5) -> dict:
    """Errors of ``model`` on every sample of ``data`` (:class:`FEData` with solutions).

    Returns
    -------
    dict
        ``samples``, ``rel_l2_mean``/``median``/``p90``/``max`` (relative L2 error,
        mass-matrix norm), ``boundary_max`` (max abs error on Dirichlet dofs),
        ``worst`` (the ``worst`` dataset sample indices with their errors),
        ``seconds_per_sample`` (forward passes), ``warnings`` (:func:`domain_report`)
        ``rel_l2`` (ndarray (S,), per sample) and ``pred`` (ndarray (S, n_dofs), the
        predictions).
    """
    if data.Y is None:
        raise InputError("evaluation needs a dataset with solutions")
    meta = _model_data_meta(model)
    problems = []
    if meta.get("family") not in (None, data.family):
        problems.append(f"family {meta.get('family')!r} vs {data.family!r}")
    if meta.get("element") != data.element:
        problems.append(f"element {meta.get('element')!r} vs {data.element!r}")
    if list(meta.get("channels") or []) != list(data.channels):
        problems.append(f"input channels {meta.get('channels')} vs {list(data.channels)}")
    if not _mesh_independent(model) and int(meta.get("n_dofs") or -1) != int(data.n_dofs):
        problems.append(f"{meta.get('n_dofs')} dofs vs {data.n_dofs} (this model needs "
                        "its training mesh)")
    if problems:
        raise InputError(f"{type(model).__name__} model and dataset do not match: "
                         + "; ".join(problems))
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        if hasattr(model, "predict"):  # binds to the data's mesh (SPON)
            pred = model.predict(data, batch_size=batch_size)
        else:
            dev = next(iter(model.parameters())).device
            pred = torch.cat([model_forward(model, data.X[a:a + batch_size].to(dev),
                                            data.lift[a:a + batch_size].to(dev)).cpu().double()
                              for a in range(0, data.n_samples, batch_size)])
    seconds = time.perf_counter() - t0
    e = data.errors(pred)
    err = np.asarray(e["rel_l2"], dtype=np.float64)
    order = np.argsort(err)[::-1][:worst]
    index = np.asarray(data.sample_index) if data.sample_index is not None else np.arange(err.size)
    return {"samples": int(err.size), "rel_l2_mean": float(err.mean()),
            "rel_l2_median": float(np.median(err)), "rel_l2_p90": float(np.quantile(err, 0.9)),
            "rel_l2_max": float(err.max()), "boundary_max": float(e["boundary_max"]),
            "worst": [{"sample": int(index[i]), "rel_l2": float(err[i])} for i in order],
            "seconds_per_sample": seconds / max(err.size, 1),
            "warnings": domain_report(model, data), "rel_l2": err,
            "pred": pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else pred}
