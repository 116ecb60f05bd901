"""``femno generate FAMILY --steps T``: a resumable store of trajectories.

The dataset has the layout of :mod:`femno.datagen.store` with a time axis:

==========================  =====================  ===========================================
array                       shape                  content
==========================  =====================  ===========================================
``solution``                (N, T + 1, n_dofs)     full FE vectors at ``times``; row r is
                                                   sample ``sample_index[r]`` (rows in
                                                   sample order: nothing to sort)
``times``                   (T + 1,)               :math:`t_n = n \\Delta t` (static)
``inputs/<name>``           (N, ...)               the sample's parameters (coefficient,
                                                   initial condition ``u_prev``)
``stats/residual``          (N, T)                 true relative residual of every step
``stats/energy_residual``   (N, T)                 discrete energy-balance defect per step
``stats/time``              (N,)                   seconds per trajectory
``stats/converged``         (N,)                   every step's residual <= ``rtol``
==========================  =====================  ===========================================

Chunks hold ``block`` whole trajectories ``[sample, time, dof]``; a block is written,
fsynced and marked like a steady dataset's, so a killed run loses at most the block in
flight and resuming recomputes exactly what is missing (the same seeds give the same
trajectories, bit for bit). The scheme (``theta``, ``dt``, ``steps``) is recorded in the
manifest's ``layout["trajectory"]`` and is part of the dataset's identity.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np

from femno.datagen import runner
from femno.datagen.generate import (
    _family_config,
    _int,
    _jsonable,
    _layout,
    _progress,
    _spec_of,
    _versions,
    open_or_create,
)
from femno.datagen.store import DatasetStore, writer_lock
from femno.datagen.trajectory import _check, check_trajectory_method, solve_trajectory
from femno.errors import InputError

__all__ = ["generate_trajectories", "TRAJECTORY_IDENTITY"]

#: settings that must match for a dataset to be resumed
TRAJECTORY_IDENTITY = ("family", "family_config", "samples", "seed", "block", "steps", "dt",
                       "theta", "method", "rtol")


def generate_trajectories(family, *, samples, steps, out, dt=None, theta=1.0, method="auto",
                          rtol=1e-8, seed=0, block=8, family_options=None, progress=True) -> dict:
    r"""Generate (or resume) a dataset of ``samples`` trajectories of ``steps`` time steps.

    Parameters
    ----------
    family : str or type
        A family with a time-dependent form (``operators(params) -> (M, K, F)``):
        ``"heat"`` or ``"advection-diffusion"``.
    samples, steps : int, keyword-only
        Trajectories ``N`` and time steps ``T`` per trajectory.
    out : path, keyword-only
        Dataset directory (an existing one with the same settings is resumed).
    dt : float, optional, keyword-only
        Time step (default: the family's ``dt`` option).
    theta : float in [1/2, 1], keyword-only
        θ-scheme: 1 implicit Euler, 1/2 Crank--Nicolson.
    method : {"auto", "reuse", "amg", "recycle", "hypre", "naive"}, keyword-only
        ``auto`` (default): per trajectory, AMG on the first step, the factorization
        projected from patches of the step matrix and made only where it can pay, the
        cheaper measured way for the rest (:mod:`femno.datagen.step_solver`; on 2-D
        meshes the factorization, on large 3-D ones AMG); ``reuse``: one factorization
        per trajectory; ``amg``: one AMG hierarchy, CG/GMRES from the previous step to
        rtol 1e-10; ``naive``: assembly + ``spsolve`` every step. Nonlinear families
        use chord Newton for all but ``naive``. Families whose coefficients change in
        time (``heat-varying``, a user family with ``time_dependent = True`` and
        ``operators_at(params, t)``) get a new step matrix every step:
        :mod:`femno.datagen.varying_step` (``reuse`` refactorizes, ``amg`` updates one
        hierarchy, ``recycle`` also carries a deflation space, ``hypre`` sets up
        BoomerAMG per step, ``auto`` measures).
    rtol : float, keyword-only
        A trajectory counts as converged when every step's true relative residual is
        at most ``rtol`` (direct solves: rounding level).
    seed, block, family_options, progress : keyword-only
        As for :func:`femno.datagen.generate.generate_dataset`.

    Returns
    -------
    dict
        ``samples, steps, done, total_s, samples_per_s, max_residual,
        max_energy_residual, failures, path, message, repaired_blocks``.

    Examples
    --------
    >>> import tempfile, os
    >>> d = os.path.join(tempfile.mkdtemp(), "heat-traj")
    >>> s = generate_trajectories("heat", samples=2, steps=3, out=d, block=1,
    ...                           family_options={"n": 6}, progress=False)
    >>> s["done"], s["failures"], DatasetStore.open(d).root["solution"].shape
    (2, 0, (2, 4, 49))
    """
    t0 = time.perf_counter()
    samples = _int(samples, "samples", 1)
    block = _int(block, "block", 1)
    seed = _int(seed, "seed", 0)
    if out is None or str(out) == "":
        raise InputError("out must be a directory path")
    options = _jsonable(dict(family_options or {}), "family_options")
    spec = _spec_of(family)
    fam = runner.load_family(spec, options)
    if getattr(fam, "operators", None) is None and not (
            getattr(fam, "time_dependent", False) and hasattr(fam, "operators_at")):
        raise InputError(f"family {fam.name!r} has no time-dependent form (operators(params) "
                         "-> (M, K, F), or time_dependent = True and operators_at(params, t)); "
                         "--steps works for: heat, advection-diffusion, wave, allen-cahn, "
                         "heat-varying")
    steps, dt, theta = _check(steps, fam.options["dt"] if dt is None else dt, theta, method)
    check_trajectory_method(fam, method)
    rtol = float(rtol)
    settings = {"family": fam.name, "family_spec": spec, "family_options": options,
                "family_config": _family_config(fam), "samples": samples, "seed": seed,
                "block": block, "steps": steps, "dt": dt, "theta": theta, "method": method,
                "rtol": rtol, "mode": "trajectory"}
    with writer_lock(out):
        return _generate(fam, settings, out=out, progress=progress, t0=t0)


def _generate(fam, settings, *, out, progress, t0):
    store, repaired, message = open_or_create(out, settings, TRAJECTORY_IDENTITY,
                                              lambda: _create(fam, settings, out))
    pending = [b for b in range(store.n_blocks) if b not in store.done_blocks()]
    done, worst, worst_e, failures = 0, 0.0, 0.0, 0
    todo = sum(store.rows(b)[1] - store.rows(b)[0] for b in pending)
    bar = _progress(store.samples, store.samples - todo, progress, f"{fam.name} trajectories")
    try:
        for b in pending:
            lo, hi = store.rows(b)
            rows = {"solution": [], "stats/residual": [], "stats/energy_residual": [],
                    "stats/time": [], "stats/converged": []}
            inputs, solvers = {}, []
            for i in range(lo, hi):
                params = runner.sample_params(fam, settings["seed"], i)
                t = time.perf_counter()
                tr = solve_trajectory(fam, params, steps=settings["steps"], dt=settings["dt"],
                                      theta=settings["theta"], method=settings["method"])
                ok = bool(np.all(tr.residuals <= max(settings["rtol"], 1e-12)))
                failures += not ok
                worst = max(worst, float(tr.residuals.max()))
                worst_e = max(worst_e, float(np.abs(tr.energy_residual).max()))
                rows["solution"].append(tr.u)
                rows["stats/residual"].append(tr.residuals)
                rows["stats/energy_residual"].append(tr.energy_residual)
                rows["stats/time"].append(time.perf_counter() - t)
                rows["stats/converged"].append(ok)
                solvers.append(tr.solver)
                for k, v in runner.input_arrays(params).items():
                    inputs.setdefault(f"inputs/{k}", []).append(v)
                bar.update(1)
            data = {k: np.asarray(v) for k, v in {**rows, **inputs}.items()}
            data["sample_index"] = np.arange(lo, hi, dtype=np.int64)
            store.write_block(b, data)
            store.mark_done(b, {"samples": hi - lo, "method": settings["method"],
                                "solvers": {k: solvers.count(k) for k in sorted(set(solvers))},
                                "failures": int(sum(not c for c in rows["stats/converged"]))})
            done += hi - lo
    finally:
        bar.close()
    total = time.perf_counter() - t0
    return {"samples": store.samples, "steps": settings["steps"], "done": done,
            "total_s": total, "samples_per_s": done / total if total > 0 else 0.0,
            "max_residual": worst, "max_energy_residual": worst_e, "failures": failures,
            "path": str(store.path), "message": message, "repaired_blocks": repaired}


def _create(fam, settings, out):
    seed, steps = settings["seed"], settings["steps"]
    arrays, static, layout = _layout(fam, settings["family_spec"], settings["family_options"], seed)
    n = fam.basis.N
    arrays.pop("stats/iterations", None)  # a trajectory has per-step residuals instead
    arrays.update({"solution": ((steps + 1, n), "f8"), "stats/residual": ((steps,), "f8"),
                   "stats/energy_residual": ((steps,), "f8")})
    static["times"] = settings["dt"] * np.arange(steps + 1, dtype=np.float64)
    layout["row_order"] = "rows are samples in index order; sample_index[row] = row"
    scheme = ("newmark (beta 1/4, gamma 1/2)" if getattr(fam, "time_order", 1) == 2 else
              "implicit Euler + Newton" if getattr(fam, "nonlinear", False) else
              "theta, time-dependent stiffness" if getattr(fam, "time_dependent", False)
              else "theta")
    layout["trajectory"] = {"steps": steps, "dt": settings["dt"],
                            "theta": settings["theta"] if scheme.startswith("theta") else None,
                            "scheme": scheme, "axes": ["sample", "time", "dof"]}
    manifest = {"format": "femno-dataset", "format_version": 1, "settings": settings,
                "layout": layout, "versions": _versions(),
                "resolved": {"method": settings["method"], "pc": "none", "explanation": {
                    "reuse": "one factorization per trajectory (fixed step matrix; a "
                             "changing one: refactorized per step, analysis reused)",
                    "amg": "one AMG hierarchy per trajectory (updated per step where the "
                           "step matrix changes), CG/GMRES per step",
                    "recycle": "AMG and a deflation/recycle space carried across steps "
                               "(changing step matrices only)",
                    "hypre": "BoomerAMG (PETSc) set up per step (changing step matrices "
                             "only)",
                    "auto": "per trajectory, the cheaper of one factorization and one AMG "
                            "hierarchy (a changing step matrix: the cheapest of "
                            "refactorization, updated AMG, recycling and BoomerAMG), "
                            "measured on the first steps (block markers count the choices)",
                    "naive": "assembly + spsolve per step"}[settings["method"]],
                             "solver_options": {}},
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return DatasetStore.create(out, manifest=manifest, arrays=arrays, static=static)
