"""Adding a Krylov method is one function and one registry entry (issue 19, item 2).

A toy method registered from outside the package (here: preconditioned
steepest descent) is used from ``krylov()``, ``solve_sequence``, the PETSc backend's
method table and ``femno solve --solver``; nothing else is edited.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from femno.errors import InputError
from femno.solvers import krylov
from femno.solvers.base import Preconditioner
from femno.solvers.methods import (
    KRYLOV_METHODS,
    KrylovMethod,
    krylov_method,
    register_krylov_method,
    unregister_krylov_method,
)


def steepest_descent(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None,
                     callback=None, calls=None):
    """Preconditioned steepest descent: x += (r.z / z.Az) z, z = M r."""
    if calls is not None:
        calls.append(1)
    x = np.zeros_like(b) if x0 is None else x0.astype(float).copy()
    bn = np.linalg.norm(b)
    r = b - A @ x
    res, its = [np.linalg.norm(r) / bn], 0
    while res[-1] * bn > max(rtol * bn, atol) and its < (maxiter or 10000):
        z = r if M is None else M(r)
        Az = A @ z
        x += (r @ z) / (z @ Az) * z
        r = b - A @ x
        its += 1
        res.append(np.linalg.norm(r) / bn)
        if callback is not None:
            callback(x)
    return x, {"iterations": its, "residuals": res, "residual_kind": "true",
               "reason": "rtol" if res[-1] * bn <= max(rtol * bn, atol) else "maxiter"}


CALLS: list = []


@pytest.fixture()
def toy():
    entry = KrylovMethod("sd", steepest_descent, symmetric_pc=True, spd=True,
                         options=lambda solver: {"calls": CALLS},
                         petsc=("cg", "left", "unpreconditioned"), sequence_pc="jacobi")
    register_krylov_method(entry)
    CALLS.clear()
    yield entry
    unregister_krylov_method("sd")
    assert "sd" not in KRYLOV_METHODS


def laplace(n):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    return (sp.kron(T, sp.eye(n)) + sp.kron(sp.eye(n), T)).tocsr()


def test_toy_method_through_krylov(toy):
    A = laplace(12)
    b = np.ones(A.shape[0])
    s = krylov("sd", pc="jacobi", rtol=1e-8)
    x = s(A, b)
    assert s.stats.method == "sd" and s.stats.converged and CALLS
    assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
    cg = krylov("cg", pc="jacobi", rtol=1e-8)
    cg(A, b)
    assert s.stats.iterations > cg.stats.iterations  # steepest descent is slower than CG
    # the registry's symmetric_pc rule applies to it like to cg
    with pytest.raises(InputError, match="not symmetric"):
        krylov("sd", pc="ilu")


def test_toy_method_through_solve_sequence_and_petsc_table(toy):
    from femno.datagen import solve_sequence
    from femno.datagen.sequence import sequence_methods
    from femno.solvers.petsc_backend.options import METHODS as PETSC_METHODS

    assert sequence_methods()["sd"] == ("jacobi", False)
    assert PETSC_METHODS["sd"] == ("cg", "left", "unpreconditioned")
    A = laplace(10)
    systems = [((1.0 + 0.1 * i) * A, np.ones(A.shape[0])) for i in range(3)]
    res = solve_sequence(systems, method="sd", rtol=1e-8)
    assert all(res.converged) and len(CALLS) == 3
    for (Ai, bi), x in zip(systems, res.solutions, strict=True):
        assert np.linalg.norm(bi - Ai @ x) <= 1e-8 * np.linalg.norm(bi)


def test_toy_method_through_cli(toy, capsys):
    from femno.cli.main import main

    rc = main(["solve", "poisson", "--n", "12", "--solver", "sd", "--pc", "jacobi", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["solver"] == "sd" and out["converged"] and CALLS


def test_registration_rules(toy):
    with pytest.raises(InputError, match="already registered"):
        register_krylov_method(toy)
    register_krylov_method(toy, replace=True)
    for bad in ("cg", "direct", "Sd2", ""):
        with pytest.raises(InputError):
            register_krylov_method(KrylovMethod(bad, steepest_descent))
    with pytest.raises(InputError, match="petsc"):
        register_krylov_method(KrylovMethod("sd2", steepest_descent, petsc=("cg",)))
    with pytest.raises(InputError, match="built in"):
        unregister_krylov_method("gmres")
    with pytest.raises(InputError, match="valid: cg"):
        krylov_method("nope")
    with pytest.raises(InputError, match="unknown Krylov method"):
        krylov("nope")


class ScaledJacobi(Preconditioner):
    """A toy preconditioner defined outside femno: z = r / (scale * diag(A))."""

    name = "scaled-jacobi"
    symmetric = True

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = float(scale)

    def _setup(self, A):
        self.d = self.scale * A.diagonal()

    def apply(self, r):
        return np.asarray(r) / self.d


@pytest.fixture()
def toy_pc():
    from femno.solvers.precond import register_preconditioner, unregister_preconditioner

    register_preconditioner("scaled-jacobi", ScaledJacobi)  # symmetric from the class
    yield
    unregister_preconditioner("scaled-jacobi")


def test_toy_preconditioner_everywhere(toy_pc, capsys):
    from femno.cli.main import main
    from femno.datagen import solve_sequence
    from femno.solvers.precond import SYMMETRIC, register_preconditioner

    assert SYMMETRIC["scaled-jacobi"]
    A = laplace(10)
    b = np.ones(A.shape[0])
    s = krylov("cg", pc="scaled-jacobi", pc_options={"scale": 2.0})
    x = s(A, b)
    ref = krylov("cg", pc="jacobi")
    ref(A, b)
    assert s.stats.converged and s.stats.iterations == ref.stats.iterations  # a scaled PC: same CG
    assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
    res = solve_sequence([(A, b), (2.0 * A, b)], method="cg", pc="scaled-jacobi")
    assert all(res.converged)
    rc = main(["solve", "poisson", "--n", "12", "--solver", "cg", "--pc", "scaled-jacobi",
               "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["converged"]
    with pytest.raises(InputError, match="built-in"):
        register_preconditioner("ilu", ScaledJacobi, symmetric=False)
    with pytest.raises(InputError, match="symmetric="):
        register_preconditioner("toy2", lambda: None)
    register_preconditioner("toy-ns", ScaledJacobi, symmetric=False)
    try:
        with pytest.raises(InputError, match="not symmetric"):
            krylov("cg", pc="toy-ns")
    finally:
        from femno.solvers.precond import unregister_preconditioner

        unregister_preconditioner("toy-ns")


def test_toy_sequence_strategy_from_outside(capsys, tmp_path):
    """A sequence method registered from outside: solve_sequence, its validation and
    generate_dataset's --method use it."""
    from femno.datagen import generate_dataset, solve_sequence
    from femno.datagen.sequence import SEQUENCE_METHODS
    from femno.datagen.sequence_methods import (
        SequenceMethod,
        register_sequence_method,
        unregister_sequence_method,
    )
    from femno.datagen.strategy import KrylovStrategy

    built = []

    def build(o):
        built.append(o)
        return KrylovStrategy("cg", pc=o.pc, rtol=o.rtol, maxiter=o.maxiter, reuse_pc=False,
                              label=f"jacobi-cg+{o.pc}")

    register_sequence_method(SequenceMethod("jacobi-cg", build, default_pc="jacobi",
                                            pcs=("jacobi", "none")))
    try:
        assert SEQUENCE_METHODS["jacobi-cg"] == ("jacobi", False)
        A = laplace(10)
        res = solve_sequence([(A, np.ones(A.shape[0])), (2 * A, np.ones(A.shape[0]))],
                             method="jacobi-cg", rtol=1e-9)
        assert all(res.converged) and built[-1].pc == "jacobi" and built[-1].rtol == 1e-9
        with pytest.raises(InputError, match="jacobi-cg"):
            solve_sequence([(A, np.ones(A.shape[0]))], method="jacobi-cg", pc="ilu")
        s = generate_dataset("poisson", samples=3, out=tmp_path / "d", method="jacobi-cg",
                             family_options={"n": 8}, progress=False)
        assert s["complete"] and s["failures"] == 0
        with pytest.raises(InputError, match="built-in"):
            register_sequence_method(SequenceMethod("skr", build))
    finally:
        unregister_sequence_method("jacobi-cg")
    assert "jacobi-cg" not in SEQUENCE_METHODS


def test_toy_family_from_outside(capsys, tmp_path):
    """A family registered by name works in femno solve and generate_dataset."""
    from femno.cli.main import main
    from femno.datagen import generate_dataset
    from femno.fem.families import Darcy, register_family, unregister_family

    class WideDarcy(Darcy):
        name = "wide-darcy"

    register_family(WideDarcy)
    try:
        rc = main(["solve", "wide-darcy", "--n", "10", "--json"])
        assert rc == 0 and json.loads(capsys.readouterr().out)["family"] == "wide-darcy"
        s = generate_dataset("wide-darcy", samples=2, out=tmp_path / "w", method="direct",
                             family_options={"n": 6}, progress=False)
        assert s["complete"] and s["family"] == "wide-darcy"
        with pytest.raises(InputError, match="built-in"):
            register_family(Darcy)
        with pytest.raises(InputError, match="Family subclass"):
            register_family(int)
    finally:
        unregister_family("wide-darcy")
