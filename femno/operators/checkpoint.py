r"""One checkpoint format for every femno model.

A model file is a ``torch.save`` dictionary::

    {"format": "femno-model", "format_version": 1, "kind": "spon",
     "config": {...}, "state_dict": {...}, "meta": {...}}

``kind`` names a class registered with :func:`register_model`; ``config`` holds the
keyword arguments that rebuild it (``cls(**config)``) or, for models whose buffers
depend on data (POD bases, FE matrices), the input of ``cls.from_state(config,
state_dict)``.  ``meta`` records what produced the model (dataset, seed, losses,
versions).  Files are written atomically (temporary file, then ``os.replace``), so
an interrupted save never leaves a truncated model behind.

>>> import torch, tempfile, os
>>> @register_model("doctest-mlp")
... class Tiny(torch.nn.Module):
...     def __init__(self, width=3):
...         super().__init__()
...         self.config = {"width": width}
...         self.lin = torch.nn.Linear(width, 1)
>>> m = Tiny(width=4)
>>> path = os.path.join(tempfile.mkdtemp(), "tiny.pt")
>>> _ = save_model(m, path, meta={"note": "doctest"})
>>> m2 = load_model(path)
>>> m2.config, m2.meta["note"], bool(torch.equal(m.lin.weight, m2.lin.weight))
({'width': 4}, 'doctest', True)
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

from femno.errors import InputError

__all__ = ["MODEL_REGISTRY", "register_model", "save_model", "load_model", "read_checkpoint",
           "versions", "atomic_torch_save"]

FORMAT, FORMAT_VERSION = "femno-model", 1
MODEL_REGISTRY: dict[str, type] = {}


def register_model(kind: str):
    """Class decorator: make ``kind`` loadable by :func:`load_model`."""

    def deco(cls):
        MODEL_REGISTRY[kind] = cls
        cls.model_kind = kind
        return cls

    return deco


def versions() -> dict:
    """Versions of femno, torch, numpy, scipy and Python (stored with every model)."""
    import numpy
    import scipy

    from femno import __version__

    return {"femno": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "python": platform.python_version()}


def atomic_torch_save(obj, path) -> Path:
    """``torch.save`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def save_model(model: torch.nn.Module, path, *, meta: dict | None = None) -> Path:
    """Save ``model`` (a registered class with a ``config`` dict) with its metadata.

    Parameters
    ----------
    model : torch.nn.Module
        Instance of a class decorated with :func:`register_model`; ``model.config``
        must be a dict of plain Python values (numbers, strings, lists, dicts).
    path : str or path
        Output file (conventionally ``*.pt``).
    meta : dict, optional, keyword-only
        Extra metadata; merged over ``model.meta`` if the model has one.  Versions and a
        UTC time stamp are added.
    """
    kind = getattr(type(model), "model_kind", None)
    if kind is None or MODEL_REGISTRY.get(kind) is not type(model):
        raise InputError(f"{type(model).__name__} is not a registered femno model")
    full_meta = dict(getattr(model, "meta", {}) or {})
    full_meta.update(meta or {})
    full_meta.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat())
    full_meta["versions"] = versions()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
           "config": model.config, "state_dict": state, "meta": full_meta}
    return atomic_torch_save(obj, path)


def read_checkpoint(path) -> dict:
    """Read and validate a model file; returns the raw dictionary (tensors on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
        raise InputError(f"{str(path)!r} is not a readable femno model file: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputError(f"{str(path)!r} is not a femno model file")
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(f"{str(path)!r} was written by a newer femno (format "
                         f"{obj['format_version']} > {FORMAT_VERSION})")
    return obj


def load_model(path, *, kind: str | None = None, device=None) -> torch.nn.Module:
    """Load a model saved by :func:`save_model`.

    Parameters
    ----------
    path : str or path
    kind : str, optional, keyword-only
        Expected model kind; a file of another kind raises :class:`InputError`.
    device : torch.device or str, optional, keyword-only
        Where to put the model (default CPU).

    Returns
    -------
    torch.nn.Module
        In eval mode, with ``model.meta`` set from the file.
    """
    obj = read_checkpoint(path)
    if kind is not None and obj["kind"] != kind:
        raise InputError(f"{str(path)!r} holds a {obj['kind']!r} model, expected {kind!r}")
    _import_model_modules()
    cls = MODEL_REGISTRY.get(obj["kind"])
    if cls is None:
        raise InputError(f"unknown model kind {obj['kind']!r}; known: {sorted(MODEL_REGISTRY)}")
    if hasattr(cls, "from_state"):
        model = cls.from_state(obj["config"], obj["state_dict"])
    else:
        model = cls(**obj["config"])
        model.load_state_dict(obj["state_dict"])
    model.meta = obj["meta"]
    if device is not None:
        model = model.to(device)
    return model.eval()


def _import_model_modules() -> None:
    """Import the modules that register femno's model classes (lazy, once)."""
    import importlib

    for name in ("femno.operators.equino", "femno.operators.spon", "femno.operators.baselines",
                 "femno.operators.precond_nets", "femno.operators.precond_graph",
                 "femno.operators.precond_amg", "femno.operators.geometry_models"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # module not written yet / optional part absent
            if exc.name != name:
                raise
