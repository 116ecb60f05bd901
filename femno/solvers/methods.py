r"""One registry entry per Krylov method: what every layer needs to know about it.

A :class:`KrylovMethod` carries the numpy implementation and the facts that used to live
in parallel tables: whether it needs a fixed symmetric preconditioner, whether it is for
SPD matrices (the non-convergence hint), which factory options it takes, its PETSc KSP
type, and whether ``femno solve --solver`` and :func:`~femno.datagen.solve_sequence`
offer it.  :func:`femno.solvers.krylov`, the PETSc backend's method table, the CLI's
``--solver`` choices and datagen's plain Krylov strategies all read
:data:`KRYLOV_METHODS`; adding a method is one file (its implementation) and one
:func:`register_krylov_method` call:

>>> import numpy as np, scipy.sparse as sp
>>> from femno.solvers import krylov
>>> def richardson(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None,
...                callback=None, omega=0.5):
...     x = np.zeros_like(b) if x0 is None else x0.copy()
...     apply = (lambda r: r) if M is None else M
...     res, its = [1.0], 0
...     while res[-1] > rtol and its < (maxiter or 1000):
...         x = x + omega * apply(b - A @ x)
...         its += 1
...         res.append(np.linalg.norm(b - A @ x) / np.linalg.norm(b))
...     return x, {"iterations": its, "residuals": res, "residual_kind": "true",
...                "reason": "rtol" if res[-1] <= rtol else "maxiter"}
>>> register_krylov_method(KrylovMethod("richardson", richardson, symmetric_pc=False))
>>> A = sp.diags([1.0, 2.0, 3.0], format="csr")
>>> s = krylov("richardson", pc="jacobi")
>>> x = s(A, np.ones(3))
>>> s.stats.method, s.stats.converged
('richardson', True)
>>> unregister_krylov_method("richardson")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from femno.errors import InputError
from femno.registry import check_plugin_name, remove_plugin
from femno.solvers.krylov import cg, fcg, fgmres, gmres, minres
from femno.solvers.neural import dcdm
from femno.solvers.recycle import deflated_cg, gcrodr

__all__ = ["KrylovMethod", "KRYLOV_METHODS", "register_krylov_method",
           "unregister_krylov_method", "krylov_method", "petsc_methods",
           "PETSC_ONLY_METHODS"]


def _no_options(solver) -> dict:
    return {}


@dataclass(frozen=True)
class KrylovMethod:
    r"""A Krylov method as femno's layers see it.

    Parameters
    ----------
    name : str
        Lower-case name used by ``krylov(name)``, ``--solver`` and ``solve_sequence``.
    solve : callable
        ``solve(A, b, *, x0, M, rtol, atol, maxiter, callback, **options) -> (x, info)``
        on scipy/numpy data; ``M`` is ``None`` or a callable applying the preconditioner;
        ``info`` holds ``iterations``, ``residuals`` (relative), ``residual_kind`` and
        ``reason``.  The factory recomputes the true residual afterwards.
    symmetric_pc : bool
        Needs a fixed symmetric preconditioner (CG, MINRES); others accept any.
    spd : bool
        Meant for SPD matrices: a failure gets the "is A SPD?" hint.
    options : callable
        ``options(solver) -> dict``: the extra keywords ``solve`` gets from the configured
        :class:`~femno.solvers.factory.KrylovSolver` (its ``restart``, ``mmax``, ``k``,
        ``recycle_space``...); default none.
    petsc : tuple of str, optional
        ``(KSP type, PC side, norm type)`` for ``backend="petsc"``; ``None``: scipy only
        (except where the PETSc backend has its own implementation).
    cli : bool
        Offered by ``femno solve --solver``.
    sequence_pc : str or None
        Offered by :func:`~femno.datagen.solve_sequence` as a plain Krylov strategy with
        this default preconditioner; ``None``: not offered there (built-in methods that
        need a recycle space or a neural model have strategies of their own).
    recycling : bool
        Carries a recycle/deflation space (``recycle=``, ``k=`` apply).
    """

    name: str
    solve: Callable
    symmetric_pc: bool = False
    spd: bool = False
    options: Callable = field(default=_no_options, compare=False)
    petsc: tuple | None = None
    cli: bool = True
    sequence_pc: str | None = "none"
    recycling: bool = False


def _recycle_options(solver) -> dict:
    opts = {"k": solver.k, "recycle": solver.recycle_space if solver.recycle else None}
    if solver.method == "gcrodr":
        opts["m"] = solver.restart
    elif not solver.recycle:
        opts["k"] = 0  # dcg without a carried space is plain PCG (no harvest cost)
    return opts


#: name -> :class:`KrylovMethod`; fill with :func:`register_krylov_method`
KRYLOV_METHODS: dict = {
    "cg": KrylovMethod("cg", cg, symmetric_pc=True, spd=True,
                       petsc=("cg", "left", "unpreconditioned"), sequence_pc=None),
    "fcg": KrylovMethod("fcg", fcg, spd=True, options=lambda s: {"mmax": s.mmax},
                        petsc=("fcg", "left", "unpreconditioned"), sequence_pc=None),
    "gmres": KrylovMethod("gmres", gmres, options=lambda s: {"restart": s.restart},
                          petsc=("gmres", "right", "unpreconditioned"), sequence_pc=None),
    "fgmres": KrylovMethod("fgmres", fgmres, options=lambda s: {"restart": s.restart},
                           petsc=("fgmres", "right", "unpreconditioned"), sequence_pc=None),
    "minres": KrylovMethod("minres", minres, symmetric_pc=True,
                           petsc=("minres", "left", "preconditioned"), sequence_pc=None),
    "gcrodr": KrylovMethod("gcrodr", gcrodr, options=_recycle_options, cli=False,
                           sequence_pc=None, recycling=True),
    "dcg": KrylovMethod("dcg", deflated_cg, symmetric_pc=True, spd=True,
                        options=_recycle_options, cli=False, sequence_pc=None, recycling=True),
    "dcdm": KrylovMethod("dcdm", dcdm, spd=True, options=lambda s: {"k": s.k},
                         sequence_pc=None),
}

#: the built-in names (they cannot be replaced or removed)
BUILTIN = frozenset(KRYLOV_METHODS)


def register_krylov_method(method: KrylovMethod, *, replace: bool = False) -> None:
    """Add ``method`` to :data:`KRYLOV_METHODS` (``replace=True`` to overwrite a plug-in)."""
    if not isinstance(method, KrylovMethod):
        raise InputError(f"register a KrylovMethod, got {type(method).__name__}")
    name = check_plugin_name(method.name, table=KRYLOV_METHODS, replace=replace,
                             builtin=BUILTIN | {"direct", "auto", "preonly"},
                             what="Krylov method")
    if not callable(method.solve) or not callable(method.options):
        raise InputError(f"Krylov method {name!r}: solve and options must be callable")
    if method.petsc is not None and (len(method.petsc) != 3
                                     or not all(isinstance(p, str) for p in method.petsc)):
        raise InputError(f"Krylov method {name!r}: petsc must be (KSP type, side, norm)")
    KRYLOV_METHODS[name] = method


def unregister_krylov_method(name: str) -> None:
    """Remove a registered (non built-in) method."""
    remove_plugin(name, table=KRYLOV_METHODS, builtin=BUILTIN)


def krylov_method(name) -> KrylovMethod:
    """The entry ``name`` (case-insensitive); :class:`InputError` listing the valid ones."""
    key = str(name).lower()
    if key not in KRYLOV_METHODS:
        raise InputError(f"unknown Krylov method {name!r}; valid: "
                         f"{', '.join(KRYLOV_METHODS)}, direct")
    return KRYLOV_METHODS[key]


#: methods the PETSc backend offers without a femno implementation: name -> KSP settings
PETSC_ONLY_METHODS = {
    "bicgstab": ("bcgs", "right", "unpreconditioned"),
    "preonly": ("preonly", "left", "none"),
}


def petsc_methods() -> dict:
    """name -> (KSP type, PC side, norm type) of every method ``backend="petsc"`` runs."""
    out = {m.name: tuple(m.petsc) for m in KRYLOV_METHODS.values() if m.petsc is not None}
    return {**out, **PETSC_ONLY_METHODS}
