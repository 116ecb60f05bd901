r"""Time-dependent families beyond heat: advection-diffusion (nonsymmetric), the wave
equation (second order in time), Allen--Cahn (nonlinear) and heat with a coefficient
that changes in time (``heat-varying``: a new step matrix at every step).

``advection-diffusion``: :math:`u_t - \nabla\cdot(a\nabla u) + \mathbf w\cdot\nabla u = f`
with homogeneous Dirichlet data, log-normal :math:`a` (as in
:class:`~femno.fem.families.scalar.Darcy`), a constant wind :math:`\mathbf w` of speed
``wind`` in a random direction per sample, and a random sine-series initial condition
(as :class:`~femno.fem.families.scalar.Heat`). Because the wind is constant it is
divergence-free, so the convection matrix is skew-symmetric on the free dofs and the heat
equation's energy identity holds with the same form
(:mod:`femno.datagen.trajectory`). As a steady family it is one implicit Euler step,
:math:`(M + \Delta t (K(a) + C(\mathbf w)))u = M u_{prev} + \Delta t F`. Without
stabilization it is meant for moderate cell Péclet numbers,
:math:`|\mathbf w| h / (2 \min a) \lesssim 1`.

>>> fam = AdvectionDiffusion(n=8)
>>> p = fam.sample(np.random.default_rng(0))
>>> M, K, F = fam.operators(p)
>>> free = fam.free_dofs()
>>> C = K - fam.operators({**p, "wind": np.zeros(2)})[1]
>>> bool(abs((C + C.T)[free][:, free]).max() < 1e-12), bool(abs(C - C.T).max() > 1e-3)
(True, True)
"""

from __future__ import annotations

import numpy as np
import skfem
from skfem.helpers import grad

from femno.errors import InputError
from femno.fem.families.base import positive_number
from femno.fem.families.scalar import Heat, _weighted_mass

__all__ = ["AdvectionDiffusion", "Wave", "AllenCahn", "HeatVarying"]


@skfem.BilinearForm
def _convection_x(u, v, w):
    return w.c * grad(u)[0] * v


@skfem.BilinearForm
def _convection_y(u, v, w):
    return w.c * grad(u)[1] * v


class AdvectionDiffusion(Heat):
    r"""Heat with a constant random wind (nonsymmetric); see the module docstring.

    Options: those of :class:`~femno.fem.families.scalar.Heat` and ``wind`` (speed,
    default 5.0). Parameters: ``{"a": (nelems, nqp), "u_prev": (N,), "wind": (2,)}``.
    """

    name = "advection-diffusion"
    spd = False
    symmetric = False
    OPTIONS = {**Heat.OPTIONS, "wind": 5.0}

    def _setup(self):
        super()._setup()
        if self.mesh.p.shape[0] != 2:
            raise InputError("advection-diffusion is implemented on 2-D meshes")
        self.options["wind"] = positive_number(self.options["wind"], "wind")

    def sample(self, rng):
        params = super().sample(rng)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        params["wind"] = self.options["wind"] * np.array([np.cos(angle), np.sin(angle)])
        return params

    def _wind(self, params):
        w = np.asarray(params["wind"], dtype=np.float64)
        if w.shape != (2,) or not np.all(np.isfinite(w)):
            raise InputError("params['wind'] must be a finite vector of length 2")
        return w

    def matrix_terms(self):
        return super().matrix_terms() + [(_convection_x, {"c": 1.0}), (_convection_y, {"c": 1.0})]

    def matrix_coefficients(self, params):
        w = self.options["dt"] * self._wind(params)
        return super().matrix_coefficients(params) + [float(w[0]), float(w[1])]

    def _convection(self, params):
        w = self._wind(params)
        return (w[0] * _convection_x.assemble(self.basis, c=1.0)
                + w[1] * _convection_y.assemble(self.basis, c=1.0)).tocsr()

    def operators(self, params):
        M, K, F = super().operators(params)
        return M, (K + self._convection(params)).tocsr(), F

    def assemble_full(self, params, *, matrix=True):
        A, b = super().assemble_full(params, matrix=matrix)
        if matrix:
            A = (A + self.options["dt"] * self._convection(params)).tocsr()
        return A, b

    def features(self, params):
        return np.concatenate([super().features(params), self._wind(params)])



