r"""Micro models: the plug point between the FE² macro solver and the material below it.

Every macro integration point asks its micro model for the homogenized stress and the
consistent macro tangent at its strain, all points of a mesh in one batched call:

.. math::
   \varepsilon \in \mathbb{R}^{n\times 3} \;\mapsto\;
   \bar\sigma(\varepsilon) \in \mathbb{R}^{n\times 3},\quad
   \mathbb{C} = \partial\bar\sigma/\partial\varepsilon \in \mathbb{R}^{n\times 3\times 3},

with strains :math:`[\varepsilon_{xx}, \varepsilon_{yy}, \gamma_{xy}]` (engineering
shear), stresses :math:`[\sigma_{xx}, \sigma_{yy}, \sigma_{xy}]`, plane strain, float64.

Implementations:

* :class:`ClosedFormMicro` — a material law of :mod:`femno.multiscale.materials`
  evaluated directly (homogeneous micro structure; tests and cheap demos);
* :class:`FERVEMicro` — the full periodic FE RVE solve
  (:class:`femno.multiscale.rve_solver.RVESolver`) at every point, in parallel over
  points: in-process (``workers=1``), local processes (default) or a Dask cluster
  (``scheduler=``); each worker builds its RVE solver once and warm-starts every point
  from the fluctuation it last converged to there, when the solver accepts one;
* :class:`EquiNOMicro` — a trained EquiNO surrogate, batched, on CPU or GPU.

:func:`micro_from_spec` builds one from a short string (the CLI's ``--micro``).

>>> import numpy as np
>>> class Hooke:  # any object with a batched stress_and_tangent is a material
...     def stress_and_tangent(self, eps):
...         C = np.broadcast_to(np.diag([2.0, 2.0, 1.0]), (len(eps), 3, 3))
...         return eps @ C[0].T, C.copy()
>>> micro = ClosedFormMicro(Hooke())
>>> s, C = micro.stress_and_tangent(np.array([[0.01, 0.0, 0.02]]))
>>> s.tolist(), C.shape
([[0.02, 0.0, 0.02]], (1, 3, 3))
"""

from __future__ import annotations

import abc
import inspect
import os
import time
import uuid
import warnings

import numpy as np

from femno.errors import FemnoError, InputError
from femno.multiscale.materials import check_strains
from femno.registry import Registry

__all__ = [
    "MicroModel",
    "ClosedFormMicro",
    "FERVEMicro",
    "EquiNOMicro",
    "micro_from_spec",
    "range_violations",
    "register_micro_loader",
    "micro_loader",
    "MICRO_LOADERS",
    "MICRO_SPECS",
    "STRAIN_COMPONENTS",
]

#: Loaders of trained micro-model files, by model kind: ``loader(path, device=None) -> model``
#: (an object with a batched ``stress_and_tangent``).  :mod:`femno.multiscale` does not
#: import :mod:`femno.operators` (operators builds on multiscale, not the reverse): the
#: operators module of a kind fills its entry at import, with :func:`register_micro_loader`.
MICRO_LOADERS: dict = {}

#: Lazy plugin loading: kind -> name of the module whose import registers its loader.
#: :func:`micro_loader` imports that module by name (``importlib``) the first time a kind
#: is asked for and not yet registered, so ``EquiNOMicro("model.pt")`` works without the
#: caller importing :mod:`femno.operators.equino` first.  Not an import dependency of
#: this module: with the plugin absent it raises :class:`~femno.errors.FemnoError`.
MICRO_LOADER_PLUGINS: dict = {"equino": "femno.operators.equino"}


def _loaders():
    """The registry over the module's current tables (tests may rebind them)."""
    return Registry(MICRO_LOADERS, MICRO_LOADER_PLUGINS, what="micro model loader",
                    hint="femno.multiscale.micro.register_micro_loader")


def register_micro_loader(kind: str, loader) -> None:
    """Register ``loader(path, device=None) -> model`` for micro-model files of ``kind``."""
    _loaders().register(kind, loader)


def micro_loader(kind: str):
    """The registered loader of ``kind`` (importing its plugin module on first use)."""
    return _loaders().get(kind)


