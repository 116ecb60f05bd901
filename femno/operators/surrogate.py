r"""Drop-in neural surrogates for FE solves: :class:`Surrogate` and :class:`NeuralInitialGuess`.

A trained operator model (SPON, FNO, DeepONet: anything whose forward maps encoded
inputs ``X`` ``(B, C, n_in)`` and the lifting ``(B, n_dofs)`` to FE coefficients
``(B, n_dofs)``) plus the parametric family it was trained on gives

* :meth:`Surrogate.predict` ``(params) -> u`` (``(n_dofs,)`` float64, full FE
  coefficient vector): an FE function *in place of a solve*;
* :class:`NeuralInitialGuess`: the prediction restricted to the free dofs as the
  Krylov initial guess :math:`x_0`, so the answer still meets the solver tolerance
  (true residual :math:`\|b - A x\|_2 \le \mathrm{rtol}\,\|b\|_2`) with fewer
  iterations.  Usable with the solver layer (``krylov(...)(A, b, x0=guess.guess(system))``),
  with :func:`femno.datagen.solve_sequence` (``x0=guess``, combinable with recycling)
  and with ``femno generate --warm-start MODEL``.

The family's parameters are encoded exactly as :class:`femno.operators.fe_data.FEData`
encodes a dataset's inputs (same encoder, same channels), with the encoder built once.
Models record where they came from with :func:`data_meta` (stored in the model's
``meta["data"]``); :func:`check_model_data` refuses a model on a dataset or family of
another family, mesh or FE space.

>>> import numpy as np, torch
>>> from femno.fem import get_family
>>> from femno.operators.baselines import DeepONet
>>> fam = get_family("darcy", n=4)
>>> model = DeepONet(n_in=fam.basis.N, n_dofs=fam.basis.N, width=8, depth=1, p=4)
>>> model.meta = {"data": data_meta_of_family(fam, channels=["a"], encode="l2")}
>>> sur = Surrogate(model, fam, enforce_dirichlet=True)
>>> u = sur.predict(fam.sample(np.random.default_rng(0)))
>>> u.shape, u.dtype, float(np.abs(u[sur.dirichlet]).max())
((25,), dtype('float64'), 0.0)
"""

from __future__ import annotations

import hashlib
import inspect
import warnings

import numpy as np
import skfem
import torch

from femno.datagen.initial_guess import register_initial_guess
from femno.errors import InputError
from femno.operators.fe_data import input_ranges, mesh_size

__all__ = ["Surrogate", "NeuralInitialGuess", "data_meta", "data_meta_of_family",
           "check_model_data", "mesh_fingerprint", "model_forward", "cached_initial_guess",
           "check_warm_start"]


