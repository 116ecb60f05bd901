"""A complete user-defined PDE family for femno (see docs/own-family.md).

Heat conduction in a plate with a random conductivity and a random hot spot:

    -div(kappa grad u) = f            in the unit square (or any 2-D mesh),
    u = 0                             on the left and right edges (cooled),
    kappa du/dn = 0                   on the top and bottom edges (insulated),

    kappa(x, y) = exp(a1 cos(pi x) + a2 cos(pi y)),   a1, a2 ~ U(-contrast, contrast),
    f(x, y)     = exp(-|x - c|^2 / (2 width^2)) / (2 pi width^2),   c ~ U(0.2, 0.8)^2.

Use it from the command line with FILE.py:NAME, like any built-in family:

    femno solve demos/my_family.py:HotSpot --n 64 --json
    femno solve demos/my_family.py:HotSpot -o width=0.05 -o contrast=2 --json
    femno generate demos/my_family.py:HotSpot --samples 100 --out hotspot.femno
    python demos/my_family.py            # one solve through the Python API
"""

import numpy as np
import skfem
from skfem.helpers import dot, grad

from femno.errors import InputError
from femno.fem import Family
from femno.fem.families.base import positive_number


@skfem.BilinearForm
def _diffusion(u, v, w):
    return w.kappa * dot(grad(u), grad(v))


@skfem.LinearForm
def _load(v, w):
    return w.f * v


class HotSpot(Family):
    """-div(kappa grad u) = Gaussian hot spot; u = 0 left/right, insulated top/bottom."""

    # -- what the family is ---------------------------------------------------------------
    name = "hotspot"            # shown by `femno dataset inspect`, stored in datasets
    symmetric = True            # A = A^T ...
    spd = True                  # ... and positive definite: `femno solve` picks CG + AMG
    vector = False              # one unknown per node (True: one per space dimension)
    fixed_matrix = False        # kappa changes per sample, so A does too
    OPTIONS = {"width": 0.1, "contrast": 1.0}   # -o KEY=VALUE, with their defaults

    # -- hooks --------------------------------------------------------------------------------
    def _setup(self):
        """Validate the options once (self.options holds defaults + user values)."""
        self.width = positive_number(self.options["width"], "width")
        self.contrast = positive_number(self.options["contrast"], "contrast")
        if self.mesh.p.shape[0] != 2:
            raise InputError("HotSpot needs a 2-D mesh")

    def sample(self, rng):
        """Random parameters of one sample: a dict of numbers / arrays.

        Numeric entries are stored as the sample's inputs by `femno generate`
        (here inputs/a and inputs/center); use only `rng` for randomness so that
        samples are reproducible from their seed.
        """
        return {
            "a": rng.uniform(-self.contrast, self.contrast, size=2),
            "center": rng.uniform(0.2, 0.8, size=2),
        }

    def assemble_full(self, params, *, matrix=True):
        """Full-space matrix K (N x N) and load f (N,), before boundary conditions."""
        x, y = self.basis.mapping.F(self.basis.X)      # quadrature points, (nelems, nqp) each
        f = self.source_at(params, x, y)
        b = _load.assemble(self.basis, f=f)
        if not matrix:
            return None, b
        a1, a2 = np.asarray(params["a"], dtype=np.float64)
        kappa = np.exp(a1 * np.cos(np.pi * x) + a2 * np.cos(np.pi * y))
        return _diffusion.assemble(self.basis, kappa=kappa).tocsr(), b

    def features(self, params):
        """A short vector describing the sample: `femno generate` sorts samples by it
        so that similar systems are solved one after another (recycling works best)."""
        return np.concatenate([params["a"], params["center"]]).astype(np.float64)

    def dirichlet_dofs(self):
        """Dofs with u = 0: the nodes on the left and right edges (default: all boundary)."""
        lo, hi = self.lo[0], self.hi[0]
        tol = 1e-10 * (hi - lo)
        return self.basis.get_dofs(lambda p: (p[0] < lo + tol) | (p[0] > hi - tol)).all()

    def coefficient_summary(self, params):
        """Optional: extra numbers reported in LinearSystem.meta."""
        a1, a2 = params["a"]
        return {"kappa_min": float(np.exp(-abs(a1) - abs(a2))),
                "kappa_max": float(np.exp(abs(a1) + abs(a2)))}

    # -- helpers of this family -----------------------------------------------------------
    def source_at(self, params, x, y):
        cx, cy = np.asarray(params["center"], dtype=np.float64)
        s2 = self.width**2
        return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s2)) / (2 * np.pi * s2)


if __name__ == "__main__":
    from femno.solvers import krylov

    family = HotSpot(n=32, width=0.08)
    params = family.sample(np.random.default_rng(0))
    system = family.assemble(params)                  # condensed: Dirichlet dofs removed
    solver = krylov("cg", pc="amg", rtol=1e-10)
    u = system.expand(solver(system.A, system.b))     # full vector incl. boundary values
    print(f"{system.dofs} unknowns, {solver.stats.iterations} AMG-CG iterations, "
          f"max u = {u.max():.4f}")
