r"""FE² driver: a macro problem, a micro model, load stepping, the curve and a plot.

:func:`run_fe2` is what ``femno fe2`` runs: it builds the macro problem
(:func:`femno.multiscale.macro.macro_problem`) and the micro model
(:func:`femno.multiscale.micro.micro_from_spec`), solves with
:func:`femno.multiscale.macro.solve_macro` and releases the micro model's workers.
:func:`plot_fe2` draws the force-displacement curve and the macro stress field.

>>> res = run_fe2("cook", "linear", steps=2, n=2, load=30.0)
>>> res.iterations, round(res.reaction[-1], 6)
([1, 1], 30.0)
"""

from __future__ import annotations

import numpy as np

from femno.errors import optional_import
from femno.multiscale.macro import MacroResult, macro_problem, solve_macro
from femno.multiscale.micro import MicroModel, micro_from_spec

__all__ = ["run_fe2", "plot_fe2", "von_mises"]


def run_fe2(macro: str = "cook", micro="linear", *, steps: int = 5, n: int = 4,
            cell: str = "quad", load: float | None = None, rve: str = "RVE1",
            workers: int | None = None, scheduler=None, tol: float = 1e-10,
            device: str | None = None, rtol: float = 1e-8, maxiter: int = 15,
            max_cutbacks: int = 4, progress=None) -> MacroResult:
    """Solve one FE² problem.

    Parameters
    ----------
    macro : {"cook", "lprofile"}
        Macro problem (:data:`femno.multiscale.macro.MACROS`).
    micro : str or MicroModel
        A :class:`~femno.multiscale.micro.MicroModel` (kept open: the caller owns it)
        or a specification for :func:`~femno.multiscale.micro.micro_from_spec`
        (``"fe"``, ``"equino:PATH"``, ``"linear"``, ``"matrix"``; closed afterwards).
    steps, rtol, maxiter, max_cutbacks, progress : keyword-only
        Load stepping and Newton options of :func:`~femno.multiscale.macro.solve_macro`.
    n, cell, load : keyword-only
        Macro mesh size, cell kind and total load (N/mm; ``None``: the problem's default).
    rve, workers, scheduler, tol, device : keyword-only
        Micro model options (FE RVE name, parallelism, RVE Newton tolerance; torch device).

    Returns
    -------
    MacroResult
    """
    problem = macro_problem(macro, n=n, cell=cell, load=load)
    own = not isinstance(micro, MicroModel)
    model = micro_from_spec(micro, rve=rve, workers=workers, scheduler=scheduler, tol=tol,
                            device=device) if own else micro
    try:
        return solve_macro(problem, model, steps=steps, rtol=rtol, maxiter=maxiter,
                           max_cutbacks=max_cutbacks, progress=progress)
    finally:
        if own:
            model.close()


def von_mises(stress: np.ndarray) -> np.ndarray:
    r"""In-plane von Mises measure :math:`\sqrt{\sigma_{xx}^2 - \sigma_{xx}\sigma_{yy}
    + \sigma_{yy}^2 + 3\sigma_{xy}^2}` of stresses (..., 3) (:math:`\sigma_{zz}` omitted,
    the micro models do not return it).

    >>> round(float(von_mises(np.array([0.0, 0.0, 1.0])) ** 2), 12)
    3.0
    """
    s = np.asarray(stress, dtype=np.float64)
    return np.sqrt(s[..., 0] ** 2 - s[..., 0] * s[..., 1] + s[..., 1] ** 2 + 3 * s[..., 2] ** 2)


def plot_fe2(result: MacroResult, path, *, title: str | None = None, others=()) -> None:
    """Save a figure: force-displacement curve(s) and the macro stress field.

    Parameters
    ----------
    result : MacroResult
    path : str or path-like
        Image file (format from the extension).
    title : str, optional, keyword-only
    others : sequence of (label, MacroResult), keyword-only
        Further curves drawn on the same axes (e.g. FE vs EquiNO micro).

    Raises
    ------
    MissingDependencyError
        matplotlib is missing (``plot`` extra).
    """
    mpl = optional_import("matplotlib", extra="plot", purpose="--plot")
    mpl.use("Agg")
    plt = optional_import("matplotlib.pyplot", extra="plot", purpose="--plot")
    from matplotlib.collections import PolyCollection

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    label = (result.micro or {}).get("name", "micro")
    for lab, res in [(label, result), *others]:
        ax0.plot(np.abs(res.displacement), np.abs(res.reaction), "o-", ms=3, label=lab)
    ax0.set_xlabel("|tip displacement| [mm]")
    ax0.set_ylabel("|reaction force| [N/mm]")
    ax0.grid(alpha=0.3)
    ax0.legend()
    mesh = result.mesh
    ncorner = 4 if mesh.t.shape[0] >= 4 and type(mesh).__name__.startswith("MeshQuad") else 3
    polys = np.transpose(mesh.p[:, mesh.t[:ncorner]], (2, 1, 0))
    coll = PolyCollection(polys, array=von_mises(result.element_stress), cmap="viridis",
                          edgecolors="k", linewidths=0.2)
    ax1.add_collection(coll)
    ax1.autoscale_view()
    ax1.set_aspect("equal")
    fig.colorbar(coll, ax=ax1, label="in-plane von Mises stress [MPa]")
    ax1.set_title(f"{result.problem}: stress at load factor {result.load_factor[-1]:.3g}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