# -------------------------------------------------------------------------- provenance
def mesh_fingerprint(mesh) -> str:
    """SHA-1 of a mesh's connectivity and coordinates (rounded to 1e-12)."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(mesh.t, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(np.round(np.asarray(mesh.p, dtype=np.float64), 12)).tobytes())
    return h.hexdigest()


def data_meta(data) -> dict:
    """What a model trained on ``data`` (:class:`~femno.operators.fe_data.FEData`) must
    match: family (name, spec, options), element, dofs, mesh fingerprint, input
    channels and encoding.  Store it as ``meta["data"]`` of the saved model."""
    settings = data.settings or {}
    return {"family": data.family, "family_spec": settings.get("family_spec", data.family),
            "family_options": dict(settings.get("family_options") or {}),
            "element": data.element, "n_dofs": int(data.n_dofs),
            "n_in_dofs": int(data.n_in_dofs), "mesh": mesh_fingerprint(data.mesh),
            "channels": list(data.channels), "encode": data.encode,
            "dataset": getattr(data, "path", None),
            # what femno eval compares a new dataset with (extrapolation warnings)
            "h": mesh_size(data.mesh),
            "bbox": [np.asarray(data.mesh.p).min(axis=1).tolist(),
                     np.asarray(data.mesh.p).max(axis=1).tolist()],
            "input_range": input_ranges(data.X), "fill": domain_fill(data.mesh)}


def data_meta_of_family(family, *, channels, encode="l2", family_options=None) -> dict:
    """:func:`data_meta` for a :class:`femno.fem.Family` instance (models built in code)."""
    from femno.fem.spaces import element_name

    return {"family": family.name, "family_spec": family.name,
            "family_options": dict(family_options or {}), "element": element_name(
                family.basis.elem), "n_dofs": int(family.basis.N),
            "n_in_dofs": None, "mesh": mesh_fingerprint(family.mesh),
            "channels": list(channels), "encode": encode, "dataset": None}


def _model_data_meta(model) -> dict:
    """``model.meta["data"]``, else what ``model.config`` records (family, element,
    channels; SPON), else :class:`InputError`."""
    meta = getattr(model, "meta", None) or {}
    d = meta.get("data")
    if isinstance(d, dict):
        return d
    cfg = getattr(model, "config", None) or {}
    if cfg.get("family") and cfg.get("element") and "channels" in cfg:
        return {"family": cfg["family"], "family_spec": cfg["family"], "family_options": {},
                "element": cfg["element"], "channels": list(cfg["channels"]),
                "encode": meta.get("encode", "l2"), "n_dofs": None, "mesh": None}
    raise InputError(f"{type(model).__name__} model has no meta['data'] record of the data "
                     "it was trained on (train it with femno, or set it with data_meta)")


def _mesh_independent(model) -> bool:
    """Models that bind to any mesh (``bind(basis, dirichlet)``, SPON) or say so."""
    return bool(getattr(model, "mesh_independent", hasattr(model, "bind")))


def check_model_data(model, *, family: str, element: str, n_dofs: int, mesh=None,
                     channels=None) -> None:
    """:class:`InputError` unless ``model`` was trained on this family / FE space / mesh.

    Mesh-independent models (SPON: they ``bind`` to any mesh) skip the dof-count and
    mesh checks.
    """
    d = _model_data_meta(model)
    problems = []
    if d.get("family") != family:
        problems.append(f"family {d.get('family')!r} vs {family!r}")
    if d.get("element") != element:
        problems.append(f"element {d.get('element')!r} vs {element!r}")
    if channels is not None and list(d.get("channels") or []) != list(channels):
        problems.append(f"input channels {d.get('channels')} vs {list(channels)}")
    if not _mesh_independent(model):
        if int(d.get("n_dofs", -1)) != int(n_dofs):
            problems.append(f"{d.get('n_dofs')} dofs vs {n_dofs}")
        elif mesh is not None and d.get("mesh") != mesh_fingerprint(mesh):
            problems.append("a different mesh")
    if problems:
        raise InputError(f"model {type(model).__name__} was trained on other data: "
                         + "; ".join(problems))


def model_forward(model, X: torch.Tensor, lift: torch.Tensor) -> torch.Tensor:
    """``model(X, lift)`` for models taking the lifting, else ``model(X)``."""
    params = inspect.signature(model.forward).parameters
    return model(X, lift) if len(params) >= 2 else model(X)


#: a mesh size or domain extent off by more than this factor, or inputs beyond the
#: training range by more than this share of it, gets a warning
H_FACTOR, RANGE_SLACK = 1.5, 0.1


def domain_fill(mesh) -> float:
    """Measure of the domain over the measure of its bounding box (1 for a box).

    >>> from femno.fem.mesh import lshape
    >>> round(domain_fill(lshape(4)), 6)
    0.75
    """
    dim, nv = mesh.p.shape[0], mesh.t.shape[0]
    p0 = {(2, 3): skfem.ElementTriP0, (2, 4): skfem.ElementQuad0, (3, 4): skfem.ElementTetP0,
          (3, 8): skfem.ElementHex0}.get((dim, nv))
    if p0 is None:
        raise InputError(f"domain_fill: unsupported cell ({dim}-D, {nv} vertices)")
    vol = float(np.sum(skfem.CellBasis(mesh, p0()).dx))
    ext = np.ptp(np.asarray(mesh.p, dtype=np.float64), axis=1)
    return vol / float(np.prod(np.maximum(ext, 1e-300)))


def extrapolation_warnings(meta: dict, mesh, X=None, channels=()) -> list[str]:
    """Where a mesh (and encoded inputs ``X`` (S, C, n) of ``channels``) lie outside the
    training data recorded in ``meta`` (:func:`data_meta`): mesh size, bounding box,
    input ranges.  One warning string per mismatch; models saved before these were
    recorded get one string saying the check is not possible."""
    if "h" not in meta:
        return ["the model does not record its training mesh size and input ranges "
                "(saved by an older femno): no extrapolation check"]
    out = []
    h, h0 = mesh_size(mesh), float(meta["h"])
    if not h0 / H_FACTOR <= h <= h0 * H_FACTOR:
        out.append(f"mesh size {h:.3g} vs {h0:.3g} in training ({h / h0:.2f}x): another "
                   "resolution than the model was trained on")
    lo, hi = np.asarray(mesh.p).min(axis=1), np.asarray(mesh.p).max(axis=1)
    lo0, hi0 = np.asarray(meta["bbox"][0]), np.asarray(meta["bbox"][1])
    span0 = np.maximum(hi0 - lo0, 1e-300)
    if lo.shape == lo0.shape and (np.any(np.abs(lo - lo0) > 0.1 * span0)
                                  or np.any(np.abs(hi - hi0) > 0.1 * span0)):
        out.append(f"domain bounding box {np.round(lo, 4).tolist()}..{np.round(hi, 4).tolist()}"
                   f" vs {np.round(lo0, 4).tolist()}..{np.round(hi0, 4).tolist()} in training: "
                   "another geometry")
    fill, fill0 = domain_fill(mesh), meta.get("fill")
    if fill0 is not None and abs(fill - fill0) > 0.1 * fill0 and not any("geometry" in w
                                                                        for w in out):
        out.append(f"the domain fills {100 * fill:.0f} % of its bounding box vs "
                   f"{100 * fill0:.0f} % in training: another geometry")
    if not out and meta.get("mesh") not in (None, mesh_fingerprint(mesh)):
        out.append("another mesh of the same domain and resolution than in training: "
                   "measured errors of SPON grow 9x on such a mesh "
                   "(benchmarks/results/geometry.md)")
    if X is not None:
        for name, (a, b), (a0, b0) in zip(channels, input_ranges(X), meta.get("input_range", []),
                                          strict=False):
            slack = RANGE_SLACK * max(b0 - a0, 1e-300)
            if a < a0 - slack or b > b0 + slack:
                out.append(f"input {name!r} spans [{a:.3g}, {b:.3g}], training [{a0:.3g}, "
                           f"{b0:.3g}]: coefficients outside the training range")
    return out


# --------------------------------------------------------------------------- surrogate
class Surrogate:
    r"""A trained operator model used as a solver of a parametric family.

    Parameters
    ----------
    model : torch.nn.Module
        Trained model with ``meta["data"]`` (see :func:`data_meta`).
    family : femno.fem.Family
        The family whose parameters :meth:`predict` takes; must match the model's
        training data (family, element, mesh), else :class:`InputError`.
    enforce_dirichlet : bool, keyword-only
        Overwrite the Dirichlet dofs of the prediction with the family's data (models
        that lift the boundary data, like SPON, already return them exactly).
    device : str or torch.device, optional, keyword-only
        Where the model runs (default: where it is).
    dtype : torch.dtype, keyword-only
        dtype of the encoded inputs fed to the model (float64; networks may cast).

    Attributes
    ----------
    free, dirichlet : ndarray of int64
    n_dofs : int
    """

    def __init__(self, model, family, *, enforce_dirichlet: bool = False, device=None,
                 dtype=torch.float64):
        from femno.fem import Family
        from femno.operators.fe_data import Encoder, _check_encode

        if not isinstance(model, torch.nn.Module):
            raise InputError(f"model must be a torch module, got {type(model).__name__}")
        if not isinstance(family, Family):
            raise InputError(f"family must be a femno Family, got {type(family).__name__}")
        d = _model_data_meta(model)
        check_model_data(model, family=family.name, element=family.element,
                         n_dofs=family.basis.N, mesh=family.mesh)
        self.model, self.family = model.eval(), family
        self.device = next(iter(model.parameters())).device if device is None else device
        self.model.to(self.device)
        self.dtype = dtype
        self.channels, self.encode = list(d.get("channels") or []), d.get("encode", "l2")
        _check_encode(self.encode)
        self.enforce_dirichlet = bool(enforce_dirichlet)
        self.n_dofs = int(family.basis.N)
        D = np.asarray(family.dirichlet_dofs(), dtype=np.int64)
        mask = np.ones(self.n_dofs, dtype=bool)
        mask[D] = False
        self.free, self.dirichlet = np.nonzero(mask)[0], np.sort(D)
        basis_in = family.basis  # the input space of FEData: the scalar output space
        if isinstance(basis_in.elem, skfem.ElementVector):
            basis_in = skfem.CellBasis(family.mesh, basis_in.elem.elem,
                                       quadrature=basis_in.quadrature)
        self.encoder = Encoder(basis_in)
        if hasattr(model, "bind"):  # mesh-independent models: build the family's graph
            self.model.bind(family.basis, self.dirichlet)
        self.nonzero_bc = hasattr(family, "boundary_values")
        #: extrapolation warnings issued so far (mesh at construction, inputs in predict)
        self.warnings = [w for w in extrapolation_warnings(d, family.mesh)
                         if "older femno" not in w]
        for w in self.warnings:
            warnings.warn(f"surrogate extrapolates: {w}", RuntimeWarning, stacklevel=2)

    @classmethod
    def load(cls, path, family=None, *, device=None, **options) -> Surrogate:
        """Load a saved model (:func:`femno.operators.checkpoint.load_model`); without
        ``family``, rebuild it from the model's record (spec and options)."""
        from femno.operators.checkpoint import load_model

        model = load_model(path, device=device)
        if family is None:
            from femno.fem.families.resolve import load_family

            d = _model_data_meta(model)
            family = load_family(d.get("family_spec") or d["family"], d.get("family_options"))
        return cls(model, family, device=device, **options)

    # -- encoding ----------------------------------------------------------------------
    def encode_params(self, params_list) -> torch.Tensor:
        """Encoded inputs ``(S, C, n_in)`` of a list of parameter dicts (the channels and
        encoding of :class:`~femno.operators.fe_data.FEData`)."""
        from femno.fem.families.resolve import input_arrays
        from femno.operators.fe_data import encode_inputs

        raw_list = [input_arrays(p) for p in params_list]
        fields = [c for c in self.channels if not c.startswith("rhs")]
        wants_rhs = len(fields) < len(self.channels)
        missing = [c for c in fields if c not in raw_list[0]]
        if missing:
            raise InputError(f"params lack the model's input(s) {missing}; got {sorted(raw_list[0])}")
        # the model's fields, plus the parameters when it reads the family's load
        raw = {n: np.stack([r[n] for r in raw_list]) for n in raw_list[0]
               if n in fields or (wants_rhs and n not in fields)}

        def loads(_raw, _S):
            return np.stack([self.family.assemble_full(p, matrix=False)[1] for p in params_list])

        X, channels = encode_inputs(raw, self.encoder, encode=self.encode, loads=loads)
        if any(c not in channels for c in self.channels):
            raise InputError(f"the model reads channels {self.channels}; these parameters "
                             f"give {channels}")
        X = X[:, [channels.index(c) for c in self.channels]]
        return torch.as_tensor(X, dtype=self.dtype, device=self.device)

    def _lifts(self, params_list, lifts) -> np.ndarray:
        if lifts is not None:
            L = np.asarray(lifts, dtype=np.float64).reshape(len(params_list), -1)
            if L.shape[1] != self.n_dofs:
                raise InputError(f"lift must have {self.n_dofs} entries, got {L.shape[1]}")
            return L
        if self.nonzero_bc:
            return np.stack([self.family.assemble(p).x_bc for p in params_list])
        return np.zeros((len(params_list), self.n_dofs))

    # -- prediction --------------------------------------------------------------------
    def predict_many(self, params_list, *, lifts=None) -> np.ndarray:
        """FE coefficient vectors ``(S, n_dofs)`` float64 for a list of parameter dicts.

        ``lifts`` (S, n_dofs): Dirichlet data (default: zero, or the family's
        ``x_bc`` for families with non-zero boundary values).
        """
        if isinstance(params_list, dict) or len(params_list) == 0:
            raise InputError("params_list must be a non-empty list of parameter dicts")
        if not all(isinstance(p, dict) for p in params_list):
            raise InputError("every item of params_list must be a parameter dict")
        X = self.encode_params(params_list)
        for w in extrapolation_warnings(_model_data_meta(self.model), self.family.mesh, X,
                                        self.channels):
            if "coefficients outside" in w and w.split(" spans")[0] not in "".join(self.warnings):
                self.warnings.append(w)
                warnings.warn(f"surrogate extrapolates: {w}", RuntimeWarning, stacklevel=2)
        L = self._lifts(params_list, lifts)
        with torch.no_grad():
            Y = model_forward(self.model, X, torch.as_tensor(L, dtype=X.dtype, device=X.device))
        Y = Y.detach().cpu().numpy().astype(np.float64)
        if Y.shape != (len(params_list), self.n_dofs):
            raise InputError(f"model returned shape {Y.shape}, expected "
                             f"({len(params_list)}, {self.n_dofs})")
        if self.enforce_dirichlet:
            Y[:, self.dirichlet] = L[:, self.dirichlet]
        return Y

    def predict(self, params: dict, *, lift=None) -> np.ndarray:
        """FE coefficients ``(n_dofs,)`` float64 of the solution for ``params``."""
        if not isinstance(params, dict):
            raise InputError(f"params must be a dict, got {type(params).__name__}")
        return self.predict_many([params], lifts=None if lift is None else [lift])[0]

    __call__ = predict


