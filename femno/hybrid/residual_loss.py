r"""A finite-element residual loss for training operator networks without (many) labels.

For a parameter (a Darcy coefficient :math:`a` at the quadrature points) the FE system
on the free dofs is :math:`A(a)\,u = b`.  For a prediction :math:`\hat u` (free dofs)
the residual is

.. math:: r = A(a)\,\hat u - b = A(a)\,(\hat u - u_h),

so :math:`r = 0` exactly when :math:`\hat u` is the FE solution :math:`u_h`, and no
solve is needed to evaluate it: a training signal that uses the parameters only.
The matrix comes from :class:`~femno.hybrid.TorchAssembler` (its values are
differentiable in :math:`a` too); :math:`A\hat u` is a gather / scatter on the shared
sparsity pattern, batched over samples with different matrices, differentiable in
:math:`\hat u` (and so in the weights of the network that made it).

**Which norm** (``norm=``).  :math:`r` is a functional (a vector of moments
:math:`\int \ldots \phi_i`), so its size depends on the norm:

* ``"dual"`` (default): :math:`\|r\|_{K_0^{-1}} = (r^{\mathsf T} K_0^{-1} r)^{1/2}` with
  :math:`K_0 = A(a_0)` the matrix of a *fixed* reference coefficient :math:`a_0`
  (default 1: the Laplacian), factorized once.  With :math:`e = \hat u - u_h`,
  :math:`r^{\mathsf T} A^{-1} r = e^{\mathsf T} A e` is the energy error, and
  :math:`a_{\min}/a_0 \, K_0 \le A \le a_{\max}/a_0 \, K_0` gives

  .. math:: \frac{a_{\min}}{a_0}\, \|e\|_A^2 \;\le\; \|r\|_{K_0^{-1}}^2 \;\le\;
            \frac{a_{\max}}{a_0}\, \|e\|_A^2 ,

  a discrete :math:`H^{-1}` norm equivalent to the energy error (the constants are the
  coefficient contrast), with no per-sample solve.  Relative to
  :math:`\|b\|_{K_0^{-1}}` it is comparable to a relative :math:`H^1` error of the
  solution.  This is the choice for training: all error frequencies are weighted
  like the solution error.
* ``"l2"``: the Euclidean :math:`\|r\|_2` (relative: :math:`\|r\|_2 / \|b\|_2`).  Cheap,
  but :math:`\|A e\|_2` weights an error mode of frequency :math:`k` by about
  :math:`k^2` (the strong-form residual of a PINN): smooth errors are barely
  penalised, mesh-scale noise dominates.  Kept as a diagnostic.

(:math:`M^{-1}`, the :math:`L^2` Riesz representative of :math:`r`, has the same
:math:`k^2` weighting as ``"l2"`` up to :math:`h`-scaling, so it is not offered.)

The loss is :math:`\frac1B \sum_k \|r_k\| / \|b_k\|` (the relative residual, like the
relative :math:`L^2` data loss of :func:`femno.operators.fe_training.fit_operator`).

>>> import numpy as np, torch
>>> from femno.fem import Darcy
>>> fam = Darcy(n=4)
>>> params = [fam.sample(np.random.default_rng(k)) for k in range(3)]
>>> res = ResidualLoss.from_family(fam)
>>> a = torch.as_tensor(np.stack([p["a"] for p in params]))
>>> b = torch.as_tensor(np.stack([fam.assemble(p).b for p in params]))
>>> u = torch.zeros(3, res.n_free, dtype=torch.float64, requires_grad=True)
>>> loss = res(u, b, coefficients=a)
>>> float(loss.detach())                # u = 0: the residual is -b
1.0
>>> loss.backward(); u.grad.shape
torch.Size([3, 9])
"""

from __future__ import annotations

import numpy as np

from femno.errors import InputError
from femno.hybrid.assembly import TorchAssembler
from femno.hybrid.solve import AdjointSolver, float64_tensor, linear_solve

__all__ = ["ResidualLoss", "NORMS"]

#: the residual norms :class:`ResidualLoss` offers
NORMS = ("dual", "l2")


