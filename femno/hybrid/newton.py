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
from skfem.helpers import grad

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
    # (D : grad du) : grad v, D of shape (*g, *g, ne, nq), g = (d,) or (m, d)
    G = grad(u)
    k = G.ndim - 2
    sub = "abcd"[:k]
    Dg = np.einsum(f"{sub}{sub.upper()}...,{sub.upper()}...->{sub}...", w.D, G)
    return np.einsum(f"{sub}...,{sub}...->...", Dg, grad(v))


@skfem.BilinearForm
def _tangent_reaction(u, v, w):
    if u.ndim == 2:  # scalar field values (ne, nq)
        return w.c * u * v
    return np.einsum("ij...,j...,i...->...", w.c, u, v)


@skfem.LinearForm
def _residual_form(v, w):
    G = grad(v)
    k = G.ndim - 2
    sub = "abcd"[:k]
    flux_term = np.einsum(f"{sub}...,{sub}...->...", w.q, G)
    if v.ndim == 2:
        return flux_term + w.s * v
    return flux_term + np.einsum("i...,i...->...", w.s, v)


def _pointwise_jacobian(out, inp, shape):
    """d out[k, I] / d inp[k, J] for pointwise maps: (Q, *shape, *shape) by len(I) backward passes."""
    import torch

    Q = out.shape[0]
    J = np.zeros((Q, int(np.prod(shape)), int(np.prod(shape))))
    flat = out.reshape(Q, -1)
    n = flat.shape[1]
    for i in range(n):
        (gi,) = torch.autograd.grad(flat[:, i].sum(), inp, retain_graph=i < n - 1,
                                    allow_unused=True)
        if gi is not None:
            J[:, i, :] = gi.reshape(Q, -1).detach().numpy()
    return J.reshape((Q, *shape, *shape))


def _evaluate(model, arr, xt, name):
    """``model(arr, x)`` (pointwise, shape kept) and its Jacobian, as float64 numpy."""
    import torch

    X = torch.from_numpy(np.ascontiguousarray(arr)).requires_grad_(True)
    out = model(X, xt)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(arr.shape):
        raise InputError(f"{name} must return a tensor of shape {tuple(arr.shape)}, got "
                         f"{tuple(getattr(out, 'shape', ())) or type(out).__name__}")
    J = _pointwise_jacobian(out, X, arr.shape[1:])
    return out.detach().numpy().astype(np.float64), J


def model_terms(flux, reaction, grad_u, u, x):
    r"""Flux, reaction and their derivatives at the quadrature points, from torch.

    ``grad_u`` (Q, d) for a scalar field or (Q, m, d) for an ``m``-vector field, ``u``
    (Q,) or (Q, m), ``x`` (Q, d) float64 arrays. Returns ``(q, D, s, c)``: ``q`` shaped
    like ``grad_u``, ``D = dq/dgrad_u`` (Q, *g, *g), ``s`` like ``u`` and
    ``c = ds/du`` (Q, *u, *u), float64 (zeros for a missing term).
    """
    import torch

    Q = grad_u.shape[0]
    g_shape, u_shape = grad_u.shape[1:], u.shape[1:]
    xt = torch.from_numpy(x)
    q = np.zeros(grad_u.shape)
    D = np.zeros((Q, *g_shape, *g_shape))
    s = np.zeros(u.shape)
    c = np.zeros((Q, *u_shape, *u_shape))
    if flux is not None:
        q, D = _evaluate(flux, grad_u, xt, "flux")
    if reaction is not None:
        s, cc = _evaluate(reaction, u, xt, "reaction")
        c = cc if u_shape else cc.reshape(Q)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(s))):
        raise InputError("the model returned NaN or inf at some quadrature points")
    return q, D, s, c


def newton_solve(basis, *, flux=None, reaction=None, source=None, dirichlet=None, u0=None,
                 rtol=1e-10, atol=1e-14, maxiter=30, line_search=True, on_fail="raise"):
    r"""Newton's method for the weak form in the module docstring.

    Parameters
    ----------
    basis : skfem.CellBasis
        A scalar basis, or a vector one (``skfem.ElementVector``: ``m = d`` components;
        then ``grad_u`` is the displacement gradient and ``q`` a stress).
    flux : callable, optional
        ``flux(grad_u, x) -> q``, torch float64 tensors ``(Q, d) -> (Q, d)`` (vector
        fields: ``(Q, m, d) -> (Q, m, d)``, e.g. a first Piola-Kirchhoff stress from the
        displacement gradient), e.g. a ``torch.nn.Module``, or ``lambda g, x: g`` (the
        Laplacian). Default: that linear flux.
    reaction : callable, optional
        ``reaction(u, x) -> s``, ``(Q,) -> (Q,)`` torch tensors (vector: ``(Q, m)``).
    source : callable, float or array, optional
        ``f(x)`` for numpy points ``x`` of shape (Q, d) returning (Q,) (vector: (Q, m)),
        or a constant (a number; an ``(m,)`` vector for vector fields). Default 0.
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
    m = basis.mesh.dim() if isinstance(basis.elem, skfem.ElementVector) else None
    u_shape = () if m is None else (m,)
    g_shape = (d,) if m is None else (m, d)
    x_flat = np.ascontiguousarray(xq.reshape(d, -1).T)
    Q = ne * nq
    if source is None:
        fq = np.zeros((Q, *u_shape))
    elif callable(source):
        fq = np.asarray(source(x_flat), dtype=np.float64).reshape(Q, *u_shape)
    else:
        fq = np.broadcast_to(np.asarray(source, dtype=np.float64), (Q, *u_shape)).copy()

    def to_qp(a, shape):  # (Q, *shape) -> (*shape, ne, nq) as skfem wants it
        return np.moveaxis(a.reshape(ne, nq, *shape), (0, 1), (-2, -1))

    f = _residual_form.assemble(basis, q=np.zeros((*g_shape, ne, nq)), s=-to_qp(fq, u_shape))
    u = np.zeros(N) if u0 is None else np.array(u0, dtype=np.float64)
    if u.shape != (N,):
        raise InputError(f"u0 must have shape ({N},), got {u.shape}")
    u[D_dofs] = 0.0
    factor = sparse_factor(backend="auto", symmetric=False)

    def terms(u):
        ui = basis.interpolate(u)
        g = np.moveaxis(np.asarray(ui.grad), (-2, -1), (0, 1)).reshape(Q, *g_shape)
        val = np.moveaxis(np.asarray(ui), (-2, -1), (0, 1)).reshape(Q, *u_shape)
        return model_terms(flux, reaction, np.ascontiguousarray(g),
                           np.ascontiguousarray(val), x_flat)

    def residual(t):
        q, _, s, _ = t
        R = _residual_form.assemble(basis, q=to_qp(q, g_shape), s=to_qp(s, u_shape)) + f
        return R[free]

    t = terms(u)
    R = residual(t)
    hist = [float(np.linalg.norm(R))]
    tol = max(rtol * hist[0], atol)
    it = 0
    while hist[-1] > tol and it < maxiter:
        _, Dq, _, c = t
        J = (_tangent_flux.assemble(basis, D=to_qp(Dq, (*g_shape, *g_shape)))
             + _tangent_reaction.assemble(basis, c=to_qp(c, (*u_shape, *u_shape))))
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
