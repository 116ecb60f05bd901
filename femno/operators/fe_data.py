r"""Finite-element view of a femno dataset: FE spaces, encoded inputs, targets, FE norms.

:class:`FEData` turns a dataset written by ``femno generate`` into what an operator
network trains on:

* the scikit-fem ``mesh`` and output ``basis`` rebuilt from the stored mesh and
  element (checked against the stored dof locations and element dofs);
* an **input FE space** ``basis_in`` (the scalar version of the output element on
  the same mesh) and the input matrix ``X`` of shape ``(n_samples, n_channels,
  n_in_dofs)``: every input field encoded as coefficients :math:`c` of
  :math:`a_h = \sum_j c_j \phi_j` (the *encoder* :math:`E` of SPEC §3);
* the targets ``Y`` ``(n_samples, n_dofs)`` (full FE coefficient vectors) and their
  Dirichlet data ``Y[:, dirichlet]``;
* the FE mass matrix ``mass`` :math:`M_{ij} = \int \phi_i \phi_j` and the relative
  :math:`L^2` error :meth:`FEData.rel_l2` measured with it.

Encodings (``encode=``) of a field :math:`a` given at the quadrature points:

* ``"l2"``: :math:`L^2` projection, :math:`M c = b`, :math:`b_i = \int a \phi_i`
  (exact quadrature of the stored values; the identity on FE functions of the space);
* ``"interp"``: the lumped (Clément-type) quasi-interpolant
  :math:`c_i = b_i / \int \phi_i`, local and positivity preserving; for a callable
  :math:`a(x)` (:meth:`Encoder.encode_function`) it is nodal interpolation
  :math:`c_i = a(x_i)`, the identity on FE functions.

How stored inputs become channels (by shape): ``(n_elements, n_qp)`` quadrature
values and ``(n_elements,)`` element values are encoded as above; ``(n_in_dofs,)``
arrays are already FE coefficients; any other parameter (e.g. Poisson's Fourier
``coef``) is turned into the family's source: the load vector :math:`F` of the
rebuilt family is encoded as channel ``"rhs"`` (``M^{-1} F`` for ``"l2"``).

>>> import tempfile, os
>>> from femno.datagen.generate import generate_dataset
>>> path = os.path.join(tempfile.mkdtemp(), "d.femno")
>>> _ = generate_dataset("darcy", samples=4, out=path, method="direct", block=4,
...                      family_options={"n": 4}, progress=False)
>>> data = FEData.from_dataset(path)
>>> data.X.shape, data.Y.shape, data.channels
(torch.Size([4, 1, 25]), torch.Size([4, 25]), ['a'])
>>> float(data.rel_l2(data.Y, data.Y).max())
0.0
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import skfem
import torch

from femno.errors import InputError
from femno.fem.spaces import element_name, make_basis
from femno.operators.fe_torch import mass_matrix, rel_l2, to_torch_sparse

__all__ = ["FEData", "Encoder", "encode_inputs", "mass_matrix", "rel_l2", "check_compatible",
           "mesh_size", "input_ranges",
           "ENCODINGS"]

ENCODINGS = ("l2", "interp")


class Encoder:
    r"""Encoder :math:`E`: fields on ``basis``'s mesh to coefficients of ``basis``'s space.

    Parameters
    ----------
    basis : skfem.CellBasis
        Scalar input space (its quadrature defines where fields are given).

    Attributes
    ----------
    B : scipy csr (N, n_elements * n_qp)
        :math:`B_{i,(e,q)} = \phi_i(x_{eq})\, w_{eq}`, so :math:`B a = (\int a\phi_i)_i`.
    mass : scipy csr (N, N)

    Examples
    --------
    >>> from femno.fem.mesh import unit_square
    >>> basis = make_basis(unit_square(3), "P2")
    >>> enc = Encoder(basis)
    >>> u = basis.doflocs[0] ** 2 - basis.doflocs[1]          # an FE function of P2
    >>> qp = np.asarray(basis.interpolate(u))  # its values at the quadrature points
    >>> bool(np.allclose(enc.encode(qp, encode="l2"), u, atol=1e-12))
    True
    >>> bool(np.allclose(enc.encode_function(lambda x: x[0] ** 2 - x[1]), u))
    True
    """

    def __init__(self, basis):
        if isinstance(basis.elem, skfem.ElementVector):
            raise InputError("the input space of an Encoder must be scalar")
        self.basis = basis
        ne, nq = basis.dx.shape
        rows, vals = [], []
        for j in range(len(basis.basis)):
            rows.append(np.repeat(basis.element_dofs[j][:, None], nq, axis=1))
            vals.append(np.asarray(basis.basis[j][0]) * basis.dx)
        cols = np.tile(np.arange(ne * nq).reshape(ne, nq), (len(basis.basis), 1))
        self.B = sp.csr_matrix((np.concatenate(vals).ravel(), (np.concatenate(rows).ravel(),
                                cols.ravel())), shape=(basis.N, ne * nq))
        self.mass = mass_matrix(basis)
        self.lumped = np.asarray(self.B.sum(axis=1)).ravel()
        self._lu = None

    @property
    def qp_shape(self) -> tuple[int, int]:
        return tuple(self.basis.dx.shape)

    def solve_mass(self, b: np.ndarray) -> np.ndarray:
        """:math:`M^{-1} b` for b of shape (N,) or (N, k) (sparse LU, factorized once)."""
        if self._lu is None:
            self._lu = spla.splu(self.mass.tocsc())
        return self._lu.solve(np.asarray(b, dtype=np.float64))

    def from_moments(self, b: np.ndarray, *, encode: str = "l2") -> np.ndarray:
        r"""Coefficients from moments :math:`b_i = \int a \phi_i`; b (N,) or (S, N)."""
        _check_encode(encode)
        b = np.asarray(b, dtype=np.float64)
        if encode == "l2":
            return self.solve_mass(b.T).T
        return b / self.lumped

    def encode(self, values, *, encode: str = "l2") -> np.ndarray:
        """Encode quadrature values (n_el, n_qp) or (S, n_el, n_qp); element values
        (n_el,) / (S, n_el) are broadcast to the quadrature points.  Returns (N,) / (S, N)."""
        v = np.asarray(values, dtype=np.float64)
        ne, nq = self.qp_shape
        if v.shape[-1:] == (ne,) and v.shape[-2:] != (ne, nq):
            v = np.repeat(v[..., None], nq, axis=-1)
        if v.shape[-2:] != (ne, nq) or v.ndim not in (2, 3):
            raise InputError(f"field values must have shape (n_elements, n_qp) = ({ne}, {nq}) "
                             f"(or a leading sample axis), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise InputError("field values contain NaN or inf")
        flat = v.reshape(-1, ne * nq)
        out = self.from_moments((self.B @ flat.T).T, encode=encode)
        return out.reshape(v.shape[:-2] + (self.basis.N,))

    def encode_function(self, f, *, encode: str = "interp") -> np.ndarray:
        """Encode a callable ``f(x)``, x of shape (dim, ...): nodal interpolation
        (``"interp"``) or L2 projection of its quadrature values (``"l2"``)."""
        _check_encode(encode)
        if encode == "interp":
            return np.asarray(f(self.basis.doflocs), dtype=np.float64)
        return self.encode(np.asarray(f(self.basis.mapping.F(self.basis.X))), encode="l2")


def encode_inputs(raw: dict, encoder: Encoder, *, encode: str = "l2", loads=None):
    """Encode stored inputs into channels (the rule of the module docstring).

    Parameters
    ----------
    raw : dict
        name -> array (S, ...) of per-sample inputs (``femno.datagen.runner.input_arrays``
        stacked over samples); the order of the dict is the order of the channels.
    encoder : Encoder
        Encoder of the scalar input space.
    encode : {"l2", "interp"}, keyword-only
    loads : callable, optional, keyword-only
        ``loads(raw, S) -> F`` (S, n_dofs): the family's load vectors, needed when some
        inputs are parameters rather than fields (they become channels ``rhs`` /
        ``rhs0``, ``rhs1``, ... per vector component, last).

    Returns
    -------
    X : ndarray (S, C, n_in_dofs) float64
    channels : list of str
    """
    _check_encode(encode)
    if not raw:
        raise InputError("no inputs to encode")
    S = len(next(iter(raw.values())))
    N = encoder.basis.N
    channels, cols, params = [], [], []
    for name, arr in raw.items():
        arr = np.asarray(arr, dtype=np.float64)
        if len(arr) != S:
            raise InputError(f"input {name!r} has {len(arr)} samples, expected {S}")
        shape = arr.shape[1:]
        if shape in (encoder.qp_shape, encoder.qp_shape[:1]):
            cols.append(encoder.encode(arr, encode=encode))
        elif shape == (N,):
            cols.append(arr)
        else:
            params.append(name)
            continue
        channels.append(name)
    if params:  # parameter inputs: encode the family's load (per component)
        if loads is None:
            raise InputError(f"inputs {params} are parameters, not fields: encoding them "
                             "needs the family's load vectors")
        F = np.asarray(loads(raw, S), dtype=np.float64)
        d = F.shape[1] // N
        if F.shape != (S, d * N) or d < 1:
            raise InputError(f"load vectors must have shape ({S}, k * {N}), got {F.shape}")
        for c in range(d):
            cols.append(encoder.from_moments(F[:, c::d], encode=encode))
            channels.append("rhs" if d == 1 else f"rhs{c}")
    return np.stack(cols, axis=1), channels


def _check_encode(encode):
    if encode not in ENCODINGS:
        raise InputError(f"unknown encoding {encode!r}; valid: {list(ENCODINGS)}")


def _rebuild_mesh(points, cells, mesh_type) -> skfem.Mesh:
    cls = getattr(skfem, str(mesh_type), None)
    if not (isinstance(cls, type) and issubclass(cls, skfem.Mesh)):
        raise InputError(f"cannot rebuild mesh of type {mesh_type!r}")
    return cls(np.ascontiguousarray(points.T), np.ascontiguousarray(cells.T))


@dataclasses.dataclass(eq=False)
class FEData:
    """Encoded inputs, FE targets and FE spaces of a dataset (see the module docstring).

    Attributes
    ----------
    mesh : skfem.Mesh
    basis : skfem.CellBasis
        Output space (``n_dofs = basis.N``), possibly vector-valued.
    basis_in : skfem.CellBasis
        Scalar input space on the same mesh (``n_in_dofs``).
    in_of_dof : ndarray (n_dofs,) int64
        Input dof at the location of each output dof (identity for scalar spaces).
    component : ndarray (n_dofs,) int64
        Vector component of each output dof (zeros for scalar spaces).
    free, dirichlet : ndarray int64
        Free and Dirichlet dofs of the output space.
    mass : scipy csr (n_dofs, n_dofs)
        Mass matrix of the output space (the FE norm of :meth:`rel_l2`).
    X : torch.Tensor (n_samples, n_channels, n_in_dofs)
        Encoded inputs; ``channels`` names the channels.
    Y : torch.Tensor (n_samples, n_dofs) or None
        Full FE coefficient vectors of the solutions.
    lift : torch.Tensor (n_samples, n_dofs)
        Dirichlet data on ``dirichlet``, zero on ``free`` (the lifting).
    family, settings, layout : str, dict, dict
    sample_index : ndarray (n_samples,) int64
    encode : str
    """

    mesh: object
    basis: object
    basis_in: object
    free: np.ndarray
    dirichlet: np.ndarray
    X: torch.Tensor
    Y: torch.Tensor | None
    lift: torch.Tensor
    channels: list
    family: str = ""
    settings: dict = dataclasses.field(default_factory=dict)
    layout: dict = dataclasses.field(default_factory=dict)
    sample_index: np.ndarray | None = None
    encode: str = "l2"
    path: str | None = None
    _shared: dict = dataclasses.field(default_factory=dict, repr=False)

    # -- sizes and shared FE data ------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_dofs(self) -> int:
        return int(self.basis.N)

    @property
    def n_in_dofs(self) -> int:
        return int(self.basis_in.N)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def dim(self) -> int:
        return int(self.mesh.p.shape[0])

    @property
    def element(self) -> str:
        return element_name(self.basis.elem)

    @property
    def vector(self) -> bool:
        return isinstance(self.basis.elem, skfem.ElementVector)

    def _get(self, key, make):
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    @property
    def mass(self) -> sp.csr_matrix:
        return self._get("mass", lambda: mass_matrix(self.basis))

    @property
    def encoder(self) -> Encoder:
        return self._get("encoder", lambda: Encoder(self.basis_in))

    @property
    def in_of_dof(self) -> np.ndarray:
        d = self.dim if self.vector else 1
        return self._get("in_of_dof", lambda: np.arange(self.n_dofs, dtype=np.int64) // d)

    @property
    def component(self) -> np.ndarray:
        d = self.dim if self.vector else 1
        return self._get("component", lambda: np.arange(self.n_dofs, dtype=np.int64) % d)

    @property
    def boundary_values(self) -> torch.Tensor:
        """Dirichlet data of each sample, (n_samples, n_dirichlet)."""
        return self.lift[:, torch.as_tensor(self.dirichlet)]

    def mass_torch(self, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """``mass`` as a torch sparse tensor (cached per dtype and device)."""
        key = ("mass_torch", dtype, str(device))
        return self._get(key, lambda: to_torch_sparse(self.mass, dtype=dtype, device=device))

    def rel_l2(self, pred, target=None):
        """Per-sample relative L2 error in the mass-matrix norm (torch or numpy).

        ``target`` defaults to ``Y`` (then ``pred`` must hold all samples)."""
        target = self.Y if target is None else target
        if isinstance(pred, torch.Tensor):
            target = torch.as_tensor(target, dtype=pred.dtype, device=pred.device)
            return rel_l2(pred, target, self.mass_torch(dtype=pred.dtype, device=pred.device))
        if isinstance(target, torch.Tensor):
            target = target.detach().cpu().numpy()
        return rel_l2(pred, target, self.mass)

    def errors(self, pred) -> dict:
        """Errors of predictions ``pred`` (S, N) (numpy or torch) of all samples against
        ``Y``: ``rel_l2`` (per-sample relative L2 error, mass norm, ndarray (S,)) and
        ``boundary_max`` (max abs error on the Dirichlet dofs, float)."""
        if self.Y is None:
            raise InputError("the data has no solutions (Y)")
        pred = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        Y = self.Y.numpy()
        d = self.dirichlet
        return {"rel_l2": np.asarray(self.rel_l2(pred, Y)),
                "boundary_max": float(np.abs(pred[:, d] - Y[:, d]).max()) if d.size else 0.0}

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, path, *, inputs=None, encode: str = "l2",
                     dtype=torch.float64) -> FEData:
        """Read the completed samples of a dataset (see the module docstring).

        Parameters
        ----------
        path : str or path
            Dataset directory written by ``femno generate``.
        inputs : str or list of str, optional, keyword-only
            Input fields to use (names under ``inputs/``); default all.
        encode : {"l2", "interp"}, keyword-only
        dtype : torch.dtype, keyword-only
            dtype of ``X``, ``Y``, ``lift`` (float64 default).
        """
        from femno.datagen.store import DatasetStore
        from femno.datagen.torch_dataset import FemnoDataset

        _check_encode(encode)
        ds = FemnoDataset(path, inputs=inputs, dtype=dtype)
        if len(ds) == 0:
            raise InputError(f"dataset {str(path)!r} has no completed samples")
        layout, settings = ds.layout, ds.settings
        mesh = _rebuild_mesh(ds.points, ds.cells, layout.get("mesh_type", "MeshTri1"))
        intorder = (settings.get("family_options") or {}).get("intorder")
        n_dofs = int(ds.doflocs.shape[0])
        basis = make_basis(mesh, ds.element, intorder=intorder)
        if basis.N != n_dofs:
            basis = make_basis(mesh, ds.element, vector=True, intorder=intorder)
        if (basis.N != n_dofs or not np.allclose(basis.doflocs.T, ds.doflocs, atol=1e-12)
                or not np.array_equal(basis.element_dofs.T, ds.element_dofs)):
            raise InputError(f"cannot rebuild the FE space of {str(path)!r} "
                             f"({layout.get('mesh_type')}, {ds.element}): dofs differ")
        root = DatasetStore.open(path).root
        rows = ds.rows
        raw = {name: np.asarray(root[f"inputs/{name}"][:][rows]) for name in ds.inputs}
        Y = np.asarray(root["solution"][:][rows], dtype=np.float64)
        fam = _FamilyRef(settings)
        return cls._build(mesh, basis, ds.free, ds.dirichlet, raw, Y, encode=encode, dtype=dtype,
                          family=fam, settings=settings, layout=layout,
                          sample_index=ds.sample_index, path=str(path))

    @classmethod
    def from_family(cls, family, params, *, solutions=None, encode: str = "l2",
                    inputs=None, dtype=torch.float64) -> FEData:
        """Encode parameters of a :class:`femno.fem.Family` (e.g. on a new mesh).

        Parameters
        ----------
        family : femno.fem.Family
        params : list of dict
            ``family.sample(rng)`` outputs.
        solutions : array (S, n_dofs), optional
            Targets; without them ``Y`` is ``None`` and the lifting comes from
            ``family.assemble(p).x_bc`` (only for families with non-zero Dirichlet data).
        """
        from femno.datagen.runner import input_arrays

        _check_encode(encode)
        if not params:
            raise InputError("params must be a non-empty list of parameter dicts")
        arrays = [input_arrays(p) for p in params]
        names = sorted(arrays[0]) if inputs is None else ([inputs] if isinstance(inputs, str)
                                                          else list(inputs))
        missing = [n for n in names if n not in arrays[0]]
        if missing or not names:
            raise InputError(f"unknown input field(s) {missing}; available: {sorted(arrays[0])}")
        raw = {n: np.stack([a[n] for a in arrays]) for n in names}
        system = family.assemble(params[0])
        free = np.asarray(system.free, dtype=np.int64)
        mask = np.ones(family.basis.N, dtype=bool)
        mask[free] = False
        Y = None if solutions is None else np.asarray(solutions, dtype=np.float64)
        lift = None
        if Y is None:
            lift = (np.stack([family.assemble(p).x_bc for p in params])
                    if hasattr(family, "boundary_values") else np.zeros((len(params), family.basis.N)))
        return cls._build(family.mesh, family.basis, free, np.nonzero(mask)[0], raw, Y,
                          encode=encode, dtype=dtype, family=_FamilyRef(None, family),
                          settings={"family": family.name}, layout={"element": family.element},
                          sample_index=np.arange(len(params)), lift=lift)

    @classmethod
    def _build(cls, mesh, basis, free, dirichlet, raw, Y, *, encode, dtype, family, settings,
               layout, sample_index, path=None, lift=None) -> FEData:
        vector = isinstance(basis.elem, skfem.ElementVector)
        # scalar input space with the quadrature of the output space
        basis_in = (skfem.CellBasis(mesh, basis.elem.elem, quadrature=basis.quadrature)
                    if vector else basis)
        enc = Encoder(basis_in)
        X, channels = encode_inputs(raw, enc, encode=encode, loads=family.loads)
        S = X.shape[0]
        if Y is not None:
            if Y.shape != (S, basis.N):
                raise InputError(f"solutions must have shape ({S}, {basis.N}), got {Y.shape}")
            lift = np.zeros_like(Y)
            lift[:, dirichlet] = Y[:, dirichlet]
        out = cls(mesh=mesh, basis=basis, basis_in=basis_in, free=np.asarray(free, np.int64),
                  dirichlet=np.asarray(dirichlet, np.int64),
                  X=torch.as_tensor(X, dtype=dtype),
                  Y=None if Y is None else torch.as_tensor(Y, dtype=dtype),
                  lift=torch.as_tensor(lift, dtype=dtype), channels=channels,
                  family=settings.get("family", ""), settings=settings, layout=layout,
                  sample_index=np.asarray(sample_index), encode=encode, path=path)
        out._shared["encoder"] = enc
        return out

    # -- subsets -------------------------------------------------------------------------------
    def subset(self, index) -> FEData:
        """The samples ``index`` (int array or slice); FE data is shared, not copied."""
        idx = torch.as_tensor(np.arange(self.n_samples)[index], dtype=torch.long)
        return dataclasses.replace(
            self, X=self.X[idx], Y=None if self.Y is None else self.Y[idx], lift=self.lift[idx],
            sample_index=np.asarray(self.sample_index)[idx.numpy()], _shared=self._shared)

    def split_indices(self, fractions=(0.8, 0.1, 0.1), *, seed: int = 0) -> list[np.ndarray]:
        """Random disjoint index sets with the given fractions (the last takes the rest)."""
        fr = np.asarray(fractions, dtype=np.float64)
        if fr.ndim != 1 or fr.size < 1 or np.any(fr < 0) or fr.sum() > 1 + 1e-12:
            raise InputError(f"fractions must be >= 0 and sum to <= 1, got {list(fractions)}")
        perm = np.random.default_rng(seed).permutation(self.n_samples)
        counts = np.floor(fr * self.n_samples).astype(int)
        if np.isclose(fr.sum(), 1.0):
            counts[-1] = self.n_samples - counts[:-1].sum()
        edges = np.concatenate([[0], np.cumsum(counts)])
        return [np.sort(perm[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def train_val_test_split(self, fractions=(0.8, 0.1, 0.1), *, seed: int = 0) -> list[FEData]:
        """:meth:`subset` for each of :meth:`split_indices`."""
        return [self.subset(i) for i in self.split_indices(fractions, seed=seed)]

    def __repr__(self) -> str:
        return (f"FEData(family={self.family!r}, samples={self.n_samples}, element={self.element!r}, "
                f"n_dofs={self.n_dofs}, channels={self.channels}, encode={self.encode!r})")


class _FamilyRef:
    """Lazily rebuilt family (from dataset settings) used only for parameter inputs."""

    def __init__(self, settings, family=None):
        self.settings, self.family = settings, family

    def get(self):
        if self.family is None:
            from femno.datagen.runner import load_family

            s = self.settings or {}
            try:
                self.family = load_family(s.get("family_spec", s.get("family")),
                                          s.get("family_options") or {})
            except Exception as exc:
                raise InputError(f"parameter inputs need the family {s.get('family')!r}, which "
                                 f"cannot be rebuilt here: {exc}") from exc
        return self.family

    def loads(self, raw: dict, S: int) -> np.ndarray:
        """Load vectors F (S, n_dofs) of the family for the stored parameters."""
        fam = self.get()
        rows = []
        for k in range(S):
            try:
                _, F = fam.assemble_full({n: v[k] for n, v in raw.items()}, matrix=False)
            except KeyError as exc:
                raise InputError(f"the load of family {fam.name!r} needs input {exc}; "
                                 f"selected inputs: {sorted(raw)}") from None
            rows.append(np.asarray(F, dtype=np.float64))
        return np.stack(rows)


def check_compatible(a: FEData, b: FEData) -> None:
    """:class:`InputError` unless ``a`` and ``b`` have the same family, element, mesh and dofs."""
    if a.family != b.family:
        raise InputError(f"datasets of different families: {a.family!r} vs {b.family!r}")
    if a.element != b.element or a.n_dofs != b.n_dofs:
        raise InputError(f"different FE spaces: {a.element}/{a.n_dofs} vs {b.element}/{b.n_dofs}")
    if (a.mesh.p.shape != b.mesh.p.shape or a.mesh.t.shape != b.mesh.t.shape
            or not np.allclose(a.mesh.p, b.mesh.p) or not np.array_equal(a.mesh.t, b.mesh.t)):
        raise InputError("datasets on different meshes")
    if a.channels != b.channels:
        raise InputError(f"different input channels: {a.channels} vs {b.channels}")


def mesh_size(mesh) -> float:
    """Mean edge length of a skfem mesh (float)."""
    p = np.asarray(mesh.p, dtype=np.float64)
    e = np.asarray(mesh.facets if mesh.p.shape[0] == 2 else mesh.edges)
    return float(np.linalg.norm(p[:, e[0]] - p[:, e[1]], axis=0).mean())


def input_ranges(X) -> list:
    """Per-channel ``[min, max]`` of encoded inputs ``X`` (S, C, n) as plain floats."""
    X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    return [[float(X[:, c].min()), float(X[:, c].max())] for c in range(X.shape[1])]
