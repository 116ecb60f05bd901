r"""One registry entry per sequence method of :func:`~femno.datagen.solve_sequence`.

A :class:`SequenceMethod` says how to build the method's
:class:`~femno.datagen.strategy.Strategy` and carries what used to be spread over tables
and if-chains: its default preconditioner, whether it sorts the systems by default,
whether it is a direct solver (no preconditioner applies), which preconditioners it
accepts, whether GCRO-DR's ``k < restart`` applies, and whether it may run with PETSc's
BoomerAMG/GAMG.  Every Krylov method registered in :mod:`femno.solvers.methods` with a
``sequence_pc`` is a sequence method as well (a plain Krylov strategy).  ``femno generate
--method`` choices and the validation derive from :func:`sequence_registry`:

>>> from femno.datagen.strategy import LUStrategy
>>> register_sequence_method(SequenceMethod(
...     "lu-fresh2", lambda o: LUStrategy(reuse=False, rtol=o.rtol), default_pc=None,
...     direct=True))
>>> sequence_registry()["lu-fresh2"].direct
True
>>> unregister_sequence_method("lu-fresh2")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from femno.datagen.strategy import KrylovStrategy, LUStrategy, RecycleStrategy
from femno.errors import InputError
from femno.registry import check_plugin_name, remove_plugin

__all__ = ["SequenceMethod", "StrategyOptions", "SEQUENCE_STRATEGIES", "sequence_registry",
           "register_sequence_method", "unregister_sequence_method", "AMG_PCS", "PETSC_PCS"]

#: pyamg preconditioner names (the ``amg-cg`` methods accept only these)
AMG_PCS = ("amg", "amg-sa", "amg-rs")
#: sequence preconditioners that run on PETSc (methods with ``petsc_pcs``): BoomerAMG, GAMG
PETSC_PCS = ("hypre", "gamg")


@dataclass(frozen=True)
class StrategyOptions:
    """What a :class:`SequenceMethod`'s ``build`` receives (already validated)."""

    method: str
    pc: object
    rtol: float
    k: int = 20
    restart: int = 40
    maxiter: int | None = None
    nns: dict = field(default_factory=dict)  # near_nullspace / block_size for AMG
    direct_backend: str = "auto"  # LU strategies: "auto" (measured) or a pinned backend


@dataclass(frozen=True)
class SequenceMethod:
    """A sequence method as :func:`~femno.datagen.solve_sequence` sees it.

    Parameters
    ----------
    name : str
    build : callable or None
        ``build(options: StrategyOptions) -> Strategy``; ``None`` only for ``auto``
        (which measures and picks among the others).
    default_pc : str or None
        Preconditioner used for ``pc="auto"``.
    sorts : bool
        Sorts the systems (greedy chain) when ``sort`` is not given.
    direct : bool
        A direct solver: giving a preconditioner is an error.
    pcs : tuple of str, optional
        The only preconditioner names it accepts (``None``: any).
    needs_k_below_restart : bool
        GCRO-DR's constraint ``k < restart`` applies.
    petsc_pcs : bool
        May run with ``pc="hypre"``/``"gamg"`` through PETSc.
    """

    name: str
    build: Callable | None
    default_pc: str | None = "none"
    sorts: bool = False
    direct: bool = False
    pcs: tuple | None = None
    needs_k_below_restart: bool = False
    petsc_pcs: bool = False


def _label(o: StrategyOptions) -> str:
    return f"{o.method}+{o.pc if isinstance(o.pc, str) else o.pc.name}"


def _gcrodr(recycle: bool):
    def build(o: StrategyOptions):
        return RecycleStrategy("gcrodr", pc=o.pc, rtol=o.rtol, k=o.k, restart=o.restart,
                               maxiter=o.maxiter, recycle=recycle, label=_label(o), **o.nns)
    return build


