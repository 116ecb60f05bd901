"""``femno train baseline``: an FNO or DeepONet baseline on a ``femno generate`` dataset."""

from __future__ import annotations

import argparse

from femno.cli._output import print_json, print_table

EPILOG = """\
The dataset is read with femno.operators.fe_data.FEData (inputs encoded in the FE
input space, targets = full FE coefficient vectors), split at random (seeded) into
train/validation/test, and the model is trained with femno's training loop on the
mean relative L2 error in the mass-matrix norm; the best validation weights are
saved.  FNO works through an S x S grid over the mesh's bounding box (FE -> grid by
interpolation, grid -> dofs bilinear), DeepONet evaluates its trunk at the dof
locations; neither enforces the Dirichlet data (the boundary error is reported).

examples:
  femno generate darcy --n 32 --samples 600 --out darcy.femno
  femno train baseline --arch fno --data darcy.femno --out fno.pt --epochs 200
  femno train baseline --arch deeponet --data darcy.femno --out don.pt --json
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "baseline", help="train an FNO or DeepONet baseline on a dataset",
        description="Train a baseline neural operator (FNO or DeepONet) on a femno dataset.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=("fno", "deeponet"), help="model")
    p.add_argument("--data", required=True, metavar="DATASET", help="dataset directory")
    p.add_argument("--allow-partial", action="store_true",
                   help="train on the finished samples of an incomplete dataset (default: "
                   "refuse it)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt)")
    p.add_argument("--epochs", type=int, default=100, help="Adam epochs (default 100)")
    p.add_argument("--batch-size", type=int, default=16, help="mini-batch size (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, split, shuffling")
    p.add_argument("--split", default="0.8,0.1,0.1", metavar="TR,VA,TE",
                   help="train/validation/test fractions (default 0.8,0.1,0.1)")
    p.add_argument("--encode", default="l2", choices=("l2", "interp"),
                   help="input encoding into the FE input space (default l2)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--resolution", type=int, default=32, help="FNO grid points per side")
    p.add_argument("--modes", type=int, default=12, help="FNO Fourier modes per axis")
    p.add_argument("--layers", type=int, default=4, help="FNO Fourier layers")
    p.add_argument("--width", type=int, default=None,
                   help="channels (FNO, default 32) / hidden width (DeepONet, default 128)")
    p.add_argument("--depth", type=int, default=3, help="DeepONet hidden layers")
    p.add_argument("--p", type=int, default=64, help="DeepONet latent dimension")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="training-state file (default MODEL.state)")
    p.add_argument("--resume", action="store_true", help="continue from the training state")
    p.add_argument("--json", action="store_true", help="print one JSON summary, no progress bar")
    p.set_defaults(func=run)


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> fractions; InputError unless three numbers >= 0 summing to 1."""
    from femno.errors import InputError

    try:
        fr = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--split must be three comma-separated numbers, got {text!r}") from None
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-9 or fr[0] == 0:
        raise InputError(f"--split must be three fractions >= 0 summing to 1, got {text!r}")
    return fr


def run(args) -> int:
    from femno.datagen.store import require_complete

    require_complete(args.data, allow_partial=args.allow_partial)
    summary = train_baseline(
        args.arch, args.data, args.out, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, split=parse_split(args.split), encode=args.encode,
        device=args.device, checkpoint=args.checkpoint, resume=args.resume,
        progress=not args.json,
        options={"resolution": args.resolution, "modes": args.modes, "layers": args.layers,
                 "width": args.width, "depth": args.depth, "p": args.p})
    if args.json:
        print_json(summary)
    else:
        print_table(((k, v) for k, v in summary.items() if not isinstance(v, (list, dict))),
                    title=f"femno train baseline --arch {args.arch}")
    return 0


def train_baseline(arch, data, out, *, epochs=100, batch_size=16, lr=1e-3, seed=0,
                   split=(0.8, 0.1, 0.1), encode="l2", device=None, checkpoint=None,
                   resume=False, progress=True, options=None) -> dict:
    """Train and save a baseline (what ``femno train baseline`` runs); returns a summary.

    ``data``: dataset path; ``out``: model file; ``options``: keywords of
    :func:`femno.operators.baselines.build_baseline`.  With ``resume`` the training
    state ``checkpoint`` (default ``out + ".state"``) must belong to the same data and
    architecture, else :class:`InputError`.
    """
    from pathlib import Path

    import numpy as np

    from femno.errors import InputError
    from femno.operators.baselines import build_baseline
    from femno.operators.checkpoint import save_model
    from femno.operators.fe_data import FEData
    from femno.operators.fe_training import evaluate_operator, fit_operator
    from femno.operators.surrogate import data_meta

    full = FEData.from_dataset(data, encode=encode)
    if full.n_samples < 3:
        raise InputError(f"dataset {str(data)!r} has {full.n_samples} samples; need >= 3")
    idx = full.split_indices(split, seed=seed)
    train, val, test = (full.subset(i) for i in idx)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    model = build_baseline(arch, train, seed=seed, **options)
    ckpt = Path(checkpoint) if checkpoint else Path(str(out) + ".state")
    if resume and ckpt.is_file():
        _check_resume(model, ckpt)
    res = fit_operator(model, train, val if val.n_samples else None, epochs=epochs,
                       batch_size=batch_size, lr=lr, seed=seed, device=device,
                       checkpoint=ckpt, resume=resume, progress=progress,
                       desc=f"train {arch}")
    ev = evaluate_operator(model, test if test.n_samples else val)
    summary = {"model": str(out), "arch": arch, "dataset": str(data), "family": full.family,
               "n_dofs": full.n_dofs, "samples": {"train": train.n_samples,
                                                  "val": val.n_samples, "test": test.n_samples},
               "epochs": res.epochs, "train_loss": res.history[-1]["loss"] if res.history
               else float("nan"), "best_val_rel_l2": res.best_val,
               "test_rel_l2": ev["rel_l2"], "test_rel_l2_max": ev["rel_l2_max"],
               "test_boundary_max": ev["boundary_max"],
               "parameters": int(sum(p.numel() for p in model.parameters())),
               "train_s": res.seconds, "device": str(next(model.parameters()).device)}
    meta = {"data": data_meta(full), "split": [np.asarray(i).tolist() for i in idx],
            "seed": seed, "train": {k: v for k, v in summary.items() if k != "model"},
            "history": res.history}
    save_model(model.cpu(), out, meta=meta)
    return summary


def _check_resume(model, ckpt) -> None:
    """InputError unless the training state's buffers (transfers, coordinates,
    normalization: the data-dependent part) equal those of ``model``."""
    import torch

    from femno.errors import InputError

    state = torch.load(ckpt, map_location="cpu", weights_only=False).get("model", {})
    for name, buf in model.named_buffers():
        old = state.get(name)
        if old is None or old.shape != buf.shape or not torch.allclose(old.to(buf.dtype), buf):
            raise InputError(f"training state {str(ckpt)!r} belongs to another dataset or "
                             f"model configuration ({name} differs); remove it or use "
                             "another --checkpoint")
