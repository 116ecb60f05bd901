r"""Parametric problem families producing condensed linear systems.

=====================  =============================================================  =====
name                   problem                                                        SPD
=====================  =============================================================  =====
poisson                :math:`-\Delta u = f`, random sine-series source (fixed A)      yes
darcy                  :math:`-\nabla\cdot(a\nabla u) = f`, log-normal :math:`a`       yes
darcy-pwc              same, :math:`a` piecewise constant on a k x k checkerboard      yes
helmholtz              :math:`-\Delta u - k(x)^2 u = f`                                no
heat                   :math:`(M + \Delta t K(a)) u = M u_{prev} + \Delta t F`         yes
advection-diffusion    heat plus a constant random wind (nonsymmetric)                no
wave                   :math:`u_{tt} - \nabla\cdot(a\nabla u) = f`, Newmark step      yes
allen-cahn             first Newton step of implicit Euler for Allen--Cahn            yes
heat-varying           heat with a travelling coefficient (a new matrix every step)   yes
elasticity             plane strain, log-normal E, clamped left edge                   yes
=====================  =============================================================  =====

>>> sys = sample_system(get_family("darcy", n=8), seed=0)
>>> sys.A.shape == (sys.dofs, sys.dofs), sys.b.shape
(True, (49,))
"""

from __future__ import annotations

import numpy as np

from femno.errors import InputError
from femno.fem.families.base import Family, LinearSystem
from femno.fem.families.elasticity import Elasticity
from femno.fem.families.scalar import Darcy, DarcyPWC, Heat, Helmholtz, Poisson
from femno.fem.families.transient import AdvectionDiffusion, AllenCahn, HeatVarying, Wave

__all__ = [
    "Family",
    "LinearSystem",
    "FAMILIES",
    "get_family",
    "register_family",
    "unregister_family",
    "sample_system",
    "Poisson",
    "Darcy",
    "DarcyPWC",
    "Helmholtz",
    "Heat",
    "Elasticity",
    "AdvectionDiffusion",
    "Wave",
    "AllenCahn",
    "HeatVarying",
]

FAMILIES: dict[str, type] = {
    cls.name: cls for cls in (Poisson, Darcy, DarcyPWC, Helmholtz, Heat, Elasticity,
                               AdvectionDiffusion, Wave, AllenCahn, HeatVarying)
}
_BUILTIN_FAMILIES = frozenset(FAMILIES)


def register_family(cls: type, *, name: str | None = None, replace: bool = False) -> None:
    """Register a :class:`Family` subclass under ``name`` (default ``cls.name``).

    ``get_family``, ``femno solve NAME``, ``femno generate NAME`` and the dataset tools
    then accept it by name (workers of ``femno generate --workers K`` must import the
    module that registers it; ``FILE.py:NAME`` needs no registration at all).

    >>> class Tiny(Poisson):
    ...     name = "tiny-poisson"
    >>> register_family(Tiny)
    >>> sample_system("tiny-poisson", 0).dofs
    3969
    >>> unregister_family("tiny-poisson")
    """
    from femno.registry import check_plugin_name

    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise InputError(f"register a Family subclass, got {cls!r}")
    key = check_plugin_name(cls.name if name is None else name, table=FAMILIES,
                            builtin=_BUILTIN_FAMILIES, replace=replace, what="family")
    FAMILIES[key] = cls


def unregister_family(name: str) -> None:
    """Remove a registered (non built-in) family."""
    from femno.registry import remove_plugin

    remove_plugin(name, table=FAMILIES, builtin=_BUILTIN_FAMILIES)


def get_family(name: str, **options) -> Family:
    """Instantiate a family by name (see :data:`FAMILIES`); options go to its constructor.

    >>> get_family("poisson", n=4).name
    'poisson'
    """
    if name not in FAMILIES:
        raise InputError(f"unknown family {name!r}; valid names: {sorted(FAMILIES)}")
    return FAMILIES[name](**options)


def sample_system(family: Family | str, seed: int | np.random.Generator) -> LinearSystem:
    """Sample parameters with ``np.random.default_rng(seed)`` and assemble the system."""
    if isinstance(family, str):
        family = get_family(family)
    if not isinstance(family, Family):
        raise InputError(f"family must be a Family or a name, got {type(family).__name__}")
    rng = np.random.default_rng(seed)
    return family.assemble(family.sample(rng))
