r"""Dataset recipes: the four problem sets of the SKR paper (SPEC §1) and a 3D family.

Every recipe is a :class:`femno.fem.Family` subclass with correct (conforming P1/Q1
FE) discretizations, registered in :data:`RECIPES`, so that it works both as

    femno generate skr-darcy --samples 100 --out darcy.femno --workers 2
    python data_gen/skr_darcy.py --samples 100 --out darcy.femno --workers 2

They ship inside the package (an installed femno has them); ``FEMNO_RECIPES=/path/to/
recipes.py`` adds or overrides recipes from a file of the same form.

=============== ===================================================== ========== =====
name            problem                                               free dofs  A
=============== ===================================================== ========== =====
skr-darcy       -div(a grad u) = 1, a = exp(GRF), unit square, P1     6400       varies
skr-thermal     steady heat -lap T = 0 on the L-shape, T random on    11223      fixed
                the left edge ([-100, 0]) and right edge ([0, 100])
skr-poisson     -lap u = f on [-1, 1]^2, u = g on the boundary, f, g  71289      fixed
                from 5 Chebyshev coefficients each
skr-helmholtz   -lap u - k(x)^2 u = f, k = k0 exp(GRF), indefinite    10000      varies
skr-darcy-      the paper code's Darcy matrix: 5-point Laplacian       6400       varies
paper           times diag(a), i.e. -lap(a u) (nonsymmetric), f = 1
darcy3d         -div(a grad u) = 1 on the unit cube, Q1 hexahedra     250047     varies
                (or P1 tetrahedra), a = exp(GRF) per element
=============== ===================================================== ========== =====

Differences from the paper's released code (SPEC §1): its Darcy matrix was
``diag(a)`` times a 5-point Laplacian (``-lap(a u)``, nonsymmetric) and its
Helmholtz shift was below 1e-4; here Darcy is the SPD weak form of
``-div(a grad u)`` and Helmholtz is genuinely indefinite (``k0 = 10`` by default,
``k0^2 > 2 pi^2``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import skfem
from numpy.polynomial import chebyshev

from femno.errors import InputError
from femno.fem.families.base import Family
from femno.fem.families.scalar import Darcy, Helmholtz, _diffusion, _ScalarFamily
from femno.fem.mesh import lshape

__all__ = ["RECIPES", "SKRDarcy", "SKRDarcyPaper", "SKRThermal", "SKRPoisson", "SKRHelmholtz",
           "Darcy3D"]


class SKRDarcy(Darcy):
    """SKR Darcy set: log-normal GRF coefficient, f = 1, n = 81 (80^2 = 6400 free dofs)."""

    name = "skr-darcy"

    def __init__(self, *, n=81, **kw):
        super().__init__(n=n, **kw)


class SKRDarcyPaper(SKRDarcy):
    r"""The SKR paper code's Darcy matrices, kept to reproduce its comparison (SPEC §1).

    :math:`A = L_5\,\mathrm{diag}(a)`, the discrete :math:`-\Delta(a u)` on the
    80 x 80 interior nodes of a uniform grid (``n = 81`` cells per side, unit square),
    :math:`L_5` the 5-point Laplacian (stencil 4, -1), :math:`a = \exp(g)` with
    :math:`g` the family's Gaussian random field at the nodes, :math:`b = h^2 f`,
    :math:`f = 1`, :math:`u = 0` on the boundary.  Nonsymmetric (:math:`L_5` and
    :math:`\mathrm{diag}(a)` do not commute): this is *not* a correct
    discretization of Darcy flow :math:`-\nabla\cdot(a\nabla u)` (``skr-darcy``
    is), only the matrices the published speedups were measured on.  The stored
    solution is the nodal field ``u`` (a Q1 function on the grid).
    Parameters: ``{"a": (n_nodes,)}``.
    """

    name = "skr-darcy-paper"
    symmetric = False
    spd = False

    def __init__(self, *, n=81, **kw):
        super().__init__(n=n, cell="quad", **kw)

    def sample(self, rng):
        from femno.fem.random_fields import GaussianRandomField

        o = self.options
        key = ("grf-nodes", o["length"], o["variance"])
        if key not in self._cache:
            self._cache[key] = GaussianRandomField(length=float(o["length"]),
                                                   variance=float(o["variance"]))
        g = self._cache[key].sample(self.mesh.p.T, rng, bbox=(self.lo, self.hi))
        return {"a": np.exp(float(o["mean"]) + np.ravel(g))}

    def _nodal(self, params):
        a = np.asarray(params.get("a"), dtype=np.float64)
        if a.shape != (self.mesh.p.shape[1],) or not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise InputError(f"'a' must be {self.mesh.p.shape[1]} positive nodal values, "
                             f"got shape {a.shape}")
        return a

    def assemble_full(self, params, *, matrix=True):
        a = self._nodal(params)
        h = (self.hi[0] - self.lo[0]) / self.n
        if "L5" not in self._cache:  # 5-point stencil on the node grid (all nodes)
            ij = np.rint((self.mesh.p - self.lo[:, None]) / h).astype(np.int64)
            m = self.n + 1
            node = np.full((m, m), -1, dtype=np.int64)
            node[ij[0], ij[1]] = np.arange(ij.shape[1])
            rows, cols, vals = [np.arange(ij.shape[1])], [np.arange(ij.shape[1])], [np.full(ij.shape[1], 4.0)]
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                i2, j2 = ij[0] + di, ij[1] + dj
                ok = (i2 >= 0) & (i2 < m) & (j2 >= 0) & (j2 < m)
                rows.append(np.nonzero(ok)[0])
                cols.append(node[i2[ok], j2[ok]])
                vals.append(np.full(int(ok.sum()), -1.0))
            self._cache["L5"] = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                               np.concatenate(cols))), shape=(ij.shape[1],) * 2)
        f = np.full(self.basis.N, h * h * float(self.options["f"]))
        return (self._cache["L5"] @ sp.diags(a)).tocsr() if matrix else None, f

    def features(self, params):
        return self.coarse(np.log(self._nodal(params))[self.mesh.t].mean(axis=0))

    def coefficient_summary(self, params):
        return self._summary("a", params["a"])


class SKRHelmholtz(Helmholtz):
    """SKR Helmholtz set: ``k = k0 exp(g)``, g a GRF; n = 101 (100^2 = 10000 free dofs)."""

    name = "skr-helmholtz"

    def __init__(self, *, n=101, **kw):
        super().__init__(n=n, **kw)


class _LiftedFamily(_ScalarFamily):
    r"""Fixed Laplacian, non-homogeneous Dirichlet data per sample.

    ``A = K_II`` (same for every sample), ``b = f_I - K_ID g_D``; the lifting
    ``g_D`` goes into ``x_bc`` so that ``LinearSystem.expand`` returns the full field.
    Subclasses define :meth:`boundary_values` (per Dirichlet dof) and :meth:`source`.
    """

    fixed_matrix = True

    def boundary_values(self, params, xy) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def source(self, params):
        return 0.0

    def assemble_full(self, params, *, matrix=True):
        return (self._matrix("laplace") if matrix else None), self._load(self.source(params))

    def assemble(self, params):
        system = super().assemble(params)  # K_II and f_I with x_D = 0
        if "K_ID" not in self._cache:
            D = np.asarray(self.dirichlet_dofs(), dtype=np.int64)
            self._cache["D"] = D
            self._cache["K_ID"] = sp.csr_matrix(self._matrix("laplace")[system.free][:, D])
        D = self._cache["D"]
        g = np.asarray(self.boundary_values(params, self.basis.doflocs[:, D]), dtype=np.float64)
        system.x_bc[D] = g
        system.b = system.b - self._cache["K_ID"] @ g
        return system


class SKRThermal(_LiftedFamily):
    r"""SKR thermal set: steady heat conduction on the L-shaped domain.

    :math:`-\Delta T = 0` on :math:`[0,1]^2 \setminus (1/2,1]^2`, :math:`T = T_L(y)`
    on the left edge (x = 0), :math:`T = T_R(y)` on the right edge (x = 1,
    y <= 1/2), insulated elsewhere.  :math:`T_L, T_R` interpolate ``points``
    control values uniform in [-100, 0] and [0, 100] (``points = 1``: constant
    temperatures, as published).  Default n = 122: 11223 free dofs (paper: 11063).

    Options: ``points`` (1), ``cell`` via the constructor.
    Parameters: ``{"t_left": (points,), "t_right": (points,)}``.
    """

    name = "skr-thermal"
    OPTIONS = {"points": 1}

    def __init__(self, *, n=122, mesh=None, cell="tri", **kw):
        if mesh is None:
            mesh = lshape(n, cell=cell)
        super().__init__(n=n, mesh=mesh, cell=cell, **kw)

    def _setup(self):
        p = self.options["points"]
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
            raise InputError(f"option 'points' must be an integer >= 1, got {p!r}")

    def dirichlet_dofs(self):
        x = self.basis.doflocs[0]
        tol = 1e-10
        edge = self.mesh.facets_satisfying(
            lambda X: (X[0] < self.lo[0] + tol) | (X[0] > self.hi[0] - tol), boundaries_only=True)
        dofs = self.basis.get_dofs(facets=edge).all()
        return np.unique(dofs[(x[dofs] < self.lo[0] + tol) | (x[dofs] > self.hi[0] - tol)])

    def sample(self, rng):
        p = self.options["points"]
        return {"t_left": rng.uniform(-100.0, 0.0, p), "t_right": rng.uniform(0.0, 100.0, p)}

    def _profile(self, values, y):
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 1:
            return np.full_like(y, values[0])
        return np.interp(y, np.linspace(self.lo[1], self.hi[1], values.size), values)

    def boundary_values(self, params, xy):
        left = xy[0] < 0.5 * (self.lo[0] + self.hi[0])
        return np.where(left, self._profile(params["t_left"], xy[1]),
                        self._profile(params["t_right"], xy[1]))

    def features(self, params):
        return np.concatenate([np.ravel(params["t_left"]), np.ravel(params["t_right"])])


class SKRPoisson(_LiftedFamily):
    r"""SKR Poisson set on :math:`[-1, 1]^2` with Chebyshev data.

    :math:`-\Delta u = f`, :math:`u = g` on the boundary, with ``degree`` (5)
    Chebyshev coefficients each:
    :math:`f(x,y) = \sum_{i<5} a_i T_i(x) T_i(y)`,
    :math:`g(x,y) = \sum_{i<5} c_i T_i(x) T_i(y)` restricted to the boundary (on
    :math:`x = \pm 1` this is the Chebyshev series :math:`\sum_i c_i (\pm1)^i T_i(y)`),
    :math:`a_i, c_i \sim U(-1, 1)`.  Default n = 268: 267^2 = 71289 free dofs
    (paper: 71313).  Fixed matrix.

    Parameters: ``{"source": (degree,), "boundary": (degree,)}``.
    """

    name = "skr-poisson"
    OPTIONS = {"degree": 5}

    def __init__(self, *, n=268, mesh=None, cell="tri", **kw):
        if mesh is None:
            x = np.linspace(-1.0, 1.0, int(n) + 1)
            mesh = (skfem.MeshTri if cell == "tri" else skfem.MeshQuad).init_tensor(x, x)
        super().__init__(n=n, mesh=mesh, cell=cell, **kw)

    def _setup(self):
        d = self.options["degree"]
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise InputError(f"option 'degree' must be an integer >= 1, got {d!r}")

    def sample(self, rng):
        d = self.options["degree"]
        return {"source": rng.uniform(-1.0, 1.0, d), "boundary": rng.uniform(-1.0, 1.0, d)}

    @staticmethod
    def _cheb(coef, x, y):
        coef = np.asarray(coef, dtype=np.float64)
        return chebyshev.chebval2d(x, y, np.diag(coef))

    def source(self, params):
        x = self.basis.mapping.F(self.basis.X)  # (2, nelems, nqp)
        return self._cheb(params["source"], x[0], x[1])

    def boundary_values(self, params, xy):
        return self._cheb(params["boundary"], xy[0], xy[1])

    def features(self, params):
        return np.concatenate([np.ravel(params["source"]), np.ravel(params["boundary"])])


class Darcy3D(Darcy):
    r"""3D Darcy flow :math:`-\nabla\cdot(a\nabla u) = 1` on the unit cube, u = 0 on the boundary.

    Q1 hexahedra (``cell="hex"``, default) or P1 tetrahedra (``cell="tet"``) from
    ``init_tensor``; n = 64 gives 63^3 = 250047 free dofs.  ``a = exp(mean + g)``
    with g a squared-exponential GRF evaluated at element centroids (one value per
    element: the stored input is ``a`` of shape (n_elements,)).  Features: mean of
    log a on a 4x4x4 grid.  Options as :class:`~femno.fem.families.Darcy`
    (default ``length = 0.2``).
    """

    name = "darcy3d"
    OPTIONS = {**Darcy.OPTIONS, "length": 0.2, "coefficient_at": "element"}

    def __init__(self, *, n=64, mesh=None, cell="hex", intorder=None, **kw):
        if mesh is None:
            cls = {"hex": skfem.MeshHex, "tet": skfem.MeshTet}.get(cell)
            if cls is None:
                raise InputError(f"cell must be 'hex' or 'tet', got {cell!r}")
            x = np.linspace(0.0, 1.0, int(n) + 1)
            mesh = cls.init_tensor(x, x, x)
        if intorder is None:  # exact for a per-element coefficient: 2^3 Gauss / 1 point
            intorder = 3 if isinstance(mesh, skfem.MeshHex) else 1
        super().__init__(n=n, mesh=mesh, intorder=intorder, **kw)

    def _setup(self):
        super()._setup()
        c = self.mesh.p[:, self.mesh.t].mean(axis=1)  # (3, nelems)
        span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        ijk = np.clip(((c.T - self.lo) / span * 4).astype(np.int64), 0, 3)
        self._bin = ijk[:, 0] * 16 + ijk[:, 1] * 4 + ijk[:, 2]
        self._bin_n = np.maximum(np.bincount(self._bin, minlength=64), 1)

    def sample(self, rng):
        a = super().sample(rng)["a"]  # (nelems, nqp), constant per element
        return {"a": np.ascontiguousarray(a[:, 0])}

    def _element_values(self, params) -> np.ndarray:
        a = np.asarray(params["a"], dtype=np.float64)
        ne = self.mesh.t.shape[1]
        if a.shape != (ne,) or not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise InputError(f"params['a'] must be positive and finite with shape ({ne},)")
        return a

    def matrix_terms(self):
        """Darcy's one diffusion term, declared again beside this class's assemble_full
        (the fast path is taken only where both come from the same class)."""
        return [(_diffusion, {"a": 1.0})]

    def matrix_coefficients(self, params):
        return [self.coefficient(self._element_values(params), "a")]

    def assemble_full(self, params, *, matrix=True):
        """scikit-fem's quadrature assembly (``assemble(fast=False)``; ~30 s on 250k hexahedra).

        :meth:`assemble` fills a fixed pattern instead (:mod:`femno.fem.fast_assembly`;
        ``a`` is constant per element: P1 tetrahedra store the kernel per element, Q1
        hexahedra its quadrature sums).
        """
        a = self._element_values(params)
        K = _diffusion.assemble(self.basis, a=self.coefficient(a, "a")).tocsr() if matrix else None
        return K, self._load(self.options["f"])

    def features(self, params):
        a = self._element_values(params)
        return np.bincount(self._bin, weights=np.log(a), minlength=64) / self._bin_n

    def coefficient_summary(self, params):
        return self._summary("a", params["a"])


RECIPES: dict[str, type[Family]] = {
    cls.name: cls for cls in (SKRDarcy, SKRDarcyPaper, SKRThermal, SKRPoisson, SKRHelmholtz,
                              Darcy3D)
}
