"""Shared pytest configuration.

Tests marked ``petsc`` are skipped when petsc4py is missing, *except* under CI
(``CI`` set in the environment), where the PETSc backend must be built and tested:
there a missing petsc4py is an error, not a skip.
"""

import importlib.util
import os

import pytest

HAVE_PETSC = importlib.util.find_spec("petsc4py") is not None


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CI") and importlib.util.find_spec("sksparse") is None:
        raise pytest.UsageError("CI is set but scikit-sparse (CHOLMOD) is not installed: "
                                ".ci/run must install it (bash .ci/install --direct)")
    if HAVE_PETSC:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI is set but petsc4py is not installed: .ci/run must install it")
    skip = pytest.mark.skip(reason="petsc4py not installed (pip install 'femno[petsc]')")
    for item in items:
        if "petsc" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def probe_always(monkeypatch):
    """``auto`` probes every candidate: no size rule skips the probe, and the probe's
    allowance (PROBE_SHARE of the projected total, which keeps short runs from racing
    every candidate) is lifted for the tests that check the race itself."""
    import femno.datagen.auto as auto

    assert not hasattr(auto, "PROBE_SKIP_BANDWIDTH")
    monkeypatch.setattr(auto, "PROBE_SHARE", float("inf"))


def assert_scipy_petsc_agree(method, pc, A, b, *, rtol=1e-9, solution_tol):
    """The same method and femno preconditioner on scipy and on PETSc (PCPYTHON bridge):
    both converge, iteration counts within 1, solutions within ``solution_tol`` (relative)."""
    import numpy as np

    from femno.solvers import krylov

    a = krylov(method, pc=pc, rtol=rtol)
    p = krylov(method, pc=pc, rtol=rtol, backend="petsc")
    xa, xp = a(A, b), p(A, b)
    assert a.stats.converged and p.stats.converged
    assert abs(a.stats.iterations - p.stats.iterations) <= 1
    assert np.linalg.norm(xa - xp) <= solution_tol * np.linalg.norm(xa)
