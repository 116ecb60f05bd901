r"""Plane-strain linear elasticity with a log-normal Young's modulus.

.. math::
   -\nabla\cdot\sigma(u) = f_{\text{body}}, \qquad
   \sigma = 2\mu\,\varepsilon(u) + \lambda\,\operatorname{tr}\varepsilon(u)\, I,

with :math:`\lambda = E\nu/((1+\nu)(1-2\nu))`, :math:`\mu = E/(2(1+\nu))`,
:math:`u = 0` on the left edge (:math:`x = x_{\min}`) and either a traction
:math:`t` on the right edge (:math:`x = x_{\max}`) or a body force.
"""

from __future__ import annotations

import numpy as np
import skfem
from skfem.helpers import ddot, div, sym_grad

from femno.errors import InputError
from femno.fem.bc import boundary_dofs, neumann_load
from femno.fem.families.base import Family, positive_number
from femno.fem.nullspace import node_block_size, rigid_body_modes

__all__ = ["Elasticity", "lame"]


def lame(E, nu: float):
    r"""Lamé parameters :math:`(\lambda, \mu)` from Young's modulus and Poisson ratio."""
    return E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu)), E / (2.0 * (1.0 + nu))


@skfem.BilinearForm
def _elasticity(u, v, w):
    eu, ev = sym_grad(u), sym_grad(v)
    return 2.0 * w.mu * ddot(eu, ev) + w.lam * div(u) * div(v)


@skfem.LinearForm
def _body(v, w):
    return w.fx * v[0] + w.fy * v[1]


class Elasticity(Family):
    r"""2-D plane-strain elasticity, vector Lagrange elements, SPD.

    Options: ``E`` (mean scale :math:`E_0` of Young's modulus, 1.0), ``nu`` (0.3, in
    (-1, 0.5)), ``length`` (0.2), ``variance`` (0.25), ``load`` (``"traction"`` on the
    right edge or ``"body"``).
    Parameters: ``{"E": (nelems, nqp) positive, "load": (2,) vector}``;
    :math:`E = E_0 \exp(g)`; the load is :math:`(U(-0.5, 0.5), -U(0.5, 1.5))`.

    >>> import numpy as np
    >>> fam = Elasticity(n=4)
    >>> sys = fam.assemble(fam.sample(np.random.default_rng(0)))
    >>> sys.dofs  # 5 x 5 nodes, left column clamped, 2 components
    40
    """

    name = "elasticity"
    vector = True
    OPTIONS = {"E": 1.0, "nu": 0.3, "length": 0.2, "variance": 0.25, "load": "traction"}

    def _setup(self):
        if self.mesh.dim() != 2:
            raise InputError("the elasticity family is 2-D (plane strain); got a 3-D mesh")
        o = self.options
        o["E"] = positive_number(o["E"], "E")
        try:
            nu = float(o["nu"])
        except (TypeError, ValueError):
            raise InputError(f"nu must be a number in (-1, 0.5), got {o['nu']!r}") from None
        if not (-1.0 < nu < 0.5):
            raise InputError(f"nu (Poisson ratio) must lie in (-1, 0.5), got {o['nu']!r}")
        o["nu"] = nu
        positive_number(o["length"], "length")
        positive_number(o["variance"], "variance")
        if o["load"] not in ("traction", "body"):
            raise InputError(f"option 'load' must be 'traction' or 'body', got {o['load']!r}")
        eps = 1e-10 * float(np.max(self.hi - self.lo))
        self._right = lambda x: x[0] > self.hi[0] - eps
        self._left = lambda x: x[0] < self.lo[0] + eps

    def dirichlet_dofs(self):
        return boundary_dofs(self.basis, self._left)

    def sample(self, rng):
        o = self.options
        g = self.random_field(rng, length=o["length"], variance=o["variance"])
        load = np.array([rng.uniform(-0.5, 0.5), -rng.uniform(0.5, 1.5)])
        return {"E": o["E"] * np.exp(g), "load": load}

    def stiffness(self, E):
        """Full stiffness matrix (N, N) for Young's modulus ``E`` (number or array)."""
        E = self.coefficient(E, "E")
        lam, mu = lame(E, self.options["nu"])
        return _elasticity.assemble(self.basis, lam=lam, mu=mu).tocsr()

    def _load_vector(self, params):
        t = np.asarray(params.get("load", (0.0, 0.0)), dtype=np.float64)
        if t.shape != (2,) or not np.all(np.isfinite(t)):
            raise InputError(f"params['load'] must be a finite 2-vector, got {t!r}")
        if self.options["load"] == "traction":
            return neumann_load(self.basis, t, facets=self._right)
        ones = np.ones(self.qp_shape)
        return _body.assemble(self.basis, fx=t[0] * ones, fy=t[1] * ones)

    def matrix_terms(self):
        return [(_elasticity, {"lam": 1.0, "mu": 0.0}), (_elasticity, {"lam": 0.0, "mu": 1.0})]

    def matrix_coefficients(self, params):
        E = self.coefficient(params["E"], "E")
        return list(lame(E, self.options["nu"]))

    def assemble_full(self, params, *, matrix=True):
        return (self.stiffness(params["E"]) if matrix else None), self._load_vector(params)

    def near_nullspace(self):
        """The three rigid-body motions on the free dofs, and the node block size (2)."""
        free = self.free_dofs()
        return rigid_body_modes(self.basis, free), node_block_size(self.basis, free)

    def features(self, params):
        E = self.coefficient(params["E"], "E")
        return np.concatenate(
            [self.coarse(np.log(E).mean(axis=1)), np.asarray(params["load"], dtype=np.float64)]
        )

    def coefficient_summary(self, params):
        E = np.asarray(params["E"])
        return {"E_min": float(E.min()), "E_max": float(E.max()), "E_mean": float(E.mean())}
