"""FEData: datasets as encoded FE inputs and FE targets; encoders; FE norms; prolongation."""

import numpy as np
import pytest
import torch

from femno.datagen.generate import generate_dataset
from femno.errors import InputError
from femno.fem.mesh import refine, unit_square, unstructured_disk, unstructured_square
from femno.fem.spaces import make_basis
from femno.operators.fe_data import Encoder, FEData, check_compatible, mass_matrix
from femno.operators.fe_torch import coarse_level, dof_graph, prolongation

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    d = tmp_path_factory.mktemp("fedata")
    out = {}
    for name, fam, opts in [("darcy", "darcy", {"n": 5}), ("darcy6", "darcy", {"n": 6}),
                            ("poisson", "poisson", {"n": 5})]:
        generate_dataset(fam, samples=5, out=d / name, method="direct", block=5,
                         family_options=opts, progress=False)
        out[name] = d / name
    return out


def test_from_dataset_shapes_and_targets(datasets):
    data = FEData.from_dataset(datasets["darcy"])
    assert data.family == "darcy" and data.channels == ["a"]
    assert data.X.shape == (5, 1, 36) and data.Y.shape == (5, 36)
    assert data.X.dtype == torch.float64
    # the stored solutions are homogeneous on the boundary; the lifting holds them
    assert torch.equal(data.boundary_values, data.Y[:, data.dirichlet])
    assert torch.count_nonzero(data.lift[:, data.free]) == 0
    # encoded permeability is positive (L2 projection of a positive field on P1 may
    # undershoot slightly, the lumped one cannot)
    interp = FEData.from_dataset(datasets["darcy"], encode="interp")
    assert bool((interp.X > 0).all())
    assert data.sample_index.shape == (5,)


def test_parameter_inputs_become_the_projected_source(datasets):
    """Poisson stores Fourier coefficients; the channel is the L2 projection of f."""
    data = FEData.from_dataset(datasets["poisson"])
    assert data.channels == ["rhs"]
    from femno.fem import get_family

    fam = get_family("poisson", n=5)
    from femno.datagen.runner import sample_params

    k = 2
    params = sample_params(fam, 0, int(data.sample_index[k]))
    fq = fam._fourier_at_qp(params["coef"])  # f at the quadrature points
    direct = Encoder(fam.basis).encode(fq, encode="l2")
    np.testing.assert_allclose(data.X[k, 0].numpy(), direct, rtol=1e-10, atol=1e-12)


def test_l2_encoding_of_fe_function_is_identity():
    for mesh, elem in [(unstructured_square(5, seed=2), "P2"), (unit_square(3, cell="quad"), "Q2")]:
        basis = make_basis(mesh, elem)
        enc = Encoder(basis)
        u = np.random.default_rng(0).standard_normal(basis.N)
        qp = np.asarray(basis.interpolate(u))
        np.testing.assert_allclose(enc.encode(qp, encode="l2"), u, atol=1e-10)
        # interpolation of a function that lies in the space is the identity too
        def f(x):
            return 1 + x[0] - 2 * x[1] + x[0] * x[1]

        np.testing.assert_allclose(enc.encode_function(f, encode="interp"),
                                   f(basis.doflocs), atol=1e-14)
        np.testing.assert_allclose(enc.encode_function(f, encode="l2"), f(basis.doflocs),
                                   atol=1e-10)
        # decoding = expansion in the basis: evaluating the coefficients gives f back
        pts = np.array([[0.13, 0.71], [0.42, 0.37]])
        np.testing.assert_allclose(basis.probes(pts) @ enc.encode_function(f), f(pts),
                                   atol=1e-12)


def test_rel_l2_is_the_mass_norm(datasets):
    data = FEData.from_dataset(datasets["darcy"])
    rng = np.random.default_rng(1)
    pred = data.Y.numpy() + 0.01 * rng.standard_normal(data.Y.shape)
    M = data.mass.toarray()
    e = pred - data.Y.numpy()
    ref = np.sqrt(np.einsum("si,ij,sj->s", e, M, e)
                  / np.einsum("si,ij,sj->s", data.Y.numpy(), M, data.Y.numpy()))
    np.testing.assert_allclose(data.rel_l2(pred), ref, rtol=1e-12)
    np.testing.assert_allclose(data.rel_l2(torch.as_tensor(pred)).numpy(), ref, rtol=1e-12)
    # mass matrix integrates 1 to the area
    one = np.ones(data.n_dofs)
    assert abs(one @ mass_matrix(data.basis) @ one - 1.0) < 1e-12
    # errors(): the same per-sample errors, and the Dirichlet error of the worst dof
    ev = data.errors(torch.as_tensor(pred))
    np.testing.assert_allclose(ev["rel_l2"], ref, rtol=1e-12)
    assert ev["boundary_max"] == pytest.approx(np.abs(e[:, data.dirichlet]).max(), rel=1e-12)


