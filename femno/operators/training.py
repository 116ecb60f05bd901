r"""One training loop for every femno model: Adam epochs, optional L-BFGS, checkpoints, resume.

The loop knows nothing about the model: it calls ``loss_fn(model, batch)`` on the
training batches and, every ``val_every`` epochs, ``val_fn(model) -> float`` (lower is
better; the best weights are kept).  A *training state* file (model, optimizer,
scheduler, RNG states, history) is written atomically after every epoch when
``checkpoint`` is given, and ``resume=True`` continues from it: an interrupted run
that is resumed ends with the same weights as an uninterrupted one.

>>> import torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> x = torch.linspace(-1, 1, 64, dtype=torch.float64)[:, None]
>>> data = torch.utils.data.TensorDataset(x, 3 * x + 1)
>>> model = torch.nn.Linear(1, 1).double()
>>> mse = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
>>> res = fit(model, mse, data, epochs=5, batch_size=16, lr=0.1, lbfgs_iters=20, progress=False)
>>> round(model.weight.item(), 6), round(model.bias.item(), 6)
(3.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from femno.errors import InputError
from femno.operators.checkpoint import atomic_torch_save

__all__ = ["fit", "TrainResult", "pick_device"]


@dataclasses.dataclass
class TrainResult:
    """What :func:`fit` did.

    Attributes
    ----------
    history : list of dict
        One entry per epoch (``epoch``, ``loss`` mean training loss, ``val`` if
        measured, ``lr``, ``seconds``), then one per L-BFGS phase (``phase="lbfgs"``).
    best_val : float
        Best validation value (``nan`` without ``val_fn``).
    epochs : int
        Adam epochs completed (including those done before a resume).
    seconds : float
        Wall time of this call.
    resumed_from : int
        Epoch the run resumed from (0 for a fresh run).
    """

    history: list
    best_val: float
    epochs: int
    seconds: float
    resumed_from: int = 0


def pick_device(device=None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def fit(model: torch.nn.Module, loss_fn, train, *, val_fn=None, epochs: int = 100,
        batch_size: int | None = 32, lr: float = 1e-3, weight_decay: float = 0.0,
        schedule: str | None = "cosine", lbfgs_iters: int = 0, seed: int = 0,
        device=None, checkpoint=None, resume: bool = False, val_every: int = 1,
        progress: bool = True, desc: str = "train", grad_clip: float | None = None) -> TrainResult:
    r"""Train ``model`` by minimizing ``loss_fn`` with Adam, then optionally L-BFGS.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place; moved to ``device``.  On return it holds the best weights
        seen by ``val_fn`` (the last weights without ``val_fn``) and is in eval mode.
    loss_fn : callable
        ``loss_fn(model, batch) -> scalar tensor``; ``batch`` is one item of the
        data loader, already on ``device``.
    train : torch.utils.data.Dataset or None
        Training samples.  ``None`` means there is no data set: ``loss_fn`` is called
        with ``batch=None`` once per epoch (physics-informed losses on fixed points).
    val_fn : callable, optional, keyword-only
        ``val_fn(model) -> float``, lower is better, run under ``torch.no_grad``.
    epochs : int
        Adam epochs (total, counting those before a resume).
    batch_size : int or None
        Mini-batch size; ``None`` for full batch.
    lr, weight_decay : float
        Adam learning rate and weight decay.
    schedule : {"cosine", None}
        Learning-rate schedule over the Adam epochs.
    lbfgs_iters : int
        L-BFGS iterations (strong-Wolfe line search) on the full training set after
        the Adam epochs; 0 skips the phase.
    seed : int
        Seeds the parameter-free randomness of the loop (shuffling).
    device : str or torch.device, optional
        Default: CUDA if available, else CPU.
    checkpoint : str or path, optional
        Training-state file written after every epoch and at the end.
    resume : bool
        Continue from ``checkpoint`` if it exists.
    val_every : int
        Validate every that many epochs (and after the last).
    progress : bool
        Show a tqdm bar (epochs, loss, validation).
    grad_clip : float, optional
        Clip the gradient norm to this value.

    Returns
    -------
    TrainResult
    """
    if epochs < 0 or lbfgs_iters < 0:
        raise InputError("epochs and lbfgs_iters must be >= 0")
    device = pick_device(device)
    model.to(device)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    loader = None
    if train is not None:
        if len(train) == 0:
            raise InputError("the training set is empty")
        bs = len(train) if batch_size is None else int(batch_size)
        loader = torch.utils.data.DataLoader(train, batch_size=bs, shuffle=True, generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
             if schedule == "cosine" else None)
    if schedule not in ("cosine", None):
        raise InputError(f"unknown schedule {schedule!r}; use 'cosine' or None")
    history, best_val, best_state, start, lbfgs_done = [], math.inf, None, 0, False
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        st = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        if sched is not None and st.get("scheduler") is not None:
            sched.load_state_dict(st["scheduler"])
        gen.set_state(st["generator"])
        history, best_val, best_state = st["history"], st["best_val"], st["best_state"]
        start, lbfgs_done = st["epoch"], st.get("lbfgs_done", False)

    def save_state(epoch, lbfgs_flag=False):
        if ckpt is None:
            return
        atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": None if sched is None else sched.state_dict(),
                           "generator": gen.get_state(), "history": history,
                           "best_val": best_val, "best_state": best_state, "epoch": epoch,
                           "lbfgs_done": lbfgs_flag}, ckpt)

    def validate():
        nonlocal best_val, best_state
        if val_fn is None:
            return None
        model.eval()
        with torch.no_grad():
            v = float(val_fn(model))
        model.train()
        if v < best_val:
            best_val = v
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        return v

    bar = None
    if progress and epochs > start:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start, desc=desc, unit="epoch", dynamic_ncols=True)
    model.train()
    for epoch in range(start, epochs):
        te = time.perf_counter()
        total, count = 0.0, 0
        for batch in (loader if loader is not None else [None]):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, _to(batch, device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}")
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            total, count = total + float(loss.detach()), count + 1
        if sched is not None:
            sched.step()
        entry = {"epoch": epoch + 1, "loss": total / count, "lr": opt.param_groups[0]["lr"],
                 "seconds": time.perf_counter() - te}
        if (epoch + 1) % val_every == 0 or epoch + 1 == epochs:
            entry["val"] = validate()
        history.append(entry)
        save_state(epoch + 1)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{entry['loss']:.3e}",
                            **({"val": f"{entry['val']:.3e}"} if entry.get("val") is not None else {}))
    if bar is not None:
        bar.close()

    if lbfgs_iters and not lbfgs_done:
        te = time.perf_counter()
        full = _to(next(iter(torch.utils.data.DataLoader(train, batch_size=len(train)))), device) \
            if train is not None else None
        lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=lbfgs_iters, history_size=50,
                                  tolerance_grad=1e-12, tolerance_change=1e-15,
                                  line_search_fn="strong_wolfe")

        def closure():
            lbfgs.zero_grad(set_to_none=True)
            loss = loss_fn(model, full)
            loss.backward()
            return loss

        start_loss = float(lbfgs.step(closure).detach())  # torch returns the *initial* loss
        loss = float(loss_fn(model, full).detach())  # the loss after the phase (may need autograd)
        history.append({"phase": "lbfgs", "loss": loss, "start_loss": start_loss,
                        "iterations": lbfgs_iters,
                        "val": validate(), "seconds": time.perf_counter() - te})
        save_state(epochs, lbfgs_flag=True)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(history=history, best_val=best_val if val_fn else math.nan,
                       epochs=max(epochs, start), seconds=time.perf_counter() - t0,
                       resumed_from=start)