class NeuralInitialGuess:
    r"""Krylov initial guesses from a :class:`Surrogate`.

    ``guess(system)`` returns :math:`x_0 = \alpha\, u_{\text{pred}}[\text{free}]` for a
    :class:`~femno.fem.families.LinearSystem` (with ``params``); with
    ``rescale=True`` and an SPD system, :math:`\alpha = g^T b / g^T A g` minimizes the
    energy error :math:`\|x - \alpha g\|_A` over the scalings (one matrix product),
    else :math:`\alpha = 1`.  Called as ``guess(i, system)`` it is the initial-guess
    provider of :func:`femno.datagen.solve_sequence` (``x0=guess``).

    Attributes
    ----------
    seconds : float
        Total time spent predicting.
    calls : int
    """

    def __init__(self, surrogate: Surrogate, *, rescale: bool = False):
        if not isinstance(surrogate, Surrogate):
            raise InputError(f"surrogate must be a Surrogate, got {type(surrogate).__name__}")
        self.surrogate, self.rescale = surrogate, bool(rescale)
        self.seconds, self.calls = 0.0, 0

    def guess(self, system) -> np.ndarray:
        """Initial guess on the free dofs, shape ``(system.dofs,)`` float64."""
        import time

        if not (hasattr(system, "params") and hasattr(system, "free")):
            raise InputError("a neural initial guess needs a LinearSystem (params, free); got "
                             f"{type(system).__name__}")
        t = time.perf_counter()
        if not np.array_equal(system.free, self.surrogate.free):
            raise InputError("the system's free dofs differ from the surrogate's family")
        u = self.surrogate.predict(system.params, lift=getattr(system, "x_bc", None))
        g = u[system.free]
        if self.rescale and system.meta.get("spd", False):
            Ag = system.A @ g
            den = float(g @ Ag)
            if den > 0:
                g = g * (float(g @ system.b) / den)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return g

    def __call__(self, i, system=None) -> np.ndarray:
        return self.guess(i if system is None else system)


_GUESS_CACHE: dict = {}


def cached_initial_guess(path, family, **options) -> NeuralInitialGuess:
    """A :class:`NeuralInitialGuess` of the model file ``path`` for ``family``, loaded
    once per process (data-generation workers); CPU, one torch thread."""
    key = (str(path), id(family), tuple(sorted(options.items())))
    if key not in _GUESS_CACHE:
        torch.set_num_threads(1)
        _GUESS_CACHE[key] = NeuralInitialGuess(Surrogate.load(path, family, device="cpu"),
                                               **options)
    return _GUESS_CACHE[key]


def check_warm_start(path, family) -> None:
    """Raise :class:`~femno.errors.InputError` unless the model file ``path`` fits
    ``family`` (its data and mesh); used by ``generate_dataset(warm_start=...)``."""
    Surrogate.load(path, family, device="cpu")


# fills the data layer's plug point (femno.datagen does not import operators)
register_initial_guess("surrogate", cached_initial_guess, check=check_warm_start)
