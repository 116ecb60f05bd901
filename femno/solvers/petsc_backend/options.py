"""KSP/PC name tables and the PETSc options database of a :class:`PetscKrylov`.

Each solver writes its options under a prefix of its own (``femno<k>_``): femno's
defaults first, then ``pc_options``, then ``petsc_options`` (the user's options win).
After a solve, :func:`unused_options` finds those the user gave that PETSc never read
(a misspelled name, or an option of another KSP/PC type), which the solver warns about.
"""

from __future__ import annotations

import math

import numpy as np

from femno.errors import InputError
from femno.registry import LiveView
from femno.solvers.base import Preconditioner
from femno.solvers.methods import petsc_methods
from femno.solvers.petsc_backend._import import get_petsc

__all__ = [
    "METHODS",
    "PCS",
    "DIRECT_PCS",
    "check_method",
    "resolve_pc",
    "check_settings",
    "default_maxiter",
    "option_entries",
    "unused_options",
]

#: femno method name -> (PETSc KSP type, PC side, norm type); side/norm as strings.  A live
#: view of :func:`femno.solvers.methods.petsc_methods` (registered methods with a ``petsc``
#: entry, plus PETSc-only ``bicgstab`` and ``preonly``).
METHODS = LiveView(petsc_methods, "METHODS")

#: femno preconditioner name -> PETSc PC type (``"petsc:<type>"`` passes any PETSc type).
PCS = {
    "none": "none",
    "jacobi": "jacobi",
    "sor": "sor",
    "ilu": "ilu",
    "ic": "icc",
    "icc": "icc",
    "gamg": "gamg",
    "amg": "gamg",
    "hypre": "hypre",
    "boomeramg": "hypre",
    "lu": "lu",
    "cholesky": "cholesky",
}

# prefix that pc_options keys get for each PETSc PC type
_PC_OPTION_PREFIX = {
    "jacobi": "pc_jacobi_",
    "sor": "pc_sor_",
    "ilu": "pc_factor_",
    "icc": "pc_factor_",
    "lu": "pc_factor_",
    "cholesky": "pc_factor_",
    "gamg": "pc_gamg_",
    "hypre": "pc_hypre_",
}

DIRECT_PCS = ("lu", "cholesky")

_USED_FN = None  # ctypes binding of PetscOptionsUsed; False when unavailable


def check_method(method) -> str:
    """The femno method name (lower case); InputError for an unknown one."""
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise InputError(f"unknown PETSc Krylov method {method!r}; choose one of {sorted(METHODS)}")
    return method.lower()


def resolve_pc(pc) -> tuple:
    """``(petsc_pc_type, pc_name, pc_instance_or_None)`` for a solver's ``pc``
    argument; the type is ``"python"`` for a femno preconditioner instance."""
    if isinstance(pc, str):
        key = pc.lower()
        if key.startswith("petsc:") and len(key) > 6:
            return key[6:], key, None
        if key in PCS:
            return PCS[key], key, None
        raise InputError(
            f"unknown PETSc preconditioner {pc!r}; choose one of {sorted(PCS)}, "
            "'petsc:<type>' or a femno Preconditioner instance"
        )
    if pc is None:
        return "none", "none", None
    if isinstance(pc, Preconditioner) or (
        callable(getattr(pc, "setup", None)) and callable(getattr(pc, "apply", None))
    ):
        return "python", str(getattr(pc, "name", type(pc).__name__)), pc
    raise InputError(f"pc must be a name or a femno Preconditioner, got {type(pc).__name__}")


def check_settings(
    *,
    rtol,
    atol,
    maxiter,
    restart,
    on_fail,
    reuse_pc,
    pc_options,
    petsc_options,
    callback,
    pc_instance: bool,
) -> None:
    """Validate the remaining :class:`PetscKrylov` arguments (InputError if bad)."""
    for label, val in (("rtol", rtol), ("atol", atol)):
        if not isinstance(val, (int, float, np.floating)) or not math.isfinite(val) or val < 0:
            raise InputError(f"{label} must be a finite number >= 0, got {val!r}")
    if rtol == 0 and atol == 0:
        raise InputError("rtol and atol cannot both be 0")
    if maxiter is not None and (not isinstance(maxiter, (int, np.integer)) or maxiter < 1):
        raise InputError(f"maxiter must be a positive integer or None, got {maxiter!r}")
    if not isinstance(restart, (int, np.integer)) or restart < 1:
        raise InputError(f"restart must be a positive integer, got {restart!r}")
    if on_fail not in ("raise", "warn", "ignore"):
        raise InputError(f"on_fail must be 'raise', 'warn' or 'ignore', got {on_fail!r}")
    if reuse_pc not in (False, True, "frozen"):
        raise InputError(f"reuse_pc must be True, False or 'frozen', got {reuse_pc!r}")
    for label, opts in (("pc_options", pc_options), ("petsc_options", petsc_options)):
        if opts is not None and (
            not isinstance(opts, dict) or not all(isinstance(k, str) for k in opts)
        ):
            raise InputError(f"{label} must be a dict with string keys")
    if pc_options and pc_instance:
        raise InputError(
            "pc_options cannot be used with a Preconditioner instance; configure "
            "the instance itself"
        )
    if callback is not None and not callable(callback):
        raise InputError("callback must be callable")


