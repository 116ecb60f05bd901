r"""On-disk dataset store: a directory holding a zarr v3 group and completion markers.

Layout of a dataset directory ``PATH``::

    PATH/femno.json              manifest: settings, layout, versions (written last at
                                 creation, atomically; never modified afterwards)
    PATH/done/block-000007.json  one marker per completed block (tmp file + os.replace):
                                 sha256 of every per-sample array's rows of the block
                                 (read back from the store) and the byte size of each
                                 chunk file, written after the chunks are fsynced
    PATH.lock                    writer lock (``fcntl.flock``; one writer per dataset)
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
owns its chunks: a block's chunks are written (every chunk, also all-fill ones) and
fsynced first, then its marker.  A block without a marker is recomputed and
overwritten, so a process killed at any moment loses at most the blocks in flight.
Rows of unfinished blocks read as the fill values (NaN, -1, False).

Integrity: :meth:`DatasetStore.verify` re-reads everything and compares it with the
markers (``femno dataset verify PATH``); ``femno generate`` verifies a dataset it
resumes and recomputes the damaged blocks.  Reads through :attr:`DatasetStore.root`
raise :class:`DatasetDamagedError` (an :class:`InputError`) on a missing or
undecodable chunk of a finished block instead of returning fill values.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from femno.errors import FemnoError, InputError, optional_import

__all__ = ["DatasetStore", "inspect_dataset", "write_json_atomic", "MANIFEST", "FORMAT",
           "DatasetDamagedError", "DatasetLockedError", "writer_lock", "require_complete",
           "REPAIR_HINT"]

FORMAT = "femno-dataset"
FORMAT_VERSION = 1
MANIFEST = "femno.json"
DATA = "data.zarr"
DONE = "done"

_FILL = {"f8": np.nan, "i8": -1, "bool": False}
_LEGACY_STATIC = ("sample_index", "features")  # per-sample arrays written at creation

#: a trajectory step whose discrete energy balance is off by more than this (relative)
#: is flagged by :func:`inspect_dataset` (a correct step is at rounding level, ~1e-15)
ENERGY_TOL = 1e-8

REPAIR_HINT = ("run `femno dataset verify {path}` for the list of damaged blocks and rerun "
               "the `femno generate` command that wrote it, with the same arguments, to "
               "recompute them")


class DatasetDamagedError(InputError):
    """A chunk of a finished block is missing, unreadable or does not match its marker."""


class DatasetLockedError(FemnoError):
    """Another process holds the writer lock of a dataset."""


def _fsync_path(path) -> None:
    """fsync a file or directory (directories: best effort, not on every OS)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(value) -> str:
    return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()


# -- writer lock -------------------------------------------------------------------------
_HELD: dict[str, int] = {}


def lock_path(path) -> Path:
    """The lock file of dataset ``path``: the sibling ``PATH.lock``."""
    p = Path(os.path.abspath(os.fspath(path)))
    return p.with_name(p.name + ".lock")


