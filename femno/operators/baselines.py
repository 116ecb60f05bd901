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
from femno.operators.grid_transfer import (
    _gather,
    _padded,
    bilinear_matrix,
    grid_points,
    probe_matrix,
)
from femno.operators.layers import mlp

__all__ = ["FNO", "DeepONet", "SpectralConv2d", "build_baseline", "BASELINES"]


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
