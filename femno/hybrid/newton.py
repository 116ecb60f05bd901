r"""Neural terms inside a nonlinear finite-element solve: :func:`newton_solve`.

A user's torch models enter the weak form of a scalar problem as a constitutive law
(flux) and/or a reaction term,

.. math:: R(u)_i = \int_\Omega q(\nabla u, x)\cdot\nabla\varphi_i
          + s(u, x)\,\varphi_i - f\,\varphi_i \,dx = 0, \qquad u = 0 \text{ on } \Gamma_D,

with ``flux`` :math:`q: (Q, d) \to (Q, d)` and ``reaction`` :math:`s: (Q,) \to (Q,)`
evaluated *batched* at all ``Q`` quadrature points at once. The consistent tangent comes
from autograd of the same models,

.. math:: J_{ij} = \int_\Omega \Big(\frac{\partial q}{\partial \nabla u}\nabla\varphi_j\Big)
          \cdot\nabla\varphi_i + \frac{\partial s}{\partial u}\varphi_j\varphi_i\,dx,

(:math:`\partial q/\partial\nabla u` as ``(Q, d, d)``, ``d`` backward passes), so Newton
converges quadratically near the solution (the residual history shows it). The models
must act *pointwise* (row ``k`` of the output depends only on row ``k`` of the input, as
an MLP applied to a batch does): the tangent is read from gradients of sums.

>>> import numpy as np, torch, skfem
>>> from femno.fem.mesh import unit_square
>>> basis = skfem.Basis(unit_square(8), skfem.ElementTriP1())
>>> res = newton_solve(basis, flux=lambda g, x: (1 + (g**2).sum(1, keepdim=True)) * g,
...                    source=lambda x: np.full(x.shape[0], 10.0))
>>> res.converged, res.iterations <= 8
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import skfem
from skfem.helpers import dot, grad

from femno.errors import ConvergenceError, InputError
from femno.fem.bc import boundary_dofs
from femno.solvers.factor import sparse_factor

__all__ = ["newton_solve", "NewtonResult", "model_terms"]


@dataclass
class NewtonResult:
    """What :func:`newton_solve` did.

    Attributes
    ----------
    u : ndarray, shape (basis.N,)
        The FE coefficients (zero on the Dirichlet dofs).
    residuals : list of float
        :math:`\\|R(u_k)\\|_2` per Newton iterate, the initial guess first.
    iterations : int
    converged : bool
    orders : list of float
        :math:`\\log(r_{k+1}/r_k) / \\log(r_k/r_{k-1})` along the history (about 2 where
        Newton converges quadratically).
    """

    u: np.ndarray
    residuals: list = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    orders: list = field(default_factory=list)


@skfem.BilinearForm
def _tangent_flux(u, v, w):
    # (D grad u) . grad v, D of shape (d, d, ne, nq)
    Dg = np.einsum("ij...,j...->i...", w.D, grad(u))
    return dot(Dg, grad(v))


@skfem.BilinearForm
def _tangent_reaction(u, v, w):
    return w.c * u * v


@skfem.LinearForm
def _residual_form(v, w):
    return dot(w.q, grad(v)) + w.s * v


def model_terms(flux, reaction, grad_u, u, x):
    r"""Flux, reaction and their derivatives at the quadrature points, from torch.

    ``grad_u`` (Q, d), ``u`` (Q,), ``x`` (Q, d) float64 arrays. Returns ``(q (Q, d),
    D (Q, d, d), s (Q,), c (Q,))`` as float64 numpy arrays (zeros for a missing term).
    """
    import torch

    Q, d = grad_u.shape
    xt = torch.from_numpy(x)
    q = np.zeros((Q, d))
    D = np.zeros((Q, d, d))
    s = np.zeros(Q)
    c = np.zeros(Q)
    if flux is not None:
        G = torch.from_numpy(grad_u).requires_grad_(True)
        out = flux(G, xt)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (Q, d):
            raise InputError(f"flux must return a tensor of shape ({Q}, {d}), got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        for i in range(d):
            (gi,) = torch.autograd.grad(out[:, i].sum(), G, retain_graph=i < d - 1,
                                        allow_unused=True)
            if gi is not None:
                D[:, i, :] = gi.detach().numpy()
        q = out.detach().numpy().astype(np.float64)
    if reaction is not None:
        U = torch.from_numpy(u).requires_grad_(True)
        out = reaction(U, xt)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (Q,):
            raise InputError(f"reaction must return a tensor of shape ({Q},), got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        (gu,) = torch.autograd.grad(out.sum(), U, allow_unused=True)
        s = out.detach().numpy().astype(np.float64)
        if gu is not None:
            c = gu.detach().numpy()
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(s))):
        raise InputError("the model returned NaN or inf at some quadrature points")
    return q, D, s, c


def newton_solve(basis, *, flux=None, reaction=None, source=None, dirichlet=None, u0=None,
                 rtol=1e-10, atol=1e-14, maxiter=30, line_search=True, on_fail="raise"):
    r"""Newton's method for the weak form in the module docstring.

    Parameters
    ----------
    basis : skfem.CellBasis
        A scalar basis.
    flux : callable, optional
        ``flux(grad_u, x) -> q``, torch float64 tensors ``(Q, d) -> (Q, d)`` (e.g. a
        ``torch.nn.Module`` applied to ``grad_u``, or ``lambda g, x: g`` for the Laplacian).
        Default: the linear flux :math:`q = \nabla u`.
    reaction : callable, optional
        ``reaction(u, x) -> s``, ``(Q,) -> (Q,)`` torch tensors.
    source : callable or float, optional
        ``f(x)`` for numpy points ``x`` of shape (Q, d), or a constant (default 0).
    dirichlet : array_like of int, optional
        Dofs held at zero (default: the whole boundary).
    u0 : ndarray, shape (basis.N,), optional
        Initial guess (default zero).
    rtol, atol : float
        Stop when :math:`\|R(u_k)\|_2 \le \max(\mathrm{rtol}\,\|R(u_0)\|_2, \mathrm{atol})`.
    maxiter : int
    line_search : bool
        Halve the step (at most 10 times) while the residual norm does not decrease.
    on_fail : {"raise", "ignore"}

    Returns
    -------
    NewtonResult
    """
    if flux is None:
        flux = lambda g, x: g  # noqa: E731 - the Laplacian
    if on_fail not in ("raise", "ignore"):
        raise InputError(f"on_fail must be 'raise' or 'ignore', got {on_fail!r}")
    if int(maxiter) != maxiter or maxiter < 1:
        raise InputError(f"maxiter must be a positive integer, got {maxiter!r}")
    N = basis.N
    D_dofs = boundary_dofs(basis) if dirichlet is None else np.asarray(dirichlet, dtype=np.int64)
    free = np.setdiff1d(np.arange(N), D_dofs)
    ne, nq = basis.dx.shape
    xq = basis.mapping.F(basis.X)  # (d, ne, nq)
    d = xq.shape[0]
    x_flat = np.ascontiguousarray(xq.reshape(d, -1).T)
    if source is None:
        fq = np.zeros((ne, nq))
    elif callable(source):
        fq = np.asarray(source(x_flat), dtype=np.float64).reshape(ne, nq)
    else:
        fq = np.full((ne, nq), float(source))
    f = _residual_form.assemble(basis, q=np.zeros((d, ne, nq)), s=-fq)  # - int f v
    u = np.zeros(N) if u0 is None else np.array(u0, dtype=np.float64)
    if u.shape != (N,):
        raise InputError(f"u0 must have shape ({N},), got {u.shape}")
    u[D_dofs] = 0.0
    factor = sparse_factor(backend="auto", symmetric=False)

    def terms(u):
        ui = basis.interpolate(u)
        g = np.ascontiguousarray(ui.grad.reshape(d, -1).T)
        return model_terms(flux, reaction, g, np.array(ui).ravel(), x_flat)

    def residual(t):
        q, _, s, _ = t
        R = _residual_form.assemble(basis, q=q.T.reshape(d, ne, nq), s=s.reshape(ne, nq)) + f
        return R[free]

    t = terms(u)
    R = residual(t)
    hist = [float(np.linalg.norm(R))]
    tol = max(rtol * hist[0], atol)
    it = 0
    while hist[-1] > tol and it < maxiter:
        _, Dq, _, c = t
        J = (_tangent_flux.assemble(basis, D=np.moveaxis(Dq, 0, -1).reshape(d, d, ne, nq))
             + _tangent_reaction.assemble(basis, c=c.reshape(ne, nq)))
        Jf = sp.csr_matrix(J[free][:, free])
        factor.factorize(Jf)
        du = np.zeros(N)
        du[free] = -factor.solve(R)
        step = 1.0
        for _ in range(10 if line_search else 0):
            t_new = terms(u + step * du)
            R_new = residual(t_new)
            if np.linalg.norm(R_new) < hist[-1]:
                break
            step *= 0.5
        else:
            t_new = terms(u + step * du)
            R_new = residual(t_new)
        u = u + step * du
        t, R = t_new, R_new
        hist.append(float(np.linalg.norm(R)))
        it += 1
    factor.close()
    orders = [float(np.log(hist[k + 1] / hist[k]) / np.log(hist[k] / hist[k - 1]))
              for k in range(1, len(hist) - 1)
              if hist[k + 1] > 0 and hist[k] != hist[k - 1] and hist[k] > 0]
    res = NewtonResult(u=u, residuals=hist, iterations=it, converged=hist[-1] <= tol,
                       orders=orders)
    if not res.converged and on_fail == "raise":
        raise ConvergenceError(f"Newton did not converge in {it} iterations: residual "
                               f"{hist[-1]:.3e} > {tol:.3e} (history {hist})", x=u)
    return res