@contextlib.contextmanager
def writer_lock(path):
    """Hold the exclusive writer lock of dataset ``path`` (``fcntl.flock`` on ``PATH.lock``).

    The kernel drops the lock when the holder dies, so a lock is never stale.
    Re-entrant within one process.  Raises :class:`DatasetLockedError` at once when
    another process holds it.  Without ``fcntl`` (Windows) it warns and does not lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        warnings.warn("file locking is not available on this platform: make sure only one "
                      f"process writes {str(path)!r}", RuntimeWarning, stacklevel=3)
        yield None
        return
    lp = lock_path(path)
    key = str(lp)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield lp
        finally:
            _HELD[key] -= 1
        return
    try:
        lp.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write to output path {str(path)!r}: {exc}") from exc
    while True:
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot write to output path {str(path)!r} (lock file "
                             f"{str(lp)!r}): {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                pid = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            except OSError:
                pid = "unknown"
            os.close(fd)
            raise DatasetLockedError(
                f"dataset {str(path)!r} is being written by another process (pid {pid}); "
                "wait for it to finish (or stop it) and run the command again") from None
        try:  # the holder may have removed the file between our open and flock: retry
            same = os.path.samestat(os.fstat(fd), os.stat(lp))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[key] = 1
        yield lp
    finally:
        _HELD.pop(key, None)
        try:
            os.unlink(lp)  # while still locked: a waiter then retries on a fresh file
        except OSError:
            pass
        os.close(fd)


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


_PASS = (IndexError, TypeError, KeyError, FemnoError)  # bad selections: not damage


def _row_span(sel, n: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` a selection touches (conservatively all when unsure)."""
    first = sel[0] if isinstance(sel, tuple) and sel else sel
    if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
        r = int(first) + (n if first < 0 else 0)
        return (r, r + 1) if 0 <= r < n else (0, 0)
    if isinstance(first, slice):
        lo, hi, step = first.indices(n)
        if step > 0:
            return (lo, hi) if hi > lo else (0, 0)
        return (hi + 1, lo + 1) if lo > hi else (0, 0)
    try:
        idx = np.asarray(first)
        if idx.dtype.kind in "iu" and idx.size:
            idx = np.where(idx < 0, idx + n, idx)
            return int(idx.min()), int(idx.max()) + 1
    except Exception:  # pragma: no cover - exotic selections
        pass
    return 0, n


class _CheckedArray:
    """A zarr array whose reads refuse missing / undecodable chunks of finished blocks."""

    def __init__(self, store, name: str, arr):
        self._store, self._name, self._arr = store, name, arr

    def _read(self, fn, sel):
        self._store._check_present(self._name, self._arr, sel)
        try:
            return self._arr[sel] if fn == "getitem" else getattr(self._arr, fn)(sel)
        except _PASS:
            raise
        except Exception as exc:
            raise self._store._read_error(self._name, self._arr, sel, exc) from exc

    def __getitem__(self, sel):
        return self._read("getitem", sel)

    def get_orthogonal_selection(self, sel):
        return self._read("get_orthogonal_selection", sel)

    def get_basic_selection(self, sel=Ellipsis):
        return self._read("get_basic_selection", sel)

    def __setitem__(self, sel, value):
        self._arr[sel] = value

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __len__(self):
        return len(self._arr)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._arr, attr)

    def __repr__(self):
        return repr(self._arr)


