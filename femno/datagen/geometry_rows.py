"""Rows of a geometry dataset (``femno generate --geometry``), unpadded.

Each row of such a store holds one sample on its own mesh, padded to the dataset's
largest mesh (:mod:`femno.datagen.generate_geometry` gives the layout); these readers
cut a row back to its mesh's sizes. One place for it: the dataset, the torch
``FemnoDataset`` and the geometry models all read rows through here.
"""

from __future__ import annotations

import numpy as np
import skfem

__all__ = ["geometry_row_mesh", "read_geometry_row"]


def geometry_row_mesh(root, row: int) -> skfem.MeshTri:
    """The mesh of row ``row`` of a geometry store's zarr ``root``, unpadded."""
    n, c = int(root["mesh/n_points"][row]), int(root["mesh/n_cells"][row])
    return skfem.MeshTri(np.asarray(root["mesh/points"][row][:n]).T.copy(),
                         np.asarray(root["mesh/cells"][row][:c]).T.copy())


def read_geometry_row(root, row: int, shapes=None) -> dict:
    """Row ``row`` of a geometry store's zarr ``root``, unpadded: ``mesh``
    (skfem.MeshTri), ``sdf``, ``coefficient``, ``boundary``, ``dirichlet`` (P,),
    ``solution`` (P, ncomp), ``load`` (2,), and ``shape`` (its name when ``shapes``, the
    layout's shape list, is given, else its index)."""
    mesh = geometry_row_mesh(root, row)
    n = mesh.p.shape[1]
    out = {"mesh": mesh}
    for k in ("inputs/sdf", "inputs/coefficient", "mesh/boundary", "mesh/dirichlet", "solution"):
        out[k.rsplit("/", 1)[-1]] = np.asarray(root[k][row][:n])
    out["load"] = np.asarray(root["inputs/load"][row])
    shape = int(root["inputs/shape"][row])
    out["shape"] = shapes[shape] if shapes is not None else shape
    return out
