r"""A :class:`torch.utils.data.Dataset` over the completed samples of a femno dataset.

>>> # ds = FemnoDataset("darcy.femno", dtype=torch.float64)
>>> # x, y = ds[0]          # x: inputs/a (n_elements, n_qp), y: solution (n_dofs,)
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from femno.datagen.store import DatasetDamagedError, DatasetStore, _damage_text
from femno.errors import InputError

__all__ = ["FemnoDataset"]


class FemnoDataset(Dataset):
    """(input, target) pairs of the completed samples of a dataset, read lazily from zarr.

    Parameters
    ----------
    path : str or path
        Dataset directory written by :func:`femno.datagen.generate.generate_dataset`.
    inputs : str or list of str, optional, keyword-only
        Input fields (names under ``inputs/``, e.g. ``"a"``); default all.  One
        field is returned with its stored per-sample shape; several are flattened
        and concatenated (in the given order) into a 1-D tensor.
    target : str, keyword-only
        Array returned as target: ``"solution"`` (full FE coefficient vector,
        default) or any per-sample array path such as ``"stats/iterations"``.
    dtype : torch.dtype, keyword-only
        ``torch.float32`` (default) or ``torch.float64``.

    Raises
    ------
    InputError
        :class:`~femno.datagen.store.DatasetDamagedError` when a finished block lost a
        chunk file or one changed size (checked at construction), or when a chunk does
        not decode (on access); the message names the array, the samples and the repair
        command.  An incomplete dataset only warns (``k of N samples complete``).

    Attributes
    ----------
    rows : ndarray of int64
        Store rows of the completed samples; item ``k`` is row ``rows[k]``.
    sample_index : ndarray of int64
        Seed index ``i`` of each item (parameters from ``default_rng([seed, i])``).
    points, cells : ndarray
        Mesh vertices (n_vertices, dim) and connectivity (n_elements, n_local); ``None``
        in a geometry dataset (``femno generate --geometry``), whose item ``k`` is
        ``x`` (n_k, 2 + inputs): the vertex coordinates then the inputs (nodal fields
        as they are, per-sample ones repeated at each vertex), and ``y`` (n_k, ncomp),
        unpadded, on the sample's own mesh (:meth:`geometry_mesh`).
    doflocs, free, dirichlet, element_dofs : ndarray
        FE space: dof locations, free / Dirichlet dof indices, dofs of each element.
    element : str
        Element name (``"P1"``, ``"Q1"``, ...).
    family, settings, layout : str, dict, dict
        From the dataset manifest.
    """

    def __init__(self, path, *, inputs=None, target="solution", dtype=torch.float32):
        if dtype not in (torch.float32, torch.float64):
            raise InputError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        store = DatasetStore.open(path)
        self.path, self.dtype = store.path, dtype
        self.settings, self.layout = store.manifest["settings"], store.manifest.get("layout", {})
        self.family, self.element = self.settings["family"], self.layout.get("element")
        available = [n[7:] for n in store.array_names() if n.startswith("inputs/")]
        if inputs is None:
            inputs = available
        elif isinstance(inputs, str):
            inputs = [inputs]
        missing = [n for n in inputs if n not in available]
        if missing or not inputs:
            raise InputError(f"unknown input field(s) {missing}; available: {available}")
        self.inputs = list(inputs)
        self.target = target
        if target not in store.array_names() or store.array(target).shape[:1] != (store.samples,):
            raise InputError(f"target {target!r} is not a per-sample array of {str(self.path)!r}")
        check = store.verify(quick=True)
        if check["damaged"] or check["static"]:
            raise DatasetDamagedError(_damage_text(store, check))
        self.rows = store.done_rows()
        if self.rows.size < store.samples:
            warnings.warn(f"dataset {str(self.path)!r} is incomplete: {self.rows.size} of "
                          f"{store.samples} samples complete (using the finished ones)",
                          RuntimeWarning, stacklevel=2)
        self.sample_index = store.root["sample_index"][:][self.rows]
        self.geometry = self.layout.get("geometry")
        if self.geometry is not None:  # a mesh per sample: see geometry_mesh(k)
            self.points = self.cells = self.doflocs = self.free = None
            self.dirichlet = self.element_dofs = None
            self._n_points = store.root["mesh/n_points"][:]
            self._root, self._pid = None, None
            return
        self.points = store.root["mesh/points"][:]
        self.cells = store.root["mesh/cells"][:]
        self.doflocs = store.root["fe/doflocs"][:]
        self.free = store.root["fe/free"][:]
        self.dirichlet = store.root["fe/dirichlet"][:]
        self.element_dofs = store.root["fe/element_dofs"][:]
        self._root, self._pid = None, None

    def _group(self):
        if self._root is None or self._pid != os.getpid():  # reopen in DataLoader workers
            self._root, self._pid = DatasetStore.open(self.path).root, os.getpid()
        return self._root

    def __getstate__(self):  # DataLoader workers reopen the store
        state = dict(self.__dict__)
        state["_root"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, k):
        if isinstance(k, torch.Tensor):
            k = int(k)
        n = len(self)
        if not isinstance(k, (int, np.integer)) or not -n <= k < n:
            raise IndexError(f"index {k!r} out of range for {n} samples")
        row = int(self.rows[int(k)])
        root = self._group()
        if self.geometry is not None:
            return self._geometry_item(root, row)
        parts = [np.asarray(root[f"inputs/{name}"][row]) for name in self.inputs]
        x = parts[0] if len(parts) == 1 else np.concatenate([p.ravel() for p in parts])
        y = np.asarray(root[self.target][row])
        return (torch.as_tensor(np.asarray(x, dtype=np.float64)).to(self.dtype),
                torch.as_tensor(np.asarray(y, dtype=np.float64)).to(self.dtype))

    def _geometry_item(self, root, row):
        n, P = int(self._n_points[row]), int(self.geometry["max_points"])
        cols = [np.asarray(root["mesh/points"][row])[:n]]
        for name in self.inputs:
            a = np.asarray(root[f"inputs/{name}"][row], dtype=np.float64)
            if a.ndim and a.shape[0] == P:  # a nodal field
                cols.append(a[:n].reshape(n, -1))
            else:  # one value (or vector) per sample, repeated at every vertex
                cols.append(np.broadcast_to(a.reshape(1, -1), (n, a.size)))
        y = np.asarray(root[self.target][row], dtype=np.float64)[:n]
        return (torch.as_tensor(np.concatenate(cols, axis=1)).to(self.dtype),
                torch.as_tensor(y).to(self.dtype))

    def geometry_mesh(self, k: int):
        """Item ``k``'s own mesh (``skfem.MeshTri``) in a geometry dataset."""
        from femno.datagen.geometry_rows import geometry_row_mesh

        if self.geometry is None:
            raise InputError("geometry_mesh is for datasets made with femno generate --geometry")
        return geometry_row_mesh(self._group(), int(self.rows[int(k)]))

    def __repr__(self) -> str:
        return (f"FemnoDataset({str(self.path)!r}, family={self.family!r}, samples={len(self)}, "
                f"inputs={self.inputs}, target={self.target!r})")
