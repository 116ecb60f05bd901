r"""Baseline neural operators on finite-element data: FNO and DeepONet.

Both map a batch of encoded inputs ``X`` (shape ``(B, C, n_in)``: ``C`` input
functions as coefficients in the input FE space ``basis_in`` of
:class:`femno.operators.fe_data.FEData`) to FE coefficient vectors (shape
``(B, n_dofs)``) of the solution space, the interface every femno operator model
shares, so the training loop, the surrogate (:mod:`femno.operators.surrogate`) and
the benchmark treat SPON, FNO and DeepONet alike.  Neither enforces the Dirichlet data: their
boundary error is part of what the benchmark measures.

**FNO** (Li et al., *Fourier Neural Operator for Parametric PDEs*, ICLR 2021).  The
``neuraloperator`` package (2.0.0) pulls wandb, tensorly, tensorly-torch, zencfg and
configmypy, so femno ships a compact faithful 2-D FNO: lifting :math:`P` (pointwise
linear from the input value and the two grid coordinates to ``width`` channels),
``layers`` Fourier layers

.. math:: v \leftarrow \sigma\big(W v + \mathcal F^{-1}(R \cdot (\mathcal F v)|_{\text{modes}})\big)

(``torch.fft.rfft2``; :math:`R` complex weights on the ``modes`` x ``modes`` lowest
frequencies of both signs in the first axis; :math:`W` a 1x1 convolution;
:math:`\sigma` = GELU, not after the last layer), projection :math:`Q` (two pointwise
layers).  FNO needs a regular grid: the input FE function is *interpolated* to an
``s`` x ``s`` grid over the mesh's bounding box (skfem ``basis.probes``; grid points
outside the domain get 0), and the output grid function is brought back to the FE dofs
by *bilinear interpolation* at the dof locations.  That round trip is the baseline's
handicap on unstructured meshes: features finer than the grid are lost and the
boundary values are only approximately zero.

**DeepONet** (Lu et al., *Nature Machine Intelligence* 3, 2021): branch MLP
:math:`\beta(X) \in \mathbb R^{p}`, trunk MLP :math:`\tau(x_j) \in \mathbb R^{p}` at
the dof coordinates :math:`x_j` (scaled to :math:`[0,1]^d`),
:math:`Y_j = \sum_k \beta_k(X)\tau_k(x_j) + b_0`.

Inputs are normalized per feature, outputs by one scalar mean/std (a per-dof output
scale would quietly hand the baselines the zero boundary values).  Networks run in
float32; outputs are returned in the input tensor's dtype.

>>> import numpy as np, torch
>>> pts = np.random.default_rng(0).random((30, 2))
>>> m = DeepONet(n_channels=1, n_in=5, n_dofs=30, dim=2, width=16, depth=2, p=8)
>>> m.set_coordinates(pts)
>>> m(torch.zeros(4, 1, 5, dtype=torch.float64)).shape
torch.Size([4, 30])
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from femno.errors import InputError
from femno.operators.checkpoint import register_model
from femno.operators.layers import mlp

__all__ = ["FNO", "DeepONet", "SpectralConv2d", "grid_points", "probe_matrix",
           "bilinear_matrix", "build_baseline", "BASELINES", "fit_operator",
           "evaluate_operator"]


# ----------------------------------------------------------------------------- transfers
def grid_points(lo, hi, s: int) -> np.ndarray:
    """Vertices of an ``s`` x ``s`` grid on the box ``[lo, hi]``, shape (s*s, 2), float64.

    Point ``(i, j)`` (``x`` index ``i``, ``y`` index ``j``) is row ``i * s + j``.

    >>> grid_points([0, 0], [1, 1], 2).tolist()
    [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 2:
        raise InputError(f"grid resolution must be an integer >= 2, got {s!r}")
    x = np.linspace(float(lo[0]), float(hi[0]), s)
    y = np.linspace(float(lo[1]), float(hi[1]), s)
    X, Y = np.meshgrid(x, y, indexing="ij")
    return np.column_stack([X.ravel(), Y.ravel()])


def probe_matrix(basis, points) -> sp.csr_matrix:
    """Sparse ``(n_points, basis.N)`` evaluation matrix of FE functions at ``points``.

    ``points``: (n_points, 2).  Rows of points outside the mesh are zero (the FE
    function is extended by 0).  Uses skfem's ``basis.probes``.
    """
    pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64).T)
    n = pts.shape[1]
    rows = []

    def probe(idx):
        try:
            P = sp.coo_matrix(basis.probes(pts[:, idx]))
        except ValueError:  # some point outside the mesh: split until located
            if idx.size == 1:
                return
            half = idx.size // 2
            probe(idx[:half])
            probe(idx[half:])
            return
        rows.append(sp.coo_matrix((P.data, (idx[P.row], P.col)), shape=(n, basis.N)))

    probe(np.arange(n))
    out = sum(rows[1:], rows[0]) if rows else sp.coo_matrix((n, basis.N))
    return sp.csr_matrix(out)


