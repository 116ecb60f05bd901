"""The zoo's families as ``femno generate`` runs them: user files on femno's ``Family``.

:mod:`zoo` builds lists of systems for :mod:`bench_zoo` (solvers only).  The whole
pipeline (:mod:`bench_generate`: sampling, assembly, solve, write) needs families that
``femno generate FILE.py:NAME`` can load.  These are written the way a user would write
them against :class:`femno.fem.families.Family`, with :meth:`~Family.matrix_terms` so
that femno's value-only reassembly applies; :meth:`assemble_full` is the plain
scikit-fem assembly the naive loop times.  The physics and parameter ranges follow
:mod:`zoo`:

* ``ConvDiff``: :math:`-\\varepsilon \\nabla\\cdot(\\kappa\\nabla u) + w\\cdot\\nabla u = 1`,
  P1, nonsymmetric; random wind direction and speed, :math:`\\kappa` from 4 smooth
  modes; option ``dominated`` (:math:`\\varepsilon = 10^{-3}`, streamline diffusion
  :math:`\\tau h (w\\cdot\\nabla u)(w\\cdot\\nabla v)`) or mild (:math:`\\varepsilon = 1`,
  :math:`|w| \\le 20`).
* ``Anisotropic``: :math:`-\\nabla\\cdot(K\\nabla u) = 1`, :math:`K = R(\\alpha)
  \\mathrm{diag}(1, 10^{-3}) R(\\alpha)^T`, random angle.
* ``Elasticity3D``: P1 vector tetrahedra on the unit cube, clamped at x = 0, body force
  :math:`-e_z`, :math:`E` from 2 smooth modes, :math:`\\nu \\sim U(0.2, 0.4)`; gives the
  rigid-body modes (:meth:`near_nullspace`).

The 3-D Darcy row of :mod:`bench_generate` uses femno's ``darcy3d`` recipe with
``cell="tet"``; the user-file row uses :mod:`zoo_user_family` (no ``matrix_terms``:
scikit-fem assembly every sample).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import skfem as fem
from skfem.helpers import ddot, dot, grad, sym_grad, trace

from femno.fem.families import Family
from femno.fem.nullspace import node_block_size, rigid_body_modes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo import _modes  # noqa: E402  (the zoo's smooth coefficient modes, one definition)


@fem.BilinearForm
def _diffusion(u, v, w):
    return w.a * dot(grad(u), grad(v))


@fem.BilinearForm
def _convection(u, v, w):
    return (w.wx * grad(u)[0] + w.wy * grad(u)[1]) * v


def _tensor(d1, d2):
    @fem.BilinearForm
    def form(u, v, w):
        if d1 == d2:
            return w.k * grad(u)[d1] * grad(v)[d1]
        return w.k * (grad(u)[d1] * grad(v)[d2] + grad(u)[d2] * grad(v)[d1])
    return form


_KXX, _KYY, _KXY = _tensor(0, 0), _tensor(1, 1), _tensor(0, 1)


class _Modes(Family):
    """A family whose coefficient is a positive combination of K fixed smooth modes."""

    K = 4

    def _setup(self):
        self._phi = _modes(self.K, 0, self.mesh.dim())  # the modes of the zoo's seed 0

    def field(self, theta):
        """The coefficient at the quadrature points, shape (nelems, nqp).

        The K modes are evaluated once per mesh (an affine decomposition), then combined.
        """
        if "modes" not in self._cache:
            x = self.quadrature_points.T.reshape(-1, *self.qp_shape)  # (dim, nelems, nqp)
            self._cache["modes"] = np.stack([phi(x) for phi in self._phi])
        return np.tensordot(np.asarray(theta, dtype=np.float64), self._cache["modes"], axes=1)

    def _rhs(self, form=lambda v, w: v):
        """The load vector of ``form`` (default f = 1), assembled once."""
        if "rhs" not in self._cache:
            self._cache["rhs"] = fem.LinearForm(form).assemble(self.basis)
        return self._cache["rhs"]


class ConvDiff(_Modes):
    """Nonsymmetric convection-diffusion; ``dominated`` picks the convection-dominated case."""

    name = "zoo-convdiff"
    symmetric = False
    spd = False
    OPTIONS = {"dominated": False}

    def sample(self, rng):
        dom = bool(self.options["dominated"])
        speed = rng.uniform(0.5, 1.0) if dom else rng.uniform(5.0, 20.0)
        ang = rng.uniform(0, 2 * np.pi)
        return {"theta": rng.uniform(0.5, 2.0, self.K), "wind": speed * np.array([np.cos(ang), np.sin(ang)])}

    def _coefficients(self, params):
        eps = 1e-3 if self.options["dominated"] else 1.0
        wx, wy = (float(c) for c in params["wind"])
        coefs = {"a": eps * self.field(params["theta"]), "wx": wx, "wy": wy}
        if self.options["dominated"]:
            tau = 0.5 / self.n / max(np.hypot(wx, wy), 1e-12)
            coefs.update(kxx=tau * wx * wx, kyy=tau * wy * wy, kxy=tau * wx * wy)
        return coefs

    def matrix_terms(self):
        terms = [(_diffusion, {"a": 1.0}), (_convection, {"wx": 1.0, "wy": 0.0}),
                 (_convection, {"wx": 0.0, "wy": 1.0})]
        if self.options["dominated"]:
            terms += [(_KXX, {"k": 1.0}), (_KYY, {"k": 1.0}), (_KXY, {"k": 1.0})]
        return terms

    def matrix_coefficients(self, params):
        c = self._coefficients(params)
        out = [c["a"], c["wx"], c["wy"]]
        return out + ([c["kxx"], c["kyy"], c["kxy"]] if self.options["dominated"] else [])

    def assemble_full(self, params, *, matrix=True):
        K = None
        if matrix:
            c = self._coefficients(params)
            K = _diffusion.assemble(self.basis, a=c["a"]) + _convection.assemble(
                self.basis, wx=c["wx"], wy=c["wy"])
            if self.options["dominated"]:
                K = K + sum(f.assemble(self.basis, k=c[key])
                            for f, key in ((_KXX, "kxx"), (_KYY, "kyy"), (_KXY, "kxy")))
        return K, self._rhs()

    def features(self, params):
        return np.concatenate([params["theta"], params["wind"]])


class Anisotropic(_Modes):
    """Rotated anisotropic diffusion, ratio 1e-3, random angle per sample."""

    name = "zoo-anisotropic"

    def sample(self, rng):
        return {"angle": float(rng.uniform(0, np.pi))}

    def _k(self, params):
        c, s, e = np.cos(params["angle"]), np.sin(params["angle"]), 1e-3
        return c * c + e * s * s, s * s + e * c * c, (1 - e) * c * s

    def matrix_terms(self):
        return [(_KXX, {"k": 1.0}), (_KYY, {"k": 1.0}), (_KXY, {"k": 1.0})]

    def matrix_coefficients(self, params):
        return list(self._k(params))

    def assemble_full(self, params, *, matrix=True):
        K = None
        if matrix:
            kxx, kyy, kxy = self._k(params)
            K = (_KXX.assemble(self.basis, k=kxx) + _KYY.assemble(self.basis, k=kyy)
                 + _KXY.assemble(self.basis, k=kxy))
        return K, self._rhs()

    def features(self, params):
        return np.array([params["angle"]])


@fem.BilinearForm
def _lame(u, v, w):
    return w.lam * trace(sym_grad(u)) * trace(sym_grad(v)) + 2.0 * w.mu * ddot(sym_grad(u), sym_grad(v))


class Elasticity3D(_Modes):
    """3-D linear elasticity, P1 vector tetrahedra on the unit cube (``n`` cells per side)."""

    name = "zoo-elasticity3d"
    vector = True
    K = 2

    def __init__(self, *, n=16, mesh=None, **kw):
        if mesh is None:
            t = np.linspace(0.0, 1.0, int(n) + 1)
            mesh = fem.MeshTet.init_tensor(t, t, t)
        super().__init__(n=n, mesh=mesh, **kw)

    def dirichlet_dofs(self):
        return self.basis.get_dofs(lambda x: np.isclose(x[0], 0.0)).all()

    def sample(self, rng):
        return {"theta": rng.uniform(0.5, 2.0, self.K), "nu": float(rng.uniform(0.2, 0.4))}

    def _lame_fields(self, params):
        E, nu = self.field(params["theta"]), float(params["nu"])
        return E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))

    def matrix_terms(self):
        return [(_lame, {"lam": 1.0, "mu": 0.0}), (_lame, {"lam": 0.0, "mu": 1.0})]

    def matrix_coefficients(self, params):
        return list(self._lame_fields(params))

    def assemble_full(self, params, *, matrix=True):
        K = None
        if matrix:
            lam, mu = self._lame_fields(params)
            K = _lame.assemble(self.basis, lam=lam, mu=mu)
        return K, self._rhs(lambda v, w: -v[2])

    def near_nullspace(self):
        free = self.free_dofs()
        return rigid_body_modes(self.basis, free), node_block_size(self.basis, free)

    def features(self, params):
        return np.concatenate([params["theta"], [params["nu"]]])