def default_maxiter(n: int) -> int:
    """Default iteration limit for ``n`` unknowns."""
    try:  # the scipy backend's default, so both backends stop at the same count
        from femno.solvers.krylov import default_maxiter
    except ImportError:  # pragma: no cover - scipy layer not present
        return min(max(10 * n, 20), 20_000)
    return int(default_maxiter(n))


def option_value(value):
    """An option value as the string PETSc's database stores (None: a flag)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def option_entries(
    pc_type: str, pc_options: dict, petsc_options: dict, *, size: int, reuse_pc
) -> tuple[dict, dict]:
    """The options (without the solver prefix) a solver puts into the database.

    Returns
    -------
    entries : dict
        ``{name: value}``: femno's defaults, then ``pc_options`` with the PC's option
        prefix added, then ``petsc_options`` (later ones win).
    origin : dict
        ``{name: description}`` for the names that come from the user (``pc_options``
        or ``petsc_options``), e.g. ``"petsc_options['ksp_mx_it']"``.
    """
    entries: dict = {}
    origin: dict = {}
    t = pc_type
    if size > 1 and t in ("ilu", "icc"):
        entries["sub_pc_type"] = t
    if t == "gamg" and reuse_pc:
        entries["pc_gamg_reuse_interpolation"] = True
        # the smoothers' Chebyshev bounds must follow the new matrix: with the SA
        # eigenvalue estimate of the first matrix reused, a stiffer sample made the
        # V-cycle indefinite (3-D elasticity: CG broke down, residual 3.5 after 5 its)
        entries["pc_gamg_use_sa_esteig"] = False
    prefix = _PC_OPTION_PREFIX.get(t, "pc_")
    for key, val in pc_options.items():
        k = key.lstrip("-")
        if t in DIRECT_PCS and k == "solver":
            name = "pc_factor_mat_solver_type"
        elif k.startswith("pc_") or k.startswith("sub_"):
            name = k
        else:
            name = prefix + k
        entries[name] = val
        origin[name] = f"pc_options[{key!r}]"
    for key, val in petsc_options.items():
        name = key.lstrip("-")
        entries[name] = val
        origin[name] = f"petsc_options[{key!r}]"
    return entries, origin


def _options_used_fn():
    """PETSc's C ``PetscOptionsUsed`` through ctypes, or None where it cannot be had.

    petsc4py 3.18 does not wrap ``PetscOptionsUsed``/``PetscOptionsLeft``; the C
    function is looked up in the already loaded petsc4py extension module, whose
    dependencies include libpetsc (the very library, hence the very options database,
    petsc4py uses).
    """
    global _USED_FN
    if _USED_FN is None:
        try:
            import ctypes

            fn = ctypes.CDLL(get_petsc().__file__).PetscOptionsUsed
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
            _USED_FN = fn
        except (ImportError, OSError, AttributeError, TypeError):  # pragma: no cover
            _USED_FN = False
    return _USED_FN or None


def unused_options(names) -> list[str] | None:
    """Which of the global options database's ``names`` (``"-femno0_ksp_max_it"``)
    PETSc has never read; None when this cannot be determined (no ``PetscOptionsUsed``).
    """
    fn = _options_used_fn()
    if fn is None:
        return None
    import ctypes

    out = []
    for name in names:
        used = ctypes.c_int(0)
        # the database stores names without the leading "-"; NULL = the global database
        if fn(None, name.lstrip("-").encode(), ctypes.byref(used)) != 0:
            return None  # PETSc error: do not guess
        if not used.value:
            out.append(name)
    return out
