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

Family specifications (:func:`load_family`): a registered name
(:data:`femno.fem.FAMILIES`), ``"path/to/file.py:Name"`` or ``"package.module:Name"``
(``Name`` an attribute that is a :class:`~femno.fem.Family` subclass or a key of
the module's ``RECIPES`` dict), or a recipe name: :data:`femno.fem.families.recipes.RECIPES`
(shipped in the package) plus the ``RECIPES`` of ``$FEMNO_RECIPES`` (a ``.py`` file; its
entries override).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from femno.errors import InputError, optional_import

__all__ = [
    "load_family",
    "recipe_registry",
    "sample_params",
    "input_arrays",
    "features_task",
    "solve_block",
    "make_pool",
]

_FAMILY_CACHE: dict = {}
_LOCK = threading.Lock()  # global-RNG seeding below is process-wide


# -- families ------------------------------------------------------------------------------
def _recipes_path() -> Path | None:
    env = os.environ.get("FEMNO_RECIPES")
    return Path(env).expanduser().resolve() if env else None


def _load_module(target: str):
    """Import a family module: a ``.py`` path or a dotted module name.

    Every failure is an :class:`InputError` naming the file: missing file, or
    ``cannot import FILE: <ExceptionType>: reason`` for an error raised while
    the module runs (syntax error, failing import, ...).
    """
    if target.endswith(".py") or os.sep in target:
        path = Path(target).expanduser().resolve()
        if not path.exists():
            where = "" if str(path) == target else f" (resolved to {str(path)!r})"
            raise InputError(f"family file {target!r} does not exist{where}")
        if not path.is_file():
            raise InputError(f"family file {target!r} is not a file")
        name = "femno_recipes_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise InputError(f"cannot import {target}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException as exc:
                del sys.modules[name]
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                raise InputError(f"cannot import {target}: {_describe(exc)}") from exc
        return sys.modules[name]
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise InputError(f"cannot import family module {target!r}: {exc}") from exc
    except Exception as exc:
        raise InputError(f"cannot import {target}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line (with the line of a SyntaxError)."""
    msg = " ".join(str(exc).split())
    if isinstance(exc, SyntaxError) and exc.lineno and f"line {exc.lineno}" not in msg:
        msg += f" (line {exc.lineno})"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _family_names(module) -> list[str]:
    """Names of the Family subclasses (and RECIPES keys) a module defines."""
    from femno.fem import Family

    names = sorted(k for k, v in vars(module).items()
                   if isinstance(v, type) and issubclass(v, Family) and v is not Family
                   and not k.startswith("_"))
    recipes = getattr(module, "RECIPES", None)
    if isinstance(recipes, dict):
        names += sorted(str(k) for k in recipes if k not in names)
    return names


def recipe_registry() -> dict:
    """Recipe name -> Family subclass: the package's recipes and ``$FEMNO_RECIPES``'s."""
    from femno.fem.families.recipes import RECIPES

    out = dict(RECIPES)
    path = _recipes_path()
    if path is not None:
        if not path.is_file():
            raise InputError(f"FEMNO_RECIPES={str(path)!r} is not a file")
        out.update(getattr(_load_module(str(path)), "RECIPES", {}))
    return out


def _family_class(spec: str):
    from femno.fem import FAMILIES

    if spec in FAMILIES:
        return FAMILIES[spec]
    if ":" in spec:
        target, _, attr = spec.rpartition(":")
        if not target or not attr:
            raise InputError(f"family {spec!r} must be of the form FILE.py:NAME or module:NAME")
        module = _load_module(target)
        recipes = getattr(module, "RECIPES", None)
        cls = recipes.get(attr) if isinstance(recipes, dict) else None
        if cls is None:
            cls = getattr(module, attr, None)
        if cls is None:
            names = _family_names(module)
            raise InputError(
                f"{target} defines no {attr!r}; Family classes there: "
                + (", ".join(names) if names else "none (define a subclass of femno.fem.Family)")
            )
        return cls
    recipes = recipe_registry()
    if spec in recipes:
        return recipes[spec]
    raise InputError(
        f"unknown family {spec!r}; valid names: {sorted(FAMILIES) + sorted(recipes)} "
        "(or 'path/file.py:Name', 'package.module:Name')"
    )


def load_family(spec, options: dict | None = None):
    """Build (and cache per process) the family ``spec`` with constructor ``options``.

    Parameters
    ----------
    spec : str or type
        See the module docstring; a :class:`~femno.fem.Family` subclass is accepted
        in-process (workers need a string).
    options : dict, optional
        Keyword arguments of the family constructor (``n``, ``element``, options).

    Returns
    -------
    femno.fem.Family
    """
    from femno.fem import Family

    options = dict(options or {})
    key = (spec if isinstance(spec, str) else id(spec), json.dumps(options, sort_keys=True, default=str))
    if key in _FAMILY_CACHE:
        return _FAMILY_CACHE[key]
    cls = _family_class(spec) if isinstance(spec, str) else spec
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        what = f"the class {cls.__name__}" if isinstance(cls, type) else f"an object of type {type(cls).__name__}"
        raise InputError(
            f"family {spec!r} is {what}, not a subclass of femno.fem.Family "
            "(see docs/own-family.md)"
        )
    try:
        family = cls(**options)
    except TypeError as exc:
        raise InputError(f"bad options for family {spec!r}: {exc}") from exc
    if len(_FAMILY_CACHE) > 8:
        _FAMILY_CACHE.clear()
    _FAMILY_CACHE[key] = family
    return family


# -- per-sample work -----------------------------------------------------------------------
def sample_params(family, seed: int, index: int) -> dict:
    """Parameters of sample ``index``: ``family.sample(np.random.default_rng([seed, index]))``."""
    return family.sample(np.random.default_rng([int(seed), int(index)]))


def input_arrays(params: dict) -> dict:
    """The numeric parameters of a sample as float64 arrays (its stored input fields)."""
    out = {}
    for name in sorted(params):
        value = params[name]
        if callable(value) or isinstance(value, (str, bytes)):
            continue
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        out[name] = arr
    return out


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
