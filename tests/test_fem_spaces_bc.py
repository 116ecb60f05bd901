"""Spaces and boundary conditions: convergence rates, periodic problems, patch tests."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import skfem
from skfem.helpers import dot, grad
from skfem.models.poisson import laplace, mass

from femno.errors import InputError
from femno.fem import (
    Elasticity,
    apply_dirichlet,
    boundary_dofs,
    element,
    load_rve,
    make_basis,
    neumann_load,
    periodic_condense,
    periodic_master,
    periodic_projection,
    unit_square,
)

PI = np.pi


def _exact(x):
    return np.sin(PI * x[0]) * np.cos(PI * x[1]) + x[0] * x[1]


def _exact_grad(x):
    return np.array(
        [
            PI * np.cos(PI * x[0]) * np.cos(PI * x[1]) + x[1],
            -PI * np.sin(PI * x[0]) * np.sin(PI * x[1]) + x[0],
        ]
    )


@skfem.LinearForm
def _rhs(v, w):
    return 2 * PI**2 * np.sin(PI * w.x[0]) * np.cos(PI * w.x[1]) * v


@skfem.Functional
def _l2(w):
    return (w.uh - _exact(w.x)) ** 2


@skfem.Functional
def _h1(w):
    e = grad(w.uh) - _exact_grad(w.x)
    return dot(e, e)


def _errors(name, cell, n):
    basis = make_basis(unit_square(n, cell=cell), name, intorder=6)
    A, b = laplace.assemble(basis), _rhs.assemble(basis)
    Af, bf, free, x_bc = apply_dirichlet(A, b, basis, value=_exact)
    x = x_bc.copy()
    x[free] = spla.spsolve(Af.tocsc(), bf)
    D = boundary_dofs(basis)
    np.testing.assert_array_equal(x[D], _exact(basis.doflocs[:, D]))  # lifting exact
    uh = basis.interpolate(x)
    return np.sqrt(_l2.assemble(basis, uh=uh)), np.sqrt(_h1.assemble(basis, uh=uh))


@pytest.mark.parametrize(
    "name,cell,ns,l2_rate,h1_rate",
    [
        ("P1", "tri", (8, 16, 32), 2.0, 1.0),
        ("P2", "tri", (4, 8, 16), 3.0, 2.0),
        ("Q1", "quad", (8, 16, 32), 2.0, 1.0),
        ("Q2", "quad", (4, 8, 16), 3.0, 2.0),
        ("Q8", "quad", (4, 8, 16), 3.0, 2.0),
    ],
)
def test_convergence_rates(name, cell, ns, l2_rate, h1_rate):
    errs = np.array([_errors(name, cell, n) for n in ns])
    h = 1.0 / np.array(ns)
    s_l2 = np.polyfit(np.log(h), np.log(errs[:, 0]), 1)[0]
    s_h1 = np.polyfit(np.log(h), np.log(errs[:, 1]), 1)[0]
    assert abs(s_l2 - l2_rate) < 0.2, (s_l2, errs)
    assert abs(s_h1 - h1_rate) < 0.2, (s_h1, errs)


def test_element_names_and_errors():
    assert isinstance(element("P1"), skfem.ElementTriP1)
    assert isinstance(element("q2", cell="hex"), skfem.ElementHex2)
    assert isinstance(element("P1", cell="tet"), skfem.ElementTetP1)
    with pytest.raises(InputError, match=r"unknown element 'P7'.*\['P1', 'P2', 'Q1', 'Q2', 'Q8'\]"):
        element("P7")
    with pytest.raises(InputError, match="'Q8' is not available on 'hex'"):
        element("Q8", cell="hex")
    with pytest.raises(InputError, match=r"'Q1' does not match the tri mesh.*\['P1', 'P2'\]"):
        make_basis(unit_square(2), "Q1")
    with pytest.raises(InputError, match="does not match the quad mesh"):
        make_basis(unit_square(2, cell="quad"), skfem.ElementTriP1())
    assert isinstance(make_basis(skfem.MeshTet1()).elem, skfem.ElementTetP1)
    assert isinstance(make_basis(skfem.MeshHex1(), "Q2").elem, skfem.ElementHex2)


def test_neumann_load_and_components():
    basis = make_basis(unit_square(4), "P2")
    b = neumann_load(basis, lambda x: x[0], facets=lambda x: x[1] == 0.0)
    assert b.sum() == pytest.approx(0.5)  # int_0^1 x dx on the bottom edge
    vb = make_basis(unit_square(4, cell="quad"), vector=True)
    t = neumann_load(vb, np.array([2.0, -1.0]), facets=lambda x: x[0] == 1.0)
    ux, uy = vb.split_indices()
    assert t[ux].sum() == pytest.approx(2.0) and t[uy].sum() == pytest.approx(-1.0)
    left_y = boundary_dofs(vb, lambda x: x[0] == 0.0, component=1)
    assert len(left_y) == 5 and set(left_y) <= set(uy)
    with pytest.raises(InputError, match="unknown boundary 'top'"):
        boundary_dofs(vb, "top")


def _periodic_solution(x):
    return np.sin(2 * PI * x[0]) * np.cos(2 * PI * x[1]) + np.cos(2 * PI * x[0])


def _solve_periodic(basis, intorder_f=None):
    """-lap u + u = f with the periodic exact solution above."""

    @skfem.LinearForm
    def rhs(v, w):
        x = w.x
        return (
            (1 + 8 * PI**2) * np.sin(2 * PI * x[0]) * np.cos(2 * PI * x[1])
            + (1 + 4 * PI**2) * np.cos(2 * PI * x[0])
        ) * v

    A = laplace.assemble(basis) + mass.assemble(basis)
    P = periodic_projection(basis)
    Ap, bp = periodic_condense(A, rhs.assemble(basis), P)
    x = P @ spla.spsolve(Ap.tocsc(), bp)

    @skfem.Functional
    def err(w):
        return (w.uh - _periodic_solution(w.x)) ** 2

    return x, np.sqrt(err.assemble(basis, uh=basis.interpolate(x)))


@pytest.mark.parametrize("name,cell", [("P1", "tri"), ("Q2", "quad")])
def test_periodic_unit_square(name, cell):
    errs = []
    for n in (8, 16):
        basis = make_basis(unit_square(n, cell=cell), name, intorder=6)
        x, e = _solve_periodic(basis)
        errs.append(e)
        X = basis.doflocs
        for d in (0, 1):
            lo = np.nonzero(np.isclose(X[d], 0.0))[0]
            hi = np.nonzero(np.isclose(X[d], 1.0))[0]
            lo = lo[np.argsort(X[1 - d, lo])]
            hi = hi[np.argsort(X[1 - d, hi])]
            np.testing.assert_allclose(X[1 - d, lo], X[1 - d, hi])
            np.testing.assert_array_equal(x[lo], x[hi])
    rate = np.log2(errs[0] / errs[1])
    assert rate == pytest.approx(2.0 if name == "P1" else 3.0, abs=0.3), errs
    assert errs[1] < (5e-2 if name == "P1" else 1e-3)


def test_periodic_on_curved_rve():
    """Q8 on the curved RVE3 mesh (domain [-1/2, 1/2]^2) solves a periodic problem."""
    basis = make_basis(load_rve("RVE3").to_skfem(), intorder=5)
    x, e = _solve_periodic(basis)
    assert e < 5e-4
    master = periodic_master(basis)
    np.testing.assert_array_equal(x, x[master])


def test_periodic_mismatch():
    m = unit_square(4)
    p = m.p.copy()
    k = np.nonzero((p[0] == 1.0) & (p[1] == 0.5))[0][0]
    p[1, k] += 0.03  # a right-edge node without partner on the left edge
    m = skfem.MeshTri1(p, m.t)
    with pytest.raises(InputError, match="not periodic"):
        periodic_projection(make_basis(m))


def _distorted(cell, n=4, seed=0):
    m = unit_square(n, cell=cell)
    rng = np.random.default_rng(seed)
    p = m.p.copy()
    interior = np.all((p > 1e-12) & (p < 1 - 1e-12), axis=0)
    p[:, interior] += rng.uniform(-0.3, 0.3, (2, interior.sum())) / n
    return type(m)(p, m.t)


@pytest.mark.parametrize(
    "cell,name", [("tri", "P1"), ("tri", "P2"), ("quad", "Q1"), ("quad", "Q2")]
)
def test_elasticity_patch(cell, name):
    fam = Elasticity(mesh=_distorted(cell), element=name, nu=0.3)
    basis = fam.basis

    def u_lin(x):
        return np.array([0.1 + 0.2 * x[0] - 0.3 * x[1], -0.2 + 0.05 * x[0] + 0.4 * x[1]])

    K = fam.stiffness(2.5)
    Af, bf, free, x_bc = apply_dirichlet(K, np.zeros(basis.N), basis, value=u_lin)
    x = x_bc.copy()
    x[free] = spla.spsolve(Af.tocsc(), bf)
    ux, uy = basis.split_indices()
    exact = u_lin(basis.doflocs)
    np.testing.assert_allclose(x[ux], exact[0, ux], atol=1e-10)
    np.testing.assert_allclose(x[uy], exact[1, uy], atol=1e-10)