def test_split_and_compatibility(datasets):
    a = FEData.from_dataset(datasets["darcy"])
    parts = a.split_indices((0.6, 0.4), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(5))
    tr, va = a.train_val_test_split((0.6, 0.4), seed=3)
    assert tr.n_samples == 3 and va.n_samples == 2
    assert torch.equal(va.Y, a.Y[torch.as_tensor(parts[1])])
    check_compatible(a, tr)
    with pytest.raises(InputError, match="families"):
        check_compatible(a, FEData.from_dataset(datasets["poisson"]))
    with pytest.raises(InputError, match="FE spaces|meshes"):
        check_compatible(a, FEData.from_dataset(datasets["darcy6"]))
    with pytest.raises(InputError):
        a.split_indices((0.8, 0.8))


def test_bad_inputs(datasets, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        FEData.from_dataset(tmp_path / "nope")
    with pytest.raises(InputError, match="unknown input"):
        FEData.from_dataset(datasets["darcy"], inputs=["zzz"])
    with pytest.raises(InputError, match="encoding"):
        FEData.from_dataset(datasets["darcy"], encode="fourier")
    enc = Encoder(make_basis(unit_square(2)))
    with pytest.raises(InputError, match="shape"):
        enc.encode(np.ones((3, 3)))


def test_from_family_on_another_mesh():
    from femno.fem import get_family

    fam = get_family("darcy", mesh=unstructured_disk(4, seed=0), length=0.3)
    params = [fam.sample(np.random.default_rng(i)) for i in range(3)]
    data = FEData.from_family(fam, params)
    assert data.X.shape == (3, 1, fam.basis.N) and data.Y is None
    assert torch.count_nonzero(data.lift) == 0


def test_dof_graph_is_symmetric_and_local():
    basis = make_basis(unstructured_square(4, seed=0), "P2")
    e = dof_graph(basis.element_dofs, basis.N)
    pairs = set(map(tuple, e.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs) and all(i != j for i, j in pairs)
    # every element's dofs form a clique
    t = basis.element_dofs[:, 7]
    assert all((int(i), int(j)) in pairs for i in t for j in t if i != j)


@pytest.mark.parametrize("elem", ["P1", "P2"])
def test_prolongation_of_nested_spaces_is_exact(elem):
    coarse_mesh = unstructured_square(4, seed=5)
    fine_mesh = refine(coarse_mesh, 1)
    cb, fb = make_basis(coarse_mesh, elem), make_basis(fine_mesh, elem)
    P = prolongation(cb, fb.doflocs)
    uc = np.random.default_rng(2).standard_normal(cb.N)  # an arbitrary coarse FE function
    # evaluate the coarse function at the fine dofs directly, element by element
    direct = cb.probes(fb.doflocs) @ uc
    np.testing.assert_allclose(P @ uc, direct, atol=1e-12)
    # and in the fine space it is the same function: compare at random points
    pts = np.random.default_rng(3).uniform(0.05, 0.95, (2, 40))
    np.testing.assert_allclose(fb.probes(pts) @ (P @ uc), cb.probes(pts) @ uc, atol=1e-12)
    # the coarse level built from the given coarse mesh uses the same operator
    lvl = coarse_level(fine_mesh, fb.doflocs, coarse=coarse_mesh)
    if elem == "P1":
        np.testing.assert_allclose((lvl.P - P).toarray(), 0, atol=1e-13)


def test_automatic_coarse_level_reproduces_linear_functions():
    for mesh in (unstructured_disk(6, seed=1), unit_square(8, cell="quad")):
        basis = make_basis(mesh, "P2" if mesh.t.shape[0] == 3 else "Q2")
        lvl = coarse_level(mesh, basis.doflocs, levels=2)
        assert lvl.pos.shape[0] < mesh.p.shape[1] / 2
        def f(x):
            return 0.3 - 2 * x[..., 0] + 5 * x[..., 1]

        np.testing.assert_allclose(lvl.P @ f(lvl.pos), f(basis.doflocs.T), atol=1e-12)
        # partition of unity
        np.testing.assert_allclose(np.asarray(lvl.P.sum(axis=1)).ravel(), 1.0, atol=1e-12)
