r"""Base classes of parametric problem families: :class:`Family` and :class:`LinearSystem`.

A family owns a mesh and a basis (built once) and maps random parameters to a
linear system :math:`A x = b` with the Dirichlet dofs condensed out:

.. math:: A = K_{II}, \qquad b = f_I - K_{ID}\, x_D ,

where :math:`K, f` are the assembled full-space matrix and load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import skfem

from femno.errors import InputError
from femno.fem.bc import boundary_dofs
from femno.fem.fast_assembly import CondensedAssembler, FormKernel, KernelTooLarge
from femno.fem.mesh import load_mesh, unit_square
from femno.fem.random_fields import GaussianRandomField
from femno.fem.spaces import element_name, make_basis

__all__ = ["LinearSystem", "Family", "positive_number", "fourier_source"]



def _memory_budget() -> int:
    """A quarter of the physical memory, clipped to [2, 8] GiB (2 GiB where unknown)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 2 * 1024**3
    return int(min(8 * 1024**3, max(2 * 1024**3, ram // 4)))


#: Largest storage (bytes) of value-only reassembly (kernels plus scatters, see
#: :func:`femno.fem.fast_assembly.kernel_bytes`); larger problems use scikit-fem's path.
FAST_ASSEMBLY_MAX_BYTES = _memory_budget()


@dataclass
class LinearSystem:
    """A condensed finite-element linear system :math:`A x = b`.

    Attributes
    ----------
    A : scipy.sparse.csr_matrix, shape (m, m), float64
        System matrix on the free dofs (Dirichlet dofs condensed out).
    b : ndarray, shape (m,), float64
        Right-hand side including the Dirichlet lifting.
    basis : skfem.CellBasis
        Basis of the full space (``basis.N`` dofs).
    free : ndarray, shape (m,), int64
        Indices of the free dofs in the full dof vector.
    x_bc : ndarray, shape (basis.N,), float64
        Full-length vector holding the Dirichlet values (zero on free dofs).
    params : dict
        Parameters the system was assembled from.
    meta : dict
        Family name, element, dof counts, coefficient summary, ...
    """

    A: sp.csr_matrix
    b: np.ndarray
    basis: object
    free: np.ndarray
    x_bc: np.ndarray
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def dofs(self) -> int:
        """Number of unknowns ``m`` of the condensed system."""
        return int(self.A.shape[0])

    def expand(self, x) -> np.ndarray:
        """Full coefficient vector (shape ``(basis.N,)``) from a solution on the free dofs."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dofs,):
            raise InputError(f"solution must have shape ({self.dofs},), got {x.shape}")
        out = self.x_bc.copy()
        out[self.free] = x
        return out


def positive_number(value, name: str) -> float:
    """``float(value)`` if finite and > 0, else :class:`InputError` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be positive and finite, got {value!r}")
    return v


def fourier_source(xi: np.ndarray, eta: np.ndarray, coef: np.ndarray) -> np.ndarray:
    r"""Evaluate :math:`\sum_{p,q=1}^{m} c_{pq} \sin(p\pi\xi)\sin(q\pi\eta)` elementwise.

    ``xi``, ``eta``: same shape, coordinates scaled to [0, 1]; ``coef``: (m, m).
    """
    m = coef.shape[0]
    k = np.arange(1, m + 1).reshape((m,) + (1,) * xi.ndim)
    sx, sy = np.sin(np.pi * k * xi), np.sin(np.pi * k * eta)
    return np.einsum("p...,pq,q...->...", sx, coef, sy)


class Family:
    """A parametric family of finite-element linear systems.

    Parameters
    ----------
    n : int, keyword-only
        Cells per side of the default mesh (unit square), >= 1.
    mesh : skfem.Mesh or path, optional, keyword-only
        Mesh to use instead of the default (a path is read with
        :func:`femno.fem.load_mesh`).
    element : str, optional, keyword-only
        Element name (see :mod:`femno.fem.spaces`); default from the mesh type.
    cell : {"tri", "quad"}, keyword-only
        Cell type of the default mesh.
    intorder : int, optional, keyword-only
        Quadrature order.
    **options
        Family-specific options; see ``OPTIONS`` of each family.  Unknown names
        raise :class:`InputError`.
    """

    name: str = "base"
    fixed_matrix: bool = False
    symmetric: bool = True
    spd: bool = True
    vector: bool = False
    OPTIONS: dict = {}

    def __init__(self, *, n=64, mesh=None, element=None, cell="tri", intorder=None, **options):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"n must be an integer >= 1, got {n!r}")
        self.n = int(n)
        if mesh is None:
            mesh = unit_square(self.n, cell=cell)
        elif isinstance(mesh, (str, os.PathLike)):
            mesh = load_mesh(mesh)
        elif not isinstance(mesh, skfem.Mesh):
            raise InputError(f"mesh must be a skfem Mesh or a path, got {type(mesh).__name__}")
        self.mesh = mesh
        self.basis = make_basis(mesh, element, vector=self.vector, intorder=intorder)
        self.element = element_name(self.basis.elem)
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise InputError(
                f"unknown option(s) {unknown} for family {self.name!r}; valid: "
                f"{sorted(self.OPTIONS)}"
            )
        self.options = {**self.OPTIONS, **options}
        self.lo, self.hi = mesh.p.min(axis=1), mesh.p.max(axis=1)
        self._cache: dict = {}
        self._setup()

    # -- hooks ---------------------------------------------------------------------------
    def _setup(self) -> None:
        """Validate options and precompute parameter-independent data."""

    def sample(self, rng: np.random.Generator) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def assemble_full(self, params: dict, *, matrix: bool = True):
        """Full-space matrix (N, N) csr and load (N,) before boundary conditions.

        With ``matrix=False`` the matrix may be skipped (returned as ``None``).
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def features(self, params: dict) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def dirichlet_dofs(self) -> np.ndarray:
        """Dofs with prescribed (zero) values; default the whole boundary."""
        return boundary_dofs(self.basis)

    def coefficient_summary(self, params: dict) -> dict:
        return {}

    def matrix_terms(self) -> list | None:
        r"""Terms for value-only reassembly, or ``None`` (then :meth:`assemble_full` is used).

        A list ``[(form, unit), ...]`` of scikit-fem bilinear forms, each linear in the
        coefficients ``unit`` names (``unit`` gives their values for the term's kernel,
        e.g. ``{"a": 1.0}``), such that the matrix is
        :math:`K = \sum_t K_t(c_t)` with the coefficients
        :math:`c_t` of :meth:`matrix_coefficients`.  See :mod:`femno.fem.fast_assembly`.
        """
        return None

    def matrix_coefficients(self, params: dict) -> list:
        """Validated coefficient of each of :meth:`matrix_terms` (a number or (nelems, nqp))."""
        raise NotImplementedError  # pragma: no cover - families with matrix_terms define it

    def _assembler(self):
        """The :class:`~femno.fem.fast_assembly.CondensedAssembler`, built once, or None."""
        if "assembler" not in self._cache:
            # a subclass that overrides assemble_full but inherits matrix_terms assembles
            # something else than those terms: it keeps scikit-fem's path
            owner = {
                name: next(c for c in type(self).__mro__ if name in vars(c))
                for name in ("assemble_full", "matrix_terms", "matrix_coefficients")
            }
            consistent = issubclass(owner["matrix_terms"], owner["assemble_full"]) and issubclass(
                owner["matrix_coefficients"], owner["assemble_full"]
            )
            terms = self.matrix_terms() if consistent else None
            asm = None
            if terms:
                try:  # each kernel checks the budget left before it builds its arrays
                    kernels, left = [], FAST_ASSEMBLY_MAX_BYTES
                    for form, unit in terms:
                        kernels.append(FormKernel(form, self.basis, max_bytes=left, **unit))
                        left -= kernels[-1].nbytes
                    asm = CondensedAssembler(self.basis.N, self._cache["free"], kernels)
                except KernelTooLarge:
                    asm = None
            self._cache["assembler"] = asm
        return self._cache["assembler"]

    def near_nullspace(self):
        """Near-nullspace of the condensed operator for AMG, or ``None`` (the default).

        ``(B, block_size)``: ``B`` of shape ``(n_free, r)``, float64, the modes the
        operator nearly annihilates (rigid-body motions for elasticity, see
        :func:`femno.fem.nullspace.rigid_body_modes`), and the number of consecutive
        rows per mesh node (``1`` when the free dofs do not come in node blocks).
        :func:`femno.datagen.solve_sequence` and :func:`femno.generate` pass them to
        the AMG preconditioners (pyamg's ``B``, PETSc's ``MatSetNearNullSpace``).
        """
        return None

    # -- shared machinery ----------------------------------------------------------------
    def free_dofs(self) -> np.ndarray:
        """Indices (sorted, int64) of the dofs left after the Dirichlet condition."""
        if "free" not in self._cache:
            D = np.asarray(self.dirichlet_dofs(), dtype=np.int64)
            mask = np.ones(self.basis.N, dtype=bool)
            mask[D] = False
            self._cache.update(free=np.nonzero(mask)[0], x_bc=np.zeros(self.basis.N))
        return self._cache["free"]

    def assemble(self, params: dict, *, fast: bool = True) -> LinearSystem:
        """Assemble the condensed system for ``params`` (see :meth:`sample`).

        With ``fast`` (default) a family that declares :meth:`matrix_terms` fills the
        values of a fixed pattern (:mod:`femno.fem.fast_assembly`) instead of calling
        scikit-fem's assembly and extracting ``K[free][:, free]`` for every sample;
        ``fast=False`` takes scikit-fem's path (same matrix to rounding).
        """
        if not isinstance(params, dict):
            raise InputError(f"params must be a dict, got {type(params).__name__}")
        free, x_bc = self.free_dofs(), self._cache["x_bc"]
        asm = self._assembler() if fast and not self.fixed_matrix else None
        if asm is not None:
            A = asm.assemble(self.matrix_coefficients(params))
            _, f = self.assemble_full(params, matrix=False)
        else:
            K, f = self.assemble_full(params, matrix=not (self.fixed_matrix and "A" in self._cache))
            # homogeneous Dirichlet values: A = K_II, b = f_I (skfem.condense with x_D = 0)
            if K is None:
                A = self._cache["A"].copy()  # callers may modify A in place
            else:
                A = sp.csr_matrix(K[free][:, free], dtype=np.float64)
                if self.fixed_matrix:
                    self._cache["A"] = A
        b = np.asarray(f[free], dtype=np.float64)
        meta = {
            "family": self.name,
            "element": self.element,
            "mesh": type(self.mesh).__name__,
            "n_elements": int(self.mesh.t.shape[1]),
            "n_dofs": int(self.basis.N),
            "n_free": int(len(free)),
            "symmetric": self.symmetric,
            "spd": self.spd,
            "options": dict(self.options),
            **self.coefficient_summary(params),
        }
        return LinearSystem(
            A=A, b=b, basis=self.basis, free=free, x_bc=x_bc.copy(), params=params, meta=meta
        )

    @property
    def quadrature_points(self) -> np.ndarray:
        """Global quadrature points, shape (n_elements * n_qp, dim), float64."""
        if "qp" not in self._cache:
            x = self.basis.mapping.F(self.basis.X)  # (dim, nelems, nqp)
            self._cache["qp"] = np.ascontiguousarray(x.reshape(x.shape[0], -1).T)
        return self._cache["qp"]

    @property
    def qp_shape(self) -> tuple[int, int]:
        return self.basis.dx.shape

    def random_field(self, rng, *, length, variance) -> np.ndarray:
        """Zero-mean SE Gaussian field at the quadrature points, shape (nelems, nqp)."""
        key = ("grf", length, variance)
        if key not in self._cache:
            qp = self.quadrature_points
            # curved elements may bulge out of the node box
            box = (np.minimum(self.lo, qp.min(axis=0)), np.maximum(self.hi, qp.max(axis=0)))
            grf = GaussianRandomField(length=length, variance=variance)
            self._cache[key] = grf.at(qp, bbox=box)
        return self._cache[key].sample(rng).reshape(self.qp_shape)

    def coefficient(self, value, name: str, *, positive: bool = True) -> np.ndarray:
        """Validate a coefficient and broadcast it to quadrature points (nelems, nqp).

        ``value``: a number, an array per element (nelems,), or per quadrature point
        (nelems, nqp).  NaN/inf, or values <= 0 when ``positive``, raise InputError.
        """
        ne, nq = self.qp_shape
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"coefficient {name!r} must be numeric") from None
        if arr.ndim == 0:
            arr = np.full((ne, nq), float(arr))
        elif arr.shape == (ne,):
            arr = np.repeat(arr[:, None], nq, axis=1)
        elif arr.shape != (ne, nq):
            raise InputError(
                f"coefficient {name!r} must be a number or have shape ({ne},) or ({ne}, {nq}), "
                f"got {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise InputError(f"coefficient {name!r} contains NaN or inf")
        if positive and np.any(arr <= 0):
            raise InputError(
                f"coefficient {name!r} must be positive, min value {float(arr.min()):.3g}"
            )
        return arr

    def coarse(self, per_element: np.ndarray, bins: int = 8) -> np.ndarray:
        """Average per-element values on a ``bins x bins`` grid over the bounding box.

        Returns shape (bins * bins,), float64 (empty cells hold 0).
        """
        key = ("bins", bins)
        if key not in self._cache:
            c = self.mesh.p[:, self.mesh.t].mean(axis=1)[:2]
            span = np.where(self.hi[:2] > self.lo[:2], self.hi[:2] - self.lo[:2], 1.0)
            ij = np.clip(((c.T - self.lo[:2]) / span * bins).astype(np.int64), 0, bins - 1)
            idx = ij[:, 0] * bins + ij[:, 1]
            cnt = np.bincount(idx, minlength=bins * bins).astype(np.float64)
            self._cache[key] = (idx, np.maximum(cnt, 1.0))
        idx, cnt = self._cache[key]
        return np.bincount(idx, weights=per_element, minlength=bins * bins) / cnt

    def scaled_coords(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First two coordinates of ``x`` (dim, ...) scaled to [0, 1] over the bounding box."""
        span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        return (x[0] - self.lo[0]) / span[0], (x[1] - self.lo[1]) / span[1]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, element={self.element!r}, "
            f"dofs={self.basis.N}, options={self.options})"
        )
