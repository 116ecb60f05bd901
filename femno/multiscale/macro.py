r"""Plane-strain small-strain macro problems of FE² on scikit-fem, with Newton and load stepping.

Equilibrium :math:`\nabla\cdot\bar\sigma(\varepsilon(u)) = 0` on the macro domain,
:math:`u = 0` on the clamped edge and a traction :math:`\lambda\,t` on the loaded edge,
for load factors :math:`0 < \lambda \le 1`.  The stress :math:`\bar\sigma` and the tangent
:math:`\mathbb{C} = \partial\bar\sigma/\partial\varepsilon` at *all* macro integration
points come from one batched call of a micro model
(:class:`femno.multiscale.micro.MicroModel`).  With :math:`B` the strain-displacement
matrix (engineering shear) and :math:`w` the quadrature weights times Jacobians,

.. math::
   f_{\rm int}(u) = \sum_{e,q} B_{eq}^T \bar\sigma_{eq}\, w_{eq}, \qquad
   K(u) = \sum_{e,q} B_{eq}^T \mathbb{C}_{eq} B_{eq}\, w_{eq},

assembled with vectorized ``einsum`` over elements and points.  Newton solves
:math:`K\,\Delta u = -(f_{\rm int} - \lambda f_{\rm ext})` on the free dofs until
:math:`\|r\| \le \text{rtol}\,\|\lambda f_{\rm ext}\|`; a load step that fails (too many
iterations, divergence, a micro solve that fails) is cut in half and retried, down to
``max_cutbacks`` halvings, after which :class:`~femno.errors.ConvergenceError` says where.

Problems (units: mm, N per mm thickness, MPa — those of the RVE materials of SPEC §2):

* :func:`cook_membrane` — the standard trapezoid (0,0), (48,44), (48,60), (0,44) mm,
  clamped at x = 0, uniform shear traction on the right edge x = 48 (length 16 mm);
  the geometry is the classical one in mm, the load is scaled to the RVE materials so
  that the macro strains reach a few percent (the EquiNO training range is
  [-0.04, 0.04]; measured with the FE RVE1 micro model on a 4x4 mesh: max
  :math:`|\gamma_{xy}|` = 0.055 at 600 N/mm; the default is lower): total
  force ``load`` N/mm, default :data:`COOK_LOAD`;
* :func:`l_profile` — the L-shaped domain :math:`[0,1]^2\setminus(1/2,1]^2` scaled to
  ``size`` mm, clamped on its top edge, a downward traction on the right end.

>>> import numpy as np
>>> from femno.multiscale.micro import ClosedFormMicro
>>> class Hooke:
...     def stress_and_tangent(self, eps):  # lambda = 1, mu = 1, plane strain
...         C = np.array([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
...         return eps @ C.T, np.broadcast_to(C, (len(eps), 3, 3)).copy()
>>> prob = cook_membrane(2, load=0.01)
>>> res = solve_macro(prob, ClosedFormMicro(Hooke()), steps=2)
>>> res.iterations
[1, 1]
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import skfem

from femno.errors import ConvergenceError, FemnoError, InputError
from femno.fem.bc import boundary_dofs, neumann_load
from femno.fem.families.base import positive_number
from femno.fem.mesh import _check_n, lshape
from femno.fem.spaces import element
from femno.multiscale.micro import range_violations

__all__ = ["MacroProblem", "MacroResult", "cook_membrane", "l_profile", "macro_problem",
           "solve_macro", "MACROS"]

log = logging.getLogger("femno.fe2")

#: default element and quadrature order per cell
_DEFAULT_ELEMENT = {"quad": ("Q1", 2), "tri": ("P1", 1)}
_INTORDER = {"Q1": 2, "P1": 1, "Q2": 4, "Q8": 4, "P2": 2}


@dataclasses.dataclass
class MacroProblem:
    """A discretized macro boundary-value problem.

    Attributes
    ----------
    name : str
    basis : skfem.CellBasis
        Vector basis (2 components) on the macro mesh.
    fixed : ndarray of int64
        Clamped dofs.
    f_ext : ndarray, shape (N,), float64
        External load vector at load factor 1.
    ref_dof : int
        Dof whose value is the reported ("tip") displacement.
    load_dir : int
        Component of the load (0 = x, 1 = y); reactions are summed along it.
    total_force : float
        Total applied force at load factor 1 (N per mm thickness).
    """

    name: str
    basis: skfem.CellBasis
    fixed: np.ndarray
    f_ext: np.ndarray
    ref_dof: int
    load_dir: int
    total_force: float

    def __post_init__(self):
        b = self.basis
        grads = np.stack([phi[0].grad for phi in b.basis], axis=-1)  # (2, 2, E, Q, L)
        B = np.empty((3,) + grads.shape[2:])
        B[0], B[1] = grads[0, 0], grads[1, 1]
        B[2] = grads[0, 1] + grads[1, 0]
        self.B = np.ascontiguousarray(np.moveaxis(B, 0, 2))  # (E, Q, 3, L)
        self.dx = np.asarray(b.dx)  # (E, Q)
        self.edofs = np.asarray(b.element_dofs).T  # (E, L)
        L = self.edofs.shape[1]
        self._rows = np.repeat(self.edofs, L, axis=1).ravel()
        self._cols = np.tile(self.edofs, (1, L)).ravel()
        mask = np.ones(b.N, dtype=bool)
        mask[self.fixed] = False
        self.free = np.nonzero(mask)[0]
        self._patterns = {}

    def _pattern(self, which: str):
        """CSR pattern of K (``"all"`` dofs or ``"free"`` x free) and the sparse scatter
        matrix S with ``K.data = S @ Ke.ravel()`` (duplicates summed), built once."""
        if which not in self._patterns:
            keep = self.free if which == "free" else np.arange(self.n_dofs)
            fmap = -np.ones(self.n_dofs, dtype=np.int64)
            fmap[keep] = np.arange(len(keep))
            r, c = fmap[self._rows], fmap[self._cols]
            entries = np.nonzero((r >= 0) & (c >= 0))[0]
            m = len(keep)
            uniq, inv = np.unique(r[entries] * m + c[entries], return_inverse=True)
            S = sp.csr_matrix((np.ones(len(entries)), (inv.ravel(), entries)),
                              shape=(len(uniq), len(self._rows)))
            indptr = np.concatenate([[0], np.cumsum(np.bincount(uniq // m, minlength=m))])
            self._patterns[which] = (S, (uniq % m).astype(np.int32), indptr.astype(np.int32), m)
        return self._patterns[which]

    @property
    def n_points(self) -> int:
        """Number of macro integration points (micro evaluations per Newton iteration)."""
        return self.dx.size

    @property
    def n_dofs(self) -> int:
        return int(self.basis.N)

    def strains(self, u: np.ndarray) -> np.ndarray:
        """Strains :math:`[\\varepsilon_{xx}, \\varepsilon_{yy}, \\gamma_{xy}]` at all points,
        shape ``(E*Q, 3)``, point ``e*Q + q``."""
        return np.einsum("eqkl,el->eqk", self.B, u[self.edofs]).reshape(-1, 3)

    def internal_force(self, stress: np.ndarray) -> np.ndarray:
        """:math:`f_{\\rm int} = \\sum B^T\\sigma\\,w`, shape (N,), from stress (E*Q, 3)."""
        E, Q = self.dx.shape
        fe = np.einsum("eqki,eqk,eq->ei", self.B, stress.reshape(E, Q, 3), self.dx)
        return np.bincount(self.edofs.ravel(), fe.ravel(), minlength=self.n_dofs)

    def stiffness(self, tangent: np.ndarray, *, free: bool = False) -> sp.csr_matrix:
        """:math:`K = \\sum B^T\\mathbb{C}B\\,w` (CSR, N x N, or free x free dofs with
        ``free=True``) from tangents (E*Q, 3, 3); the sparsity pattern is reused."""
        E, Q = self.dx.shape
        CB = np.einsum("eqkl,eqlj->eqkj", tangent.reshape(E, Q, 3, 3), self.B)
        Ke = np.einsum("eqki,eqkj,eq->eij", self.B, CB, self.dx)
        S, indices, indptr, m = self._pattern("free" if free else "all")
        return sp.csr_matrix((S @ Ke.ravel(), indices, indptr), shape=(m, m))

    def reaction(self, f_int: np.ndarray) -> float:
        """Reaction force of the clamped edge along the load direction (N per mm)."""
        comp = self.fixed[np.isin(self.fixed, self.basis.nodal_dofs[self.load_dir])]
        return float(-f_int[comp].sum()) + 0.0  # no -0.0

    def element_mean(self, values: np.ndarray) -> np.ndarray:
        """Area-weighted mean of point values (E*Q, k) per element, shape (E, k)."""
        E, Q = self.dx.shape
        v = values.reshape(E, Q, -1)
        return np.einsum("eqk,eq->ek", v, self.dx) / self.dx.sum(axis=1)[:, None]


def _mesh_and_basis(mesh, elem_name, cell):
    name, _ = _DEFAULT_ELEMENT[cell]
    name = elem_name or name
    elem = element(name, cell=cell)
    if name.upper() in ("Q2", "P2") and mesh.p.shape[1] != mesh.t.max() + 1:  # pragma: no cover
        raise InputError("higher-order macro elements need a linear-geometry mesh")
    return skfem.CellBasis(mesh, skfem.ElementVector(elem), intorder=_INTORDER[name.upper()])


def _check_load(load) -> float:
    try:
        value = float(load)
    except (TypeError, ValueError):
        raise InputError(f"load must be a number, got {load!r}") from None
    if not np.isfinite(value):
        raise InputError(f"load must be finite, got {load!r}")
    return value


def _check_cell(cell) -> str:
    if cell not in _DEFAULT_ELEMENT:
        raise InputError(f"unknown cell {cell!r}; valid: {sorted(_DEFAULT_ELEMENT)}")
    return cell


def _nearest_dof(basis, point, comp: int) -> int:
    nodes = basis.nodal_dofs[comp]
    d = np.hypot(basis.mesh.p[0] - point[0], basis.mesh.p[1] - point[1])
    return int(nodes[np.argmin(d)])


#: default total load of Cook's membrane, N per mm thickness (traction load/16 MPa)
COOK_LOAD = 400.0
#: default total load of the L-profile, N per mm thickness
LPROFILE_LOAD = 250.0


def cook_membrane(n: int = 4, *, cell: str = "quad", load: float = COOK_LOAD,
                  element_name: str | None = None) -> MacroProblem:
    """Cook's membrane: trapezoid (0,0), (48,44), (48,60), (0,44) mm, clamped at x = 0.

    Parameters
    ----------
    n : int
        Elements per side (``n x n`` quadrilaterals, or ``2 n^2`` triangles).
    cell : {"quad", "tri"}, keyword-only
    load : float, keyword-only
        Total vertical force on the right edge, N per mm thickness (uniform shear
        traction ``load / 16`` MPa).  The default makes the strains a few percent
        with the RVE materials of SPEC §2.
    element_name : str, optional, keyword-only
        ``"Q1"`` (default on quads, 2x2 Gauss), ``"Q2"``, ``"P1"`` (default on
        triangles, one point), ``"P2"``.

    Returns
    -------
    MacroProblem
        ``ref_dof``: vertical displacement of the corner (48, 60).

    Examples
    --------
    >>> prob = cook_membrane(2)
    >>> prob.n_points, prob.n_dofs, prob.total_force
    (16, 18, 400.0)
    """
    n, cell, load = _check_n(n), _check_cell(cell), _check_load(load)
    cls = skfem.MeshQuad1 if cell == "quad" else skfem.MeshTri1
    s = np.linspace(0.0, 1.0, n + 1)
    m = cls.init_tensor(s, s)
    xi, eta = m.p
    y0, y1 = 44.0 * xi, 44.0 + 16.0 * xi
    mesh = cls(np.vstack([48.0 * xi, y0 + eta * (y1 - y0)]), m.t)
    basis = _mesh_and_basis(mesh, element_name, cell)
    fixed = boundary_dofs(basis, lambda x: np.isclose(x[0], 0.0))
    f_ext = neumann_load(basis, np.array([0.0, load / 16.0]),
                         facets=lambda x: np.isclose(x[0], 48.0))
    return MacroProblem("cook", basis, fixed, f_ext, _nearest_dof(basis, (48.0, 60.0), 1), 1,
                        float(f_ext[basis.nodal_dofs[1]].sum()))


def l_profile(n: int = 4, *, cell: str = "quad", load: float = LPROFILE_LOAD,
              size: float = 20.0, element_name: str | None = None) -> MacroProblem:
    r"""L-profile :math:`([0,1]^2\setminus(1/2,1]^2)\cdot` ``size`` mm, clamped on top.

    The vertical leg is clamped on its top edge :math:`y = ` ``size``; the right end
    of the horizontal leg (:math:`x = ` ``size``) carries a downward shear traction of
    total ``load`` N/mm.  ``ref_dof``: vertical displacement at the bottom-right corner.

    Parameters
    ----------
    n : int
        Cells per side of the enclosing square (rounded up to even).
    cell, load, element_name : keyword-only
        As in :func:`cook_membrane`.
    size : float, keyword-only
        Side length in mm.

    Examples
    --------
    >>> prob = l_profile(2)
    >>> prob.n_points, round(prob.total_force, 9)
    (12, -250.0)
    """
    n, cell, load = _check_n(n), _check_cell(cell), _check_load(load)
    size = positive_number(size, "size")
    m = lshape(n, cell=cell)
    mesh = type(m)(m.p * size, m.t)
    basis = _mesh_and_basis(mesh, element_name, cell)
    fixed = boundary_dofs(basis, lambda x: np.isclose(x[1], size))
    f_ext = neumann_load(basis, np.array([0.0, -load / (0.5 * size)]),
                         facets=lambda x: np.isclose(x[0], size))
    return MacroProblem("lprofile", basis, fixed, f_ext, _nearest_dof(basis, (size, 0.0), 1), 1,
                        float(f_ext[basis.nodal_dofs[1]].sum()))


MACROS = {"cook": cook_membrane, "lprofile": l_profile}


def macro_problem(name: str, **options) -> MacroProblem:
    """A macro problem by name (``"cook"`` or ``"lprofile"``), options passed on.

    >>> macro_problem("beam")
    Traceback (most recent call last):
    ...
    femno.errors.InputError: unknown macro problem 'beam'; valid: cook, lprofile
    """
    if name not in MACROS:
        raise InputError(f"unknown macro problem {name!r}; valid: {', '.join(MACROS)}")
    return MACROS[name](**{k: v for k, v in options.items() if v is not None})


@dataclasses.dataclass
class MacroResult:
    """Outcome of :func:`solve_macro`.

    ``load_factor``, ``force`` (applied, N/mm), ``reaction`` (clamp reaction along the
    load), ``displacement`` (at ``ref_dof``, mm): one entry per converged (sub)step,
    starting with the unloaded state.  ``residuals``: Newton residual norms per step
    (first entry: before the first correction).  ``iterations``: Newton corrections per
    step.  ``stress``: stress at all macro points at the final load, (E*Q, 3).
    ``out_of_range``: for a micro model with a ``training_range`` (EquiNO), the strain
    components that left it at the macro points of the converged steps
    (:func:`~femno.multiscale.micro.range_violations`; ``[]``: none); ``None`` otherwise.
    """

    problem: str
    load_factor: list
    force: list
    reaction: list
    displacement: list
    residuals: list
    iterations: list
    cutbacks: int
    u: np.ndarray
    stress: np.ndarray
    strain: np.ndarray
    micro_s: float
    macro_s: float
    total_s: float
    n_points: int
    n_dofs: int
    mesh: object = None
    element_stress: np.ndarray | None = None
    micro: dict | None = None
    out_of_range: list | None = None

    def to_dict(self) -> dict:
        """JSON-able summary (without the field arrays)."""
        keys = ("problem", "micro", "load_factor", "force", "reaction", "displacement",
                "residuals", "iterations", "cutbacks", "micro_s", "macro_s", "total_s",
                "n_points", "n_dofs", "out_of_range")
        out = {k: getattr(self, k) for k in keys}
        out["max_abs_strain"] = np.abs(self.strain).max(axis=0).tolist()  # vs training range
        return out


def solve_macro(problem: MacroProblem, micro, *, steps: int = 5, rtol: float = 1e-8,
                maxiter: int = 15, max_cutbacks: int = 4, progress=None) -> MacroResult:
    """Load-stepped Newton solve of ``problem`` with stress and tangent from ``micro``.

    Parameters
    ----------
    problem : MacroProblem
    micro : MicroModel
        Anything with batched ``stress_and_tangent(strains (n, 3))``.
    steps : int, keyword-only
        Equal load increments up to load factor 1.
    rtol : float, keyword-only
        Newton stops when :math:`\\|r_{\\rm free}\\| \\le \\text{rtol}\\,
        \\|\\lambda f_{\\rm ext, free}\\|`.
    maxiter : int, keyword-only
        Newton corrections per (sub)step before it counts as failed.
    max_cutbacks : int, keyword-only
        Halvings of a failing increment before giving up.
    progress : callable, optional, keyword-only
        ``progress(step_info: dict)`` after every converged (sub)step.

    Returns
    -------
    MacroResult

    Raises
    ------
    InputError
        Bad ``steps``/``rtol``/``maxiter``.
    ConvergenceError
        A step still fails after ``max_cutbacks`` halvings (the message gives the load
        factor reached and the residual history); ``.x`` holds the last converged u.
    """
    steps, maxiter = _check_n(steps, "steps"), _check_n(maxiter, "maxiter")
    if isinstance(max_cutbacks, bool) or not isinstance(max_cutbacks, (int, np.integer)) \
            or max_cutbacks < 0:
        raise InputError(f"max_cutbacks must be an integer >= 0, got {max_cutbacks!r}")
    if not (np.isfinite(rtol) and 0 < rtol < 1):
        raise InputError(f"rtol must be in (0, 1), got {rtol!r}")
    t_start = time.perf_counter()
    micro_s = 0.0
    free, f_ext = problem.free, problem.f_ext
    ref = np.linalg.norm(f_ext[free])
    if not np.isfinite(ref) or ref == 0.0:
        raise InputError("the external load is zero or not finite")

    def evaluate(u):
        nonlocal micro_s
        t0 = time.perf_counter()
        stress, tangent = micro.stress_and_tangent(problem.strains(u))
        micro_s += time.perf_counter() - t0
        return stress, tangent

    u = np.zeros(problem.n_dofs)
    stress, tangent = evaluate(u)
    f_int = problem.internal_force(stress)
    res = MacroResult(problem.name, [0.0], [0.0], [problem.reaction(f_int)],
                      [float(u[problem.ref_dof])], [], [], 0, u, stress, problem.strains(u),
                      0.0, 0.0, 0.0, problem.n_points, problem.n_dofs)
    e_lo, e_hi = res.strain.min(axis=0), res.strain.max(axis=0)  # range of converged strains
    lam, dlam = 0.0, 1.0 / steps
    min_dlam = dlam / 2**max_cutbacks
    nominal = np.linspace(0.0, 1.0, steps + 1)
    while lam < 1.0 - 1e-12:
        # after a cut-back, sub-steps still land on the nominal load levels k / steps
        nxt = float(nominal[np.searchsorted(nominal, lam + 1e-12)])
        target = nxt if lam + dlam > nxt - 1e-12 else lam + dlam
        ok, u_new, hist, out, why = _newton(problem, evaluate, u, f_int, stress, tangent,
                                            target, rtol * target * ref, maxiter)
        if not ok:
            if dlam / 2 < min_dlam * (1 - 1e-9):
                res.total_s = time.perf_counter() - t_start
                res.micro_s, res.macro_s = micro_s, res.total_s - micro_s
                raise ConvergenceError(
                    f"{problem.name}: Newton failed at load factor {target:.4g} ({why}) after "
                    f"{max_cutbacks} step cut-backs; last converged load factor {lam:.4g}; "
                    f"residuals {[f'{r:.3e}' for r in hist]}", x=u)
            dlam /= 2
            res.cutbacks += 1
            log.info("step to load factor %.4g failed (%s); cutting the increment to %.4g",
                     target, why, dlam)
            continue
        u, lam = u_new, target
        stress, tangent, f_int = out
        res.load_factor.append(lam)
        res.force.append(lam * problem.total_force)
        res.reaction.append(problem.reaction(f_int))
        res.displacement.append(float(u[problem.ref_dof]))
        res.residuals.append(hist)
        res.iterations.append(len(hist) - 1)
        e_now = problem.strains(u)
        e_lo, e_hi = np.minimum(e_lo, e_now.min(axis=0)), np.maximum(e_hi, e_now.max(axis=0))
        log.info("load factor %.4g: %d Newton iterations, residuals %s", lam, len(hist) - 1,
                 " ".join(f"{r:.2e}" for r in hist))
        if progress is not None:
            progress({"load_factor": lam, "iterations": len(hist) - 1, "residuals": hist,
                      "displacement": float(u[problem.ref_dof])})
        # after a cut-back, grow back towards the nominal increment
        dlam = min(2 * dlam, 1.0 / steps)
    res.u, res.stress, res.strain = u, stress, problem.strains(u)
    res.mesh, res.element_stress = problem.basis.mesh, problem.element_mean(stress)
    describe = getattr(micro, "describe", None)
    res.micro = describe() if callable(describe) else {"name": type(micro).__name__}
    bounds = getattr(micro, "training_range", None)  # EquiNOMicro: (lo, hi); EquiNO: method
    bounds = bounds() if callable(bounds) else bounds
    if bounds is not None:
        res.out_of_range = range_violations(np.stack([e_lo, e_hi]), bounds)
    res.total_s = time.perf_counter() - t_start
    res.micro_s, res.macro_s = micro_s, res.total_s - micro_s
    return res


def _newton(problem, evaluate, u, f_int, stress, tangent, lam, tol, maxiter):
    """Newton iterations at load factor ``lam`` from the state ``u`` (its micro response
    given).  Returns ``(ok, u, residual_history, (stress, tangent, f_int), why)``."""
    free = problem.free
    u = u.copy()
    hist = []
    for it in range(maxiter + 1):
        r = (f_int - lam * problem.f_ext)[free]
        hist.append(float(np.linalg.norm(r)))
        if not np.isfinite(hist[-1]):
            return False, u, hist, None, "non-finite residual"
        if hist[-1] <= tol:
            return True, u, hist, (stress, tangent, f_int), ""
        if it == maxiter:
            return False, u, hist, None, f"no convergence in {maxiter} iterations"
        if it >= 2 and hist[-1] > 1e3 * hist[0]:
            return False, u, hist, None, "diverging"
        K = problem.stiffness(tangent, free=True)
        try:
            du = spla.spsolve(K, -r)
        except RuntimeError as exc:  # singular factor
            return False, u, hist, None, f"singular tangent ({exc})"
        if not np.all(np.isfinite(du)):
            return False, u, hist, None, "singular tangent"
        u[free] += du
        try:
            stress, tangent = evaluate(u)
        except InputError:
            raise
        except FemnoError as exc:  # a micro solve failed: cut the step
            return False, u, hist, None, f"micro model failed: {exc}"
        f_int = problem.internal_force(stress)
    raise AssertionError("unreachable")  # pragma: no cover