def bilinear_matrix(lo, hi, s: int, points) -> sp.csr_matrix:
    """Sparse ``(n_points, s*s)`` bilinear interpolation from grid vertices to ``points``.

    Points are clipped to the box; the grid is :func:`grid_points` ``(lo, hi, s)``.

    >>> W = bilinear_matrix([0, 0], [1, 1], 2, [[0.25, 0.5]])
    >>> W.toarray().round(3).tolist()
    [[0.375, 0.375, 0.125, 0.125]]
    """
    pts = np.asarray(points, dtype=np.float64)
    lo, hi = np.asarray(lo, dtype=np.float64)[:2], np.asarray(hi, dtype=np.float64)[:2]
    span = np.where(hi > lo, hi - lo, 1.0)
    t = np.clip((pts[:, :2] - lo) / span, 0.0, 1.0) * (s - 1)
    i0 = np.minimum(np.floor(t).astype(np.int64), s - 2)
    f = t - i0
    rows, cols, vals = [], [], []
    r = np.arange(len(pts))
    for di in (0, 1):
        for dj in (0, 1):
            wx = f[:, 0] if di else 1.0 - f[:, 0]
            wy = f[:, 1] if dj else 1.0 - f[:, 1]
            rows.append(r)
            cols.append((i0[:, 0] + di) * s + (i0[:, 1] + dj))
            vals.append(wx * wy)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(pts), s * s))


def _padded(M: sp.csr_matrix, k: int | None = None):
    """CSR rows as padded ``(rows, k)`` index and weight arrays (for a torch gather)."""
    M = sp.csr_matrix(M)
    counts = np.diff(M.indptr)
    k = max(int(counts.max(initial=0)), 1) if k is None else k
    if counts.max(initial=0) > k:
        raise InputError(f"a transfer row has {counts.max()} nonzeros, more than {k}")
    idx = np.zeros((M.shape[0], k), dtype=np.int64)
    w = np.zeros((M.shape[0], k))
    rows = np.repeat(np.arange(M.shape[0]), counts)
    pos = np.arange(M.nnz) - np.repeat(M.indptr[:-1], counts)
    idx[rows, pos], w[rows, pos] = M.indices, M.data
    return idx, w


