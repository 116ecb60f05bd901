r"""Label-free training of learned preconditioners from a problem family.

No solutions are needed: the training vectors come from the family's own
operators.  For each sampled matrix :math:`A` (shape ``(m, m)``):

* **Ritz vectors**: the ``ritz`` smallest eigenpairs :math:`(\lambda_i, v_i)` by
  shift-invert Lanczos (``scipy.sparse.linalg.eigsh(A, sigma=0)``) and right-hand
  sides :math:`b = \sum_i c_i v_i`, :math:`c_i \sim N(0, (\lambda_1/\lambda_i)^{p})`,
  weighted to the low end of the spectrum (the modes a local method cannot reach);
* **residuals**: :math:`r_j = b - A x_j` after ``j`` (random, 1..10) CG steps on a
  random smooth ``b`` (what a solver actually feeds its preconditioner);
* **white noise** (the high end).

Every vector is normalised to unit 2-norm.  Losses, for a batch of unit vectors
:math:`r` and network output :math:`z = f(r)`:

* DCDM (Kaneda et al.), scale free (``loss="dcdm"``):
  :math:`\ell = \|r - \frac{z^T r}{z^T A z} A z\|_2^2 / \|r\|_2^2`;
* FCG (Rudikov et al.), the default for every kind (``loss="anorm"``): relative :math:`A`-norm error of the preconditioned
  residual after the optimal step (the line search of flexible CG removes the
  scale), with :math:`e = A^{-1} r` from a sparse LU of the (small) training matrix:

  .. math:: \ell = \min_s \frac{\|e - s z\|_A^2}{\|e\|_A^2}
            = 1 - \frac{(r^T z)^2}{(z^T A z)(r^T e)} ;

* SPD factor: the same :math:`A`-norm loss with :math:`z = (L L^T)^{-1} r`
  (dense triangular solves: train on small grids, the factor is local).

:func:`train_precond` builds the data, trains with :func:`femno.operators.training.fit`
and selects the weights by the iteration count of the real solver (``dcdm`` or
``fcg``) on held-out systems.

>>> import numpy as np
>>> from femno.fem import get_family
>>> data = family_vectors(get_family("poisson", n=8), systems=1, per_system=6, seed=0)
>>> len(data), tuple(data[0]["R"].shape), bool(np.allclose(np.linalg.norm(data[0]["R"], axis=1), 1))
(1, (6, 49), True)
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse.linalg as spla
import torch

from femno.errors import InputError
from femno.operators.fe_torch import to_torch_csr
from femno.operators.precond_graph import DofGraphNet, LearnedIC
from femno.operators.precond_grid import GridLayout
from femno.operators.precond_nets import MGCNN

__all__ = ["ritz_vectors", "family_vectors", "dcdm_loss", "anorm_loss", "train_precond",
           "KINDS", "SPD_MAX_DOFS"]

#: training objective -> model class
KINDS = ("dcdm", "fcg", "spd")
#: the SPD model trains with dense factors: training grids are capped at this many dofs
SPD_MAX_DOFS = 1100


def ritz_vectors(A, *, k: int = 32, seed: int = 0):
    """Smallest ``k`` eigenpairs of SPD ``A`` by shift-invert Lanczos.

    Returns ``(lam (k,), V (m, k))`` float64, ascending.
    """
    m = A.shape[0]
    k = int(min(k, m - 2))
    if k < 1:
        raise InputError(f"matrix of size {m} is too small for Ritz vectors")
    v0 = np.random.default_rng(seed).standard_normal(m)
    lam, V = spla.eigsh(A.tocsc(), k=k, sigma=0.0, which="LM", v0=v0)
    order = np.argsort(lam)
    return lam[order], V[:, order]


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _system_vectors(A, count, rng, *, ritz, power, seed):
    from femno.solvers.krylov import cg

    lam, V = ritz_vectors(A, k=ritz, seed=seed)
    n_res = count // 4
    n_noise = count // 8
    n_ritz = count - n_res - n_noise
    w = (lam[0] / lam) ** (power / 2.0)
    low = (rng.standard_normal((n_ritz + n_res, lam.size)) * w) @ V.T
    res = []
    for j in range(n_res):
        x, _ = cg(A, low[n_ritz + j], maxiter=int(rng.integers(1, 11)), rtol=1e-300)
        res.append(low[n_ritz + j] - A @ x)
    parts = [low[:n_ritz]] + ([np.array(res)] if res else []) + \
        [rng.standard_normal((n_noise, A.shape[0]))]
    return _unit(np.vstack(parts))


def family_vectors(family, *, systems: int, per_system: int, seed: int = 0, ritz: int = 32,
                   power: float = 1.0, solve: bool = False, layout: bool = False) -> list:
    """Training vectors of ``systems`` sampled matrices of ``family``.

    Returns a list of dicts ``{"A": csr, "R": (per_system, m) unit rows, "E": A^{-1} R
    (if solve), "layout": GridLayout (if layout)}``.  A fixed-matrix family
    (Poisson) contributes one matrix with ``systems * per_system`` vectors.
    """
    rng = np.random.default_rng(seed)
    if getattr(family, "fixed_matrix", False):
        per_system, systems = per_system * systems, 1
    out = []
    for s in range(systems):
        sys_ = family.assemble(family.sample(rng))
        A = sys_.A
        item = {"A": A, "R": _system_vectors(A, per_system, rng, ritz=ritz, power=power,
                                             seed=seed + s)}
        if solve:
            lu = spla.splu(A.tocsc())
            item["E"] = lu.solve(item["R"].T.copy()).T
        if layout:
            item["layout"] = GridLayout.from_system(sys_)
        out.append(item)
    return out


def _matT(A, Z):
    """``(A @ Z.T).T`` for a batch ``Z`` of shape (S, m)."""
    return (A @ Z.T.contiguous()).T


def dcdm_loss(z, r, A):
    r"""Mean of :math:`\|r - \frac{z^T r}{z^T A z} A z\|^2 / \|r\|^2` over the batch (S, m)."""
    Az = _matT(A, z)
    alpha = (z * r).sum(1) / (z * Az).sum(1)
    res = r - alpha[:, None] * Az
    return ((res * res).sum(1) / (r * r).sum(1)).mean()


def anorm_loss(z, r, e, A):
    r"""Mean of :math:`1 - (r^T z)^2 / ((z^T A z)(r^T e))`, :math:`e = A^{-1} r`."""
    Az = _matT(A, z)
    return (1.0 - (z * r).sum(1) ** 2 / ((z * Az).sum(1) * (r * e).sum(1))).mean()


class _Groups(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        it = self.items[i]
        return (torch.tensor(i), torch.as_tensor(it["R"]),
                torch.as_tensor(it["E"]) if "E" in it else torch.zeros(0))


def _spd_apply(model, ctx, R):
    """:math:`(L L^T)^{-1} R^T` with the dense scaled factor; R (S, m) float64."""
    L = model.dense_factor(ctx)
    s = torch.as_tensor(ctx["scale"])
    y = torch.linalg.solve_triangular(L, (R * s).T, upper=False)
    w = torch.linalg.solve_triangular(L.T, y, upper=True)
    return w.T * s


def make_model(kind: str, *, net: str = "cnn", channels: int = 8, act: str = "linear",
               seed: int = 0, smooth_levels: int = 0):
    """Untrained model for a training ``kind`` (``dcdm``/``fcg``: ``net`` cnn or gnn;
    ``smooth_levels``: Jacobi two-grid levels of the CNN, :class:`MGCNN`)."""
    if kind not in KINDS:
        raise InputError(f"unknown preconditioner kind {kind!r}; valid: {', '.join(KINDS)}")
    if kind == "spd":
        return LearnedIC(seed=seed)
    if net == "cnn":
        return MGCNN(channels=channels, act=act, seed=seed, smooth_levels=smooth_levels)
    if net == "gnn":
        return DofGraphNet(channels=2 * channels, act=act, seed=seed)
    raise InputError(f"unknown network {net!r}; use 'cnn' (structured grids) or 'gnn'")


def train_precond(family_name: str = "darcy", *, n=(32, 64), kind: str = "dcdm",
                  net: str = "cnn", epochs: int = 60, systems: int = 8, per_system: int = 32,
                  channels: int = 8, act: str = "linear", loss: str = "anorm",
                  lr: float = 3e-3, seed: int = 0, device=None, smooth_levels: int = 0,
                  init=None,
                  family_options: dict | None = None, progress: bool = True, out=None):
    """Train a learned preconditioner on a family; returns ``(model, result, meta)``.

    Parameters
    ----------
    family_name : str
        A registered family (``poisson``, ``darcy``, ...); SPD.
    n : int or sequence of int
        Grid sizes (cells per side) to train on (a fully convolutional / message
        passing net generalises to other sizes).  ``kind="spd"`` caps each grid at
        :data:`SPD_MAX_DOFS` unknowns.
    kind : {"dcdm", "fcg", "spd"}
        Model and the solver used for model selection (``dcdm``, ``fcg`` with
        ``mmax=30`` as at inference, ``fcg`` with the SPD factor).
    loss : {"anorm", "dcdm"}
        Objective of the residual networks: the relative A-norm error (default) or
        the DCDM paper's residual loss.  Measured on Darcy 16^2-256^2: the A-norm
        loss gives DCDM 45-95 iterations, the DCDM loss 110-1000+ (worse than
        Jacobi directions), at the same training budget.
    net : {"cnn", "gnn"}
        Residual network: :class:`MGCNN` (structured grids) or :class:`DofGraphNet`.
    channels, act : int, str
        Width and activation (``"linear"`` or ``"leaky"``) of the residual network.
    smooth_levels : int
        CNN: finest levels done as Jacobi two-grid steps (:class:`MGCNN`), trained
        with them in the loop.
    init : path or torch.nn.Module, optional
        Start from these weights (same kind and width; fine-tuning) instead of
        the seeded initialisation.
    epochs, systems, per_system : int
        Adam epochs; sampled matrices per grid size; vectors per matrix.
    device : str, optional
        ``"cuda"`` trains on the GPU.
    out : path, optional
        Save the model there (:func:`~femno.operators.checkpoint.save_model`).
    """
    from femno.fem import get_family
    from femno.operators.checkpoint import save_model
    from femno.operators.training import fit, pick_device
    from femno.solvers.krylov import fcg
    from femno.solvers.neural import NeuralPreconditioner, dcdm

    sizes = [int(n)] if np.isscalar(n) else [int(v) for v in n]
    if smooth_levels and (kind == "spd" or net != "cnn"):
        raise InputError("smooth_levels is an option of the CNN (--net cnn, kind dcdm/fcg)")
    model = make_model(kind, net=net, channels=channels, act=act, seed=seed,
                       smooth_levels=smooth_levels)
    if init is not None:
        from femno.operators.checkpoint import load_model

        src = init if isinstance(init, torch.nn.Module) else load_model(init)
        if type(src) is not type(model):
            raise InputError(f"--init model is a {type(src).__name__}, training a "
                             f"{type(model).__name__}")
        try:
            model.load_state_dict(src.state_dict())
        except RuntimeError as err:
            raise InputError(f"--init weights do not fit the model (width/depth?): {err}") from err
    if loss not in ("anorm", "dcdm"):
        raise InputError(f"unknown loss {loss!r}; use 'anorm' or 'dcdm'")
    use_dcdm_loss = loss == "dcdm" and kind != "spd"
    if kind == "spd":
        sizes = [min(v, math.isqrt(SPD_MAX_DOFS) + 1) for v in sizes]
    dev = torch.device("cpu") if kind == "spd" else pick_device(device)  # spd: dense, CPU
    train_items, val_items = [], []
    for j, size in enumerate(sizes):
        fam = get_family(family_name, n=size, **(family_options or {}))
        if not fam.spd:
            raise InputError(f"family {family_name!r} is not SPD: no learned CG preconditioner")
        grid = kind != "spd" and net == "cnn"
        train_items += family_vectors(fam, systems=systems, per_system=per_system,
                                      seed=seed + 1000 * j, solve=not use_dcdm_loss, layout=grid)
        val_items += family_vectors(fam, systems=1, per_system=2, seed=seed + 1000 * j + 999,
                                    layout=grid)
    ctxs = [model.prepare(it["A"], layout=it.get("layout")) for it in train_items]
    ctxs = [{k: (v.to(dev) if isinstance(v, torch.Tensor) and kind != "spd" else v)
             for k, v in c.items()} for c in ctxs]
    mats = [to_torch_csr(it["A"], device=dev) for it in train_items]

    def loss_fn(m, batch):
        idx, R, E = batch
        i = int(idx[0])
        R = R[0]
        if kind == "spd":
            z = _spd_apply(m, ctxs[i], R.cpu()).to(R.device)
        else:
            z = m(R.to(torch.float32), ctxs[i]).to(torch.float64)
        if use_dcdm_loss:
            return dcdm_loss(z, R, mats[i])
        return anorm_loss(z, R, E[0], mats[i])

    def solver(A, b, **kw):
        return dcdm(A, b, **kw) if kind == "dcdm" else fcg(A, b, mmax=30, **kw)

    def val_fn(m):
        its = []
        for it in val_items:
            pc = NeuralPreconditioner(m, layout=it.get("layout"), device=dev).setup(it["A"])
            b = it["R"][0]
            _, info = solver(it["A"], b, M=pc.apply, rtol=1e-6, maxiter=300)
            its.append(info["iterations"] + (0 if info["reason"] == "rtol" else 300))
        m.train()
        return float(np.mean(its))

    result = fit(model, loss_fn, _Groups(train_items), val_fn=val_fn, epochs=epochs,
                 batch_size=1, lr=lr, seed=seed, device=dev, progress=progress,
                 val_every=max(1, epochs // 8), desc=f"train precond ({kind})", grad_clip=1.0)
    model = model.cpu().eval()
    meta = {"family": family_name, "family_options": dict(family_options or {}),
            "train_sizes": sizes, "kind": kind, "net": "ic-factor" if kind == "spd" else net, "act": act,
            "loss": "anorm" if kind == "spd" else loss, "smooth_levels": smooth_levels,
            "epochs": epochs, "systems": systems, "per_system": per_system, "seed": seed,
            "init": None if init is None or isinstance(init, torch.nn.Module) else str(init),
            "final_loss": result.history[-1]["loss"] if result.history else math.nan,
            "val_iterations": result.best_val, "train_seconds": result.seconds}
    model.meta = meta
    if out is not None:
        save_model(model, out, meta=meta)
    return model, result, meta