class ResidualLoss:
    r"""Relative FE residual :math:`\|A(a_k)\hat u_k - b_k\| / \|b_k\|` of a batch.

    Parameters
    ----------
    assembler : TorchAssembler
        Condensed (free-dof) assembly of the family's matrix.
    free : array_like of int, optional, keyword-only
        Free dofs in the full dof vector: predictions with ``n_dofs`` entries are cut to
        them (predictions with ``n_free`` entries are used as they are).  Default: all.
    n_dofs : int, optional, keyword-only
        Size of a full dof vector (default ``max(free) + 1``; give it when the last dof
        is a Dirichlet dof).
    norm : {"dual", "l2"}, keyword-only
        See the module docstring.
    reference : float or array, keyword-only
        Coefficient(s) :math:`a_0` of :math:`K_0` for ``norm="dual"`` (default 1.0; one
        per matrix term, a number or quadrature values).

    Attributes
    ----------
    n_free : int
        Size of the condensed system.
    K0 : scipy csr (n_free, n_free) or None
        Reference matrix of the dual norm.
    """

    def __init__(self, assembler, *, free=None, n_dofs=None, norm: str = "dual",
                 reference=1.0):
        import torch

        if not isinstance(assembler, TorchAssembler):
            raise InputError(f"assembler must be a TorchAssembler, got {type(assembler).__name__}")
        if norm not in NORMS:
            raise InputError(f"unknown residual norm {norm!r}; valid: {list(NORMS)}")
        self._torch = torch
        self.asm, self.norm_name = assembler, norm
        self.n_free = int(assembler.shape[0])
        self.free = None if free is None else np.asarray(free, dtype=np.int64)
        if self.free is not None and self.free.shape != (self.n_free,):
            raise InputError(f"free must hold {self.n_free} dof indices, got {self.free.shape}")
        self.n_dofs = (int(n_dofs) if n_dofs is not None
                       else (int(self.free.max()) + 1 if self.free is not None else self.n_free))
        indptr = np.asarray(assembler._asm.indptr, dtype=np.int64)
        self._rows = torch.from_numpy(np.repeat(np.arange(self.n_free), np.diff(indptr)))
        self._cols = torch.from_numpy(np.asarray(assembler._asm.indices, dtype=np.int64))
        self._n_terms = len(assembler._S)
        self.K0 = None
        if norm == "dual":
            ref = reference if isinstance(reference, (list, tuple)) else [reference] * self._n_terms
            self.K0 = assembler.scipy(ref)
            self._solver = AdjointSolver("direct")  # factorized once, reused by every call

    @classmethod
    def from_family(cls, family, **kw):
        """The loss of a :class:`~femno.fem.Family` that declares ``matrix_terms``.

        ``kw``: ``norm``, ``reference`` (see the class)."""
        return cls(TorchAssembler.from_family(family), free=family.free_dofs(),
                   n_dofs=family.basis.N, **kw)

    # -- matrices ----------------------------------------------------------------------------
    def matrix_values(self, coefficients):
        r"""CSR values :math:`(B, \text{nnz})` of :math:`A(a_k)` for a batch of coefficients.

        ``coefficients``: a tensor or array (B, n_elements, n_qp) (or (B, n_elements))
        for a one-term family, or a list with one such batch per matrix term.  float64;
        the values keep the autograd graph of torch coefficients.
        """
        torch = self._torch
        coefs = coefficients if isinstance(coefficients, (list, tuple)) else [coefficients]
        if len(coefs) != self._n_terms:
            raise InputError(f"need {self._n_terms} coefficient batch(es), got {len(coefs)}")
        coefs = [c if isinstance(c, torch.Tensor) else torch.as_tensor(np.asarray(c, np.float64))
                 for c in coefs]
        B = int(coefs[0].shape[0]) if coefs[0].dim() >= 1 else -1
        if B < 1 or any(c.dim() not in (2, 3) or c.shape[0] != B for c in coefs):
            raise InputError("coefficients must be batches of shape (B, n_elements, n_qp) or "
                             f"(B, n_elements), got {[tuple(c.shape) for c in coefs]}")
        return torch.stack([self.asm.values([c[k] for c in coefs]) for k in range(B)])

    def matvec(self, values, u):
        r""":math:`A_k u_k` for values (B, nnz) or (nnz,) and u (B, n_free); differentiable
        in both (a gather at the column indices, a scatter-add to the rows)."""
        torch = self._torch
        if values.dim() == 1:
            values = values.expand(u.shape[0], -1)
        prod = values * u[:, self._cols.to(u.device)]
        out = torch.zeros(u.shape[0], self.n_free, dtype=prod.dtype, device=u.device)
        return out.index_add(1, self._rows.to(u.device), prod)

    # -- residual and norms ------------------------------------------------------------------
    def _prediction(self, u):
        torch = self._torch
        if not isinstance(u, torch.Tensor) or u.dim() != 2:
            raise InputError(f"predictions must be a tensor (B, {self.n_free}) or (B, "
                             f"{self.n_dofs}), got "
                             + (str(tuple(u.shape)) if isinstance(u, torch.Tensor)
                                else type(u).__name__))
        if u.dtype != torch.float64:
            raise InputError(f"predictions must be float64 (femno's FE numerics), got {u.dtype}")
        if u.shape[1] == self.n_free:
            return u
        if self.free is not None and u.shape[1] == self.n_dofs:
            return u[:, torch.as_tensor(self.free, device=u.device)]
        raise InputError(f"predictions must have {self.n_free} (free) or {self.n_dofs} (all) "
                         f"entries per sample, got {u.shape[1]}")

    def _load(self, b, B):
        b = float64_tensor(b, "loads")
        if b.dim() == 1:
            b = b.expand(B, -1)
        if tuple(b.shape) != (B, self.n_free):
            raise InputError(f"loads must have shape ({self.n_free},) or ({B}, {self.n_free}), "
                             f"got {tuple(b.shape)}")
        return b

    def residual(self, u, b, *, coefficients=None, values=None):
        r"""Residuals :math:`r_k = A(a_k) \hat u_k - b_k`, shape (B, n_free).

        Parameters
        ----------
        u : torch.Tensor (B, n_free) or (B, n_dofs), float64
            Predictions (full vectors are cut to the free dofs; their Dirichlet values
            must be the family's, which the lifting in ``b`` assumes).
        b : array (n_free,) or (B, n_free), float64
            Condensed loads (``family.assemble(p).b``).
        coefficients : keyword-only
            Coefficient batch (see :meth:`matrix_values`), or
        values : tensor (B, nnz) or (nnz,), keyword-only
            Precomputed matrix values (e.g. cached for a training set).
        """
        u = self._prediction(u)
        if (coefficients is None) == (values is None):
            raise InputError("give exactly one of coefficients= and values=")
        if values is None:
            values = self.matrix_values(coefficients)
        if values.shape[-1] != self.asm.nnz or values.dim() not in (1, 2) or (
                values.dim() == 2 and values.shape[0] != u.shape[0]):
            raise InputError(f"values must have shape ({u.shape[0]}, {self.asm.nnz}) or "
                             f"({self.asm.nnz},), got {tuple(values.shape)}")
        return self.matvec(values.to(u.device), u) - self._load(b, u.shape[0]).to(u.device)

    def norm(self, r):
        r"""Per-sample norm (B,) of residuals r (B, n_free): :math:`(r^{\mathsf T} K_0^{-1}
        r)^{1/2}` (``"dual"``) or :math:`\|r\|_2` (``"l2"``); differentiable."""
        if self.norm_name == "l2":
            return r.norm(dim=1)
        z = linear_solve(self.K0, r.cpu(), solver=self._solver).to(r.device)
        return (r * z).sum(dim=1).clamp_min(0.0).sqrt()

    def relative(self, u, b, *, coefficients=None, values=None):
        """Per-sample relative residual ``norm(r) / norm(b)``, shape (B,)."""
        r = self.residual(u, b, coefficients=coefficients, values=values)
        nb = self.norm(self._load(b, r.shape[0]).to(r.device)).detach()
        if bool((nb == 0).any()):
            raise InputError("a load b is zero: the relative residual is undefined")
        return self.norm(r) / nb

    def __call__(self, u, b, *, coefficients=None, values=None):
        """The loss: mean relative residual of the batch (a scalar tensor)."""
        return self.relative(u, b, coefficients=coefficients, values=values).mean()
