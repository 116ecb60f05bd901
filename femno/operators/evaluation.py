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
from femno.operators.fe_data import input_ranges, mesh_size
from femno.operators.surrogate import _mesh_independent, _model_data_meta, model_forward

__all__ = ["evaluate_model", "domain_report"]

#: a mesh size or domain extent off by more than this factor, or inputs beyond the
#: training range by more than this share of it, gets a warning
H_FACTOR, RANGE_SLACK = 1.5, 0.1


def domain_report(model, data) -> list[str]:
    """Warnings (list of str, empty when none) where ``data`` lies outside the model's
    training data: mesh size, bounding box, encoded input ranges.  Models saved before
    these were recorded get one warning saying the check is not possible."""
    meta = _model_data_meta(model)
    out = []
    if "h" not in meta:
        return ["the model does not record its training mesh size and input ranges "
                "(saved by an older femno): no extrapolation check"]
    h, h0 = mesh_size(data.mesh), float(meta["h"])
    if not h0 / H_FACTOR <= h <= h0 * H_FACTOR:
        out.append(f"mesh size {h:.3g} vs {h0:.3g} in training ({h / h0:.2f}x): another "
                   "resolution than the model was trained on")
    lo, hi = np.asarray(data.mesh.p).min(axis=1), np.asarray(data.mesh.p).max(axis=1)
    lo0, hi0 = np.asarray(meta["bbox"][0]), np.asarray(meta["bbox"][1])
    span0 = np.maximum(hi0 - lo0, 1e-300)
    if lo.shape == lo0.shape and (np.any(np.abs(lo - lo0) > 0.1 * span0)
                                  or np.any(np.abs(hi - hi0) > 0.1 * span0)):
        out.append(f"domain bounding box {lo.tolist()}..{hi.tolist()} vs "
                   f"{lo0.tolist()}..{hi0.tolist()} in training: another geometry")
    for name, (a, b), (a0, b0) in zip(data.channels, input_ranges(data.X),
                                      meta.get("input_range", []), strict=False):
        slack = RANGE_SLACK * max(b0 - a0, 1e-300)
        if a < a0 - slack or b > b0 + slack:
            out.append(f"input {name!r} spans [{a:.3g}, {b:.3g}], training [{a0:.3g}, "
                       f"{b0:.3g}]: coefficients outside the training range")
    return out


def evaluate_model(model, data, *, batch_size: int = 64, worst: int = 5) -> dict:
    """Errors of ``model`` on every sample of ``data`` (:class:`FEData` with solutions).

    Returns
    -------
    dict
        ``samples``, ``rel_l2_mean``/``median``/``p90``/``max`` (relative L2 error,
        mass-matrix norm), ``boundary_max`` (max abs error on Dirichlet dofs),
        ``worst`` (the ``worst`` dataset sample indices with their errors),
        ``seconds_per_sample`` (forward passes), ``warnings`` (:func:`domain_report`)
        and ``rel_l2`` (ndarray (S,), per sample).
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
            "warnings": domain_report(model, data), "rel_l2": err}