class Wave(Heat):
    r"""The wave equation :math:`u_{tt} - \nabla\cdot(a\nabla u) = f`, second order in time.

    :math:`a` (squared wave speed) log-normal as in :class:`~femno.fem.families.scalar.Darcy`,
    homogeneous Dirichlet data, initial displacement a random sine series
    (``u_prev``), initial velocity 0, default source ``f = 0``.
    :func:`femno.datagen.trajectory.solve_trajectory` integrates it with the
    average-acceleration Newmark scheme (:math:`\beta = 1/4, \gamma = 1/2`), which
    conserves :math:`\tfrac12 v^T M v + \tfrac12 u^T K u - F^T u` exactly. As a steady
    family it is that scheme's first step, the acceleration solve

    .. math:: (M + \beta\Delta t^2 K(a))\,\ddot u^1 = F - K(a)\,u^0 .

    Options: those of Heat (``f`` defaults to 0). Parameters as Heat's.

    >>> fam = Wave(n=8)
    >>> s = fam.assemble(fam.sample(np.random.default_rng(0)))
    >>> bool(abs(s.A - fam.assemble(s.params, fast=False).A).max() < 1e-12)
    True
    """

    name = "wave"
    time_order = 2
    OPTIONS = {**Heat.OPTIONS, "f": 0.0}
    BETA = 0.25

    def matrix_coefficients(self, params):
        dt = self.options["dt"]
        return [1.0, self.BETA * dt * dt * self.coefficient(params["a"], "a")]

    def assemble_full(self, params, *, matrix=True):
        M, K, F = self.operators(params)
        dt = self.options["dt"]
        A = (M + self.BETA * dt * dt * K).tocsr() if matrix else None
        return A, F - K @ self._u_prev(params)


@skfem.LinearForm
def _cubic(v, w):
    return (w.u ** 3 - w.u) * v


@skfem.Functional
def _double_well(w):
    return 0.25 * (w.u ** 2 - 1.0) ** 2


