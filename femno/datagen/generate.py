r"""Resumable, deterministic generation of training datasets from parametric families.

:func:`generate_dataset` runs four stages:

1. **Sample features.** Sample ``i`` has parameters
   ``family.sample(np.random.default_rng([seed, i]))`` (independent of workers and
   order); only its sort features are kept.
2. **Sort once, globally** (:func:`femno.datagen.sorting.sort_systems`, greedy chain by
   default) and cut the chain into contiguous *blocks* of ``block`` samples.
3. **Solve blocks** on the workers (:mod:`femno.datagen.runner`): each block is
   re-sampled, assembled and solved by :func:`femno.datagen.sequence.solve_sequence`
   with ``sort="none"`` from a fresh solver state.
4. **Write** each finished block in the main process into the store
   (:mod:`femno.datagen.store`), then its completion marker.

Trade-off: the recycle space (or reused factorization / AMG hierarchy) is carried
*within* a block, never across blocks.  That costs a warm-up per block (keep
``block`` well above the recycle dimension, e.g. 32-128) but makes the dataset
bit-for-bit identical for any number of workers, any scheduler and any
interruption point, and lets a killed run resume without recomputing finished
blocks.  Reproducibility holds for a fixed BLAS threading configuration (Dask
nannies set ``OPENBLAS_NUM_THREADS=1``; large reductions may round differently
with a different thread count).  Per-sample solve times are the only
non-deterministic stored values.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone

import numpy as np

from femno.datagen import runner
from femno.datagen.store import DatasetStore, read_manifest, writer_lock
from femno.errors import InputError
from femno.solvers.base import check_tolerances

__all__ = ["generate_dataset", "KNOWN_METHODS", "IDENTITY_KEYS"]

KNOWN_METHODS = ("auto", "skr", "recycle", "gcrodr", "gmres", "cg", "amg-cg", "direct",
                 "block", "dcg")
SORTS = ("greedy", "grouped", "none")
IDENTITY_KEYS = ("family", "family_config", "samples", "seed", "method", "pc", "rtol", "block",
                 "sort", "solver_options", "warm_start")
#: observers ``fn(event, block)`` of the block loop: ``"written"`` once a block's arrays are
#: in the store (no marker yet), ``"done"`` once its completion marker is.  For monitoring;
#: the kill-and-resume tests register one that SIGKILLs the process (fault injection from
#: the test side: production code has no kill switch).
BLOCK_EVENTS: list = []


def _int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _methods() -> tuple:
    try:
        from femno.datagen.sequence import sequence_methods
    except ImportError:  # pragma: no cover - sequence module missing
        return KNOWN_METHODS
    return tuple(sequence_methods())


def _check_solver(method, pc, rtol, solver_options) -> None:
    """Validate the solver settings with solve_sequence's own checks, before any work."""
    from femno.datagen.sequence import check_sequence_options

    check_sequence_options(method, pc, rtol, **solver_options)


#: direct methods whose factorization library is measured (and then pinned per dataset)
_PINNED_DIRECT = ("direct", "direct-reuse")


def _pin_direct_backend(fam, seed, order, method, rtol, solver_options, *, n_blocks) -> dict:
    """``{"direct_backend": name}`` measured once for a dataset of several blocks.

    Each block solves from a fresh state, so a direct method would measure CHOLMOD /
    MUMPS / SuperLU again in every block.  With more than one block the first five
    systems of the chain choose the library once (the same measurement
    :class:`~femno.datagen.strategy.LUStrategy` makes); it is stored in the manifest's
    ``resolved`` settings and every block uses it.  ``{}`` when nothing is to pin.
    """
    from femno.datagen.sequence import solve_sequence

    if (method not in _PINNED_DIRECT or n_blocks < 2
            or solver_options.get("direct_backend", "auto") != "auto"):
        return {}
    systems = [fam.assemble(runner.sample_params(fam, seed, int(i))) for i in order[:5]]
    res = solve_sequence([(s.A, s.b) for s in systems], method=method, rtol=rtol, sort="none",
                         on_fail="ignore")
    return {"direct_backend": res.direct_backend} if res.direct_backend else {}


