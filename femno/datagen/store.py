r"""On-disk dataset store: a directory holding a zarr v3 group and completion markers.

Layout of a dataset directory ``PATH``::

    PATH/femno.json              manifest: settings, layout, versions (written last at
                                 creation, atomically; never modified afterwards)
    PATH/done/block-000007.json  one marker per completed block (tmp file + os.replace)
    PATH/data.zarr/              zarr v3 group, rows = samples in sorted (chain) order
        sample_index   (N,) int64       row r holds sample sample_index[r], whose
                                        parameters are family.sample(default_rng([seed, i]))
        features       (N, d) float64   sort features of each row
        inputs/<name>  (N, ...) float64 every numeric parameter of the family
        solution       (N, n_dofs) float64  full FE coefficient vector (LinearSystem.expand)
        stats/iterations (N,) int64, stats/residual, stats/time (N,) float64,
        stats/converged (N,) bool
        mesh/points (n_vertices, dim) float64, mesh/cells (n_elements, n_local) int64
        fe/free, fe/dirichlet (int64), fe/doflocs (n_dofs, dim), fe/element_dofs
        (n_elements, n_local_dofs) int64

Every per-sample array is chunked along rows by exactly ``block`` rows, so a block
owns its chunks: a block's chunks are written first, then its marker.  A block
without a marker is recomputed and overwritten, so a process killed at any moment
loses at most the blocks in flight.  Rows of unfinished blocks read as the fill
values (NaN, -1, False).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from femno.errors import InputError, optional_import

__all__ = ["DatasetStore", "inspect_dataset", "write_json_atomic", "MANIFEST", "FORMAT"]

FORMAT = "femno-dataset"
FORMAT_VERSION = 1
MANIFEST = "femno.json"
DATA = "data.zarr"
DONE = "done"

_FILL = {"f8": np.nan, "i8": -1, "bool": False}


def _zarr():
    return optional_import("zarr", extra="data", purpose="dataset stores")


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to ``path`` via a temporary file, fsync and :func:`os.replace`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(path) -> dict | None:
    """The manifest of a dataset at ``path``, ``None`` if there is none."""
    f = Path(path) / MANIFEST
    if not f.is_file():
        return None
    try:
        manifest = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{str(f)!r} is not a readable femno dataset manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{str(f)!r} is not a femno dataset manifest")
    return manifest


class DatasetStore:
    """A dataset directory (see the module docstring).

    Use :meth:`create` for a new dataset and :meth:`open` for an existing one.
    """

    def __init__(self, path, manifest: dict, mode: str = "r"):
        self.path = Path(path)
        self.manifest = manifest
        self.block = int(manifest["settings"]["block"])
        self.samples = int(manifest["settings"]["samples"])
        self.n_blocks = -(-self.samples // self.block)
        try:
            self.root = _zarr().open_group(str(self.path / DATA), mode=mode)
        except Exception as exc:  # zarr raises several kinds for missing/garbled groups
            raise InputError(f"{str(self.path / DATA)!r} is not a readable zarr group: {exc}") from exc

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, path, *, mode: str = "r") -> DatasetStore:
        """Open an existing dataset; :class:`InputError` if ``path`` is not one."""
        p = Path(path)
        if not p.exists():
            raise InputError(f"dataset {str(p)!r} does not exist")
        manifest = read_manifest(p)
        if manifest is None:
            raise InputError(f"{str(p)!r} is not a femno dataset (no {MANIFEST})")
        return cls(p, manifest, mode=mode)

    @staticmethod
    def prepare_directory(path) -> Path:
        """Make ``path`` ready for a new dataset; refuse foreign non-empty directories.

        Leftovers of an interrupted creation (no manifest yet, no markers) are removed.
        """
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise InputError(f"output path {str(p)!r} exists and is not a directory")
        if p.is_dir():
            entries = {e.name for e in p.iterdir()}
            ours = {DATA, DONE} | {e for e in entries if e.startswith(f".{MANIFEST}.")}
            if entries - ours:
                raise InputError(
                    f"output path {str(p)!r} is a non-empty directory that is not a femno "
                    f"dataset (found {sorted(entries - ours)[:5]}); choose another path"
                )
            if (p / DONE).is_dir() and any((p / DONE).iterdir()):
                raise InputError(f"{str(p)!r} has block markers but no {MANIFEST}: remove it")
            for name in entries:
                target = p / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        try:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / f".{MANIFEST}.probe.tmp"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise InputError(f"cannot write to output path {str(p)!r}: {exc}") from exc
        return p

    @classmethod
    def create(cls, path, *, manifest: dict, arrays: dict, static: dict) -> DatasetStore:
        """Create a dataset: array metadata, static arrays, then the manifest (atomically).

        Parameters
        ----------
        manifest : dict
            JSON-able; must hold ``settings`` with ``samples`` and ``block``.
        arrays : dict
            Per-sample arrays: name -> (per-sample shape, dtype code ``f8``/``i8``/``bool``).
        static : dict
            Arrays written once: name -> ndarray (rows of per-sample arrays allowed too,
            e.g. ``sample_index``; they must have been declared in ``arrays``).
        """
        zarr = _zarr()
        p = cls.prepare_directory(path)
        settings = manifest["settings"]
        n, block = int(settings["samples"]), int(settings["block"])
        root = zarr.open_group(str(p / DATA), mode="w")
        for name, (shape, dtype) in arrays.items():
            shape = tuple(int(s) for s in shape)
            root.create_array(name, shape=(n, *shape), chunks=(block, *shape),
                              dtype=np.dtype(dtype), fill_value=_FILL[dtype])
        for name, value in static.items():
            value = np.asarray(value)
            if name in arrays:
                root[name][...] = value
            else:
                arr = root.create_array(name, shape=value.shape, dtype=value.dtype,
                                        chunks=value.shape or None)
                arr[...] = value
        root.attrs.update({"femno": {k: manifest[k] for k in ("format", "settings", "created")}})
        (p / DONE).mkdir(exist_ok=True)
        manifest = {**manifest, "arrays": {k: [[int(x) for x in s], d] for k, (s, d) in arrays.items()}}
        write_json_atomic(p / MANIFEST, manifest)
        return cls(p, manifest, mode="r+")

    # -- blocks --------------------------------------------------------------------------
    def rows(self, b: int) -> tuple[int, int]:
        """Row range ``[lo, hi)`` of block ``b``."""
        return b * self.block, min((b + 1) * self.block, self.samples)

    def _marker(self, b: int) -> Path:
        return self.path / DONE / f"block-{b:06d}.json"

    def done_blocks(self) -> set[int]:
        """Indices of the blocks that have a completion marker."""
        out = set()
        d = self.path / DONE
        if d.is_dir():
            for f in d.iterdir():
                if f.name.startswith("block-") and f.name.endswith(".json"):
                    try:
                        b = int(f.name[6:-5])
                    except ValueError:
                        continue
                    if 0 <= b < self.n_blocks:
                        out.add(b)
        return out

    def done_rows(self) -> np.ndarray:
        """Rows (int64, ascending) of all completed blocks."""
        rows = [np.arange(*self.rows(b)) for b in sorted(self.done_blocks())]
        return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)

    def write_block(self, b: int, data: dict) -> None:
        """Write the per-sample arrays of block ``b`` (name -> (rows, ...) array)."""
        lo, hi = self.rows(b)
        for name, value in data.items():
            value = np.asarray(value)
            if value.shape[0] != hi - lo:
                raise InputError(f"block {b}: {name} has {value.shape[0]} rows, expected {hi - lo}")
            self.root[name][lo:hi] = value

    def mark_done(self, b: int, info: dict) -> None:
        """Atomically write the completion marker of block ``b``."""
        write_json_atomic(self._marker(b), {"block": int(b), "rows": list(self.rows(b)),
                                            "finished": time.time(), **info})

    def marker(self, b: int) -> dict:
        return json.loads(self._marker(b).read_text())

    def array(self, name: str):
        """The zarr array ``name`` (e.g. ``"solution"``, ``"inputs/a"``)."""
        try:
            return self.root[name]
        except KeyError:
            raise InputError(f"dataset {str(self.path)!r} has no array {name!r}") from None

    def array_names(self) -> list[str]:
        zarr = _zarr()
        return sorted(k for k, v in self.root.members(max_depth=None) if isinstance(v, zarr.Array))


def inspect_dataset(path) -> dict:
    """Summary of a dataset: settings, completion, arrays and solver statistics."""
    store = DatasetStore.open(path)
    m = store.manifest
    done_b = sorted(store.done_blocks())
    rows = store.done_rows()
    arrays = {}
    for name in store.array_names():
        a = store.root[name]
        arrays[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "chunks": list(a.chunks)}
    stats = {"samples": int(rows.size)}
    if rows.size:
        it = store.root["stats/iterations"][:][rows]
        conv = store.root["stats/converged"][:][rows]
        res = store.root["stats/residual"][:][rows]
        tm = store.root["stats/time"][:][rows]
        stats.update(
            mean_iterations=float(it.mean()), max_iterations=int(it.max()),
            failures=int((~conv).sum()), max_residual=float(np.nanmax(res)) if np.isfinite(res).any() else None,
            mean_time_s=float(tm.mean()), total_time_s=float(tm.sum()),
        )
    methods = sorted({store.marker(b).get("method", "?") for b in done_b}) if done_b else []
    s = m["settings"]
    return {
        "path": str(store.path),
        "family": s["family"],
        "family_options": s.get("family_options", {}),
        "family_config": s.get("family_config", {}),
        "samples_total": store.samples,
        "samples_done": int(rows.size),
        "blocks_total": store.n_blocks,
        "blocks_done": len(done_b),
        "complete": len(done_b) == store.n_blocks,
        "settings": s,
        "layout": m.get("layout", {}),
        "arrays": arrays,
        "stats": stats,
        "methods_used": methods,
        "created": m.get("created"),
        "versions": m.get("versions", {}),
    }
