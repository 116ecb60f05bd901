"""Meshes, mesh files and the 8-node RVE format."""

import meshio
import numpy as np
import pytest
import skfem

from femno.errors import InputError
from femno.fem import (
    RVEMesh,
    load_mesh,
    load_rve,
    lshape,
    make_basis,
    periodic_master,
    refine,
    unit_square,
)


@pytest.mark.parametrize(
    "cell,cls,nel", [("tri", skfem.MeshTri1, 32), ("quad", skfem.MeshQuad1, 16)]
)
def test_unit_square(cell, cls, nel):
    m = unit_square(4, cell=cell)
    assert isinstance(m, cls)
    assert m.t.shape[1] == nel
    assert m.p.dtype == np.float64
    np.testing.assert_allclose(m.p.min(axis=1), 0.0)
    np.testing.assert_allclose(m.p.max(axis=1), 1.0)
    area = make_basis(m).dx.sum()
    assert area == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("cell", ["tri", "quad"])
def test_lshape_area_and_refine(cell):
    m = lshape(4, cell=cell)
    assert make_basis(m).dx.sum() == pytest.approx(0.75, abs=1e-14)
    c = m.p[:, m.t].mean(axis=1)
    assert not np.any((c[0] > 0.5) & (c[1] > 0.5))
    r = refine(m, 2)
    assert r.t.shape[1] == 16 * m.t.shape[1]
    assert make_basis(r).dx.sum() == pytest.approx(0.75, abs=1e-14)
    assert refine(m, 0) is m


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_n(bad):
    with pytest.raises(InputError, match="n must be"):
        unit_square(bad)


def test_bad_cell():
    with pytest.raises(InputError, match="unknown cell 'hexagon'"):
        unit_square(2, cell="hexagon")


def test_load_mesh_roundtrip(tmp_path):
    m = unit_square(3)
    pts = np.hstack([m.p.T, np.zeros((m.p.shape[1], 1))])  # z = 0 column
    path = tmp_path / "square.vtu"
    meshio.write(path, meshio.Mesh(pts, [("triangle", m.t.T)]))
    out = load_mesh(path)
    assert isinstance(out, skfem.MeshTri1)
    assert out.p.shape == (2, 16) and out.t.shape == (3, 18)
    assert make_basis(out).dx.sum() == pytest.approx(1.0)


def test_load_mesh_quad_and_hex(tmp_path):
    q = unit_square(2, cell="quad")
    meshio.write(tmp_path / "q.vtu", meshio.Mesh(q.p.T, [("quad", q.t.T)]))
    assert isinstance(load_mesh(tmp_path / "q.vtu"), skfem.MeshQuad1)
    h = skfem.MeshHex1().refined(1)
    path = tmp_path / "h.msh"
    h.save(str(path))
    out = load_mesh(path)
    assert isinstance(out, skfem.MeshHex1)
    assert make_basis(out).dx.sum() == pytest.approx(1.0)


def test_load_mesh_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_mesh(tmp_path / "nope.msh")
    bad = tmp_path / "garbled.msh"
    bad.write_text("$MeshFormat\nthis is not a mesh\n")
    with pytest.raises(InputError, match="cannot read mesh file.*garbled.msh"):
        load_mesh(bad)
    lines = tmp_path / "lines.vtu"
    meshio.write(lines, meshio.Mesh(np.array([[0.0, 0, 0], [1, 0, 0]]), [("line", [[0, 1]])]))
    with pytest.raises(InputError, match="no supported cells.*line"):
        load_mesh(lines)


RVE_DATA = {
    "RVE1": (10561, 3456, 0.55),
    "RVE2": (6433, 2112, 0.193),
    "RVE3": (5713, 1872, 0.133),
}