class _CheckedGroup:
    """A zarr group handing out :class:`_CheckedArray` s."""

    def __init__(self, store, group, prefix: str = ""):
        self._store, self._group, self._prefix = store, group, prefix

    def __getitem__(self, key):
        item = self._group[key]
        name = f"{self._prefix}{key}".strip("/")
        if isinstance(item, _zarr().Array):
            return _CheckedArray(self._store, name, item)
        return _CheckedGroup(self._store, item, name + "/")

    def __contains__(self, key):
        return key in self._group

    def __iter__(self):
        return iter(self._group)

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._group, attr)

    def __repr__(self):
        return repr(self._group)


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
            self.zroot = _zarr().open_group(str(self.path / DATA), mode=mode)
        except Exception as exc:  # zarr raises several kinds for missing/garbled groups
            raise InputError(f"{str(self.path / DATA)!r} is not a readable zarr group: {exc}") from exc
        #: the zarr group, read through checks (missing / broken chunks of finished
        #: blocks raise :class:`DatasetDamagedError`); ``zroot`` is the bare group
        self.root = _CheckedGroup(self, self.zroot)
        self._done_cache: set[int] | None = None

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
                _full(root[name])[...] = value
            else:
                arr = root.create_array(name, shape=value.shape, dtype=value.dtype,
                                        chunks=value.shape or None)
                _full(arr)[...] = value
        root.attrs.update({"femno": {k: manifest[k] for k in ("format", "settings", "created")}})
        (p / DONE).mkdir(exist_ok=True)
        checksums, files = {}, {}
        for name in static:
            arr = root[name]
            checksums[name] = _sha256(arr[...])
            files[name] = {k: (p / DATA / name / k).stat().st_size
                           for k in _chunk_keys(arr, 0, arr.shape[0] if arr.ndim else 1)
                           if (p / DATA / name / k).is_file()}
        for d, _, fs in os.walk(p / DATA):  # everything durable before the manifest
            for f in fs:
                _fsync_path(os.path.join(d, f))
            _fsync_path(d)
        manifest = {**manifest,
                    "arrays": {k: [[int(x) for x in s], d] for k, (s, d) in arrays.items()},
                    "static": sorted(static), "checksums": checksums, "static_files": files}
        write_json_atomic(p / MANIFEST, manifest)
        _fsync_path(p)
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
            _full(self.zroot[name])[lo:hi] = value

    def mark_done(self, b: int, info: dict) -> None:
        """Make block ``b`` durable and atomically write its completion marker.

        The marker records, per per-sample array, the sha256 of the block's rows as
        read back from the store and the byte size of every chunk file; chunk files,
        their directories, the marker and ``done/`` are fsynced.
        """
        lo, hi = self.rows(b)
        record, dirs = {}, set()
        for name in self.block_arrays():
            arr = self.zroot[name]
            files = {}
            for key in _chunk_keys(arr, lo, hi):
                f = self.path / DATA / name / key
                if f.is_file():
                    _fsync_path(f)
                    files[key] = f.stat().st_size
                    dirs.update(str(d) for d in f.parents if DATA in d.parts)
            record[name] = {"sha256": _sha256(arr[lo:hi]), "files": files}
        for d in sorted(dirs, key=len, reverse=True):
            _fsync_path(d)
        write_json_atomic(self._marker(b), {"block": int(b), "rows": [lo, hi],
                                            "finished": time.time(), **info, "arrays": record})
        _fsync_path(self.path / DONE)
        if self._done_cache is not None:
            self._done_cache.add(int(b))

    def discard_block(self, b: int) -> None:
        """Forget block ``b``: remove its marker and the chunk files it alone owns."""
        try:
            self._marker(b).unlink()
        except FileNotFoundError:
            pass
        _fsync_path(self.path / DONE)
        if self._done_cache is not None:
            self._done_cache.discard(int(b))
        lo, hi = self.rows(b)
        for name in self.block_arrays():
            arr = self.zroot[name]
            c = arr.chunks[0]
            for key in _chunk_keys(arr, lo, hi):
                row = int(key.split("/")[1]) if "/" in key else 0
                if row * c >= lo and min((row + 1) * c, self.samples) <= hi:
                    try:
                        (self.path / DATA / name / key).unlink()
                    except (FileNotFoundError, IsADirectoryError):
                        pass

    def static_arrays(self) -> list[str]:
        """Arrays written once at creation (incl. per-sample ones such as sample_index)."""
        return list(self.manifest.get("static", _LEGACY_STATIC))

    def block_arrays(self) -> list[str]:
        """Per-sample arrays written block by block."""
        static = set(self.static_arrays())
        return sorted(k for k in self.manifest.get("arrays", {}) if k not in static)

    def _done(self) -> set[int]:
        if self._done_cache is None:
            self._done_cache = self.done_blocks()
        return self._done_cache

    def _hint(self) -> str:
        return REPAIR_HINT.format(path=self.path)

    def _check_present(self, name: str, arr, sel) -> None:
        """Raise if a read of ``sel`` touches a chunk file that should exist but does not."""
        if name in self.manifest.get("static_files", {}):
            keys = list(self.manifest["static_files"][name])
            if arr.ndim and name in self.manifest.get("arrays", {}):  # per-sample: rows read
                keys = [k for k in _chunk_keys(arr, *_row_span(sel, arr.shape[0])) if k in keys]
            for key in keys:
                if not (self.path / DATA / name / key).is_file():
                    raise DatasetDamagedError(
                        f"dataset {str(self.path)!r}: array {name!r} (written at creation) "
                        f"lost its chunk file {key}; the dataset cannot be repaired: "
                        "generate it again into a new path")
            return
        if name not in self.manifest.get("arrays", {}) or name in self.static_arrays():
            return
        lo, hi = _row_span(sel, self.samples)
        if hi <= lo:
            return
        done = self._done()
        legacy_bool = "static" not in self.manifest and arr.dtype == np.dtype(bool)
        for b in range(lo // self.block, (hi - 1) // self.block + 1):
            if b not in done or legacy_bool:
                continue
            blo, bhi = self.rows(b)
            for key in _chunk_keys(arr, blo, bhi):
                if not (self.path / DATA / name / key).is_file():
                    raise DatasetDamagedError(
                        f"dataset {str(self.path)!r}: array {name!r}, chunk {key} (block {b}, "
                        f"samples {blo}-{bhi - 1}) is missing although the block is marked "
                        f"done; {self._hint()}")

    def _read_error(self, name: str, arr, sel, exc) -> DatasetDamagedError:
        """The error for a failed read: find the chunk that does not decode."""
        where = ""
        if arr.ndim:
            lo, hi = _row_span(sel, arr.shape[0])
            c = arr.chunks[0]
            for ci in range(lo // c, max(lo // c, (hi - 1) // c) + 1):
                clo, chi = ci * c, min((ci + 1) * c, arr.shape[0])
                try:
                    arr[clo:chi]
                except Exception:  # the bad chunk
                    key = _chunk_keys(arr, clo, chi)
                    where = f", chunk {key[0] if key else ci} (samples {clo}-{chi - 1})"
                    break
        return DatasetDamagedError(
            f"dataset {str(self.path)!r}: array {name!r}{where} cannot be read "
            f"({type(exc).__name__}: {exc}); {self._hint()}")

    # -- integrity -----------------------------------------------------------------------
    def verify(self, *, quick: bool = False) -> dict:
        """Check every finished block against its marker (and the static arrays).

        Parameters
        ----------
        quick : bool, keyword-only
            Only check that chunk files exist with the recorded sizes (no reads).

        Returns
        -------
        dict
            ``ok`` (bool: complete and undamaged), ``damaged`` (list of ``{"block",
            "samples": [first, last], "problems": [{"array", "problem"}]}``),
            ``incomplete`` (blocks without a marker, same form without problems),
            ``static`` (problems of the arrays written at creation), counts.
        """
        static_problems = []
        sums = self.manifest.get("checksums", {})
        for name in self.static_arrays():
            files = self.manifest.get("static_files", {}).get(name, {})
            bad = False
            for key, size in files.items():
                f = self.path / DATA / name / key
                if not f.is_file():
                    static_problems.append({"array": name, "problem": f"chunk {key} missing"})
                    bad = True
                elif f.stat().st_size != size:
                    static_problems.append({"array": name, "problem": f"chunk {key} has "
                                            f"{f.stat().st_size} bytes, {size} when written"})
                    bad = True
            if quick or bad or name not in sums:
                continue
            try:
                ok = _sha256(self.zroot[name][...]) == sums[name]
            except Exception as exc:
                static_problems.append({"array": name, "problem": f"undecodable chunk "
                                        f"({type(exc).__name__}: {exc})"})
                continue
            if not ok:
                static_problems.append({"array": name, "problem": "checksum mismatch"})
        done = self.done_blocks()
        damaged, incomplete = [], []
        for b in range(self.n_blocks):
            lo, hi = self.rows(b)
            if b not in done:
                incomplete.append({"block": b, "samples": [lo, hi - 1]})
                continue
            problems = []
            try:
                rec = self.marker(b).get("arrays")
            except (OSError, ValueError) as exc:
                problems.append({"array": None, "problem": f"completion marker unreadable: {exc}"})
                rec = None
            for name in self.block_arrays():
                try:
                    arr = self.zroot[name]
                except KeyError:
                    problems.append({"array": name, "problem": "array missing"})
                    continue
                files = (rec or {}).get(name, {}).get("files", {})
                bad = False
                for key in _chunk_keys(arr, lo, hi):
                    f = self.path / DATA / name / key
                    if not f.is_file():
                        if rec is None and arr.dtype == np.dtype(bool):
                            continue  # old stores did not write all-False chunks
                        problems.append({"array": name, "problem": f"chunk {key} missing"})
                        bad = True
                    elif key in files and f.stat().st_size != files[key]:
                        problems.append({"array": name, "problem": f"chunk {key} has "
                                         f"{f.stat().st_size} bytes, {files[key]} when written"})
                        bad = True
                if quick or bad:
                    continue
                try:
                    value = arr[lo:hi]
                except Exception as exc:
                    problems.append({"array": name, "problem": f"undecodable chunk "
                                     f"({type(exc).__name__}: {exc})"})
                    continue
                digest = (rec or {}).get(name, {}).get("sha256")
                if digest and _sha256(value) != digest:
                    problems.append({"array": name, "problem": "checksum mismatch"})
            if problems:
                damaged.append({"block": b, "samples": [lo, hi - 1], "problems": problems})
        return {"path": str(self.path), "quick": bool(quick), "blocks_total": self.n_blocks,
                "blocks_done": len(done), "blocks_ok": len(done) - len(damaged),
                "samples_total": self.samples, "samples_ok": int(sum(
                    self.rows(b)[1] - self.rows(b)[0] for b in done) - sum(
                    d["samples"][1] - d["samples"][0] + 1 for d in damaged)),
                "damaged": damaged, "incomplete": incomplete, "static": static_problems,
                "ok": not (damaged or incomplete or static_problems)}

    def marker(self, b: int) -> dict:
        return json.loads(self._marker(b).read_text())

    def array(self, name: str):
        """The zarr array ``name`` (e.g. ``"solution"``, ``"inputs/a"``), read with checks."""
        try:
            return self.root[name]
        except KeyError:
            raise InputError(f"dataset {str(self.path)!r} has no array {name!r}") from None

    def array_names(self) -> list[str]:
        zarr = _zarr()
        return sorted(k for k, v in self.zroot.members(max_depth=None) if isinstance(v, zarr.Array))


def _full(arr):
    """``arr`` configured to write every chunk, also those equal to the fill value."""
    try:
        return arr.with_config({"write_empty_chunks": True})
    except (AttributeError, TypeError):  # pragma: no cover - older zarr
        return arr


def _chunk_keys(arr, lo: int, hi: int) -> list[str]:
    """Store keys (relative to the array directory) of the chunks holding rows [lo, hi)."""
    if arr.ndim == 0:
        return [arr.metadata.encode_chunk_key(())]
    if hi <= lo:
        return []
    grids = [range(-(-s // c)) for s, c in zip(arr.shape[1:], arr.chunks[1:], strict=True)]
    c0 = arr.chunks[0]
    return [arr.metadata.encode_chunk_key((r, *rest))
            for r in range(lo // c0, (hi - 1) // c0 + 1) for rest in itertools.product(*grids)]


def require_complete(path, *, allow_partial: bool = False) -> DatasetStore:
    """Open dataset ``path`` for training; :class:`InputError` if it is incomplete.

    With ``allow_partial`` an incomplete dataset is accepted (its finished samples are
    used).  Missing / resized chunk files of finished blocks are always an error.
    """
    store = DatasetStore.open(path)
    report = store.verify(quick=True)
    if report["damaged"] or report["static"]:
        raise DatasetDamagedError(_damage_text(store, report))
    done = int(store.done_rows().size)
    if done < store.samples and not allow_partial:
        raise InputError(
            f"dataset {str(path)!r} is incomplete: {done} of {store.samples} samples complete. "
            "Finish it by rerunning its `femno generate` command (same arguments), or pass "
            "--allow-partial to train on the finished samples")
    return store


def _damage_text(store, report, limit: int = 5) -> str:
    lines = [f"{p['array']}: {p['problem']}" for p in report["static"]]
    lines += [f"block {d['block']} (samples {d['samples'][0]}-{d['samples'][1]}): "
              f"{p['array'] or 'marker'}: {p['problem']}"
              for d in report["damaged"] for p in d["problems"]]
    more = f" (+{len(lines) - limit} more)" if len(lines) > limit else ""
    return (f"dataset {str(store.path)!r} is damaged: " + "; ".join(lines[:limit]) + more
            + f"; {store._hint()}")


def inspect_dataset(path) -> dict:
    """Summary of a dataset: settings, completion, arrays and solver statistics."""
    store = DatasetStore.open(path)
    m = store.manifest
    check = store.verify(quick=True)  # chunk files present with their recorded sizes
    bad = {d["block"] for d in check["damaged"]}
    done_b = sorted(store.done_blocks())
    good = [b for b in done_b if b not in bad]
    rows = (np.concatenate([np.arange(*store.rows(b)) for b in good]) if good
            else np.zeros(0, dtype=np.int64))
    arrays = {}
    for name in store.array_names():
        a = store.zroot[name]
        arrays[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "chunks": list(a.chunks)}
    stats = {"samples": int(rows.size)}
    if rows.size:
        def get(name):
            return np.asarray(store.root[name].get_orthogonal_selection((rows,)))

        conv, res, tm = (get(f"stats/{k}") for k in ("converged", "residual", "time"))
        stats.update(
            failures=int((~conv).sum()), max_residual=float(np.nanmax(res)) if np.isfinite(res).any() else None,
            mean_time_s=float(tm.mean()), total_time_s=float(tm.sum()),
        )
        if "stats/iterations" in store.manifest.get("arrays", {}):
            it = get("stats/iterations")
            stats.update(mean_iterations=float(it.mean()), max_iterations=int(it.max()))
        if "stats/energy_residual" in store.manifest.get("arrays", {}):  # trajectories
            e = np.abs(get("stats/energy_residual"))
            worst = np.nanmax(e.reshape(len(rows), -1), axis=1)
            bad_rows = rows[(worst > ENERGY_TOL) | ~conv]
            stats.update(max_energy_residual=float(np.nanmax(worst)),
                         flagged_samples=[int(i) for i in
                                          get("sample_index")[np.isin(rows, bad_rows)]],
                         energy_tolerance=ENERGY_TOL)
        if "mesh/n_points" in store.manifest.get("arrays", {}):  # one mesh per sample
            npts, shape = get("mesh/n_points"), get("inputs/shape")
            names = m["layout"]["geometry"]["shapes"]
            stats.update(mesh_points_min=int(npts.min()), mesh_points_max=int(npts.max()),
                         shapes={n: int((shape == k).sum()) for k, n in enumerate(names)})
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
        "blocks_damaged": sorted(bad),
        "damage": [f"block {d['block']} (samples {d['samples'][0]}-{d['samples'][1]}): "
                   f"{p['array'] or 'marker'}: {p['problem']}"
                   for d in check["damaged"] for p in d["problems"]]
        + [f"{p['array']}: {p['problem']}" for p in check["static"]],
        "complete": len(done_b) == store.n_blocks and not bad and not check["static"],
        "settings": s,
        "layout": m.get("layout", {}),
        "arrays": arrays,
        "stats": stats,
        "methods_used": methods,
        "created": m.get("created"),
        "versions": m.get("versions", {}),
    }