def _resolve_auto(fam, spec, options, seed, order, pc, rtol, solver_options) -> tuple:
    """Pin ``method="auto"`` to one concrete method for the whole dataset.

    ``auto`` chooses with timed probes, so letting every block choose would make
    the dataset depend on machine load.  Instead auto runs once, at creation, on
    the first systems of the chain (results discarded); the method it picked is
    stored in the manifest and used for every block.  Falls back to a structural
    rule (fixed matrix: block LU; SPD: AMG-CG; else sparse LU) when auto's label
    does not name a method.
    """
    from femno.datagen.sequence import SEQUENCE_METHODS, solve_sequence

    systems = [fam.assemble(runner.sample_params(fam, seed, int(i))) for i in order[:8]]
    label, explanation = "", ""
    try:
        # the probe's allowance is a share of the whole dataset's projected cost
        res = solve_sequence([(s.A, s.b) for s in systems], method="auto", pc=pc, rtol=rtol,
                             sort="none", on_fail="ignore", auto_total=len(order),
                             **{**runner.nullspace_options(fam), **solver_options})
        label, explanation = str(res.method), str(res.explanation)
    except ImportError:  # auto strategy not available
        pass
    chosen = label.split("->", 1)[1] if "->" in label else ""
    name, _, chosen_pc = chosen.partition("+")
    keys = sorted((k for k in SEQUENCE_METHODS if k != "auto" and name.startswith(k)), key=len)
    if keys:
        method = keys[-1]
        if pc == "auto" and chosen_pc and method not in ("direct", "direct-fresh", "block"):
            pc = chosen_pc
    else:
        method = "block" if fam.fixed_matrix else ("amg-cg" if fam.spd else "direct")
        explanation = (f"auto -> {method} by structure (fixed matrix={fam.fixed_matrix}, "
                       f"spd={fam.spd})" + (f"; probe said {label!r}" if label else ""))
    if method == "block" and not fam.fixed_matrix:
        method = "direct"
    return method, pc, f"auto pinned once for all blocks: {method} ({explanation})"