@pytest.mark.parametrize("name", sorted(RVE_DATA))
def test_reference_rves(name):
    nn, ne, frac = RVE_DATA[name]
    rve = load_rve(name)
    assert isinstance(rve, RVEMesh)
    assert rve.nodes.shape == (nn, 2) and rve.nodes.dtype == np.float64
    assert rve.elements.shape == (ne, 8) and rve.elements.dtype == np.int64
    assert rve.elements.min() == 0 and rve.elements.max() == nn - 1
    assert set(np.unique(rve.material)) == {1, 2}
    assert rve.area() == pytest.approx(1.0, abs=1e-6)
    assert rve.volume_fraction(2) == pytest.approx(frac, abs=2e-3)
    assert rve.volume_fraction(1) + rve.volume_fraction(2) == pytest.approx(1.0)
    px, py = rve.periodic_pairs()
    for pairs, d in ((px, 0), (py, 1)):
        a, b = rve.nodes[pairs[:, 0]], rve.nodes[pairs[:, 1]]
        np.testing.assert_allclose(a[:, d], -0.5)
        np.testing.assert_allclose(b[:, d], 0.5)
        np.testing.assert_allclose(a[:, 1 - d], b[:, 1 - d], atol=1e-12)
    # skfem mesh: 9-node Q2 geometry, node map consistent, materials as subdomains
    mesh = rve.to_skfem()
    assert isinstance(mesh, skfem.MeshQuad2)
    assert mesh.t.shape[1] == ne
    np.testing.assert_array_equal(mesh.doflocs[:, rve.node_to_dof()].T, rve.nodes)
    assert len(mesh.subdomains["fibre"]) == np.sum(rve.material == 2)
    np.testing.assert_array_equal(rve.element_material(), rve.material)
    # periodic dof identification on the curved Q8 space agrees with the node pairs
    basis = make_basis(mesh)
    assert type(basis.elem).__name__ == "ElementQuadS2"
    master = periodic_master(basis)
    n2d = rve.node_to_dof()
    right = n2d[px[:, 1]]
    assert np.all(master[right] != right)


def test_rve_geometry_is_serendipity_map():
    """The 9-node Q2 geometry equals the 8-node serendipity map at arbitrary points."""
    rve = load_rve("RVE1")
    mesh = rve.to_skfem()
    X = np.random.default_rng(0).random((2, 5))  # reference points in [0, 1]^2
    x_q2 = mesh._mapping().F(X)  # (2, nelems, 5)
    S = skfem.ElementQuadS2()
    phi = np.array([S.lbasis(X, i)[0] for i in range(8)])  # (8, 5)
    x_s = np.einsum("eid,ik->dek", rve.nodes[rve.elements], phi)
    np.testing.assert_allclose(x_q2, x_s, atol=1e-13)


def _write_rve(tmp_path, nodes, elems, name="my"):
    prefix = tmp_path / name
    np.savetxt(f"{prefix}.nodes.csv", nodes, delimiter=",")
    np.savetxt(f"{prefix}.elems.csv", elems, delimiter=",", fmt="%d")
    return prefix


def _ref_arrays():
    rve = load_rve("RVE3")
    elems = np.column_stack([np.arange(1, rve.n_elements + 1), rve.material, rve.elements + 1])
    return rve.nodes.copy(), elems


def test_user_rve_prefix(tmp_path):
    nodes, elems = _ref_arrays()
    rve = load_rve(_write_rve(tmp_path, nodes, elems))
    assert rve.name == "my" and rve.n_nodes == 5713
    assert rve.area() == pytest.approx(1.0, abs=1e-6)


def test_rve_validation(tmp_path):
    nodes, elems = _ref_arrays()
    with pytest.raises(InputError, match="does not exist"):
        load_rve(tmp_path / "missing")
    with pytest.raises(InputError, match="3 columns, expected 2"):
        load_rve(_write_rve(tmp_path, np.column_stack([nodes, nodes[:, 0]]), elems, "c"))
    with pytest.raises(InputError, match="9 columns, expected 10"):
        load_rve(_write_rve(tmp_path, nodes, elems[:, :9], "d"))
    bad = elems.copy()
    bad[3, 4] = len(nodes) + 5
    with pytest.raises(InputError, match="node ids out of range"):
        load_rve(_write_rve(tmp_path, nodes, bad, "e"))
    nn = nodes.copy()
    nn[10, 1] = np.nan
    with pytest.raises(InputError, match="non-finite coordinates at node 11"):
        load_rve(_write_rve(tmp_path, nn, elems, "f"))
    (tmp_path / "g.nodes.csv").write_text("1.0,abc\n")
    (tmp_path / "g.elems.csv").write_text("1,1,1,1,1,1,1,1,1,1\n")
    with pytest.raises(InputError, match="cannot parse RVE nodes file"):
        load_rve(tmp_path / "g")
    cw = elems.copy()
    cw[0, 2:6] = cw[0, [5, 4, 3, 2]]
    with pytest.raises(InputError, match="not counter-clockwise"):
        load_rve(_write_rve(tmp_path, nodes, cw, "h"))


def test_rve_not_periodic(tmp_path):
    nodes, elems = _ref_arrays()
    on_right = np.nonzero(np.isclose(nodes[:, 0], 0.5) & (np.abs(nodes[:, 1]) < 0.4))[0]
    nodes[on_right[0], 1] += 1e-3
    rve = load_rve(_write_rve(tmp_path, nodes, elems, "np"))
    with pytest.raises(InputError, match="not periodic"):
        rve.periodic_pairs()