def _gather(v: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(..., n) -> (..., rows)``: sum_k w[r, k] v[..., idx[r, k]]."""
    return (v[..., idx] * w).sum(-1)


class _Normalized(nn.Module):
    """Per-feature input and scalar output normalization buffers shared by the baselines."""

    def _init_norm(self, n_channels: int, n_in: int):
        f64 = torch.float64
        self.register_buffer("x_mean", torch.zeros(n_channels, n_in, dtype=f64))
        self.register_buffer("x_std", torch.ones(n_channels, n_in, dtype=f64))
        self.register_buffer("y_mean", torch.zeros((), dtype=f64))
        self.register_buffer("y_std", torch.ones((), dtype=f64))

    def set_normalization(self, X, Y) -> None:
        """Set the statistics from training inputs (n, C, n_in) and targets (n, n_dofs)."""
        X = torch.as_tensor(X, dtype=torch.float64).cpu()
        Y = torch.as_tensor(Y, dtype=torch.float64).cpu()
        if X.shape[1:] != self.x_mean.shape or X.shape[0] < 1:
            raise InputError(f"X must have shape (n, {', '.join(map(str, self.x_mean.shape))}), "
                             f"got {tuple(X.shape)}")
        std = X.std(0, unbiased=False) if X.shape[0] > 1 else torch.ones(X.shape[1:])
        floor = 1e-6 * std.amax(dim=1, keepdim=True).clamp(min=1e-30) + 1e-12
        self.x_mean.copy_(X.mean(0))
        self.x_std.copy_(torch.maximum(std, floor))
        self.y_mean.copy_(Y.mean())
        self.y_std.copy_(Y.std(unbiased=False).clamp(min=1e-12))

    def _check_input(self, X: torch.Tensor) -> torch.Tensor:
        C, n = self.x_mean.shape
        if not isinstance(X, torch.Tensor) or X.ndim != 3 or X.shape[1:] != (C, n):
            shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
            raise InputError(f"{type(self).__name__} input must be a tensor of shape "
                             f"(batch, {C}, {n}), got {shape}")
        return ((X.to(self.x_mean.dtype) - self.x_mean) / self.x_std).float()

    def _output(self, y: torch.Tensor, dtype) -> torch.Tensor:
        return (self.y_mean + self.y_std * y.to(self.y_mean.dtype)).to(dtype)


# -------------------------------------------------------------------------------- FNO
class SpectralConv2d(nn.Module):
    r"""Fourier layer kernel: keep ``modes`` x ``modes`` low frequencies (both signs in x).

    ``(B, C_in, s, s) -> (B, C_out, s, s)``; ``rfft2`` over the two grid axes.
    """

    def __init__(self, cin: int, cout: int, modes: int):
        super().__init__()
        self.modes = modes
        scale = 1.0 / (cin * cout)
        self.w1 = nn.Parameter(scale * torch.randn(cin, cout, modes, modes, dtype=torch.cfloat))
        self.w2 = nn.Parameter(scale * torch.randn(cin, cout, modes, modes, dtype=torch.cfloat))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        B, _, s1, s2 = v.shape
        m1, m2 = min(self.modes, s1 // 2), min(self.modes, s2 // 2 + 1)
        vh = torch.fft.rfft2(v)
        out = torch.zeros(B, self.w1.shape[1], s1, s2 // 2 + 1, dtype=vh.dtype, device=v.device)
        out[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", vh[:, :, :m1, :m2],
                                           self.w1[:, :, :m1, :m2])
        out[:, :, -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", vh[:, :, -m1:, :m2],
                                            self.w2[:, :, :m1, :m2])
        return torch.fft.irfft2(out, s=(s1, s2))


@register_model("fno")
class FNO(_Normalized):
    r"""2-D Fourier neural operator between FE spaces through an ``s`` x ``s`` grid.

    Parameters (keyword-only; all stored in ``config``)
    ----------
    n_channels, n_in, n_dofs : int
        Input channels ``C``, input FE coefficients per channel, output FE dofs.
    resolution : int
        Grid points per side ``s``.
    in_k, out_k : int
        Nonzeros per row of the FE-to-grid and grid-to-dof transfers (set by
        :meth:`from_fe`).
    width, modes, layers : int
        Channels, retained Fourier modes per axis, Fourier layers (Li et al.: 32, 12, 4).
    lo, hi : list of float
        Grid box.

    Forward: ``X`` ``(B, C, n_in)`` -> ``(B, n_dofs)`` in ``X``'s dtype; a second
    argument (the lifting other models take) is ignored.
    """

    def __init__(self, *, n_channels=1, n_in, n_dofs, resolution=32, in_k=3, out_k=4, width=32,
                 modes=12, layers=4, lo=(0.0, 0.0), hi=(1.0, 1.0)):
        super().__init__()
        s = int(resolution)
        self.config = {"n_channels": int(n_channels), "n_in": int(n_in), "n_dofs": int(n_dofs),
                       "resolution": s, "in_k": int(in_k), "out_k": int(out_k),
                       "width": int(width), "modes": int(modes), "layers": int(layers),
                       "lo": [float(v) for v in lo], "hi": [float(v) for v in hi]}
        if min(n_channels, n_in, n_dofs, width, modes, layers) < 1 or s < 4:
            raise InputError(f"bad FNO configuration {self.config}")
        self._init_norm(int(n_channels), int(n_in))
        self.register_buffer("in_idx", torch.zeros(s * s, in_k, dtype=torch.long))
        self.register_buffer("in_w", torch.zeros(s * s, in_k))
        self.register_buffer("out_idx", torch.zeros(n_dofs, out_k, dtype=torch.long))
        self.register_buffer("out_w", torch.zeros(n_dofs, out_k))
        g = torch.linspace(0.0, 1.0, s)
        self.register_buffer("coords", torch.stack(torch.meshgrid(g, g, indexing="ij")))
        self.lift = nn.Conv2d(n_channels + 2, width, 1)
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, modes) for _ in range(layers))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(layers))
        self.proj = nn.Sequential(nn.Conv2d(width, 4 * width, 1), nn.GELU(),
                                  nn.Conv2d(4 * width, 1, 1))

    @classmethod
    def from_fe(cls, *, in_matrix, doflocs, lo, hi, resolution=32, n_channels=1, **options):
        """Build with transfers: ``in_matrix`` (s*s, n_in) maps input coefficients to the
        grid (e.g. :func:`probe_matrix` of the input basis at :func:`grid_points`);
        ``doflocs`` (n_dofs, 2) are the output dof locations (bilinear read-out)."""
        s = int(resolution)
        in_matrix = sp.csr_matrix(in_matrix)
        if in_matrix.shape[0] != s * s:
            raise InputError(f"in_matrix must have {s * s} rows, got {in_matrix.shape[0]}")
        out = bilinear_matrix(lo, hi, s, doflocs)
        in_idx, in_w = _padded(in_matrix)
        out_idx, out_w = _padded(out, 4)
        model = cls(n_channels=n_channels, n_in=in_matrix.shape[1], n_dofs=out.shape[0],
                    resolution=s, in_k=in_idx.shape[1], out_k=4, lo=list(lo)[:2],
                    hi=list(hi)[:2], **options)
        for name, arr in (("in_idx", in_idx), ("in_w", in_w), ("out_idx", out_idx),
                          ("out_w", out_w)):
            buf = getattr(model, name)
            buf.copy_(torch.from_numpy(arr).to(buf.dtype))
        return model

    def to_grid(self, X: torch.Tensor) -> torch.Tensor:
        """Normalized input on the grid, ``(B, C, s, s)`` float32."""
        s = self.config["resolution"]
        x = self._check_input(X)
        return _gather(x, self.in_idx, self.in_w).reshape(x.shape[0], x.shape[1], s, s)

    def forward(self, X: torch.Tensor, lift=None) -> torch.Tensor:
        v = self.to_grid(X)
        v = torch.cat([v, self.coords.expand(v.shape[0], -1, -1, -1)], dim=1)
        v = self.lift(v)
        n = len(self.spectral)
        for k, (K, W) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            v = K(v) + W(v)
            if k < n - 1:
                v = torch.nn.functional.gelu(v)
        out = self.proj(v).reshape(v.shape[0], -1)
        return self._output(_gather(out, self.out_idx, self.out_w), X.dtype)


# --------------------------------------------------------------------------- DeepONet
@register_model("deeponet")
class DeepONet(_Normalized):
    r"""Unstacked DeepONet evaluated at the FE dof locations.

    Parameters (keyword-only; stored in ``config``)
    ----------
    n_channels, n_in, n_dofs : int
        Input channels, input coefficients per channel, output dofs.
    dim : int
        Trunk input size: the space dimension (plus the number of components for a
        vector space, whose one-hot component code is appended).
    width, depth : int
        Hidden width and hidden layers of both MLPs.
    p : int
        Latent dimension of the branch/trunk dot product.

    Forward: ``(B, C, n_in) -> (B, n_dofs)``,
    :math:`Y_{bj} = \sum_k \beta_k(X_b)\,\tau_k(x_j) + b_0`; a second argument is
    ignored.
    """

    def __init__(self, *, n_channels=1, n_in, n_dofs, dim=2, width=128, depth=3, p=64):
        super().__init__()
        self.config = {"n_channels": int(n_channels), "n_in": int(n_in), "n_dofs": int(n_dofs),
                       "dim": int(dim), "width": int(width), "depth": int(depth), "p": int(p)}
        if min(n_channels, n_in, n_dofs, dim, width, depth, p) < 1:
            raise InputError(f"bad DeepONet configuration {self.config}")
        self._init_norm(int(n_channels), int(n_in))
        self.register_buffer("coords", torch.zeros(n_dofs, dim))
        self.branch = mlp(n_channels * n_in, p, width=width, hidden=depth)
        self.trunk = mlp(dim, p, width=width, hidden=depth)
        self.bias = nn.Parameter(torch.zeros(()))

    def set_coordinates(self, doflocs, component=None) -> None:
        """Trunk inputs: dof locations (n_dofs, d) scaled to [0, 1] per axis, plus a
        one-hot code of ``component`` (n_dofs,) ints for vector spaces."""
        x = np.asarray(doflocs, dtype=np.float64)
        lo, hi = x.min(0), x.max(0)
        x = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
        if component is not None:
            component = np.asarray(component, dtype=np.int64)
            x = np.hstack([x, np.eye(int(component.max()) + 1)[component]])
        if x.shape != tuple(self.coords.shape):
            raise InputError(f"trunk inputs must have shape {tuple(self.coords.shape)}, "
                             f"got {x.shape}")
        self.coords.copy_(torch.from_numpy(x))

    def forward(self, X: torch.Tensor, lift=None) -> torch.Tensor:
        x = self._check_input(X).reshape(X.shape[0], -1)
        y = self.branch(x) @ self.trunk(self.coords).T + self.bias
        return self._output(y, X.dtype)


# ------------------------------------------------------------------------------ builder
BASELINES = ("fno", "deeponet")


def build_baseline(arch: str, data, *, resolution: int = 32, width: int | None = None,
                   modes: int = 12, layers: int = 4, depth: int = 3, p: int = 64,
                   seed: int = 0) -> nn.Module:
    """A baseline for the training data ``data`` (:class:`~femno.operators.fe_data.FEData`),
    with its transfers and normalization statistics set from ``data``.

    ``arch``: ``"fno"`` (2-D scalar spaces) or ``"deeponet"``; ``width`` defaults to
    32 (FNO) / 128 (DeepONet); ``seed`` seeds the initial weights.
    """
    if arch not in BASELINES:
        raise InputError(f"unknown baseline {arch!r}; valid: {', '.join(BASELINES)}")
    if data.Y is None:
        raise InputError("the training data has no solutions (Y)")
    torch.manual_seed(int(seed))
    C, n_in = int(data.X.shape[1]), int(data.X.shape[2])
    doflocs = np.asarray(data.basis.doflocs, dtype=np.float64).T
    if arch == "fno":
        if data.dim != 2 or data.vector:
            raise InputError("the FNO baseline handles 2-D scalar problems only")
        lo, hi = doflocs.min(0), doflocs.max(0)
        in_matrix = probe_matrix(data.basis_in, grid_points(lo, hi, int(resolution)))
        model = FNO.from_fe(in_matrix=in_matrix, doflocs=doflocs, lo=lo, hi=hi,
                            resolution=resolution, n_channels=C, width=width or 32,
                            modes=modes, layers=layers)
    else:
        comp = data.component if data.vector else None
        dim = data.dim + (data.dim if data.vector else 0)
        model = DeepONet(n_channels=C, n_in=n_in, n_dofs=data.n_dofs, dim=dim,
                         width=width or 128, depth=depth, p=p)
        model.set_coordinates(doflocs, comp)
    model.set_normalization(data.X, data.Y)
    return model


# ------------------------------------------------------------------- training, evaluation
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
