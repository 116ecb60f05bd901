r"""Training SPON models on femno datasets with :func:`femno.operators.training.fit`.

Loss and error are the relative :math:`L^2` error in the FE mass-matrix norm,
:math:`\|u_\theta - u\|_M / \|u\|_M` averaged over the batch
(:meth:`femno.operators.fe_data.FEData.rel_l2`).

>>> import tempfile, os
>>> from femno.datagen.generate import generate_dataset
>>> from femno.operators.fe_data import FEData
>>> d = tempfile.mkdtemp()
>>> _ = generate_dataset("darcy", samples=6, out=os.path.join(d, "ds"), method="direct",
...                      block=6, family_options={"n": 4}, progress=False)
>>> data = FEData.from_dataset(os.path.join(d, "ds"))
>>> model, summary = train_spon(data, width=8, layers=1, epochs=2, batch_size=4, progress=False)
>>> summary["boundary_error"], summary["epochs"]
(0.0, 2)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from femno.errors import InputError
from femno.operators.checkpoint import save_model
from femno.operators.spon import make_spon
from femno.operators.training import fit, pick_device

__all__ = ["train_spon", "evaluate"]


@torch.no_grad()
def evaluate(model, data, *, batch_size: int = 64) -> dict:
    """Relative L2 errors (mean, median, max) and the max Dirichlet error on ``data``."""
    if data.Y is None:
        raise InputError("evaluation needs targets (FEData.Y)")
    e = data.errors(model.predict(data, batch_size=batch_size))
    err = e["rel_l2"]
    return {"rel_l2_mean": float(err.mean()), "rel_l2_median": float(np.median(err)),
            "rel_l2_max": float(err.max()), "boundary_error": e["boundary_max"],
            "samples": int(err.size)}


def train_spon(data, *, arch: str = "spon", width: int = 64, layers: int = 6, epochs: int = 100,
               batch_size: int = 16, lr: float = 2e-3, seed: int = 0, device=None,
               val_fraction: float = 0.1, out=None, resume: bool = False, progress: bool = True,
               model_options: dict | None = None) -> tuple[torch.nn.Module, dict]:
    r"""Train a SPON model on an :class:`~femno.operators.fe_data.FEData`.

    Parameters
    ----------
    data : FEData
        All samples; a random ``val_fraction`` of them (seeded) is held out.
    arch : {"spon", "spon-mg"}, keyword-only
    width, layers : int, keyword-only
        Hidden width; message-passing layers (coarse layers for ``spon-mg``).
    epochs, batch_size, lr, seed, device, resume, progress : keyword-only
        As in :func:`femno.operators.training.fit` (Adam, cosine schedule).
    val_fraction : float, keyword-only
        In [0, 0.9]; 0 trains on everything without validation.
    out : str or path, optional, keyword-only
        Model file (:func:`femno.operators.checkpoint.save_model`); the training state
        goes to ``out + ".state"`` after every epoch (``resume=True`` continues it).
    model_options : dict, optional, keyword-only
        Extra model keywords (``fine_layers``, ``levels`` for ``spon-mg``).

    Returns
    -------
    model, summary : torch.nn.Module, dict
        ``summary``: ``train`` / ``val`` error dicts (:func:`evaluate`), ``history``,
        ``seconds``, ``seconds_per_epoch``, ``epochs``, ``boundary_error``, ``params``.
    """
    try:
        vf = float(val_fraction)
    except (TypeError, ValueError):
        raise InputError(f"val_fraction must be a number, got {val_fraction!r}") from None
    if not 0.0 <= vf <= 0.9:
        raise InputError(f"val_fraction must be in [0, 0.9], got {val_fraction!r}")
    if data.Y is None:
        raise InputError("training data needs targets (FEData.Y)")
    n_val = int(round(vf * data.n_samples))
    if n_val and data.n_samples - n_val < 1:
        raise InputError("not enough samples to hold out a validation set")
    tr_idx, va_idx = data.split_indices((1 - n_val / data.n_samples, n_val / data.n_samples),
                                        seed=seed)
    train, val = data.subset(tr_idx), (data.subset(va_idx) if n_val else None)
    model = make_spon(arch, train, width=width, layers=layers, seed=seed, **(model_options or {}))
    dev = pick_device(device)
    model.to(dev)
    mass = data.mass_torch(dtype=torch.float64, device=dev)
    from femno.operators.fe_data import rel_l2

    def loss_fn(m, batch):
        x, lift, y = batch
        return rel_l2(m(x, lift), y, mass).mean()

    def val_fn(m):
        return evaluate(m, val)["rel_l2_mean"]

    ds = torch.utils.data.TensorDataset(train.X.double(), train.lift.double(), train.Y.double())
    ckpt = None if out is None else str(out) + ".state"
    res = fit(model, loss_fn, ds, val_fn=val_fn if val is not None else None, epochs=epochs,
              batch_size=batch_size, lr=lr, seed=seed, device=dev, checkpoint=ckpt,
              resume=resume, progress=progress, desc=arch)
    summary = {"arch": arch, "family": data.family, "samples": data.n_samples,
               "train_samples": train.n_samples, "val_samples": 0 if val is None else val.n_samples,
               "epochs": res.epochs, "resumed_from": res.resumed_from, "seconds": res.seconds,
               "seconds_per_epoch": float(np.median([h["seconds"] for h in res.history
                                                      if "epoch" in h] or [math.nan])),
               "params": int(sum(p.numel() for p in model.parameters())),
               "device": str(dev), "train": evaluate(model, train),
               "val": None if val is None else evaluate(model, val),
               "history": res.history, "best_val": None if math.isnan(res.best_val) else res.best_val}
    summary["boundary_error"] = max(summary["train"]["boundary_error"],
                                    0.0 if val is None else summary["val"]["boundary_error"])
    if out is not None:
        model.meta = {"dataset": data.path, "seed": seed, "encode": data.encode,
                      "train": summary["train"], "val": summary["val"], "epochs": res.epochs,
                      "lr": lr, "batch_size": batch_size}
        try:  # the record the drop-in surrogate checks (femno.operators.surrogate)
            from femno.operators.surrogate import data_meta

            model.meta["data"] = data_meta(data)
        except ImportError:  # pragma: no cover - surrogate module absent
            pass
        save_model(model, out)
        summary["out"] = str(out)
    return model, summary
