r"""Workers of dataset generation: family loading, block solves and executors.

A *block* is a contiguous slice of the globally sorted chain of samples.  It is
the unit of work, of transfer and of checkpointing: :func:`solve_block`
re-samples the block's parameters from their per-sample seeds
(``np.random.default_rng([seed, i])``), assembles the systems and solves them
with :func:`femno.datagen.sequence.solve_sequence` in chain order, starting
from a fresh solver state.  The result depends only on the block's content, so
a dataset is the same whatever the number of workers or the interruption point.

Executors (:func:`make_pool`):

* ``workers=1``, no scheduler: in-process, lazily, block after block;
* ``workers=K``: ``K`` single-process :class:`~concurrent.futures.ProcessPoolExecutor`
  instances (``spawn`` context, safe with threaded BLAS), worker ``k`` getting
  the ``k``-th contiguous chunk of the pending blocks, in chain order;
* ``scheduler=ADDRESS`` (or a :class:`distributed.Client`): a Dask cluster,
  contiguous chunks pinned to workers (``allow_other_workers=True`` so that a
  lost worker does not stall the run).

Family specifications and per-sample seeding (:func:`load_family`,
:func:`sample_params`) live in the FE layer, :mod:`femno.fem.families.resolve`, and are
re-exported here.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import threading
import time
import warnings

import numpy as np

from femno.errors import InputError, optional_import
from femno.fem.families.resolve import (  # noqa: F401  (re-exported: datagen's entry points)
    _family_class,
    _load_module,
    input_arrays,
    load_family,
    recipe_registry,
    sample_params,
)

__all__ = [
    "load_family",
    "recipe_registry",
    "sample_params",
    "input_arrays",
    "features_task",
    "solve_block",
    "make_pool",
]

_LOCK = threading.Lock()  # global-RNG seeding below is process-wide


def features_task(spec, options: dict, seed: int, indices) -> np.ndarray:
    """Feature rows ``family.features(params_i)`` for ``indices``, shape (len, d)."""
    family = load_family(spec, options)
    rows = [np.asarray(family.features(sample_params(family, seed, i)), dtype=np.float64).ravel()
            for i in indices]
    return np.stack(rows) if rows else np.zeros((0, 0))


def solve_block(task: dict) -> dict:
    """Assemble and solve one block of samples (runs in a worker).

    ``task`` keys: ``block``, ``spec``, ``options``, ``seed``, ``indices`` (sample
    indices in chain order), ``method``, ``pc``, ``rtol``, ``solver_options``.
    Returns the block's arrays: ``inputs`` (name -> (B, ...)), ``solution``
    (B, n_dofs), ``iterations``, ``residual``, ``converged``, ``time`` and the
    strategy's ``method`` / ``explanation``.
    """
    from femno.datagen.sequence import solve_sequence

    t0 = time.perf_counter()
    family = load_family(task["spec"], task["options"])
    systems, inputs = [], {}
    sample_s = time.perf_counter() - t0  # loading the family counts as sampling set-up
    assemble_s = 0.0
    for i in task["indices"]:
        ts = time.perf_counter()
        params = sample_params(family, task["seed"], i)
        ta = time.perf_counter()
        systems.append(family.assemble(params))
        tb = time.perf_counter()
        for name, arr in input_arrays(params).items():
            inputs.setdefault(name, []).append(arr)
        sample_s += (ta - ts) + (time.perf_counter() - tb)
        assemble_s += tb - ta
    x0 = None
    if task.get("warm_start"):  # neural warm start: x0 from a trained surrogate
        from femno.datagen.initial_guess import load_initial_guess

        guess = load_initial_guess(task["warm_start"], family)
        x0 = lambda i, _: guess.guess(systems[i])  # noqa: E731
    with _LOCK:
        # some libraries draw from the global RNG (pyamg's spectral radius estimate):
        # seed it per block so that results do not depend on which worker ran what
        state = np.random.get_state()
        np.random.seed([int(task["seed"]) % 2**32, int(task["block"]), 0x6E6F])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = solve_sequence(
                    [(s.A, s.b) for s in systems], method=task["method"], pc=task["pc"],
                    rtol=task["rtol"], sort="none", on_fail="ignore", x0=x0,
                    **{**nullspace_options(family), **(task.get("solver_options") or {})},
                )
        finally:
            np.random.set_state(state)
    solution = np.stack([s.expand(x) for s, x in zip(systems, res.solutions, strict=True)])
    return {
        "block": int(task["block"]),
        "inputs": {k: np.stack(v) for k, v in inputs.items()},
        "solution": solution,
        "iterations": np.asarray(res.iterations, dtype=np.int64),
        "residual": np.asarray(res.residuals, dtype=np.float64),
        "converged": np.asarray(res.converged, dtype=bool),
        "time": np.asarray(res.times, dtype=np.float64),
        "method": str(res.method),
        "explanation": str(getattr(res, "explanation", "")),
        "sample_s": float(sample_s),
        "assemble_s": float(assemble_s),
        "solve_s": float(getattr(res, "total_s", np.sum(res.times))),
        "pid": os.getpid(),
    }


def nullspace_options(family) -> dict:
    """``solve_sequence`` keywords for the family's AMG near-nullspace (``{}`` if none)."""
    nns = family.near_nullspace()
    if nns is None:
        return {}
    B, block_size = nns
    return {"near_nullspace": B, "block_size": int(block_size)}