#: Names of the strain components, in order.
STRAIN_COMPONENTS = ("eps_xx", "eps_yy", "gamma_xy")

#: Valid ``--micro`` specifications (see :func:`micro_from_spec`).
MICRO_SPECS = ("fe", "equino:PATH", "linear", "matrix", "fibre")


def range_violations(strains, bounds) -> list:
    """Strain components outside a training range, with their most extreme value.

    Parameters
    ----------
    strains : array_like, shape (n, 3)
    bounds : (lo, hi) of arrays (3,) or None

    Returns
    -------
    list of dict
        ``{"component", "value", "range"}`` per component of :data:`STRAIN_COMPONENTS`
        with a value outside ``[lo, hi]`` (``value``: the one farthest outside); empty
        when all are inside or ``bounds`` is ``None``.

    >>> range_violations([[0.01, 0.0, 0.055]], ([-0.04] * 3, [0.04] * 3))
    [{'component': 'gamma_xy', 'value': 0.055, 'range': [-0.04, 0.04]}]
    """
    if bounds is None:
        return []
    e = np.asarray(strains, dtype=np.float64).reshape(-1, 3)
    if len(e) == 0:
        return []
    lo, hi = (np.asarray(b, dtype=np.float64).reshape(3) for b in bounds)
    mn, mx = e.min(axis=0), e.max(axis=0)
    out = []
    for j, name in enumerate(STRAIN_COMPONENTS):
        below, above = lo[j] - mn[j], mx[j] - hi[j]
        if below > 0 or above > 0:
            out.append({"component": name, "value": float(mn[j] if below > above else mx[j]),
                        "range": [float(lo[j]), float(hi[j])]})
    return out


def _excess(v: dict) -> float:
    """How far a :func:`range_violations` entry's value lies outside its range."""
    return max(v["range"][0] - v["value"], v["value"] - v["range"][1])


def _check_output(stress, tangent, n: int, who: str):
    stress = np.asarray(stress, dtype=np.float64)
    tangent = np.asarray(tangent, dtype=np.float64)
    if stress.shape != (n, 3) or tangent.shape != (n, 3, 3):
        raise FemnoError(
            f"{who} returned stress {stress.shape} / tangent {tangent.shape}, "
            f"expected ({n}, 3) / ({n}, 3, 3)"
        )
    return stress, tangent


