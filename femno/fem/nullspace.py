r"""Near-nullspace (rigid-body) modes of vector finite-element spaces, for AMG.

Smoothed-aggregation AMG builds its coarse spaces from the near-nullspace of the
operator: for a scalar diffusion operator the constants, for linear elasticity the
rigid-body motions, which the energy :math:`\int \sigma(u):\varepsilon(u)` does not
see,

.. math::
   \text{2-D: } \begin{bmatrix}1\\0\end{bmatrix}, \begin{bmatrix}0\\1\end{bmatrix},
   \begin{bmatrix}-y\\x\end{bmatrix}; \qquad
   \text{3-D: the 3 translations and } \omega \times x,\ \omega \in \{e_1, e_2, e_3\}.

Without them (pyamg's default ``B`` = ones, PETSc/hypre's scalar coarsening) AMG on
elasticity converges slowly: 2-D plane strain at 29k dofs needs 228 CG iterations with
pyamg SA against 25 with the three modes (``benchmarks/results/generate.md``).

The modes are linear fields, so their nodal interpolant is exact for every Lagrange
element (P1, P2, Q1, Q2, serendipity): the value at each dof's location
(``basis.doflocs``) of the dof's component.

>>> import numpy as np, skfem
>>> from femno.fem.mesh import unit_square
>>> basis = skfem.Basis(unit_square(3), skfem.ElementVector(skfem.ElementTriP1()))
>>> B = rigid_body_modes(basis)
>>> B.shape, node_block_size(basis)
((32, 3), 2)
"""

from __future__ import annotations

import numpy as np
import skfem

from femno.errors import InputError

__all__ = ["rigid_body_modes", "node_block_size"]


def _components(basis):
    if not isinstance(basis.elem, skfem.ElementVector):
        raise InputError("rigid-body modes need a vector basis (skfem.ElementVector)")
    idx = basis.split_indices()
    if len(idx) != basis.mesh.dim():
        raise InputError(f"rigid-body modes need {basis.mesh.dim()} components, got {len(idx)}")
    return idx


def rigid_body_modes(basis, dofs=None) -> np.ndarray:
    r"""The rigid-body motions of a vector Lagrange space as dof vectors.

    Parameters
    ----------
    basis : skfem.CellBasis
        A vector basis (``ElementVector`` of a Lagrange element) on a 2-D or 3-D mesh.
    dofs : array_like of int, optional
        Keep these rows (e.g. the free dofs of a condensed system).

    Returns
    -------
    ndarray, shape (len(dofs) or basis.N, 3) in 2-D, (.., 6) in 3-D, float64
        Columns: the translations, then the rotations (2-D: :math:`(-y, x)`; 3-D:
        :math:`e_i \times x` about the axes), about the centroid of the dof locations
        (better conditioned than about the origin). Not orthonormalised.
    """
    idx = _components(basis)
    dim = basis.mesh.dim()
    X = np.asarray(basis.doflocs, dtype=np.float64)
    X = X - X.mean(axis=1, keepdims=True)
    nrot = 1 if dim == 2 else 3
    B = np.zeros((basis.N, dim + nrot))
    for c in range(dim):
        B[idx[c], c] = 1.0
    if dim == 2:
        B[idx[0], 2] = -X[1, idx[0]]
        B[idx[1], 2] = X[0, idx[1]]
    else:  # e_a x x for a = 0, 1, 2: (0, -z, y), (z, 0, -x), (-y, x, 0)
        for a in range(3):
            b, c = (a + 1) % 3, (a + 2) % 3
            B[idx[b], dim + a] = -X[c, idx[b]]
            B[idx[c], dim + a] = X[b, idx[c]]
    if dofs is not None:
        B = B[np.asarray(dofs, dtype=np.int64)]
    return B


def node_block_size(basis, dofs=None) -> int:
    """Dofs per node block (``dim``) if ``dofs`` are whole interleaved node blocks, else 1.

    AMG codes that coarsen by nodes (PETSc's GAMG, hypre's nodal coarsening) need the
    components of one point as consecutive rows: ``dofs[dim*i + c]`` is component ``c``
    of the ``i``-th node. scikit-fem's vector bases interleave the components; a
    Dirichlet condition that removes only one component of a node breaks the blocks.
    """
    idx = _components(basis)
    dim = len(idx)
    d = np.arange(basis.N) if dofs is None else np.asarray(dofs, dtype=np.int64)
    if len(d) % dim:
        return 1
    blocks = d.reshape(-1, dim)
    comp = np.empty(basis.N, dtype=np.int64)
    for c, ix in enumerate(idx):
        comp[ix] = c
    ok = (np.all(comp[blocks] == np.arange(dim))
          and np.all(np.diff(blocks, axis=1) == 1)
          and np.array_equal(basis.doflocs[:, blocks[:, 0]], basis.doflocs[:, blocks[:, -1]]))
    return dim if ok else 1