class AllenCahn(Heat):
    r"""Allen--Cahn :math:`u_t - \epsilon^2\nabla\cdot(a\nabla u) + u^3 - u = 0`, nonlinear.

    :math:`a` log-normal as in :class:`~femno.fem.families.scalar.Darcy` (a heterogeneous
    interface energy), homogeneous Dirichlet data, initial condition the random sine
    series of :class:`~femno.fem.families.scalar.Heat` (``u_prev``). Implicit Euler with
    Newton's method per step (:func:`femno.datagen.trajectory.solve_trajectory`); the
    residual of a step is

    .. math:: R(u) = \tfrac{1}{\Delta t} M (u - u^n) + \epsilon^2 K(a)\,u + N(u),
              \qquad N(u)_i = \int (u^3 - u)\,\phi_i ,

    with Jacobian :math:`J(u) = \tfrac1{\Delta t} M + \epsilon^2 K(a) + M_{3u^2 - 1}`
    (symmetric; positive definite for :math:`\Delta t < 1`). It is a gradient flow of
    :math:`E(u) = \int \tfrac{\epsilon^2}{2} a|\nabla u|^2 + \tfrac14 (u^2 - 1)^2`, and
    implicit Euler dissipates it: :math:`E(u^{n+1}) - E(u^n) \le -(\tfrac1{\Delta t} -
    \tfrac12)\|u^{n+1} - u^n\|_M^2` for :math:`\Delta t < 2` (the double well is
    semiconvex with constant 1). As a steady family it is the first Newton step from
    ``u_prev``, :math:`J(u^0)\,\delta = -R(u^0)`.

    Options: those of Heat, ``eps`` (0.05), ``amplitude`` (2.0: the initial condition is
    ``tanh(amplitude * sine series)``, values in (-1, 1)), ``dt`` default 0.01.
    """

    name = "allen-cahn"
    nonlinear = True
    OPTIONS = {**Heat.OPTIONS, "eps": 0.05, "amplitude": 2.0, "f": 0.0}

    def _setup(self):
        super()._setup()
        self.options["eps"] = positive_number(self.options["eps"], "eps")
        self.options["amplitude"] = positive_number(self.options["amplitude"], "amplitude")
        if self.options["dt"] >= 1.0:
            raise InputError(f"allen-cahn needs dt < 1 (Newton's Jacobian is then SPD), "
                             f"got {self.options['dt']}")

    def sample(self, rng):
        params = super().sample(rng)
        params["u_prev"] = np.tanh(self.options["amplitude"] * params["u_prev"])
        return params

    def matrix_terms(self):
        return None  # the Jacobian depends on u: scikit-fem assembly

    def operators(self, params):
        """``(M, eps^2 K(a), F)``: the linear part (``F = 0``); see :meth:`nonlinear_terms`."""
        M, K, F = super().operators(params)
        return M, (self.options["eps"] ** 2 * K).tocsr(), F

    def nonlinear_terms(self, u, *, jacobian=True):
        r"""``(N(u), M_{3u^2-1}, \int \tfrac14 (u^2-1)^2)`` for a full FE vector ``u``
        (the Jacobian part ``None`` unless ``jacobian``)."""
        u = np.asarray(u, dtype=np.float64)
        phi, dx, edofs = self._quadrature_kernel()
        uq = np.einsum("ben,be->en", phi, u[edofs])  # u at the quadrature points (ne, nq)
        wq = (uq ** 3 - uq) * dx
        N = np.bincount(edofs.ravel(), weights=np.einsum("ben,en->be", phi, wq).ravel(),
                        minlength=self.basis.N)
        jac = (_weighted_mass.assemble(self.basis, c=3.0 * uq ** 2 - 1.0).tocsr()
               if jacobian else None)
        return N, jac, float(np.sum(0.25 * (uq ** 2 - 1.0) ** 2 * dx))

    def _quadrature_kernel(self):
        """Basis values at the quadrature points ``phi`` (nb, ne, nq), weights ``dx``
        (ne, nq) and ``element_dofs`` (nb, ne), cached: the residual :math:`N(u)` of a
        chord iteration is then two contractions and a scatter (4x cheaper than
        scikit-fem's form assembly, which was 79 % of a 3-D chord step)."""
        key = "quadrature-kernel"
        if key not in self._cache:
            b = self.basis
            phi = np.stack([np.broadcast_to(np.asarray(b.basis[i][0]), b.dx.shape)
                            for i in range(b.element_dofs.shape[0])])
            self._cache[key] = (np.ascontiguousarray(phi), np.asarray(b.dx), b.element_dofs)
        return self._cache[key]

    def assemble_full(self, params, *, matrix=True):
        M, K, _ = self.operators(params)
        u = self._u_prev(params)
        N, Jn, _ = self.nonlinear_terms(u)
        A = (M / self.options["dt"] + K + Jn).tocsr() if matrix else None
        return A, -(K @ u + N)