# -- executors -----------------------------------------------------------------------------
def _chunks(items: list, k: int) -> list[list]:
    """Split ``items`` into ``k`` contiguous, nearly equal chunks (some may be empty)."""
    return [list(c) for c in np.array_split(np.asarray(items, dtype=object), k)] if items else []


class _InlinePool:
    """Runs tasks lazily in this process (``workers=1``)."""

    workers = 1

    def map_features(self, fn, args_list):
        return [fn(*args) for args in args_list]

    def run_blocks(self, tasks):
        for task in tasks:
            yield solve_block(task)

    def close(self):
        pass


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # pragma: no cover - pid reused by another user
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):  # no /proc (macOS): rely on the checks above
        return False


def _exit_with_parent(pid: int) -> None:
    """Worker initializer: exit when the main process ``pid`` is gone (e.g. SIGKILLed).

    Checked every second: ``pid`` gone or a zombie, or this worker re-parented (its
    spawn parent or the forkserver exited).  Orphaned workers would otherwise keep
    the pipes of the killed process open.
    """
    ppid = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != ppid or _gone(pid):
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="femno-parent-watch").start()


class _ProcessPool:
    """``k`` single-process executors; worker ``j`` gets the ``j``-th contiguous chunk."""

    def __init__(self, workers: int):
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        self.workers = workers
        self._pools = [cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx,
                                              initializer=_exit_with_parent,
                                              initargs=(os.getpid(),))
                       for _ in range(workers)]

    def map_features(self, fn, args_list):
        futures = [self._pools[j % self.workers].submit(fn, *args) for j, args in enumerate(args_list)]
        return [f.result() for f in futures]

    def run_blocks(self, tasks):
        futures = []
        for j, chunk in enumerate(_chunks(list(tasks), self.workers)):
            futures += [self._pools[j].submit(solve_block, t) for t in chunk]
        try:
            for fut in cf.as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self):
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)


class _DaskPool:
    """Blocks on a Dask distributed cluster, contiguous chunks pinned to workers."""

    def __init__(self, scheduler):
        distributed = optional_import("distributed", extra="dist", purpose="--scheduler")
        if isinstance(scheduler, distributed.Client):
            self.client, self._own = scheduler, False
        else:
            try:
                self.client = distributed.Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"cannot connect to the Dask scheduler {scheduler!r}: {exc}") from exc
            self._own = True
        self._as_completed = distributed.as_completed
        self.addresses = sorted(self.client.scheduler_info().get("workers", {}))
        self.workers = max(1, len(self.addresses))

    def map_features(self, fn, args_list):
        futures = [self.client.submit(fn, *args, pure=False) for args in args_list]
        return self.client.gather(futures)

    def run_blocks(self, tasks):
        futures = []
        for j, chunk in enumerate(_chunks(list(tasks), self.workers)):
            where = [self.addresses[j]] if self.addresses else None
            for t in chunk:
                futures.append(self.client.submit(
                    solve_block, t, pure=False, workers=where, allow_other_workers=True,
                    priority=-int(t["block"]), key=f"femno-block-{t['block']}-{os.getpid()}-{id(t)}",
                ))
        try:
            for fut in self._as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self):
        if self._own:
            self.client.close()


def make_pool(workers: int = 1, scheduler=None):
    """Executor of blocks: in-process, ``workers`` local processes, or a Dask cluster."""
    if scheduler is not None:
        return _DaskPool(scheduler)
    return _InlinePool() if workers == 1 else _ProcessPool(workers)
