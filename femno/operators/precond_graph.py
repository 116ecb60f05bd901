r"""Learned preconditioners on the matrix graph: message passing (any FE mesh) and a
learned SPD incomplete-Cholesky factor (NeuralIF-style).

Both work on the Jacobi-scaled matrix of :func:`~femno.operators.precond_grid.scaled_matrix`
and are used through :class:`femno.solvers.neural.NeuralPreconditioner`; the grid CNN
lives in :mod:`femno.operators.precond_nets`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from femno.operators.checkpoint import register_model
from femno.operators.fe_torch import to_torch_csr
from femno.operators.precond_grid import scaled_matrix
from femno.operators.precond_nets import _act

__all__ = ["DofGraphNet", "LearnedIC"]


def _graph(At: sp.csr_matrix):
    """Off-diagonal part of the scaled matrix as a torch sparse CSR (float32)."""
    W = sp.csr_matrix(At - sp.diags(At.diagonal()))
    W.eliminate_zeros()
    return to_torch_csr(W, dtype=torch.float32)


@register_model("precond-gnn")
class DofGraphNet(nn.Module):
    r"""Message passing over the dof graph (dofs coupled in :math:`A`), any FE mesh.

    With :math:`W = \tilde A - I` (scaled off-diagonal couplings) each of ``layers``
    layers computes :math:`h \leftarrow \sigma(h\,\Theta_s + W h\,\Theta_n) + h`
    (bias free, leaky ReLU); lift and projection are linear.  No coarse level: the
    receptive field is ``layers`` graph hops, so iterations grow with the mesh size
    (use :class:`MGCNN` on structured grids).  (A minimal dof graph of its own:
    femno's SPON module did not exist when this was written.)

    >>> import numpy as np, scipy.sparse as sp, torch
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(6, 6), format="csr")
    >>> net = DofGraphNet(channels=4, layers=2)
    >>> net(torch.ones(3, 6), net.prepare(A)).shape
    torch.Size([3, 6])
    """

    def __init__(self, *, channels: int = 16, layers: int = 4, act: str = "leaky", seed: int = 0):
        super().__init__()
        self.config = {"channels": int(channels), "layers": int(layers), "act": act,
                       "seed": int(seed)}
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            C = channels
            self.lift = nn.Linear(1, C, bias=False)
            self.self_w = nn.ModuleList(nn.Linear(C, C, bias=False) for _ in range(layers))
            self.nbr_w = nn.ModuleList(nn.Linear(C, C, bias=False) for _ in range(layers))
            self.proj = nn.Linear(C, 1, bias=False)
            self.act = _act(act)

    def prepare(self, A, *, layout=None) -> dict:
        At, s = scaled_matrix(A)
        return {"W": _graph(At), "scale": torch.as_tensor(s, dtype=torch.float32)}

    def forward(self, x, ctx):
        s = ctx["scale"].to(x.device)
        W = ctx["W"].to(x.device)
        B, m = x.shape
        h = self.lift((x * s).unsqueeze(-1))  # (B, m, C)
        C = h.shape[-1]
        for ws, wn in zip(self.self_w, self.nbr_w, strict=True):
            agg = (W @ h.permute(1, 0, 2).reshape(m, B * C)).reshape(m, B, C).permute(1, 0, 2)
            h = self.act(ws(h) + wn(agg)) + h
        return self.proj(h).squeeze(-1) * s


@register_model("precond-spd")
class LearnedIC(nn.Module):
    r"""NeuralIF-style SPD preconditioner :math:`M = L L^T` on the IC(0) pattern.

    With :math:`\tilde A = D^{-1/2} A D^{-1/2}` and node features from a few
    message-passing steps over :math:`|\tilde a_{ij}|`, the factor of
    :math:`\tilde A` is

    .. math::

        \tilde L_{ii} = \operatorname{softplus}(g_d(h_i)) + 10^{-3},\qquad
        \tilde L_{ij} = \tilde a_{ij}\, \operatorname{softplus}(g_o(h_i, h_j,
        \tilde a_{ij})) \quad (j < i,\ \tilde a_{ij} \ne 0),

    and :math:`L = D^{1/2} \tilde L`.  Lower triangular with a positive diagonal,
    so :math:`M = L L^T` is SPD for *any* weights and plain PCG is valid.  The
    network runs once per matrix (in ``prepare``), in float64.

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(5, 5), format="csr")
    >>> net = LearnedIC()
    >>> L = net.factor(A)
    >>> bool((sp.triu(L, 1).nnz == 0) and np.all(L.diagonal() > 0))
    True
    """

    def __init__(self, *, hidden: int = 16, layers: int = 2, seed: int = 0):
        super().__init__()
        self.config = {"hidden": int(hidden), "layers": int(layers), "seed": int(seed)}
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            H = hidden
            self.node_in = nn.Linear(3, H)
            self.mp = nn.ModuleList(nn.Linear(2 * H, H) for _ in range(layers))
            self.diag = nn.Sequential(nn.Linear(H, H), nn.Tanh(), nn.Linear(H, 1))
            self.off = nn.Sequential(nn.Linear(2 * H + 1, H), nn.Tanh(), nn.Linear(H, 1))
        self.double()

    def prepare(self, A, *, layout=None) -> dict:
        """Pattern, scaled entries and node inputs of ``A`` (float64 tensors)."""
        At, s = scaled_matrix(A)
        m = At.shape[0]
        C = At.tocoo()
        low = C.row > C.col
        rows, cols, vals = C.row[low], C.col[low], C.data[low]
        offabs = np.abs(At - sp.diags(At.diagonal()))
        deg = np.diff(sp.csr_matrix(offabs).indptr)
        feats = np.stack([np.ones(m), np.asarray(offabs.sum(axis=1)).ravel(), deg / 8.0], axis=1)
        W = offabs.tocoo()
        T = torch.as_tensor
        return {"m": m, "scale": s, "rows": T(rows), "cols": T(cols), "vals": T(vals),
                "feats": T(feats), "W": torch.sparse_coo_tensor(
                    T(np.vstack([W.row, W.col])), T(W.data), size=(m, m),
                    check_invariants=False).coalesce()}

    def values(self, ctx: dict):
        """``(diag (m,), off (nnz_lower,))`` of :math:`\\tilde L` (differentiable)."""
        h = torch.tanh(self.node_in(ctx["feats"]))
        for lin in self.mp:
            h = torch.tanh(lin(torch.cat([h, ctx["W"] @ h], dim=1))) + h
        dg = nn.functional.softplus(self.diag(h).squeeze(-1)) + 1e-3
        r, c, v = ctx["rows"], ctx["cols"], ctx["vals"]
        e = torch.cat([h[r], h[c], v.unsqueeze(-1)], dim=1)
        off = v * nn.functional.softplus(self.off(e).squeeze(-1))
        return dg, off

    def dense_factor(self, ctx: dict) -> torch.Tensor:
        """:math:`\\tilde L` as a dense (m, m) float64 tensor (training on small grids)."""
        dg, off = self.values(ctx)
        m = ctx["m"]
        L = torch.zeros(m, m, dtype=dg.dtype)
        L = L.index_put((ctx["rows"], ctx["cols"]), off)
        return L + torch.diag(dg)

    @torch.no_grad()
    def factor(self, A, ctx: dict | None = None) -> sp.csr_matrix:
        """:math:`L = D^{1/2} \\tilde L` as scipy csr (float64), :math:`L L^T \\approx A`."""
        ctx = self.prepare(A) if ctx is None else ctx
        dg, off = self.values(ctx)
        m = ctx["m"]
        Lt = sp.coo_matrix((np.concatenate([off.numpy(), dg.numpy()]),
                            (np.concatenate([ctx["rows"].numpy(), np.arange(m)]),
                             np.concatenate([ctx["cols"].numpy(), np.arange(m)]))), shape=(m, m))
        return sp.csr_matrix(sp.diags(1.0 / ctx["scale"]) @ Lt)
