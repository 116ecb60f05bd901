"""``femno info``: versions, available backends and devices."""

from __future__ import annotations

import importlib
import platform

from femno import __version__
from femno.cli._output import print_json, print_table

_PACKAGES = [
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("scikit-fem", "skfem"),
    ("pyamg", "pyamg"),
    ("torch", "torch"),
    ("meshio", "meshio"),
    ("tqdm", "tqdm"),
    ("ilupp (ic extra)", "ilupp"),
    ("petsc4py (petsc extra)", "petsc4py"),
    ("h5py (data extra)", "h5py"),
    ("zarr (data extra)", "zarr"),
    ("dask.distributed (dist extra)", "distributed"),
    ("matplotlib (plot extra)", "matplotlib"),
]


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return getattr(mod, "__version__", "installed")


def collect_info() -> dict:
    """Everything ``femno info`` reports, as a JSON-ready dictionary."""
    info = {
        "femno": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(mod) for name, mod in _PACKAGES},
    }
    backends = {"scipy": True, "petsc": False}
    petsc = None
    if info["packages"]["petsc4py (petsc extra)"]:
        try:
            from femno.solvers.petsc_backend import petsc_info

            petsc = petsc_info()
            backends["petsc"] = True
        except Exception as exc:  # noqa: BLE001 - report, do not crash `info`
            petsc = {"error": str(exc)}
    info["backends"] = backends
    info["petsc"] = petsc
    devices = {"cpu": True, "cuda": False, "cuda_devices": []}
    try:
        import torch

        if torch.cuda.is_available():
            devices["cuda"] = True
            devices["cuda_devices"] = [
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            ]
        devices["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    info["devices"] = devices
    return info


def run(args) -> int:
    info = collect_info()
    if args.json:
        print_json(info)
        return 0
    rows = [("femno", info["femno"]), ("python", info["python"]), ("platform", info["platform"])]
    rows += [(k, v or "not installed") for k, v in info["packages"].items()]
    print_table(rows, title="femno info")
    print()
    brows = [("scipy/pyamg backend", "available")]
    brows.append(("PETSc backend", "available" if info["backends"]["petsc"] else "not available"))
    if info["petsc"]:
        brows += [(f"petsc {k}", v) for k, v in info["petsc"].items()]
    dev = info["devices"]
    gpus = ", ".join(dev["cuda_devices"]) if dev["cuda"] else "none"
    brows.append(("CUDA devices", gpus))
    print_table(brows, title="backends and devices")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info",
        help="versions, backends (scipy, PETSc) and devices (CPU, CUDA)",
        description="Print femno's version, the versions of its dependencies, which "
        "solver backends and which torch devices are available.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
