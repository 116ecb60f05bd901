r"""Differentiable finite-element assembly: torch coefficients -> torch sparse matrix.

A bilinear form linear in a coefficient :math:`c` given at the quadrature points has
matrix values linear in :math:`c` (:mod:`femno.fem.fast_assembly`):

.. math:: A_{\text{data}}(c) = \sum_t S_t\, x_t(c_t), \qquad
          x_t(c)_{e\ell} = \sum_q c_{eq}\,|J_e| w_q\, k^t_\ell(e, q),

so with the element kernels :math:`k^t` and scatters :math:`S_t` built once, the values
are a few torch operations on :math:`c` and autograd gives
:math:`\partial A_{\text{data}} / \partial c` (the transpose of the same linear map).
:class:`TorchAssembler` returns the condensed matrix (Dirichlet dofs removed) as a
torch CSR tensor whose values carry the graph; with :func:`~femno.hybrid.linear_solve`
this is parameter -> solution -> loss end to end.

>>> import torch
>>> from femno.fem import Darcy
>>> fam = Darcy(n=4)
>>> asm = TorchAssembler.from_family(fam)
>>> a = torch.ones(fam.qp_shape, dtype=torch.float64, requires_grad=True)
>>> A = asm([a])
>>> A.layout, tuple(A.shape), A.values().requires_grad
(torch.sparse_csr, (9, 9), True)
"""

from __future__ import annotations

import numpy as np

from femno.errors import InputError
from femno.fem.fast_assembly import CondensedAssembler, FormKernel
from femno.hybrid.solve import csr_tensor, float64_tensor


def _scatter_function(torch):
    class _Scatter(torch.autograd.Function):
        """``S @ x`` for a constant scipy csr ``S`` (backward ``S^T @ g``)."""

        @staticmethod
        def forward(ctx, x, S, ST):
            ctx.ST = ST
            return torch.from_numpy(S @ x.detach().cpu().numpy()).to(x.device)

        @staticmethod
        def backward(ctx, g):
            return torch.from_numpy(ctx.ST @ g.detach().cpu().numpy()).to(g.device), None, None

    return _Scatter

__all__ = ["TorchAssembler"]


class TorchAssembler:
    r"""Value-only, differentiable assembly of :math:`\sum_t A_t(c_t)` on a fixed pattern.

    Parameters
    ----------
    basis : skfem.CellBasis
    terms : list of (skfem.BilinearForm, dict)
        ``(form, unit)`` pairs as :meth:`femno.fem.Family.matrix_terms` gives them: each
        form linear in the coefficients named in ``unit``.
    free : array_like of int, optional
        Rows/columns kept (free dofs); default all.

    Attributes
    ----------
    shape : tuple
        ``(m, m)`` of the condensed matrix.
    nnz : int
    """

    def __init__(self, basis, terms, free=None):
        import torch

        self._torch = torch
        free = np.arange(basis.N) if free is None else np.asarray(free, dtype=np.int64)
        kernels = [FormKernel(form, basis, **unit) for form, unit in terms]
        self._asm = CondensedAssembler(basis.N, free, kernels)
        self.shape, self.nnz = self._asm.shape, self._asm.nnz
        self.qp_shape = tuple(basis.dx.shape)
        self._crow = torch.from_numpy(self._asm.indptr.astype(np.int64))
        self._col = torch.from_numpy(self._asm.indices.astype(np.int64))
        # the scatters as scipy csr and their transposes (torch's backward of a sparse
        # mat-vec is 15x its forward here: 56 vs 3.7 ms at 65k dofs)
        self._S = [(S.tocsr(), S.T.tocsr()) for S in self._asm.scatters]
        self._scatter = _scatter_function(torch)
        self._dx = torch.from_numpy(np.ascontiguousarray(basis.dx, dtype=np.float64))
        self._data = [torch.from_numpy(np.ascontiguousarray(k.data, dtype=np.float64))
                      for k in kernels]

    @classmethod
    def from_family(cls, family):
        """The assembler of a :class:`~femno.fem.Family` that declares ``matrix_terms``."""
        terms = family.matrix_terms()
        if not terms:
            raise InputError(f"family {family.name!r} declares no matrix_terms(); "
                             "differentiable assembly needs them")
        return cls(family.basis, terms, family.free_dofs())

    def _coef(self, c, t):
        c = float64_tensor(c, f"coefficient {t}")
        ne, nq = self.qp_shape
        if c.dim() == 0:
            return c.expand(ne, nq)
        if tuple(c.shape) == (ne,):
            return c[:, None].expand(ne, nq)
        if tuple(c.shape) != (ne, nq):
            raise InputError(f"coefficient {t} must be a number, ({ne},) per element or "
                             f"({ne}, {nq}) at the quadrature points, got {tuple(c.shape)}")
        return c

    def values(self, coefs):
        """CSR values, shape (nnz,), float64, differentiable in ``coefs``."""
        torch = self._torch
        if len(coefs) != len(self._S):
            raise InputError(f"need {len(self._S)} coefficients, got {len(coefs)}")
        out = None
        for t, (c, S, k) in enumerate(zip(coefs, self._S, self._asm.kernels, strict=True)):
            cdx = self._coef(c, t).to(self._dx.device) * self._dx
            if k.mode == "element":
                x = cdx.sum(dim=1)
            elif k.mode == "reference":
                x = cdx @ self._data[t]
            else:
                x = torch.einsum("eq,leq->el", cdx, self._data[t])
            v = self._scatter.apply(x.reshape(-1), *S)
            out = v if out is None else out + v
        return out

    def __call__(self, coefs):
        """The condensed matrix as a torch CSR tensor (m, m) whose values carry the graph."""
        return csr_tensor(self._crow, self._col, self.values(coefs), self.shape)

    def scipy(self, coefs):
        """The same matrix as a scipy csr_matrix (no graph), e.g. to compare."""
        return self._asm.matrix(self.values(coefs).detach().cpu().numpy())
