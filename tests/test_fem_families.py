"""Parametric problem families: determinism, structure, solutions, input errors."""

import meshio
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femno.errors import InputError
from femno.fem import (
    FAMILIES,
    Family,
    LinearSystem,
    boundary_dofs,
    get_family,
    load_rve,
    sample_system,
    unit_square,
)

NAMES = ["poisson", "darcy", "darcy-pwc", "helmholtz", "heat", "elasticity", "advection-diffusion",
         "wave", "allen-cahn", "heat-varying"]


def test_registry():
    assert sorted(FAMILIES) == sorted(NAMES)
    with pytest.raises(InputError, match=r"unknown family 'stokes'.*'darcy'.*'poisson'"):
        get_family("stokes")


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_structure(name):
    fam = get_family(name, n=6)
    assert isinstance(fam, Family) and fam.name == name
    s1, s2, s3 = sample_system(fam, 3), sample_system(fam, 3), sample_system(fam, 4)
    for s in (s1, s3):
        assert isinstance(s, LinearSystem)
        assert sp.isspmatrix_csr(s.A) and s.A.dtype == np.float64
        assert s.A.shape == (s.dofs, s.dofs) and s.b.shape == (s.dofs,)
        assert s.x_bc.shape == (s.basis.N,) and s.free.shape == (s.dofs,)
        assert s.meta["family"] == name and s.meta["n_dofs"] == s.basis.N
    assert (s1.A != s2.A).nnz == 0
    np.testing.assert_array_equal(s1.b, s2.b)
    f1, f3 = fam.features(s1.params), fam.features(s3.params)
    assert f1.ndim == 1 and f1.dtype == np.float64 and f1.shape == f3.shape
    np.testing.assert_array_equal(f1, fam.features(s2.params))
    assert not np.allclose(f1, f3)
    if fam.fixed_matrix:
        assert abs(s1.A - s3.A).max() == 0.0
    else:
        assert abs(s1.A - s3.A).max() > 0.0
    assert not np.allclose(s1.b, s3.b) or not fam.fixed_matrix
    if fam.symmetric:
        assert abs(s1.A - s1.A.T).max() <= 1e-12 * abs(s1.A).max()
    if not fam.symmetric:  # advection-diffusion: positive real (skew convection), not symmetric
        assert abs(s1.A - s1.A.T).max() > 1e-8 * abs(s1.A).max()
        assert np.linalg.eigvalsh((0.5 * (s1.A + s1.A.T)).toarray())[0] > 0
        return
    eig = np.linalg.eigvalsh(s1.A.toarray())
    if fam.spd:
        np.linalg.cholesky(s1.A.toarray())
        assert eig[0] > 0
    else:
        assert eig[0] < 0 < eig[-1]  # helmholtz with k = 10 > pi * sqrt(2)


def test_helmholtz_small_k_is_definite():
    s = sample_system(get_family("helmholtz", n=8, k=1.0), 0)
    assert np.linalg.eigvalsh(s.A.toarray())[0] > 0


@pytest.mark.parametrize(
    "name,cell,element",
    [("darcy", "tri", None), ("poisson", "quad", "Q2"), ("darcy-pwc", "tri", "P2")],
)
def test_solve_and_expand(name, cell, element):
    fam = get_family(name, n=8, cell=cell, element=element)
    s = sample_system(fam, 11)
    x = spla.spsolve(s.A.tocsc(), s.b)
    u = s.expand(x)
    D = boundary_dofs(s.basis)
    assert np.all(u[D] == 0.0)  # Dirichlet values exact
    np.testing.assert_array_equal(u[s.free], x)
    # the full-space equations hold on the free rows
    K, f = fam.assemble_full(s.params)
    np.testing.assert_allclose((K @ u - f)[s.free], 0.0, atol=1e-9 * np.abs(f).max())
    with pytest.raises(InputError, match="shape"):
        s.expand(x[:-1])


def test_darcy_unit_coefficient_is_poisson():
    d, p = get_family("darcy", n=5), get_family("poisson", n=5)
    sd = d.assemble({"a": 1.0})
    sp_ = p.assemble(p.sample(np.random.default_rng(0)))
    assert abs(sd.A - sp_.A).max() < 1e-12
    # f = 1: b_i = int phi_i
    from skfem.models.poisson import unit_load

    np.testing.assert_allclose(sd.b, unit_load.assemble(d.basis)[sd.free], rtol=1e-13)


def test_family_on_rve_and_file_mesh(tmp_path):
    mesh = load_rve("RVE3").to_skfem()
    fam = get_family("darcy", mesh=mesh, length=0.2)
    s = sample_system(fam, 0)
    assert s.meta["element"] == "Q8" and s.dofs < mesh.doflocs.shape[1]
    m = unit_square(4)
    path = tmp_path / "m.vtu"
    meshio.write(path, meshio.Mesh(m.p.T, [("triangle", m.t.T)]))
    assert sample_system(get_family("heat", mesh=str(path)), 0).dofs == 9


def test_elasticity_options():
    fam = get_family("elasticity", n=4, cell="quad", load="body", nu=0.45)
    s = sample_system(fam, 0)
    assert s.dofs == 2 * 5 * 4  # left edge clamped
    np.linalg.cholesky(s.A.toarray())


@pytest.mark.parametrize(
    "name,kwargs,params,match",
    [
        ("darcy", {}, {"a": -1.0}, "coefficient 'a' must be positive"),
        ("darcy", {}, {"a": np.nan}, "coefficient 'a' contains NaN"),
        ("heat", {}, None, None),
        ("elasticity", {}, {"E": 0.0, "load": [0.0, 1.0]}, "coefficient 'E' must be positive"),
        ("darcy-pwc", {}, {"values": -np.ones((4, 4))}, "coefficient 'values' must be positive"),
    ],
)
def test_bad_params(name, kwargs, params, match):
    fam = get_family(name, n=4, **kwargs)
    if params is None:
        p = fam.sample(np.random.default_rng(0))
        p["a"] = p["a"] * -1
        with pytest.raises(InputError, match="coefficient 'a' must be positive"):
            fam.assemble(p)
        return
    with pytest.raises(InputError, match=match):
        fam.assemble(params)


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("heat", {"dt": 0.0}, "dt must be positive"),
        ("heat", {"dt": -1e-3}, "dt must be positive"),
        ("elasticity", {"nu": 0.5}, r"nu \(Poisson ratio\) must lie in \(-1, 0.5\)"),
        ("elasticity", {"nu": -1.0}, "nu"),
        ("elasticity", {"E": -2.0}, "E must be positive"),
        ("darcy", {"n": 0}, "n must be an integer >= 1"),
        ("darcy", {"length": -0.1}, "length must be positive"),
        ("darcy", {"f": float("nan")}, "source f must be finite"),
        ("darcy", {"colour": "red"}, r"unknown option\(s\) \['colour'\]"),
        ("darcy-pwc", {"low": 5.0, "high": 1.0}, "'high'"),
        ("helmholtz", {"k": 0.0}, "k must be positive"),
    ],
)
def test_bad_options(name, kwargs, match):
    with pytest.raises(InputError, match=match):
        get_family(name, **{"n": 4, **kwargs})


def test_bad_mesh_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        get_family("darcy", mesh=tmp_path / "none.msh")
    bad = tmp_path / "bad.vtu"
    bad.write_text("<VTKFile> garbage")
    with pytest.raises(InputError, match="cannot read mesh file"):
        get_family("poisson", mesh=bad)
    with pytest.raises(InputError, match="mesh must be a skfem Mesh or a path"):
        get_family("poisson", mesh=42)