class HeatVarying(Heat):
    r"""Heat with a travelling modulation of the coefficient: the operator changes in time.

    .. math:: u_t - \nabla\cdot(a(x, t)\nabla u) = f, \qquad
              a(x, t) = a_0(x)\,\exp\!\big(\beta \sin(2\pi(\mathbf d\cdot\hat x/\lambda
              - t/P) + \varphi)\big),

    :math:`a_0` log-normal as in :class:`~femno.fem.families.scalar.Darcy`,
    :math:`\hat x` the coordinates scaled to the unit box, a random unit direction
    :math:`\mathbf d` and phase :math:`\varphi` per sample, wavelength :math:`\lambda`
    and period :math:`P`: a band of high and low conductivity sweeps the domain (a
    moving heat-treatment zone, a travelling phase front). The θ-scheme's step matrix
    :math:`M + \theta\Delta t K(a(t_{n+1}))` is new at every step, so a factorization
    or AMG hierarchy cannot simply be reused
    (:mod:`femno.datagen.varying_step` chooses how to solve the steps). As a steady
    family it is the first implicit Euler step, at :math:`t = \Delta t`.

    Options: those of Heat, ``beta`` (1.0: the coefficient swings by
    :math:`e^{\pm\beta}`), ``wavelength`` (0.5), ``period`` (0.25).
    Parameters: Heat's and ``direction`` (dim,), ``phase`` (float).

    >>> fam = HeatVarying(n=8)
    >>> p = fam.sample(np.random.default_rng(0))
    >>> a0, a1 = fam.coefficient_at(p, 0.0), fam.coefficient_at(p, 0.05)
    >>> bool(np.all(a0 > 0)), bool(np.abs(np.log(a1 / a0)).max() > 0.1)
    (True, True)
    >>> s = fam.assemble(p)
    >>> bool(abs(s.A - fam.assemble(p, fast=False).A).max() < 1e-12)
    True
    """

    name = "heat-varying"
    time_dependent = True
    OPTIONS = {**Heat.OPTIONS, "beta": 1.0, "wavelength": 0.5, "period": 0.25}

    def _setup(self):
        super()._setup()
        o = self.options
        o["beta"] = float(o["beta"])
        if not np.isfinite(o["beta"]) or o["beta"] < 0:
            raise InputError(f"beta must be a finite number >= 0, got {o['beta']}")
        o["wavelength"] = positive_number(o["wavelength"], "wavelength")
        o["period"] = positive_number(o["period"], "period")

    def sample(self, rng):
        params = super().sample(rng)
        d = rng.standard_normal(self.mesh.p.shape[0])
        params["direction"] = d / np.linalg.norm(d)
        params["phase"] = float(rng.uniform(0.0, 2.0 * np.pi))
        return params

    def coefficient_at(self, params, t) -> np.ndarray:
        """:math:`a(x, t)` at the quadrature points, shape (nelems, nqp), float64."""
        o = self.options
        d = np.asarray(params.get("direction"), dtype=np.float64)
        dim = self.mesh.p.shape[0]
        if d.shape != (dim,) or not np.all(np.isfinite(d)):
            raise InputError(f"params['direction'] must be a finite vector of length {dim}")
        if not np.isfinite(t):
            raise InputError(f"time must be finite, got {t}")
        if "scaled-qp" not in self._cache:  # quadrature points scaled to the unit box
            x = self.basis.mapping.F(self.basis.X)
            span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
            self._cache["scaled-qp"] = (x - self.lo[:, None, None]) / span[:, None, None]
        s = np.einsum("i,ieq->eq", d, self._cache["scaled-qp"])
        arg = 2.0 * np.pi * (s / o["wavelength"] - float(t) / o["period"]) + float(params["phase"])
        return self.coefficient(params["a"], "a") * np.exp(o["beta"] * np.sin(arg))

    def matrix_terms(self):  # declared here, with assemble_full: the fast path stays on
        return super().matrix_terms()

    def matrix_coefficients(self, params):
        dt = self.options["dt"]
        return [1.0, dt * self.coefficient_at(params, dt)]

    def operators_at(self, params, t):
        """``(M, K(a(t)), F)``: full mass and stiffness (CSR, scikit-fem assembly) and load."""
        from femno.fem.families.scalar import _diffusion

        K = _diffusion.assemble(self.basis, a=self.coefficient_at(params, t)).tocsr()
        return self._matrix("mass").tocsr(), K, self._load(self.options["f"])

    def operators(self, params):
        return self.operators_at(params, 0.0)

    def condensed_operators_at(self, params, t):
        """``(M, K(a(t)), F)`` on the free dofs, values filled into a fixed pattern
        (:class:`~femno.fem.fast_assembly.CondensedAssembler`: no scikit-fem call per
        step); ``M`` and ``K`` share one pattern (CSR), ``F`` shape (n_free,)."""
        asm = self._assembler()
        if asm is None:  # kernels over the memory budget: scikit-fem's path
            free = self.free_dofs()
            M, K, F = self.operators_at(params, t)
            return M[free][:, free].tocsr(), K[free][:, free].tocsr(), F[free]
        if "free-load" not in self._cache:
            self._cache["free-load"] = self._load(self.options["f"])[self.free_dofs()]
            self._cache["free-mass"] = asm.matrix(asm.data(0, 1.0))
        K = asm.matrix(asm.data(1, self.coefficient_at(params, t)))
        return self._cache["free-mass"], K, self._cache["free-load"]

    def assemble_full(self, params, *, matrix=True):
        M, K, F = self.operators_at(params, self.options["dt"])
        dt = self.options["dt"]
        A = (M + dt * K).tocsr() if matrix else None
        return A, M @ self._u_prev(params) + dt * F

    def features(self, params):
        return np.concatenate([super().features(params), np.asarray(params["direction"]),
                               [np.cos(params["phase"]), np.sin(params["phase"])]])