class MicroModel(abc.ABC):
    """Batched homogenized response at macro integration points.

    Subclasses implement :meth:`_evaluate`; :meth:`stress_and_tangent` validates the
    input, checks the output shapes and accumulates :attr:`seconds` and
    :attr:`evaluations` (points evaluated).  Use as a context manager (or call
    :meth:`close`) to release worker processes.
    """

    name = "micro"

    def __init__(self):
        self.seconds = 0.0
        self.evaluations = 0

    @abc.abstractmethod
    def _evaluate(self, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stress (n, 3) and tangent (n, 3, 3) at validated strains (n, 3)."""

    def stress_and_tangent(self, strains) -> tuple[np.ndarray, np.ndarray]:
        """Homogenized stress and consistent tangent at a batch of strains.

        Parameters
        ----------
        strains : array_like, shape (n, 3) (or (3,) for one point), float64
            :math:`[\\varepsilon_{xx}, \\varepsilon_{yy}, \\gamma_{xy}]` per point.

        Returns
        -------
        stress : ndarray, shape (n, 3), float64
        tangent : ndarray, shape (n, 3, 3), float64
            :math:`\\partial\\bar\\sigma_i/\\partial\\varepsilon_j`.
        """
        eps = check_strains(strains, what="strains")
        t0 = time.perf_counter()
        if len(eps) == 0:
            out = np.zeros((0, 3)), np.zeros((0, 3, 3))
        else:
            out = _check_output(*self._evaluate(eps), len(eps), type(self).__name__)
        self.seconds += time.perf_counter() - t0
        self.evaluations += len(eps)
        return out

    def describe(self) -> dict:
        """Short JSON-able description (name and options)."""
        return {"name": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (worker processes); the model stays usable in-process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ClosedFormMicro(MicroModel):
    """A closed-form material law as a (homogeneous) micro model.

    Parameters
    ----------
    material : object
        Anything with ``stress_and_tangent(eps (n, 3)) -> (sigma (n, 3), C (n, 3, 3))``,
        e.g. :class:`femno.multiscale.materials.LinearElastic`.
    name : str, optional, keyword-only
    """

    def __init__(self, material, *, name: str | None = None):
        super().__init__()
        if not callable(getattr(material, "stress_and_tangent", None)):
            raise InputError(f"{material!r} has no stress_and_tangent(eps) method")
        self.material = material
        self.name = name or type(material).__name__

    def _evaluate(self, eps):
        return self.material.stress_and_tangent(eps)


# -- full FE RVE, parallel over points -----------------------------------------------------
_SOLVERS: dict = {}  # (rve, tol, maxiter) -> RVESolver, one per worker process
_STATES: dict = {}  # (token, point) -> last converged fluctuation (warm start)


def _warm_keyword(solver) -> str | None:
    """Name of the initial-fluctuation keyword of ``solver.solve``, if it has one."""
    try:
        params = inspect.signature(solver.solve).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return None
    return next((k for k in ("u0", "x0", "initial", "fluctuation0", "guess") if k in params), None)


def _result_field(res, *names):
    for name in names:
        value = res.get(name) if isinstance(res, dict) else getattr(res, name, None)
        if value is not None:
            return value
    return None


def _solve_points(rve, tol, maxiter, token, indices, strains, warm) -> dict:
    """Solve the RVE at ``strains`` (k, 3) of macro points ``indices`` (runs in a worker)."""
    from femno.multiscale.rve_solver import RVESolver

    t0 = time.perf_counter()
    key = (rve if isinstance(rve, str) else id(rve), tol, maxiter)
    if key not in _SOLVERS:
        _SOLVERS.clear()
        _SOLVERS[key] = RVESolver(rve, tol=tol, maxiter=maxiter)
    solver = _SOLVERS[key]
    setup_s = time.perf_counter() - t0
    kw = _warm_keyword(solver) if warm else None
    stress = np.empty((len(indices), 3))
    tangent = np.empty((len(indices), 3, 3))
    iters = np.zeros(len(indices), dtype=np.int64)
    for k, (i, e) in enumerate(zip(indices, strains, strict=True)):
        extra = {}
        if kw is not None and (token, int(i)) in _STATES:
            extra[kw] = _STATES[(token, int(i))]
        res = solver.solve(np.asarray(e, dtype=np.float64), **extra)
        stress[k] = np.asarray(_result_field(res, "stress"), dtype=np.float64)
        tangent[k] = np.asarray(_result_field(res, "tangent"), dtype=np.float64)
        iters[k] = int(_result_field(res, "newton_iterations", "iterations") or 0)
        if kw is not None:
            u = _result_field(res, "fluctuation", "u", "x")
            if u is not None:
                _STATES[(token, int(i))] = np.array(u, dtype=np.float64)
    return {"indices": np.asarray(indices), "stress": stress, "tangent": tangent,
            "iterations": iters, "setup_s": setup_s, "seconds": time.perf_counter() - t0,
            "pid": os.getpid()}


def _forget(token) -> None:
    for key in [k for k in _STATES if k[0] == token]:
        del _STATES[key]


class FERVEMicro(MicroModel):
    """Full FE solve of a periodic RVE at every macro integration point (FE²).

    Points are split into ``workers`` contiguous chunks; chunk ``j`` always goes to
    worker ``j`` (local processes), so each worker keeps its RVE solver (symbolic
    factorization included) and, per point, the fluctuation it last converged to, to
    warm-start the next Newton iteration there (used when ``RVESolver.solve`` takes an
    initial fluctuation).  With a Dask ``scheduler`` the chunks are ordinary tasks.

    Parameters
    ----------
    rve : str
        RVE name (``"RVE1"``) or mesh file prefix, as :class:`RVESolver` accepts; a
        string, so that workers can rebuild the solver.
    workers : int, optional, keyword-only
        Local worker processes (``forkserver``/``spawn``).  Default: ``os.cpu_count()``.
        ``1`` solves in this process.
    scheduler : str or distributed.Client, optional, keyword-only
        Dask scheduler address: solve on that cluster instead (``dist`` extra).
    tol : float, keyword-only
        Newton tolerance of the RVE solves.
    maxiter : int, keyword-only
    warm_start : bool, keyword-only
        Warm-start each point from its last converged fluctuation (default True).

    Attributes
    ----------
    iterations : ndarray of int64
        RVE Newton iterations of the last call, per point.
    """

    name = "fe"

    def __init__(self, rve: str = "RVE1", *, workers: int | None = None, scheduler=None,
                 tol: float = 1e-10, maxiter: int = 25, warm_start: bool = True):
        super().__init__()
        if not isinstance(rve, (str, os.PathLike)):
            raise InputError(f"rve must be an RVE name or mesh path (string), got {type(rve).__name__}")
        if workers is None:
            workers = os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise InputError(f"workers must be an integer >= 1, got {workers!r}")
        if not (np.isfinite(tol) and tol > 0):
            raise InputError(f"tol must be positive, got {tol!r}")
        self.rve, self.workers, self.scheduler = str(rve), int(workers), scheduler
        self.tol, self.maxiter, self.warm_start = float(tol), int(maxiter), bool(warm_start)
        self._token = uuid.uuid4().hex
        self._pool = None
        self.iterations = np.zeros(0, dtype=np.int64)
        self.setup_s = 0.0
        if scheduler is None and self.workers == 1:  # fail early on a bad RVE name
            _solve_points(self.rve, self.tol, self.maxiter, self._token, [], np.zeros((0, 3)), False)
        elif scheduler is None:  # (a cluster may see other files: checked there)
            from femno.fem.rve import load_rve

            load_rve(self.rve)

    def _get_pool(self):
        if self._pool is None:
            from femno.datagen.runner import make_pool

            self._pool = make_pool(self.workers, self.scheduler)
        return self._pool

    def _evaluate(self, eps):
        n = len(eps)
        pool = self._get_pool()
        k = max(1, min(getattr(pool, "workers", 1), n))
        parts = np.array_split(np.arange(n), k)
        args = [(self.rve, self.tol, self.maxiter, self._token, idx, eps[idx], self.warm_start)
                for idx in parts]
        # map_features sends argument tuple j to worker j (mod workers): chunks are pinned
        results = pool.map_features(_solve_points, args)
        stress, tangent = np.empty((n, 3)), np.empty((n, 3, 3))
        self.iterations = np.zeros(n, dtype=np.int64)
        for r in results:
            stress[r["indices"]] = r["stress"]
            tangent[r["indices"]] = r["tangent"]
            self.iterations[r["indices"]] = r["iterations"]
            self.setup_s += r["setup_s"]
        return stress, tangent

    def describe(self):
        return {"name": self.name, "rve": self.rve, "workers": self.workers,
                "scheduler": None if self.scheduler is None else str(self.scheduler),
                "tol": self.tol, "warm_start": self.warm_start}

    def close(self):
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        _forget(self._token)


class EquiNOMicro(MicroModel):
    """A trained EquiNO surrogate as micro model (stress and tangent, batched).

    When the model knows the strain range it was trained on
    (:meth:`~femno.operators.equino.EquiNO.training_range`), strains outside it are
    recorded in :attr:`out_of_range` and the first such evaluation issues one
    ``UserWarning`` (the surrogate extrapolates there).

    Parameters
    ----------
    model_or_path : femno.operators.equino.EquiNO or str or path-like
        A model, or a checkpoint file loaded with
        ``femno.operators.checkpoint.load_model(path, kind="equino")``.
    device : str, optional, keyword-only
        Torch device (``"cpu"``, ``"cuda"``); default: the model's current device.

    Attributes
    ----------
    training_range : (lo, hi) of ndarray (3,) or None
    out_of_range : dict
        component -> ``{"component", "value", "range"}``, the most extreme value seen
        outside the training range over all evaluations (empty if none).
    """

    name = "equino"

    def __init__(self, model_or_path, *, device: str | None = None):
        super().__init__()
        if isinstance(model_or_path, (str, os.PathLike)):
            path = os.fspath(model_or_path)
            if not os.path.isfile(path):
                raise InputError(f"EquiNO model file {path!r} does not exist")
            model = micro_loader("equino")(path, device=device)
            self.path = path
        else:
            model, self.path = model_or_path, None
        if not callable(getattr(model, "stress_and_tangent", None)):
            raise InputError(f"{type(model).__name__} has no stress_and_tangent(strains) method")
        if device is not None and hasattr(model, "to"):
            model = model.to(device)
        self.model, self.device = model, device
        rng = getattr(model, "training_range", None)
        self.training_range = rng() if callable(rng) else None
        self.out_of_range: dict = {}

    def _evaluate(self, eps):
        viol = range_violations(eps, self.training_range)
        if viol:
            first = not self.out_of_range
            for v in viol:
                old = self.out_of_range.get(v["component"])
                if old is None or _excess(v) > _excess(old):
                    self.out_of_range[v["component"]] = v
            if first:
                warnings.warn("EquiNO micro model evaluated outside its training range "
                              "(it extrapolates there): " + "; ".join(
                                  f"{v['component']} = {v['value']:.4g} not in "
                                  f"[{v['range'][0]:.4g}, {v['range'][1]:.4g}]" for v in viol),
                              UserWarning, stacklevel=4)
        stress, tangent = self.model.stress_and_tangent(eps)
        to_np = lambda a: a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)  # noqa: E731
        return to_np(stress).astype(np.float64), to_np(tangent).astype(np.float64)

    def describe(self):
        rng = self.training_range
        return {"name": self.name, "path": self.path, "device": self.device,
                "training_range": None if rng is None else [np.asarray(b).tolist() for b in rng],
                "out_of_range": list(self.out_of_range.values())}


def micro_from_spec(spec: str, *, rve: str = "RVE1", workers: int | None = None,
                    scheduler=None, tol: float = 1e-10, device: str | None = None) -> MicroModel:
    """Build a micro model from a short specification.

    Parameters
    ----------
    spec : str
        ``"fe"`` (full FE RVE ``rve``, see :class:`FERVEMicro`), ``"equino:PATH"``
        (trained EquiNO checkpoint), ``"linear"`` (isotropic linear elasticity with the
        small-strain stiffness of the matrix law: :math:`K = 4780`,
        :math:`G = \\alpha/(2\\beta) = 416.7` MPa), ``"matrix"`` (the nonlinear elastic
        matrix law of SPEC §2) or ``"fibre"`` (the linear fibre law).
    rve, workers, scheduler, tol : keyword-only
        For ``"fe"``.
    device : str, optional, keyword-only
        For ``"equino:PATH"``.

    Raises
    ------
    InputError
        Unknown specification.

    Examples
    --------
    >>> micro_from_spec("plastic")
    Traceback (most recent call last):
    ...
    femno.errors.InputError: unknown micro model 'plastic'; valid: fe, equino:PATH, linear, matrix, fibre
    """
    if not isinstance(spec, str):
        raise InputError(f"micro model spec must be a string, got {spec!r}")
    key = spec.strip()
    if key == "fe":
        return FERVEMicro(rve, workers=workers, scheduler=scheduler, tol=tol)
    if key.startswith("equino:"):
        path = key.split(":", 1)[1]
        if not path:
            raise InputError("micro spec 'equino:PATH' needs a model path")
        return EquiNOMicro(path, device=device)
    if key in ("linear", "matrix", "fibre"):
        from femno.multiscale import materials as mat

        if key == "linear":
            m = mat.MATRIX
            return ClosedFormMicro(mat.LinearElastic(m.K, m.alpha / (2.0 * m.beta)), name="linear")
        return ClosedFormMicro(mat.MATRIX if key == "matrix" else mat.FIBRE, name=key)
    raise InputError(f"unknown micro model {spec!r}; valid: {', '.join(MICRO_SPECS)}")