def _jsonable(obj, what: str):
    try:
        return json.loads(json.dumps(obj, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be JSON-serializable (numbers, strings): {exc}") from exc


def _spec_of(family) -> str:
    """A string a worker process can rebuild the family from."""
    if isinstance(family, str):
        return family
    if isinstance(family, type):
        module = sys.modules.get(family.__module__)
        if family.__module__ == "__main__" or module is None:
            path = getattr(module, "__file__", None)
            if not path:
                raise InputError(f"cannot locate the module of family class {family.__name__}")
            return f"{os.path.abspath(path)}:{family.__qualname__}"
        return f"{family.__module__}:{family.__qualname__}"
    raise InputError(
        f"family must be a name or a Family subclass, got {type(family).__name__} "
        "(instances cannot be rebuilt on workers: pass the class and family_options)"
    )


def _family_config(fam) -> dict:
    return _jsonable({
        "name": fam.name, "n": getattr(fam, "n", None), "element": fam.element,
        "mesh": type(fam.mesh).__name__, "n_dofs": int(fam.basis.N),
        "options": {k: v for k, v in fam.options.items() if not callable(v)},
    }, "family options")


def _versions() -> dict:
    import scipy
    import skfem

    import femno

    out = {"femno": femno.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
           "scikit-fem": getattr(skfem, "__version__", "?"), "python": sys.version.split()[0]}
    try:
        import zarr

        out["zarr"] = zarr.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def _layout(fam, spec, options, seed) -> tuple[dict, dict, dict]:
    """Array declarations, static arrays and the FE description from sample 0."""
    params = runner.sample_params(fam, seed, 0)
    system = fam.assemble(params)
    basis, mesh = fam.basis, fam.mesh
    free = np.asarray(system.free, dtype=np.int64)
    mask = np.ones(basis.N, dtype=bool)
    mask[free] = False
    arrays = {f"inputs/{k}": (v.shape, "f8") for k, v in runner.input_arrays(params).items()}
    arrays.update({
        "solution": ((basis.N,), "f8"), "sample_index": ((), "i8"),
        "stats/iterations": ((), "i8"), "stats/residual": ((), "f8"),
        "stats/time": ((), "f8"), "stats/converged": ((), "bool"),
    })
    static = {
        "mesh/points": np.ascontiguousarray(mesh.p.T, dtype=np.float64),
        "mesh/cells": np.ascontiguousarray(mesh.t.T, dtype=np.int64),
        "fe/free": free, "fe/dirichlet": np.nonzero(mask)[0].astype(np.int64),
        "fe/doflocs": np.ascontiguousarray(basis.doflocs.T, dtype=np.float64),
        "fe/element_dofs": np.ascontiguousarray(basis.element_dofs.T, dtype=np.int64),
    }
    layout = {
        "element": fam.element, "mesh_type": type(mesh).__name__, "dim": int(mesh.p.shape[0]),
        "n_vertices": int(mesh.p.shape[1]), "n_elements": int(mesh.t.shape[1]),
        "n_dofs": int(basis.N), "n_free": int(free.size),
        "inputs": sorted(k[7:] for k in arrays if k.startswith("inputs/")),
        "row_order": "rows are samples in sorted chain order; sample_index[row] = i",
        "spd": bool(fam.spd), "symmetric": bool(fam.symmetric),
        "fixed_matrix": bool(fam.fixed_matrix),
    }
    return arrays, static, layout


def _features(pool, spec, options, seed, samples) -> np.ndarray:
    parts = np.array_split(np.arange(samples), max(1, min(samples, 4 * pool.workers)))
    args = [(spec, options, seed, p.tolist()) for p in parts if p.size]
    return np.concatenate(pool.map_features(runner.features_task, args), axis=0)


def _notify(event: str, block: int) -> None:
    for fn in list(BLOCK_EVENTS):
        fn(event, int(block))


def _progress(total, initial, enabled, desc):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="sample", desc=desc, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


def generate_dataset(family, *, samples, out, method="auto", pc="auto", rtol=1e-8, seed=0,
                     workers=1, scheduler=None, block=32, family_options=None, sort="greedy",
                     progress=True, solver_options=None, warm_start=None) -> dict:
    """Generate (or resume) a dataset of solved systems of a parametric family.

    Parameters
    ----------
    family : str or type
        Family name (``femno.fem.FAMILIES`` or a ``data_gen`` recipe such as
        ``"skr-darcy"``), ``"file.py:Name"`` / ``"module:Name"``, or a Family subclass.
    samples : int, keyword-only
        Number of samples ``N`` (>= 1).
    out : str or path, keyword-only
        Dataset directory (created; an existing dataset with the same settings is
        resumed, with different settings it is an :class:`InputError`).
    method, pc, rtol : keyword-only
        Sequence strategy, preconditioner and relative tolerance passed to
        :func:`femno.datagen.sequence.solve_sequence`.
    seed : int, keyword-only
        Sample ``i`` uses ``np.random.default_rng([seed, i])``.
    workers : int, keyword-only
        Local worker processes (1: in this process).
    scheduler : str or distributed.Client, optional, keyword-only
        Dask scheduler address (or client); overrides ``workers``.
    block : int, keyword-only
        Samples per block: unit of work, chunking and checkpointing.
    family_options : dict, optional, keyword-only
        Family constructor arguments (``n``, ``element``, family options); JSON-able.
    sort : {"greedy", "grouped", "none"}, keyword-only
        Global ordering of the samples.
    progress : bool, keyword-only
        Show a tqdm bar (only when stderr is a terminal).
    solver_options : dict, optional, keyword-only
        Extra keywords of ``solve_sequence`` (``k``, ``restart``, ``maxiter``).
    warm_start : str or path, optional, keyword-only
        Neural warm start: a model file trained on this family and mesh
        (:class:`femno.operators.surrogate.NeuralInitialGuess`); its prediction is
        every Krylov solve's initial guess (with ``skr``/``recycle``: warm start plus
        recycling).  Solutions still meet ``rtol``; direct methods ignore it.

    Returns
    -------
    dict
        ``samples, done, skipped_existing, total_s, samples_per_s, sort_s,
        mean_iterations, failures, method, explanation, path, complete, message``,
        ``repaired_blocks`` (damaged blocks recomputed) and the split of the blocks'
        time ``time_sample_s, time_assemble_s, time_solve_s, time_write_s``
        (:func:`time_split`; also shown as percentages on the progress bar).

    Notes
    -----
    Only one process writes a dataset: the writer lock ``OUT.lock``
    (:func:`femno.datagen.store.writer_lock`) is held for the whole call, and a second
    writer gets :class:`femno.datagen.store.DatasetLockedError`.  A resumed dataset
    is verified first (:meth:`DatasetStore.verify`: chunk files, sizes, checksums);
    its damaged blocks are recomputed, bit-identical to the lost ones.
    """
    t0 = time.perf_counter()
    samples = _int(samples, "samples", 1)
    block = _int(block, "block", 1)
    workers = _int(workers, "workers", 1)
    seed = _int(seed, "seed", 0)
    rtol, _ = check_tolerances(rtol)
    methods = _methods()
    if method not in methods:
        raise InputError(f"unknown method {method!r}; valid: {', '.join(methods)}")
    if sort not in SORTS:
        raise InputError(f"unknown sort {sort!r}; valid: {', '.join(SORTS)}")
    if not isinstance(pc, str):
        raise InputError(f"pc must be a string, got {pc!r}")
    if out is None or str(out) == "":
        raise InputError("out must be a directory path")
    options = _jsonable(dict(family_options or {}), "family_options")
    solver_options = _jsonable(dict(solver_options or {}), "solver_options")
    _check_solver(method, pc, rtol, solver_options)
    spec = _spec_of(family)
    fam = runner.load_family(spec, options)
    if warm_start is not None:  # fail early: readable model of this family and mesh
        from femno.datagen.initial_guess import check_initial_guess

        warm_start = os.path.abspath(os.fspath(warm_start))
        check_initial_guess(warm_start, fam)
    settings = {
        "family": fam.name, "family_spec": spec, "family_options": options,
        "family_config": _family_config(fam), "samples": samples, "seed": seed,
        "method": method, "pc": pc, "rtol": rtol, "block": block, "sort": sort,
        "solver_options": solver_options, "warm_start": warm_start,
    }

    with writer_lock(out):  # one writer per dataset; also covers its creation
        return _generate_locked(fam, spec, options, settings, out=out, seed=seed,
                                samples=samples, method=method, pc=pc, rtol=rtol, sort=sort,
                                solver_options=solver_options, warm_start=warm_start,
                                workers=workers, scheduler=scheduler, progress=progress, t0=t0)


def _generate_locked(fam, spec, options, settings, *, out, seed, samples, method, pc, rtol,
                     sort, solver_options, warm_start, workers, scheduler, progress, t0):
    manifest = read_manifest(out) if os.path.isdir(out) else None
    sort_s, created, repaired = 0.0, False, []
    if manifest is not None:
        check_same_settings(manifest["settings"], settings, IDENTITY_KEYS, out)
        store = DatasetStore.open(out, mode="r+")
        repaired = _discard_damaged(store)
        pending = [b for b in range(store.n_blocks) if b not in store.done_blocks()]
        if not pending:
            return {**_summary(store, t0, done=0, sort_s=0.0, run_info=[],
                               message="dataset already complete: nothing to do"),
                    "repaired_blocks": []}
    else:
        DatasetStore.prepare_directory(out)  # fail early on unwritable / foreign paths

    pool = runner.make_pool(workers, scheduler)
    try:
        if manifest is None:
            arrays, static, layout = _layout(fam, spec, options, seed)
            F = _features(pool, spec, options, seed, samples)
            from femno.datagen.sorting import sort_systems

            order, sort_s = sort_systems(F, method=sort)
            order = np.asarray(order, dtype=np.int64)
            arrays["features"] = ((F.shape[1],), "f8")
            static.update(sample_index=order, features=F[order])
            run_method, run_pc, explanation = method, pc, ""
            if method == "auto":
                run_method, run_pc, explanation = _resolve_auto(
                    fam, spec, options, seed, order, pc, rtol, solver_options)
            pinned = _pin_direct_backend(fam, seed, order, run_method, rtol, solver_options,
                                         n_blocks=-(-samples // int(settings["block"])))
            manifest = {
                "resolved": {"method": run_method, "pc": run_pc, "explanation": explanation,
                             "solver_options": pinned},
                "format": "femno-dataset", "format_version": 1, "settings": settings,
                "layout": layout, "sort_s": sort_s, "versions": _versions(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            store = DatasetStore.create(out, manifest=manifest, arrays=arrays, static=static)
            pending, created = list(range(store.n_blocks)), True
        order = store.root["sample_index"][:]
        resolved = store.manifest.get("resolved", {})
        run_method, run_pc = resolved.get("method", method), resolved.get("pc", pc)
        run_options = {**solver_options, **(resolved.get("solver_options") or {})}
        tasks = [{"block": b, "spec": spec, "options": options, "seed": seed,
                  "indices": order[slice(*store.rows(b))].tolist(), "method": run_method,
                  "pc": run_pc, "rtol": rtol, "solver_options": run_options,
                  "warm_start": warm_start} for b in pending]
        run_info = _run_blocks(store, pool, tasks, progress=progress, desc=fam.name)
    finally:
        pool.close()
    message = "created" if created else "resumed"
    if repaired:
        message += (f" (recomputed {len(repaired)} damaged block(s): "
                    f"{', '.join(map(str, repaired))})")
    summary = _summary(store, t0, done=sum(r["samples"] for r in run_info), sort_s=sort_s,
                       run_info=run_info, message=message)
    summary["repaired_blocks"] = repaired
    return summary


def check_same_settings(old: dict, settings: dict, keys, out) -> None:
    """:class:`InputError` unless an existing dataset's ``old`` settings match on ``keys``."""
    diff = [k for k in keys if _jsonable(old.get(k), k) != _jsonable(settings[k], k)]
    if diff:
        detail = "; ".join(f"{k}: existing {old.get(k)!r} vs requested {settings[k]!r}"
                           for k in diff)
        raise InputError(f"dataset {str(out)!r} was generated with different settings "
                         f"({', '.join(diff)}): {detail}. Use another --out path.")


def open_or_create(out, settings: dict, identity, create):
    """Resume the dataset at ``out`` (same ``identity`` settings, damaged blocks dropped)
    or make it with ``create()``; returns ``(store, repaired_blocks, message)``, the message
    ``"created"``, ``"resumed"`` or ``"resumed (recomputed damaged block(s): ...)"``."""
    manifest = read_manifest(out) if os.path.isdir(out) else None
    if manifest is None:
        return create(), [], "created"
    check_same_settings(manifest["settings"], settings, identity, out)
    store = DatasetStore.open(out, mode="r+")
    repaired = _discard_damaged(store)
    message = "resumed"
    if repaired:
        message += f" (recomputed damaged block(s): {', '.join(map(str, repaired))})"
    return store, repaired, message


def _discard_damaged(store) -> list[int]:
    """Verify a resumed dataset; forget its damaged blocks so that they are recomputed.

    Samples are seeded by index and blocks solved from a fresh state, so the
    recomputed blocks are bit-identical to the lost ones.  Damage to the arrays
    written at creation (sample order, features, mesh) cannot be repaired.
    """
    report = store.verify()
    if report["static"]:
        what = "; ".join(f"{p['array']}: {p['problem']}" for p in report["static"])
        raise InputError(f"dataset {str(store.path)!r} is damaged beyond repair ({what}): "
                         "these arrays are written once at creation and cannot be "
                         "recomputed; generate the dataset again into a new path")
    damaged = [d["block"] for d in report["damaged"]]
    for b in damaged:
        store.discard_block(b)
    return damaged


def _run_blocks(store, pool, tasks, *, progress, desc) -> list[dict]:
    done_before = store.samples - sum(store.rows(t["block"])[1] - store.rows(t["block"])[0]
                                      for t in tasks)
    info = []
    with _progress(store.samples, done_before, progress, desc) as bar:
        for res in pool.run_blocks(tasks):
            b = res["block"]
            data = {f"inputs/{k}": v for k, v in res["inputs"].items()}
            data.update({"solution": res["solution"], "stats/iterations": res["iterations"],
                         "stats/residual": res["residual"], "stats/time": res["time"],
                         "stats/converged": res["converged"]})
            tw = time.perf_counter()
            store.write_block(b, data)
            _notify("written", b)
            entry = {"samples": int(res["solution"].shape[0]), "method": res["method"],
                     "explanation": res["explanation"], "sample_s": res.get("sample_s", 0.0),
                     "assemble_s": res["assemble_s"],
                     "solve_s": res["solve_s"], "iterations": int(res["iterations"].sum()),
                     "failures": int((~res["converged"]).sum()), "pid": res["pid"]}
            entry["write_s"] = time.perf_counter() - tw  # arrays + checksums, before fsync of the marker
            store.mark_done(b, entry)
            entry["write_s"] = time.perf_counter() - tw
            info.append(entry)
            bar.update(entry["samples"])
            split = time_split(info)
            if hasattr(bar, "set_postfix_str") and split["total_s"] > 0:
                bar.set_postfix_str("  ".join(f"{k} {100 * split[k + '_s'] / split['total_s']:.0f}%"
                                              for k in ("sample", "assemble", "solve", "write")),
                                    refresh=False)
            _notify("done", b)
    return info


def time_split(run_info) -> dict:
    """Where the time of the blocks went: sample, assemble, solve, write (seconds).

    Sums over blocks of each block's own clock (with several workers the sums are
    worker-seconds and can exceed the wall time); ``total_s`` is their sum.

    >>> time_split([{"sample_s": 1.0, "assemble_s": 2.0, "solve_s": 6.0, "write_s": 1.0}])
    {'sample_s': 1.0, 'assemble_s': 2.0, 'solve_s': 6.0, 'write_s': 1.0, 'total_s': 10.0}
    """
    out = {k: float(sum(r.get(k, 0.0) for r in run_info))
           for k in ("sample_s", "assemble_s", "solve_s", "write_s")}
    out["total_s"] = sum(out.values())
    return out


def _summary(store, t0, *, done, sort_s, run_info, message) -> dict:
    rows = store.done_rows()
    total_s = time.perf_counter() - t0
    it = store.root["stats/iterations"][:][rows] if rows.size else np.zeros(0)
    conv = store.root["stats/converged"][:][rows] if rows.size else np.zeros(0, bool)
    first = run_info[0] if run_info else (store.marker(min(store.done_blocks()))
                                          if store.done_blocks() else {})
    return {
        "path": str(store.path),
        "family": store.manifest["settings"]["family"],
        "samples": store.samples,
        "done": int(done),
        "skipped_existing": int(rows.size - done),
        "complete": bool(rows.size == store.samples),
        "blocks": store.n_blocks,
        "total_s": total_s,
        "samples_per_s": done / total_s if done and total_s > 0 else 0.0,
        "sort_s": float(sort_s),
        **{f"time_{k}": v for k, v in time_split(run_info).items() if k != "total_s"},
        "mean_iterations": float(it.mean()) if it.size else None,
        "failures": int((~conv).sum()),
        "method": first.get("method"),
        "explanation": "; ".join(filter(None, [
            store.manifest.get("resolved", {}).get("explanation"), first.get("explanation")])),
        "message": message,
    }
