"""A user's family file, written against femno's ``Family`` interface: reaction-diffusion
-div(kappa grad u) + c u = 1 on the unit square, P1, zero Dirichlet data on the boundary.

Loaded by the zoo benchmark through ``femno.datagen.runner.load_family("FILE.py:NAME")``,
exactly as ``femno generate FILE.py:ReactionDiffusion`` would.
"""

import numpy as np
import skfem as fem
from skfem.helpers import dot, grad

from femno.fem.families import Family


class ReactionDiffusion(Family):
    """kappa = exp(a1 cos(pi x) + a2 cos(pi y)), c ~ U(0, 50), f = 1."""

    name = "reaction-diffusion"

    def sample(self, rng):
        return {"a": rng.uniform(-1, 1, 2).tolist(), "c": float(rng.uniform(0, 50))}

    def assemble_full(self, params, *, matrix=True):
        a1, a2 = params["a"]
        c = params["c"]

        @fem.BilinearForm
        def form(u, v, w):
            x, y = w.x
            kap = np.exp(a1 * np.cos(np.pi * x) + a2 * np.cos(np.pi * y))
            return kap * dot(grad(u), grad(v)) + c * u * v

        @fem.LinearForm
        def rhs(v, w):
            return v

        return (form.assemble(self.basis) if matrix else None), rhs.assemble(self.basis)

    def features(self, params):
        return np.array([*params["a"], params["c"]])