def _krylov(method: str, *, reuse_pc: bool = True, label: bool = False):
    def build(o: StrategyOptions):
        if isinstance(o.pc, str) and o.pc.lower() in PETSC_PCS:  # BoomerAMG / GAMG on PETSc
            p = o.pc.lower()
            return KrylovStrategy(method, pc=p, rtol=o.rtol, restart=o.restart,
                                  maxiter=o.maxiter, reuse_pc=True, backend="petsc",
                                  label=f"{method}+{p}", **o.nns)
        return KrylovStrategy(method, pc=o.pc, rtol=o.rtol, restart=o.restart,
                              maxiter=o.maxiter, reuse_pc=reuse_pc,
                              label=o.method if label else None, **o.nns)
    return build


def _dcg(o: StrategyOptions):
    return RecycleStrategy("dcg", pc=o.pc, rtol=o.rtol, k=o.k, restart=o.restart,
                           maxiter=o.maxiter, recycle=True, **o.nns)


def _lu(reuse: bool):
    return lambda o: LUStrategy(reuse=reuse, rtol=o.rtol,
                                backend=o.direct_backend if reuse else "auto")


#: femno's own sequence methods; fill with :func:`register_sequence_method`
SEQUENCE_STRATEGIES: dict = {m.name: m for m in (
    SequenceMethod("auto", None, default_pc=None),
    SequenceMethod("skr", _gcrodr(True), sorts=True, needs_k_below_restart=True),
    SequenceMethod("recycle", _gcrodr(True), needs_k_below_restart=True),
    SequenceMethod("gcrodr", _gcrodr(False), needs_k_below_restart=True),
    SequenceMethod("gmres", _krylov("gmres"), petsc_pcs=True),
    SequenceMethod("cg", _krylov("cg"), default_pc="amg", petsc_pcs=True),
    SequenceMethod("amg-cg", _krylov("cg", label=True), default_pc="amg", pcs=AMG_PCS),
    SequenceMethod("amg-cg-fresh", _krylov("cg", reuse_pc=False, label=True), default_pc="amg",
                   pcs=AMG_PCS),
    SequenceMethod("dcg", _dcg, default_pc="amg"),
    SequenceMethod("direct", _lu(True), default_pc=None, direct=True),
    SequenceMethod("direct-reuse", _lu(True), default_pc=None, direct=True),
    SequenceMethod("direct-fresh", _lu(False), default_pc=None, direct=True),
    SequenceMethod("block", _lu(True), default_pc=None, direct=True),
)}
_BUILTIN = frozenset(SEQUENCE_STRATEGIES)


def sequence_registry() -> dict:
    """name -> :class:`SequenceMethod`: femno's and registered ones, then every Krylov
    method of :mod:`femno.solvers.methods` with a ``sequence_pc`` (a plain Krylov strategy
    keeping its preconditioner from system to system)."""
    from femno.solvers.methods import KRYLOV_METHODS

    extra = {n: SequenceMethod(n, _krylov(n), default_pc=m.sequence_pc,
                               petsc_pcs=m.petsc is not None)
             for n, m in KRYLOV_METHODS.items()
             if m.sequence_pc is not None and n not in SEQUENCE_STRATEGIES}
    return {**SEQUENCE_STRATEGIES, **extra}


def register_sequence_method(method: SequenceMethod, *, replace: bool = False) -> None:
    """Add a sequence method (``solve_sequence(method=name)``, ``femno generate --method``)."""
    if not isinstance(method, SequenceMethod):
        raise InputError(f"register a SequenceMethod, got {type(method).__name__}")
    name = check_plugin_name(method.name, table=SEQUENCE_STRATEGIES, builtin=_BUILTIN,
                             replace=replace, what="sequence method")
    if not callable(method.build):
        raise InputError(f"sequence method {name!r} needs a callable build(options)")
    SEQUENCE_STRATEGIES[name] = method


def unregister_sequence_method(name: str) -> None:
    """Remove a registered (non built-in) sequence method."""
    remove_plugin(name, table=SEQUENCE_STRATEGIES, builtin=_BUILTIN)
