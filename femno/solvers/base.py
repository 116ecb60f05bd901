"""Interfaces shared by every solver and preconditioner of femno.

A *preconditioner* is set up once for a matrix and then applied to residuals:

.. math:: z = M^{-1} r, \\qquad M \\approx A.

A *solver* is a callable ``solver(A, b, x0=None) -> x`` (scikit-fem's
``LinearSolver`` protocol, so it can be passed to ``skfem.solve(..., solver=...)``)
that keeps the statistics of its last solve in ``solver.stats``.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femno.errors import ConvergenceError, InputError

__all__ = ["Preconditioner", "check_system", "report_nonconvergence"]


class Preconditioner(ABC):
    """Base class of femno preconditioners.

    Subclasses implement :meth:`_setup` (build from a matrix) and :meth:`apply`.
    :meth:`update` is called when a matrix with the *same sparsity pattern* but new
    values arrives; the default rebuilds from scratch, subclasses that can reuse
    work (AMG keeps its aggregates and prolongators) override it.

    Attributes
    ----------
    name : str
        Registry name (``"jacobi"``, ``"amg"``, ...).
    setup_s : float
        Seconds spent in the last :meth:`setup` or :meth:`update`.
    symmetric : bool
        True when ``M^{-1}`` is a fixed symmetric positive definite operator for SPD
        ``A`` (so plain CG/MINRES may use it); nonlinear or nonsymmetric
        preconditioners set it False and need flexible methods.
    """

    name: str = "base"
    symmetric: bool = True

    def __init__(self):
        self.setup_s = 0.0
        self.shape = None

    def setup(self, A) -> Preconditioner:
        """Build the preconditioner for ``A`` (sparse, shape ``(n, n)``); returns self."""
        t = time.perf_counter()
        self._setup(sp.csr_matrix(A))
        self.shape = A.shape
        self.setup_s = time.perf_counter() - t
        return self

    def update(self, A) -> Preconditioner:
        """New values, same pattern: reuse what can be reused. Default: full setup."""
        return self.setup(A)

    @abstractmethod
    def _setup(self, A: sp.csr_matrix) -> None: ...

    @abstractmethod
    def apply(self, r: np.ndarray) -> np.ndarray:
        """Return ``z = M^{-1} r`` for ``r`` of shape ``(n,)``, float64."""

    def __call__(self, r):
        return self.apply(r)

    def as_linear_operator(self) -> spla.LinearOperator:
        """The preconditioner as a scipy ``LinearOperator`` (for scipy's Krylov methods)."""
        if self.shape is None:
            raise RuntimeError(f"preconditioner {self.name!r} used before setup(A)")
        return spla.LinearOperator(self.shape, matvec=self.apply, dtype=np.float64)


def check_tolerances(rtol, atol=0.0, *, what: str = "rtol") -> tuple[float, float]:
    r"""femno's one rule for solver tolerances: ``0 < rtol < 1`` and ``atol >= 0``, finite.

    Every entry point (the factory, the recycling methods, ``solve_sequence``,
    ``generate_dataset``, ``femno solve``) validates through this function, so they
    accept and refuse the same values with the same message (``what`` names the option).

    >>> check_tolerances("1e-6")
    (1e-06, 0.0)
    >>> check_tolerances(1.0, what="--rtol")
    Traceback (most recent call last):
    ...
    femno.errors.InputError: --rtol must be a positive number below 1, got 1.0
    """
    try:
        r, a = float(rtol), float(atol)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a positive number below 1 and atol a non-negative "
                         f"number, got {rtol!r}, {atol!r}") from None
    if not (math.isfinite(r) and 0.0 < r < 1.0):
        raise InputError(f"{what} must be a positive number below 1, got {rtol!r}")
    if not (math.isfinite(a) and a >= 0.0):
        raise InputError(f"atol must be a non-negative finite number, got {atol!r}")
    return r, a


def check_system(A, b, x0=None):
    """Validate a linear system; return ``(A_csr, b, x0)`` as float64.

    Raises :class:`~femno.errors.InputError` naming the problem for a non-square
    matrix, mismatched sizes, or NaN/Inf entries.

    >>> import scipy.sparse as sp, numpy as np
    >>> check_system(sp.eye(3), np.ones(2))
    Traceback (most recent call last):
    ...
    femno.errors.InputError: right-hand side has length 2 but the matrix is 3 x 3
    """
    if not sp.issparse(A):
        if isinstance(A, np.ndarray) and A.ndim == 2:
            A = sp.csr_matrix(A)
        else:
            raise InputError(f"matrix must be a scipy sparse matrix or 2-D array, got {type(A).__name__}")
    if A.shape[0] != A.shape[1]:
        raise InputError(f"matrix must be square, got shape {A.shape[0]} x {A.shape[1]}")
    A = sp.csr_matrix(A, dtype=np.float64)
    if not np.all(np.isfinite(A.data)):
        raise InputError("matrix has NaN or Inf entries")
    b = np.asarray(b, dtype=np.float64)
    if b.ndim != 1 or b.shape[0] != A.shape[0]:
        raise InputError(
            f"right-hand side has length {b.shape[0] if b.ndim == 1 else b.shape} "
            f"but the matrix is {A.shape[0]} x {A.shape[1]}"
        )
    if not np.all(np.isfinite(b)):
        raise InputError("right-hand side has NaN or Inf entries")
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.shape != b.shape:
            raise InputError(f"initial guess has shape {x0.shape}, expected {b.shape}")
        if not np.all(np.isfinite(x0)):
            raise InputError("initial guess has NaN or Inf entries")
    return A, b, x0


def report_nonconvergence(message: str, *, on_fail: str, stats=None, x=None, stacklevel: int = 2):
    """Act on a solve that missed its tolerance, as ``on_fail`` says.

    ``"raise"``: raise :class:`~femno.errors.ConvergenceError` carrying ``stats`` and
    the last iterate ``x``; ``"warn"``: emit a ``RuntimeWarning`` (``stacklevel``
    counted from the caller); ``"ignore"``: nothing (the caller's stats say it).
    """
    if on_fail == "raise":
        raise ConvergenceError(message, stats=stats, x=x)
    if on_fail == "warn":
        import warnings

        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)
