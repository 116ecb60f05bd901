r"""A differentiable sparse linear solve for torch: :func:`linear_solve`.

For :math:`A(\theta) x = b(\theta)` and a loss :math:`L(x)`, with
:math:`g = \partial L / \partial x`, one adjoint solve gives every gradient:

.. math:: A^{\mathsf T} \lambda = g, \qquad
          \frac{\partial L}{\partial b} = \lambda, \qquad
          \frac{\partial L}{\partial A_{ij}} = -\lambda_i x_j
          \quad \text{for each stored entry } (i, j)

(for a batch of right-hand sides the last term sums over the batch). So ``dL/dA`` lives
on ``A``'s sparsity pattern: the gradient of the *values* tensor of the sparse matrix.
The adjoint solve reuses the forward's work (:class:`AdjointSolver`): the same sparse
factorization (SuperLU/MUMPS transposed solves, CHOLMOD for SPD matrices), the same AMG
hierarchy and Krylov solver for a symmetric matrix (nothing is set up again), or a
second solver on :math:`A^{\mathsf T}` kept between calls for a nonsymmetric one.

>>> import torch
>>> vals = torch.tensor([4.0, -1.0, -1.0, 4.0], dtype=torch.float64, requires_grad=True)
>>> A = torch.sparse_coo_tensor([[0, 0, 1, 1], [0, 1, 0, 1]], vals, (2, 2))
>>> b = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
>>> x = linear_solve(A, b)
>>> x.sum().backward()
>>> torch.allclose(b.grad, torch.tensor([1 / 3, 1 / 3], dtype=torch.float64))
True
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from femno.errors import InputError
from femno.solvers import krylov
from femno.solvers.factor import sparse_factor

__all__ = ["AdjointSolver", "linear_solve", "to_scipy", "csr_tensor", "DENSE_GRAD_LIMIT"]

#: refuse a torch-made CSR matrix whose backward would densify to more bytes than this
DENSE_GRAD_LIMIT = 2**30


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        raise ImportError("femno.hybrid needs torch (pip install femno)") from exc
    return torch


def to_scipy(A):
    """``(csr, rows, cols)`` of a square torch sparse tensor (COO or CSR) or scipy matrix.

    The csr data is in the order of ``A.values()`` (COO is coalesced first, which sorts
    it row-major, the CSR order), so gradients of the values map one to one.
    ``rows``/``cols`` (int64, shape (nnz,)) give each stored entry's position.
    """
    torch = _torch()
    if sp.issparse(A):
        A = sp.csr_matrix(A, dtype=np.float64)
        A.sum_duplicates()
        rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        return A, rows, A.indices.astype(np.int64)
    if not isinstance(A, torch.Tensor) or A.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise InputError("A must be a torch sparse tensor (COO or CSR) or a scipy sparse "
                         f"matrix, got {type(A).__name__}"
                         + (f" with layout {A.layout}" if isinstance(A, torch.Tensor) else ""))
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise InputError(f"A must be a square matrix, got shape {tuple(A.shape)}")
    if A.dtype != torch.float64:
        raise InputError(f"A must be float64 (femno's numerics), got {A.dtype}")
    n = int(A.shape[0])
    if A.layout == torch.sparse_coo:
        idx = A.coalesce().indices().cpu().numpy()
        rows, cols = idx[0].astype(np.int64), idx[1].astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    else:
        indptr = A.crow_indices().cpu().numpy().astype(np.int64)
        cols = A.col_indices().cpu().numpy().astype(np.int64)
        rows = np.repeat(np.arange(n), np.diff(indptr))
    data = _values(A).detach().cpu().numpy().astype(np.float64)
    M = sp.csr_matrix((data, cols, indptr), shape=(n, n))
    return M, rows, cols


def float64_tensor(x, what: str):
    """``x`` as a torch float64 tensor (numbers/arrays converted; a tensor of another dtype
    is refused with :class:`~femno.errors.InputError` naming ``what``)."""
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    if x.dtype != torch.float64:
        raise InputError(f"{what} must be float64 (femno's FE numerics), got {x.dtype}")
    return x


def csr_tensor(crow, col, values, shape):
    """A torch CSR tensor (int64 indices; numpy or torch inputs), without torch's beta
    warning. ``values`` keeps its autograd graph."""
    import warnings

    torch = _torch()
    crow, col = (torch.as_tensor(np.asarray(v, dtype=np.int64)) if not isinstance(v, torch.Tensor)
                 else v for v in (crow, col))
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(np.asarray(values, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        A = torch.sparse_csr_tensor(crow, col, values, size=tuple(shape),
                                    check_invariants=False)
    # linear_solve takes the gradient straight to ``values``: torch's backward through
    # the CSR constructor densifies (an n x n gradient: 34 GB at 65k dofs)
    A._femno_values = values
    return A


def _values(A):
    v = getattr(A, "_femno_values", None)
    if v is not None:
        return v
    return A.coalesce().values() if A.layout == _torch().sparse_coo else A.values()


class AdjointSolver:
    r"""Forward solves :math:`A X = B` and adjoint solves :math:`A^{\mathsf T} \Lambda = G`
    that share their set-up; keep one between calls to reuse it across them too.

    Parameters
    ----------
    method : str
        ``"direct"`` (:func:`~femno.solvers.factor.sparse_factor`: CHOLMOD for SPD-looking
        matrices, else MUMPS or SuperLU; the symbolic analysis is kept for the same
        pattern, the numeric factor for the same values), or a method of
        :func:`femno.solvers.krylov` (``"cg"``, ``"gmres"``, ``"gcrodr"``, ...).
    pc : str, keyword-only
        Preconditioner of Krylov methods (``"amg"``, ``"ilu"``, ...); reused
        (``reuse_pc=True``): the same matrix sets nothing up again.
    rtol : float, keyword-only
        Krylov tolerance of both solves (true residual). Gradients are as accurate
        as the solves: ``torch.autograd.gradcheck`` needs a direct solve or a tight rtol.
    backend : str, keyword-only
        Direct backend (``"auto"``, ``"cholmod"``, ``"mumps"``, ``"superlu"``).
    **options
        More keywords of :func:`femno.solvers.krylov` (``restart``, ``maxiter``, ...).

    Attributes
    ----------
    n_factorizations, n_adjoint_setups : int
        Numeric factorizations made, and preconditioners set up for :math:`A^{\mathsf T}`
        (0 for symmetric matrices and for direct solves).
    symmetric : bool or None
        Whether the last matrix was symmetric (to rounding).
    """

    def __init__(self, method: str = "direct", *, pc: str = "none", rtol: float = 1e-10,
                 backend: str = "auto", **options):
        self.method = str(method).lower()
        self.pc, self.rtol, self.backend, self.options = pc, float(rtol), backend, options
        if self.method != "direct":
            krylov(self.method, pc=pc, rtol=rtol, **options)  # validate now
        self._factor = None
        self._solver = self._solver_T = None
        self._A = self._AT = None
        self.symmetric = None
        self.n_factorizations = 0
        self.n_adjoint_setups = 0

    def _krylov(self):
        return krylov(self.method, pc=self.pc, rtol=self.rtol, reuse_pc=True,
                      on_fail="raise", **self.options)

    def forward(self, A, B):
        """``A^{-1} B``; ``A`` csr (n, n), ``B`` (n,) or (n, k) float64."""
        A = sp.csr_matrix(A, dtype=np.float64)
        same = (self._A is not None and self._A.shape == A.shape and self._A.nnz == A.nnz
                and np.array_equal(self._A.indptr, A.indptr)
                and np.array_equal(self._A.indices, A.indices)
                and np.array_equal(self._A.data, A.data))
        if not same:
            d = A - A.T
            self.symmetric = bool(d.nnz == 0 or abs(d).max() <= 1e-14 * abs(A).max())
            self._A, self._AT = A, None
            if self.method == "direct":
                if self._factor is None or self._factor.symmetric != self.symmetric:
                    pd = self.symmetric and bool(np.all(A.diagonal() > 0))
                    self._factor = sparse_factor(backend=self.backend, symmetric=self.symmetric,
                                                 positive_definite=pd)
                self._factor.factorize(A)
                self.n_factorizations += 1
        return self._apply(A, B, transpose=False)

    def adjoint(self, G):
        r""":math:`A^{-\mathsf T} G` for the matrix of the last :meth:`forward`."""
        if self._A is None:
            raise InputError("adjoint() needs a forward() first")
        return self._apply(self._A, G, transpose=True)

    def _apply(self, A, B, *, transpose):
        B = np.asarray(B, dtype=np.float64)
        if self.method == "direct":
            return self._factor.solve(B, transpose=transpose and not self.symmetric)
        if transpose and not self.symmetric:
            if self._AT is None:
                self._AT = A.T.tocsr()
                self.n_adjoint_setups += 1
            if self._solver_T is None:
                self._solver_T = self._krylov()
            solver, A = self._solver_T, self._AT
        else:
            if self._solver is None:
                self._solver = self._krylov()
            solver = self._solver
        if B.ndim == 1:
            return solver(A, B)
        return np.column_stack([solver(A, np.ascontiguousarray(B[:, j]))
                                for j in range(B.shape[1])])


def _function():
    torch = _torch()

    class _LinearSolve(torch.autograd.Function):
        @staticmethod
        def forward(ctx, values, b, A, rows, cols, solver):
            Bn = b.detach().cpu().numpy().astype(np.float64)
            X = solver.forward(A, Bn.T)  # b (n,) or (batch, n); solver takes columns
            x = torch.from_numpy(np.ascontiguousarray(np.asarray(X).T)).to(b.device)
            ctx.solver, ctx.rows, ctx.cols = solver, rows, cols
            ctx.save_for_backward(x)
            return x

        @staticmethod
        def backward(ctx, grad_x):
            (x,) = ctx.saved_tensors
            G = grad_x.detach().cpu().numpy().astype(np.float64)
            lam = np.asarray(ctx.solver.adjoint(G.T)).T  # same shape as x
            gb = gv = None
            if ctx.needs_input_grad[1]:
                gb = torch.from_numpy(np.ascontiguousarray(lam)).to(grad_x.device)
            if ctx.needs_input_grad[0]:
                xn = x.detach().cpu().numpy()
                lr, xc = lam[..., ctx.rows], xn[..., ctx.cols]
                g = -(lr * xc) if lam.ndim == 1 else -(lr * xc).sum(axis=0)
                gv = torch.from_numpy(np.ascontiguousarray(g)).to(grad_x.device)
            return gv, gb, None, None, None, None

    return _LinearSolve


_FN = None


def linear_solve(A, b, *, solver=None, method="direct", pc="none", rtol=1e-10, **options):
    r"""Solve :math:`A x = b`, differentiable in ``A``'s values and in ``b``.

    Parameters
    ----------
    A : torch sparse tensor (COO or CSR), shape (n, n), float64
        Its values may require grad (e.g. from :class:`~femno.hybrid.TorchAssembler`);
        the gradient is on its stored entries (see the module docstring). A scipy sparse
        matrix is accepted as a constant. Build CSR tensors with :func:`csr_tensor`:
        torch's own backward through ``torch.sparse_csr_tensor(..., values)`` forms a
        dense ``n x n`` gradient; ``csr_tensor`` lets the gradient reach ``values``
        directly (COO tensors are fine either way).
    b : torch.Tensor, shape (n,) or (batch, n), float64
        Right-hand side(s); the matrix is factorized / preconditioned once for the batch.
    solver : AdjointSolver, optional, keyword-only
        Keep one to reuse factorizations / hierarchies across calls (default: a new
        ``AdjointSolver(method, pc=pc, rtol=rtol, **options)`` per call).
    method, pc, rtol, **options : keyword-only
        See :class:`AdjointSolver`.

    Returns
    -------
    torch.Tensor, shape of ``b``, float64, on ``b``'s device
    """
    global _FN
    torch = _torch()
    if _FN is None:
        _FN = _function()
    if not isinstance(b, torch.Tensor):
        raise InputError(f"b must be a torch tensor, got {type(b).__name__}")
    if b.dtype != torch.float64:
        raise InputError(f"b must be float64 (femno's numerics), got {b.dtype}")
    M, rows, cols = to_scipy(A)
    n = M.shape[0]
    if b.dim() not in (1, 2) or b.shape[-1] != n:
        raise InputError(f"b must have shape ({n},) or (batch, {n}) for A of size {n}, "
                         f"got {tuple(b.shape)}")
    if not (np.all(np.isfinite(M.data)) and bool(torch.isfinite(b).all())):
        raise InputError("A or b contains NaN or inf")
    if solver is None:
        solver = AdjointSolver(method, pc=pc, rtol=rtol, **options)
    if (isinstance(A, torch.Tensor) and A.layout == torch.sparse_csr and A.requires_grad
            and getattr(A, "_femno_values", None) is None and 8 * n * n > DENSE_GRAD_LIMIT):
        raise InputError(f"the gradient of a torch CSR tensor made by torch.sparse_csr_tensor "
                         f"goes through a dense {n} x {n} matrix ({8 * n * n / 2**30:.1f} GiB); "
                         "build it with femno.hybrid.csr_tensor(crow, col, values, shape)")
    values = (_values(A) if isinstance(A, torch.Tensor)
              else torch.from_numpy(M.data))
    return _FN.apply(values, b, M, rows, cols, solver)
