r"""Value-only reassembly of condensed finite-element matrices on a fixed mesh and form.

For a fixed mesh, basis and bilinear form :math:`a(u, v) = \int_\Omega c\, k(u, v)\,dx`
linear in one coefficient :math:`c` given at the quadrature points, the condensed
matrix :math:`A = K_{II}` (Dirichlet dofs removed) has a fixed sparsity pattern and

.. math:: A_{\text{data}} = S\, x(c), \qquad
          x(c)_{e\ell} = \sum_q c_{eq}\, |J_e| w_q\, k_\ell(e, q),

with :math:`\ell = (i, j)` the element-local entries, :math:`k_\ell(e, q)` the
integrand for :math:`c = 1` (the *element kernel*) and :math:`S` the sparse scatter
of element entries into the CSR data array of :math:`A`.  Everything but
:math:`x(c)` and one sparse mat-vec is computed once (:class:`FormKernel`,
:class:`CondensedAssembler`); scikit-fem's path re-evaluates the basis functions,
re-sorts the COO triplets and re-extracts ``K[free][:, free]`` for every sample.
A sum of terms :math:`A = \sum_t A_t(c_t)` (e.g. :math:`M + \Delta t\,K(a)`, or the
Lamé terms of elasticity) shares one pattern, the union of the terms' patterns.

Kernels are stored compressed:

* ``"element"``: :math:`k_\ell(e, q)` does not depend on :math:`q` (P1 gradients on
  affine cells); then :math:`x_e = \sum_q c_{eq}\,dx_{eq}` and the kernel values sit
  in :math:`S` (about ``n_loc**2 * n_elements`` entries);
* ``"reference"``: it does not depend on :math:`e` (mass on a uniform mesh of equal
  cells); then :math:`x = (c\,dx)\, k^{\mathsf T}`, one small matmul;
* ``"full"``: neither; :math:`x` by one ``einsum`` over the stored
  ``(n_loc**2, n_elements, n_qp)`` kernel (Q1/P2 and curved cells).

Entries whose kernel is identically zero (the hypotenuse couplings of P1 Laplacians
on right triangles) are not stored.  Values agree with scikit-fem's path to rounding
(the sums run in a different order).

>>> import numpy as np
>>> from femno.fem.families import Darcy
>>> fam = Darcy(n=8)
>>> p = fam.sample(np.random.default_rng(0))
>>> A_fast, A_skfem = fam.assemble(p).A, fam.assemble(p, fast=False).A
>>> bool(abs(A_fast - A_skfem).max() <= 1e-13 * abs(A_skfem).max())
True
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from skfem.assembly.form.form import FormExtraParams

__all__ = ["FormKernel", "CondensedAssembler", "KernelTooLarge", "kernel_bytes"]


#: Bytes per stored kernel entry and term besides the kernel values: the scatter's value
#: and column index (8 + 4), the nonzero mask (1) and the assembler's transient keys (16).
_SCATTER_BYTES = 29


class KernelTooLarge(MemoryError):
    """Raised by :class:`FormKernel` when its storage would exceed ``max_bytes``."""


def kernel_bytes(basis, n_terms: int = 1, *, per_element: bool = False) -> int:
    """Memory (bytes) that ``n_terms`` kernels take on ``basis``.

    An upper bound for any kernel (``per_element=False``: stored per quadrature point);
    with ``per_element=True`` the size of ``"element"``-mode kernels (P1 gradients on
    affine cells), which store one value per element and local entry.
    """
    ne, nq = basis.dx.shape
    per_entry = (8 if per_element else nq * 8) + _SCATTER_BYTES
    return int(n_terms * basis.Nbfun**2 * ne * per_entry)


def _is_q_constant(b: np.ndarray) -> bool:
    return bool(np.array_equal(b, np.broadcast_to(b[:, :1], b.shape)))


class FormKernel:
    r"""Element kernel :math:`k_\ell(e, q)` of a bilinear form for unit coefficients.

    Parameters
    ----------
    form : skfem.BilinearForm
        A form linear in the coefficient(s) named in ``unit``.
    basis : skfem.CellBasis
        Trial and test basis (the same).
    **unit
        The coefficients that give the kernel, numbers (``a=1.0``; ``lam=1.0, mu=0.0``
        picks the :math:`\lambda` term of a two-coefficient form).

    max_bytes : int, optional
        Raise :class:`KernelTooLarge` as soon as the storage (kernel plus scatter) is
        known to exceed it; checked block by block, before the big arrays exist.

    Attributes
    ----------
    mode : {"element", "reference", "full"}
    element_dofs : ndarray, shape (Nbfun, n_elements), int64
    rows, cols : ndarray, shape (L, n_elements), int64 (properties, built on access)
        Global test / trial dof of each local entry, ``L = Nbfun**2``, laid out as
        ``l = i * Nbfun + j`` with ``i`` the test and ``j`` the trial function.
    nonzero : ndarray, shape (L, n_elements), bool
        Entries whose kernel is not identically zero.
    """

    def __init__(self, form, basis, *, max_bytes: int | None = None, **unit):
        ne, nq = basis.dx.shape
        ones = {k: np.full((ne, nq), float(v)) for k, v in unit.items()}
        w = FormExtraParams({**basis.default_parameters(), **form._normalize_asm_kwargs(ones, basis)})
        nb = basis.Nbfun
        L = nb * nb
        # blocks are compressed as they come: a block constant over the quadrature points
        # keeps one column, so P1 vector kernels on 3-D meshes never hold (L, ne, nq)
        blocks, per_element = [], True
        self.nonzero = np.empty((L, ne), dtype=bool)
        for i in range(nb):  # test
            for j in range(nb):  # trial
                k = form.form(*basis.basis[j], *basis.basis[i], w)
                k = np.broadcast_to(np.asarray(k, dtype=np.float64), (ne, nq))
                self.nonzero[len(blocks)] = np.any(k != 0, axis=1)
                if per_element and _is_q_constant(k):
                    blocks.append(np.array(k[:, :1]))
                else:
                    per_element = False
                    blocks.append(k)
                if max_bytes is not None:
                    needed = L * ne * ((8 if per_element else nq * 8) + _SCATTER_BYTES)
                    if needed > max_bytes:
                        raise KernelTooLarge(
                            f"kernel storage {needed / 2**30:.2f} GiB > {max_bytes / 2**30:.2f} GiB"
                        )
        if per_element:
            self.mode, self.data = "element", np.stack([b[:, 0] for b in blocks])  # (L, ne)
        else:
            blocks = [np.broadcast_to(b, (ne, nq)) for b in blocks]
            if all(np.array_equal(b, np.broadcast_to(b[:1], b.shape)) for b in blocks):
                self.mode = "reference"
                self.data = np.ascontiguousarray(np.stack([b[0] for b in blocks]).T)  # (nq, L)
            else:
                self.mode, self.data = "full", np.stack(blocks)  # (L, ne, nq)
        del blocks
        #: storage with its scatter, as counted against ``max_bytes``
        self.nbytes = int(self.data.nbytes + L * ne * _SCATTER_BYTES)
        self.dx = basis.dx
        self.ne, self.nq, self.L = ne, nq, L
        self._qsum = None  # (ne, L) q-summed kernel, built on first per-element coefficient
        self.element_dofs = np.asarray(basis.element_dofs, dtype=np.int64)  # (nb, ne)

    @property
    def rows(self) -> np.ndarray:
        """Global test dof of each local entry, shape (L, ne), int64 (built on each call)."""
        return np.repeat(self.element_dofs, self.element_dofs.shape[0], axis=0)

    @property
    def cols(self) -> np.ndarray:
        """Global trial dof of each local entry, shape (L, ne), int64 (built on each call)."""
        return np.tile(self.element_dofs, (self.element_dofs.shape[0], 1))

    def weights(self, coef) -> np.ndarray:
        r""":math:`x(c)`: shape (ne,) in ``"element"`` mode, else (ne, L).

        ``coef``: a number or an array (ne, nq) of the coefficient at the quadrature points.
        """
        coef = np.asarray(coef, dtype=np.float64)
        if coef.ndim == 0:
            coef = np.full((self.ne, self.nq), float(coef))
        if self.mode == "element":
            return np.einsum("eq,eq->e", coef, self.dx)
        if self.mode == "reference":
            return (coef * self.dx) @ self.data
        if self.nq > 1 and np.array_equal(coef, np.broadcast_to(coef[:, :1], coef.shape)):
            # a coefficient constant per element: x_el = c_e sum_q dx_eq k_l(e, q), with the
            # q-sums computed once (per-element Darcy on 250k hexahedra: 0.23 -> 0.17 s per sample)
            if self._qsum is None:
                self._qsum = np.einsum("eq,leq->el", self.dx, self.data)
            return self._qsum * coef[:, :1]
        return np.einsum("eq,leq->el", coef * self.dx, self.data)


class CondensedAssembler:
    """Fixed pattern of ``K[free][:, free]`` and one scatter matrix per term.

    Parameters
    ----------
    N : int
        Number of dofs of the full space.
    free : ndarray of int, shape (m,)
        Free dofs (sorted), the rows and columns kept.
    kernels : sequence of FormKernel
        The terms; the pattern is the union of their structurally nonzero entries.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from skfem.models.poisson import laplace
    >>> m = skfem.MeshTri().refined(3)
    >>> basis = skfem.CellBasis(m, skfem.ElementTriP1())
    >>> free = basis.complement_dofs(basis.get_dofs())
    >>> asm = CondensedAssembler(basis.N, free, [FormKernel(laplace, basis)])
    >>> A = asm.matrix(asm.data(0, 1.0))
    >>> K = laplace.assemble(basis)[free][:, free]
    >>> bool(abs(A - K).max() < 1e-12), A.shape
    (True, (49, 49))
    """

    def __init__(self, N: int, free, kernels):
        free = np.asarray(free, dtype=np.int64)
        m = len(free)
        fmap = np.full(int(N), -1, dtype=np.int64)
        fmap[free] = np.arange(m)
        kernels = list(kernels)
        # terms on the same element dofs share one pattern computation (one sort)
        groups: list[list[int]] = []
        for t, k in enumerate(kernels):
            for g in groups:
                if np.array_equal(kernels[g[0]].element_dofs, k.element_dofs):
                    g.append(t)
                    break
            else:
                groups.append([t])
        masks, keys = [], []
        for g in groups:
            k0 = kernels[g[0]]
            r, c = fmap[k0.rows], fmap[k0.cols]
            inside = (r >= 0) & (c >= 0)
            union = np.zeros_like(inside)
            for t in g:
                union |= kernels[t].nonzero
            union &= inside
            keys.append(r[union] * m + c[union])
            masks.append(union)
            del r, c, inside
        uniq, inv = np.unique(np.concatenate(keys), return_inverse=True)
        del keys
        itype = np.int32 if max(m, len(uniq)) < 2**31 else np.int64
        self.indices = (uniq % m).astype(itype)
        self.indptr = np.searchsorted(uniq // m, np.arange(m + 1)).astype(itype)
        self.shape = (m, m)
        self.nnz = len(uniq)
        del uniq
        self.kernels = kernels
        self.scatters: list = [None] * len(kernels)
        self._constant: dict = {}
        start = 0
        for g, union in zip(groups, masks, strict=True):
            n_union = int(union.sum())
            pos_union = inv[start : start + n_union]
            start += n_union
            for t in g:
                k = kernels[t]
                L, ne = union.shape
                sel = k.nonzero[union]  # this term's entries among the group's
                pos = pos_union[sel]
                ok = union & k.nonzero
                if k.mode == "element":  # kernel values in S, one column per element
                    vals = k.data[ok]
                    cols = np.broadcast_to(np.arange(ne, dtype=itype), (L, ne))[ok]
                    ncols = ne
                else:  # 0/1 scatter of the (ne, L) entries of x(c)
                    vals = np.ones(len(pos))
                    cols = (np.arange(ne)[None, :] * L + np.arange(L)[:, None])[ok]
                    ncols = ne * L
                self.scatters[t] = sp.csr_matrix((vals, (pos, cols)), shape=(self.nnz, ncols))
                del vals, cols, pos, ok, sel

    def data(self, term: int, coef) -> np.ndarray:
        """CSR data, shape (nnz,), of term ``term`` for ``coef`` (number or (ne, nq)).

        Data of a number coefficient is computed once and scaled afterwards.
        """
        if np.ndim(coef) == 0:
            if term not in self._constant:
                self._constant[term] = self.scatters[term] @ self.kernels[term].weights(1.0).ravel()
            return float(coef) * self._constant[term]
        return self.scatters[term] @ self.kernels[term].weights(coef).ravel()

    def matrix(self, data) -> sp.csr_matrix:
        """A new csr_matrix (m, m) float64 on the fixed pattern (index arrays copied)."""
        A = sp.csr_matrix(
            (np.asarray(data, dtype=np.float64), self.indices.copy(), self.indptr.copy()),
            shape=self.shape,
        )
        A.has_sorted_indices = True
        return A

    def assemble(self, coefs) -> sp.csr_matrix:
        r""":math:`\sum_t A_t(c_t)` for ``coefs`` (one number or (ne, nq) array per term)."""
        if len(coefs) != len(self.kernels):
            raise ValueError(f"need {len(self.kernels)} coefficients, got {len(coefs)}")
        data = self.data(0, coefs[0])
        for t in range(1, len(coefs)):
            data = data + self.data(t, coefs[t])
        return self.matrix(data)
