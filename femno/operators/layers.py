r"""Network building blocks shared by femno's operator models.

* :func:`mlp`: the multilayer perceptron of SPON, DeepONet and EquiNO;
* :class:`MessagePassing`: one residual layer on a graph of FE dofs;
* :class:`GlobalMix` and :class:`InputKernel`: low-rank kernel integrals over the whole
  mesh, with the lumped FE mass as quadrature weights (any mesh).

>>> import torch
>>> net = mlp(3, 2, width=8, hidden=2)
>>> [type(m).__name__ for m in net]
['Linear', 'GELU', 'Linear', 'GELU', 'Linear']
>>> net(torch.zeros(5, 3)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["mlp", "MessagePassing", "GlobalMix", "InputKernel"]


def mlp(n_in: int, n_out: int, *, width: int, hidden: int = 1,
        activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """``n_in -> hidden x (Linear(width), activation) -> Linear(n_out)`` (float32 weights;
    call ``.double()`` for float64)."""
    layers, d = [], n_in
    for _ in range(hidden):
        layers += [nn.Linear(d, width), activation()]
        d = width
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


class MessagePassing(nn.Module):
    r"""One residual message-passing layer on a graph given at call time.

    :math:`m_{ij} = \psi(A h_i + B h_j + C e_{ij})` (first layer split so that the
    gather happens after the linear maps), mean aggregation over the incoming edges,
    :math:`h_i \leftarrow h_i + \phi([\mathrm{LN}(h_i), \bar m_i])`.  The last
    (affine) layer of :math:`\psi` is applied after the mean, which it commutes
    with: the same function at a cost per node instead of per edge.
    """

    def __init__(self, width: int, edge_dim: int):
        super().__init__()
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width, bias=False)
        self.c = nn.Linear(edge_dim, width, bias=False)
        self.msg = nn.Sequential(nn.GELU(), nn.Linear(width, width))
        self.norm = nn.LayerNorm(width)
        self.upd = mlp(2 * width, width, width=width)

    def forward(self, h, src, dst, edge_attr, inv_deg):
        """h (B, N, W); src, dst (E,); edge_attr (E, F); inv_deg (N, 1): 1 / in-degree,
        0 for a node without incoming edges (it receives no message)."""
        hn = self.norm(h)
        # index_select (backward: index_add) is much cheaper than advanced indexing
        m = (self.a(hn).index_select(1, dst) + self.b(hn).index_select(1, src)
             + self.c(edge_attr))
        act, lin = self.msg
        agg = torch.zeros_like(h).index_add_(1, dst, act(m)) * inv_deg
        # mean_j (W g_j + c) = W mean_j g_j + c where a node has incoming edges, else 0
        agg = nn.functional.linear(agg, lin.weight) + lin.bias * (inv_deg > 0)
        return h + self.upd(torch.cat([hn, agg], dim=-1))


class GlobalMix(nn.Module):
    r"""Low-rank kernel integral over the whole mesh (global context in one layer).

    :math:`h_i \leftarrow h_i + U\big(\phi(\bar h_i) \odot \textstyle\sum_j w_j
    \psi(\bar h_j) \odot v(h_j)\big)`, :math:`\bar h = \mathrm{LN}(h)` (all maps
    linear; the product lets a position-dependent :math:`\psi` weigh an input-dependent
    :math:`v`, as in a kernel integral), with :math:`w_j` the
    lumped FE mass of node :math:`j` normalized to sum 1, so that
    :math:`\sum_j w_j \psi(\bar h_j) \approx |\Omega|^{-1}\int_\Omega \psi` on any mesh:
    the integral operator :math:`\int \kappa(x, y) v(y)\,dy` with a rank-``rank``
    kernel :math:`\kappa = \sum_k \phi_k(x)\psi_k(y)` (features carry position).
    Message passing needs as many layers as the mesh is wide to move information
    across it; an elliptic solution operator is global.
    """

    def __init__(self, width: int, rank: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.phi, self.psi = nn.Linear(width, rank), nn.Linear(width, rank)
        self.v = nn.Linear(width, rank)
        self.out = nn.Linear(rank, width)

    def forward(self, h, weights):
        """h (B, N, W); weights (N,) summing to 1."""
        hn = self.norm(h)
        # values from the un-normalized h: the layer norm would hide the amplitude that a
        # linear solution operator carries from the input to the output
        g = torch.einsum("bnr,n->br", self.psi(hn) * self.v(h), weights)[:, None, :]
        return h + self.out(self.phi(hn) * g)


class InputKernel(nn.Module):
    r"""Low-rank integral of the input, added to the encoded features (once, on the dofs).

    :math:`h_i \mathrel{+}= U\big(\phi(s_i) \odot \sum_j w_j\, \psi(s_j) \odot V x_j\big)`
    with :math:`s` the static node features (position, Fourier features, flags),
    :math:`x` the normalized input channels and :math:`w` the lumped-mass weights: the
    rank-``rank`` kernel integral :math:`\int \kappa(x, y) a(y)\,dy`, linear in the
    input, that a linear solution operator (Poisson's) is, and a first global view of
    any input for the message passing after it.
    """

    def __init__(self, n_static: int, n_in: int, width: int, rank: int):
        super().__init__()
        self.phi = mlp(n_static, rank, width=width)
        self.psi = mlp(n_static, rank, width=width)
        self.v = nn.Linear(n_in, rank, bias=False)
        self.out = nn.Linear(rank, width)

    def kernel(self, static, x, weights):
        r""":math:`\phi(s_i) \odot \sum_j w_j \psi(s_j) \odot V x_j`, shape (B, N, rank):
        the rank-``rank`` integral before the output map (also the input of a
        linear skip to the network's output, SPON's ``input_skip``)."""
        g = torch.einsum("nr,bnr,n->br", self.psi(static), self.v(x), weights)
        return self.phi(static)[None] * g[:, None, :]

    def forward(self, static, x, weights):
        """static (N, S); x (B, N, C); weights (N,) summing to 1 -> (B, N, W)."""
        return self.out(self.kernel(static, x, weights))
