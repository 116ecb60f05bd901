r"""RVE snapshot datasets: Latin-hypercube macro strains solved by :class:`RVESolver`.

A snapshot dataset is a :class:`femno.datagen.store.DatasetStore` directory (zarr
blocks with atomic completion markers, so an interrupted run resumes where it
stopped).  Per sample (row ``i``, strain ``i`` of the seeded Latin hypercube in
:math:`[-b, b]^3`):

``strain`` (3,), ``stress`` (3,), ``tangent`` (3, 3), ``fluctuation`` (n_nodes, 2),
``stress_ip`` (n_ip, 3), ``stats/iterations`` (int), ``stats/time`` (s).

The RVE mesh is stored too (``mesh/nodes``, ``mesh/elements``, ``mesh/material``), so
a dataset is self-contained.

>>> import tempfile, os
>>> out = os.path.join(tempfile.mkdtemp(), "snap")
>>> summary = generate_snapshots("RVE3", samples=1, out=out, progress=False)
>>> data = load_snapshots(out)
>>> data["strain"].shape, data["fluctuation"].shape, data["stress_ip"].shape
((1, 3), (1, 5713, 2), (1, 16848, 3))
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time
from datetime import datetime, timezone

import numpy as np

from femno.errors import InputError

__all__ = ["lhs_strains", "generate_snapshots", "load_snapshots", "SNAPSHOT_KIND"]

SNAPSHOT_KIND = "rve-snapshots"
_WORKER: dict = {}


def lhs_strains(n: int, *, seed: int = 0, bound: float = 0.04, scales=None) -> np.ndarray:
    """``n`` Latin-hypercube macro strains in ``[-bound, bound]^3`` (scipy.stats.qmc, seeded).

    With ``scales=(lo, hi)`` (``0 < lo <= hi <= 1``) every strain is multiplied by its own
    log-uniform factor in ``[lo, hi]`` (same seed): small strains, which a uniform box
    rarely samples but a macro problem mostly sees, at every magnitude.

    >>> lhs_strains(4, seed=1).shape
    (4, 3)
    >>> bool(np.abs(lhs_strains(50, seed=1, scales=(0.01, 0.1))).max() <= 0.004)
    True
    """
    from scipy.stats import qmc

    if int(n) < 1 or not bound > 0:
        raise InputError(f"need n >= 1 and bound > 0, got n={n}, bound={bound}")
    rng = np.random.default_rng(seed)
    e = bound * (2.0 * qmc.LatinHypercube(d=3, seed=rng).random(int(n)) - 1.0)
    if scales is not None:
        lo, hi = (float(v) for v in scales)
        if not 0 < lo <= hi <= 1:
            raise InputError(f"scales must satisfy 0 < lo <= hi <= 1, got {scales}")
        e *= np.exp(rng.uniform(np.log(lo), np.log(hi), size=(len(e), 1)))
    return e


def _init_worker(solver):
    _WORKER["solver"] = solver


def _solve_block(b: int, strains: np.ndarray) -> dict:
    solver = _WORKER["solver"]
    res = [solver.solve(e) for e in strains]
    return {"block": b, "strain": strains, "stress": np.stack([r.stress for r in res]),
            "tangent": np.stack([r.tangent for r in res]),
            "fluctuation": np.stack([r.fluctuation for r in res]),
            "stress_ip": np.stack([r.stress_ip for r in res]),
            "stats/iterations": np.array([r.newton_iterations for r in res], dtype=np.int64),
            "stats/time": np.array([r.seconds for r in res])}


def generate_snapshots(rve, *, samples: int, out, seed: int = 0, workers: int = 1, block: int = 4,
                       bound: float = 0.04, progress: bool = True) -> dict:
    """Solve the RVE at ``samples`` Latin-hypercube strains and store the snapshots (resumable).

    Parameters
    ----------
    rve : str, path, RVEMesh or RVESolver
        The RVE (a reference name ``"RVE1"``, a user prefix, a mesh or a solver).
    samples : int, keyword-only
    out : path, keyword-only
        Dataset directory.  Re-running with the same settings resumes; other settings
        on an existing dataset raise :class:`InputError`.
    seed : int, keyword-only
        Seed of the Latin hypercube.
    workers : int, keyword-only
        Local worker processes (each holds one pickled solver).
    block : int, keyword-only
        Samples per block (unit of checkpointing).
    bound : float, keyword-only
        Strain range ``[-bound, bound]`` of every component.
    progress : bool, keyword-only
        tqdm bar on stderr.

    Returns
    -------
    dict
        ``path``, ``samples``, ``done``, ``computed`` (this call), ``seconds``,
        ``mean_newton_iterations``, ``mean_solve_seconds``, ``message``.
    """
    from femno.datagen.store import FORMAT, DatasetStore, read_manifest
    from femno.multiscale.rve_solver import RVESolver

    samples, workers, block = int(samples), int(workers), int(block)
    if samples < 1 or workers < 1 or block < 1:
        raise InputError("samples, workers and block must be >= 1")
    t0 = time.perf_counter()
    solver = rve if isinstance(rve, RVESolver) else RVESolver(rve)
    mesh = solver.rve
    settings = {"kind": SNAPSHOT_KIND, "samples": samples, "block": block, "seed": int(seed),
                "bound": float(bound), "rve": mesh.name, "n_nodes": mesh.n_nodes,
                "n_ip": solver.n_ip}
    strains = lhs_strains(samples, seed=seed, bound=bound)
    manifest = read_manifest(out)
    if manifest is not None:
        if manifest.get("settings") != settings:
            raise InputError(f"{str(out)!r} holds snapshots with other settings "
                             f"({manifest.get('settings')}); choose another --out")
        store, message = DatasetStore.open(out, mode="r+"), "resumed"
    else:
        arrays = {"strain": ((3,), "f8"), "stress": ((3,), "f8"), "tangent": ((3, 3), "f8"),
                  "fluctuation": ((mesh.n_nodes, 2), "f8"), "stress_ip": ((solver.n_ip, 3), "f8"),
                  "stats/iterations": ((), "i8"), "stats/time": ((), "f8")}
        static = {"mesh/nodes": mesh.nodes, "mesh/elements": mesh.elements,
                  "mesh/material": mesh.material}
        manifest = {"format": FORMAT, "settings": settings,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        store = DatasetStore.create(out, manifest=manifest, arrays=arrays, static=static)
        message = "created"
    pending = [b for b in range(store.n_blocks) if b not in store.done_blocks()]
    tasks = [(b, strains[slice(*store.rows(b))]) for b in pending]
    from tqdm.auto import tqdm

    done0 = samples - sum(len(t[1]) for t in tasks)
    bar = tqdm(total=samples, initial=done0, unit="sample", desc=f"snapshots {mesh.name}",
               dynamic_ncols=True, disable=not (progress and sys.stderr.isatty()))
    its, secs = [], []

    def record(res):
        b = res.pop("block")
        store.write_block(b, res)
        store.mark_done(b, {"samples": int(res["strain"].shape[0])})
        its.extend(res["stats/iterations"].tolist())
        secs.extend(res["stats/time"].tolist())
        bar.update(res["strain"].shape[0])

    try:
        if workers == 1 or len(tasks) <= 1:
            _init_worker(solver)
            for b, e in tasks:
                record(_solve_block(b, e))
        else:
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method),
                                        initializer=_init_worker, initargs=(solver,)) as pool:
                futures = [pool.submit(_solve_block, b, e) for b, e in tasks]
                for fut in cf.as_completed(futures):
                    record(fut.result())
    finally:
        bar.close()
    return {"path": os.fspath(out), "rve": mesh.name, "samples": samples,
            "done": int(store.done_rows().size), "computed": len(its),
            "seconds": time.perf_counter() - t0,
            "mean_newton_iterations": float(np.mean(its)) if its else float("nan"),
            "mean_solve_seconds": float(np.mean(secs)) if secs else float("nan"),
            "message": message}


def load_snapshots(path, *, rows=None) -> dict:
    """Read the finished samples of a snapshot dataset.

    Parameters
    ----------
    path : path
    rows : array_like of int, optional, keyword-only
        Subset of the finished rows (default all).

    Returns
    -------
    dict
        ``strain`` (S, 3), ``stress`` (S, 3), ``tangent`` (S, 3, 3), ``fluctuation``
        (S, n_nodes, 2), ``stress_ip`` (S, n_ip, 3) float64; ``rve`` (:class:`RVEMesh`),
        ``settings`` (dict), ``rows`` (S,) int64.
    """
    from femno.datagen.store import DatasetStore
    from femno.fem.rve import RVEMesh

    store = DatasetStore.open(path)
    settings = store.manifest["settings"]
    if settings.get("kind") != SNAPSHOT_KIND:
        raise InputError(f"{str(path)!r} is not an RVE snapshot dataset")
    done = store.done_rows()
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if not np.all(np.isin(rows, done)):
            raise InputError(f"rows {sorted(set(rows.tolist()) - set(done.tolist()))[:5]} are "
                             f"not finished in {str(path)!r}")
        done = rows
    if done.size == 0:
        raise InputError(f"snapshot dataset {str(path)!r} has no finished samples")
    out = {"rows": done, "settings": settings}
    for name in ("strain", "stress", "tangent", "fluctuation", "stress_ip"):
        out[name] = np.asarray(store.array(name).get_orthogonal_selection((done,)))
    g = store.root
    out["rve"] = RVEMesh(nodes=np.asarray(g["mesh/nodes"][...]),
                         elements=np.asarray(g["mesh/elements"][...]),
                         material=np.asarray(g["mesh/material"][...]), name=settings["rve"])
    return out
