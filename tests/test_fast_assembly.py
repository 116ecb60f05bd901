"""Value-only reassembly (femno.fem.fast_assembly) against scikit-fem's assembly path."""

import numpy as np
import pytest
import skfem

import femno.fem.families.base as base
from femno.errors import InputError
from femno.fem.families import Darcy, get_family
from femno.fem.fast_assembly import CondensedAssembler, FormKernel, KernelTooLarge, kernel_bytes
from femno.fem.mesh import lshape, unstructured_square
from femno.fem.random_fields import GaussianRandomField

CASES = [
    ("darcy", {}),
    ("darcy", {"cell": "quad"}),
    ("darcy", {"element": "P2"}),
    ("darcy", {"mesh": unstructured_square(10, seed=2)}),
    ("darcy", {"mesh": lshape(6), "coefficient_at": "element"}),
    ("darcy-pwc", {}),
    ("helmholtz", {}),
    ("heat", {"dt": 0.05}),
    ("elasticity", {}),
    ("elasticity", {"element": "P2"}),
]


def _same_pattern(A, B):
    A, B = A.copy(), B.copy()
    A.sort_indices(), B.sort_indices()
    return np.array_equal(A.indptr, B.indptr) and np.array_equal(A.indices, B.indices)


@pytest.mark.parametrize("name, kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_fast_matches_skfem(name, kw):
    fam = get_family(name, n=9, **kw)
    for seed in range(2):
        p = fam.sample(np.random.default_rng(seed))
        fast, slow = fam.assemble(p), fam.assemble(p, fast=False)
        assert fam._cache["assembler"] is not None
        scale = abs(slow.A).max()
        assert abs(fast.A - slow.A).max() <= 1e-13 * scale
        assert _same_pattern(fast.A, slow.A)  # structurally zero entries dropped alike
        np.testing.assert_array_equal(fast.b, slow.b)
        assert fast.A.has_sorted_indices and fast.A.dtype == np.float64


def test_kernel_modes_follow_the_element():
    # P1 gradients are constant per triangle; on a uniform grid every Q1 square (and
    # every P1 mass) has the same kernel; P2 gradients on unequal triangles vary with both
    p1 = Darcy(n=4)
    q1 = Darcy(n=4, cell="quad")
    p2 = Darcy(mesh=unstructured_square(5, seed=1), element="P2")
    heat = get_family("heat", n=4)
    for fam in (p1, q1, p2, heat):
        fam.assemble(fam.sample(np.random.default_rng(0)))
    assert [k.mode for k in p1._cache["assembler"].kernels] == ["element"]
    assert [k.mode for k in q1._cache["assembler"].kernels] == ["reference"]
    assert [k.mode for k in p2._cache["assembler"].kernels] == ["full"]
    assert [k.mode for k in heat._cache["assembler"].kernels] == ["reference", "element"]


def test_assembler_on_a_plain_skfem_form():
    from skfem.models.poisson import mass

    m = skfem.MeshTri().refined(3)
    basis = skfem.CellBasis(m, skfem.ElementTriP2())
    free = basis.complement_dofs(basis.get_dofs())
    asm = CondensedAssembler(basis.N, free, [FormKernel(mass, basis)])
    A = asm.assemble([2.5])
    K = 2.5 * mass.assemble(basis)[free][:, free]
    assert abs(A - K).max() < 1e-14 * abs(K).max()
    assert abs(A - A.T).max() == 0.0  # symmetric scatter of a symmetric kernel
    with pytest.raises(ValueError, match="need 1 coefficients"):
        asm.assemble([1.0, 2.0])


def test_fast_path_still_validates_coefficients():
    fam = Darcy(n=4)
    p = fam.sample(np.random.default_rng(0))
    fam.assemble(p)
    bad = {"a": -p["a"]}
    with pytest.raises(InputError, match="must be positive"):
        fam.assemble(bad)
    with pytest.raises(InputError, match="NaN"):
        fam.assemble({"a": np.full_like(p["a"], np.nan)})


def test_subclass_with_own_assemble_full_keeps_skfem_path():
    calls = []

    class Twice(Darcy):
        name = "twice"

        def assemble_full(self, params, *, matrix=True):
            calls.append(matrix)
            K, f = super().assemble_full(params, matrix=matrix)
            return 2.0 * K, f

    fam, ref = Twice(n=5), Darcy(n=5)
    p = ref.sample(np.random.default_rng(1))
    A = fam.assemble(p).A
    assert fam._cache["assembler"] is None and calls == [True]
    assert abs(A - 2.0 * ref.assemble(p).A).max() < 1e-12


def test_memory_guard_falls_back(monkeypatch):
    monkeypatch.setattr(base, "FAST_ASSEMBLY_MAX_BYTES", 0)
    fam = Darcy(n=5)
    p = fam.sample(np.random.default_rng(0))
    A = fam.assemble(p).A
    assert fam._cache["assembler"] is None
    assert abs(A - fam.assemble(p, fast=False).A).max() == 0.0


def test_kernel_budget_counts_the_compressed_storage():
    """P1 vector elasticity in 3-D stores one value per element and entry; the budget
    check raises before the arrays exist when even that does not fit."""
    from skfem.models.elasticity import linear_elasticity

    m = skfem.MeshTet.init_tensor(*(np.linspace(0, 1, 4),) * 3)
    basis = skfem.CellBasis(m, skfem.ElementVector(skfem.ElementTetP1()))
    form = linear_elasticity(1.0, 1.0)
    per_elem = kernel_bytes(basis, per_element=True)
    assert per_elem < kernel_bytes(basis)  # the upper bound counts every quadrature point
    k = FormKernel(form, basis, max_bytes=per_elem)
    assert k.mode == "element" and k.nbytes <= per_elem
    with pytest.raises(KernelTooLarge):
        FormKernel(form, basis, max_bytes=per_elem - 1)
    free = basis.complement_dofs(basis.get_dofs(lambda x: np.isclose(x[0], 0.0)))
    A = CondensedAssembler(basis.N, free, [k]).assemble([1.0])
    K = form.assemble(basis)[free][:, free]
    assert abs(A - K).max() <= 1e-13 * abs(K).max()


def test_terms_sharing_a_pattern_match_skfem_term_by_term():
    """Two terms on one basis (mass + Laplacian, different nonzero sets on P1 right
    triangles) share one sort; each scatter still reproduces its own term."""
    from skfem.models.poisson import laplace, mass

    m = skfem.MeshTri().refined(3)
    basis = skfem.CellBasis(m, skfem.ElementTriP1())
    free = basis.complement_dofs(basis.get_dofs())
    asm = CondensedAssembler(basis.N, free, [FormKernel(laplace, basis), FormKernel(mass, basis)])
    for t, form in enumerate((laplace, mass)):
        K = form.assemble(basis)[free][:, free]
        assert abs(asm.matrix(asm.data(t, 1.0)) - K).max() < 1e-13
    assert asm.nnz == (laplace.assemble(basis) + mass.assemble(basis))[free][:, free].nnz


def test_field_at_points_equals_sample_and_has_the_variance():
    grf = GaussianRandomField(length=0.15, variance=2.0)
    pts = np.random.default_rng(0).random((400, 2))
    box = ([0.0, 0.0], [1.0, 1.0])
    at = grf.at(pts, bbox=box)
    a = at.sample(np.random.default_rng(5), size=3)
    b = grf.sample(pts, np.random.default_rng(5), size=3, bbox=box)
    np.testing.assert_array_equal(a, b)
    g = at.sample(np.random.default_rng(1), size=800)
    # point variance of the interpolated field: 2.0 within sampling error (and the < 1 %
    # interpolation loss of 8 points per length)
    assert abs(g.var(axis=0).mean() / 2.0 - 1.0) < 0.08
    with pytest.raises(InputError, match="outside bbox"):
        grf.at(pts + 2.0, bbox=box)
    with pytest.raises(InputError, match="Generator"):
        at.sample(0)


def test_field_at_points_3d_is_multilinear():
    # a grid function linear in each coordinate is reproduced exactly by the interpolation
    grf = GaussianRandomField(length=0.5, padding=0.0)
    pts = np.random.default_rng(2).random((50, 3)) * 0.9
    at = grf.at(pts, bbox=([0, 0, 0], [1, 1, 1]))
    grid = np.stack(np.meshgrid(*[np.arange(n) * at.h for n in at.shape], indexing="ij"))
    values = (at.P @ (grid[0] + 2 * grid[1] - grid[2]).ravel())
    expect = pts[:, 0] + 2 * pts[:, 1] - pts[:, 2]
    np.testing.assert_allclose(values, expect, atol=1e-12)


@pytest.mark.parametrize("name", ["poisson", "helmholtz"])
def test_fourier_load_by_affine_decomposition(name):
    fam = get_family(name, n=10, modes=3)
    p = fam.sample(np.random.default_rng(4))
    b = fam.assemble(p).b
    ref = fam._load(fam._fourier_at_qp(p["coef"]))[fam._cache["free"]]
    assert np.abs(b - ref).max() <= 1e-14 * np.abs(ref).max()
    assert fam._cache[("fourier-load", 3)].shape == (9, fam.basis.N)
    with pytest.raises(InputError, match="finite"):
        fam.assemble({**p, "coef": np.full((3, 3), np.inf)})


def test_per_element_coefficient_on_q_dependent_kernel():
    """A coefficient constant per element takes the q-summed kernel: same data as the
    generic einsum over quadrature points and as scikit-fem (Q1, kernel mode "full")."""
    from femno.fem.families.scalar import _diffusion

    mesh = skfem.MeshQuad.init_tensor(np.linspace(0, 1, 6), np.linspace(0, 1.3, 5) ** 1.5)
    basis = skfem.CellBasis(mesh, skfem.ElementQuad1())
    kern = FormKernel(_diffusion, basis, a=1.0)
    assert kern.mode == "full"
    ne, nq = basis.dx.shape
    c = np.random.default_rng(0).uniform(0.5, 2.0, ne)
    per_element = np.repeat(c[:, None], nq, axis=1)
    fast = kern.weights(per_element)
    nearly = per_element.copy()
    nearly[:, 0] *= 1 + 1e-15  # not constant per element: the einsum path
    generic = kern.weights(nearly)
    assert kern._qsum is not None
    assert np.allclose(fast, generic, rtol=1e-13, atol=0)
    free = basis.complement_dofs(basis.get_dofs())
    A = CondensedAssembler(basis.N, free, [kern]).assemble([per_element])
    K = _diffusion.assemble(basis, a=per_element)[free][:, free]
    assert abs(A - K).max() <= 1e-13 * abs(K).max()


@pytest.mark.parametrize("cell", ["hex", "tet"])
def test_darcy3d_fast_path_matches_skfem(cell):
    from femno.fem.families.recipes import Darcy3D

    fam = Darcy3D(n=4, cell=cell)
    p = fam.sample(np.random.default_rng(3))
    fast, slow = fam.assemble(p), fam.assemble(p, fast=False)
    assert fam._cache["assembler"] is not None
    assert abs(fast.A - slow.A).max() <= 1e-13 * abs(slow.A).max()
    assert np.array_equal(fast.b, slow.b)


@pytest.mark.parametrize("name, opts", [("ConvDiff", {}), ("ConvDiff", {"dominated": True}),
                                        ("Anisotropic", {}), ("Elasticity3D", {"n": 3})])
def test_benchmark_zoo_families_fast_path(name, opts):
    """The zoo's Family files (benchmarks/zoo_families.py) reassemble what scikit-fem
    assembles, and the nonsymmetric ones are nonsymmetric (bench_generate relies on both)."""
    from pathlib import Path

    from femno.datagen.runner import load_family

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo_families.py"
    fam = load_family(f"{path}:{name}", {"n": 8, **opts})
    p = fam.sample(np.random.default_rng(1))
    fast, slow = fam.assemble(p), fam.assemble(p, fast=False)
    assert fam._cache["assembler"] is not None
    assert abs(fast.A - slow.A).max() <= 1e-13 * abs(slow.A).max()
    asym = abs(fast.A - fast.A.T).max() / abs(fast.A).max()
    assert (asym > 1e-3) if name == "ConvDiff" else (asym < 1e-13)
