"""Every bad input gives one line ``femno: error: ...`` on stderr and the right exit code.

Exit codes (femno.cli.main): 0 ok, 1 internal error, 2 bad input, 3 not converged,
4 missing optional dependency.  No case may print a traceback.
"""

import json

import numpy as np
import pytest

from femno.cli.main import main

RAISING = 'raise RuntimeError("boom at import")\n'
SYNTAX = "def broken(:\n    pass\n"
NOT_FAMILY = "NotAFamily = 3\n\n\nclass Thing:\n    pass\n"
BUGGY = """from femno.fem import Family


class Buggy(Family):
    def sample(self, rng):
        return {"k": 1.0}

    def assemble_full(self, params, *, matrix=True):
        return params["missing"], None

    def features(self, params):
        return [0.0]
"""

BIG = "1000000"  # --n: ~1e12 elements, refused by the memory estimate before allocating

# (argv, exit code, fragment of the message); "{d}" is a directory with the files above
CASES = [
    # solve: names and numbers
    (["solve", "nosuch"], 2, "unknown family 'nosuch'"),
    (["solve", "darcy", "--solver", "nosuch"], 2, "invalid choice: 'nosuch'"),
    (["solve", "darcy", "--pc", "nosuch"], 2, "unknown preconditioner 'nosuch'"),
    (["solve", "darcy", "--n", "-3"], 2, "n must be an integer >= 1"),
    (["solve", "darcy", "--n", "0"], 2, "n must be an integer >= 1"),
    (["solve", "darcy", "--n", "abc"], 2, "invalid int value: 'abc'"),
    (["solve", "darcy", "--rtol", "-1"], 2, "--rtol must be a positive number"),
    (["solve", "darcy", "--rtol", "nan"], 2, "--rtol must be a positive number"),
    (["solve", "darcy", "--maxiter", "0"], 2, "maxiter must be a positive integer"),
    (["solve", "darcy", "--mmax", "0"], 2, "mmax must be a positive integer"),
    (["solve", "darcy", "--seed", "-1"], 2, "--seed must be >= 0"),
    (["solve", "darcy", "--element", "P9"], 2, "unknown element 'P9'"),
    (["solve", "darcy", "--mesh", "/nonexistent/mesh.msh"], 2, "does not exist"),
    (["solve", "darcy", "--n", BIG], 2, "use a smaller --n"),
    # solve: family options
    (["solve", "darcy", "-o", "variance=nan"], 2, "variance must be positive and finite"),
    (["solve", "darcy", "-o", "variance=inf"], 2, "variance must be positive and finite"),
    (["solve", "darcy", "-o", "variance=-1"], 2, "variance must be positive and finite"),
    (["solve", "darcy", "-o", "length=nan"], 2, "length must be positive and finite"),
    (["solve", "darcy", "-o", "badformat"], 2, "is not of the form KEY=VALUE"),
    (["solve", "darcy", "-o", "nosuchopt=1"], 2, "unknown option(s) ['nosuchopt']"),
    (["solve", "poisson", "-o", "source=nan"], 2, "option source must be finite"),
    (["solve", "poisson", "-o", "source=1+", "--n", "4"], 2, "cannot evaluate source '1+'"),
    (["solve", "poisson", "-o", "source=log(x-2)", "--n", "4"], 2, "not finite everywhere"),
    # solve: family files
    (["solve", "{d}/missing.py:Fam"], 2, "family file '{d}/missing.py' does not exist"),
    (["solve", "{d}/raising.py:Fam"], 2, "cannot import {d}/raising.py: RuntimeError: boom at import"),
    (["solve", "{d}/syntax.py:Fam"], 2, "cannot import {d}/syntax.py: SyntaxError"),
    (["solve", "{d}/notfam.py:Missing"], 2, "defines no 'Missing'"),
    (["solve", "{d}/notfam.py:NotAFamily"], 2, "is an object of type int, not a subclass of femno.fem.Family"),
    (["solve", "{d}/notfam.py:Thing"], 2, "is the class Thing, not a subclass of femno.fem.Family"),
    (["solve", "{d}:Fam"], 2, "is not a file"),
    (["solve", "{d}/buggy.py:Buggy", "--n", "4"], 2, "failed in assemble_full(): KeyError: 'missing'"),
    (["solve", "nosuch_module_xyz:Fam"], 2, "cannot import family module 'nosuch_module_xyz'"),
    # solve: preconditioners and PETSc options
    (["solve", "darcy", "--pc", "neural:missing.pt"], 2, "model file 'missing.pt' does not exist"),
    (["solve", "darcy", "--solver", "fcg", "--pc", "neural:{d}/garbage.pt"], 2, "not a readable femno model file"),
    (["solve", "darcy", "--backend", "petsc", "--petsc-option", "bad"], 2, "PETSc option 'bad' is not of the form"),
    (["solve", "darcy", "--petsc-option", "a=1"], 2, "--petsc-option needs --backend petsc"),
    (["solve", "darcy", "--backend", "petsc", "--petsc-option", "a=nan"], 2, "PETSc option a must be finite"),
    # generate
    (["generate", "darcy", "--samples", "0", "--out", "{d}/g"], 2, "samples must be an integer >= 1"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "--workers", "0"], 2, "workers must be an integer >= 1"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "--block", "0"], 2, "block must be an integer >= 1"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "-o", "variance=nan"], 2, "variance must be positive and finite"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "-o", "variance=inf"], 2, "variance must be positive and finite"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "-o", "foo=inf"], 2, "option foo must be finite"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "--rtol", "-1"], 2, "rtol must be a positive number below 1"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "--method", "nosuch"], 2, "unknown method 'nosuch'"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "--sort", "bad"], 2, "invalid choice: 'bad'"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "--n", BIG], 2, "use a smaller --n"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "--n", "-2"], 2, "n must be an integer >= 1"),
    (["generate", "nosuch", "--samples", "2", "--out", "{d}/g"], 2, "unknown family 'nosuch'"),
    (["generate", "{d}/raising.py:Fam", "--samples", "2", "--out", "{d}/g"], 2, "cannot import"),
    (["generate", "{d}/notfam.py:Thing", "--samples", "2", "--out", "{d}/g"], 2, "not a subclass of femno.fem.Family"),
    (["generate", "darcy", "--samples", "2", "--out", "{d}/g", "--warm-start", "{d}/missing.pt"], 2, "does not exist"),
    (["generate", "darcy", "--out", "{d}/g"], 2, "the following arguments are required: --samples"),
    # dataset, train
    (["dataset", "inspect", "{d}/nonexistent"], 2, "does not exist"),
    (["dataset", "inspect", "{d}/emptydir"], 2, "is not a femno dataset"),
    (["train", "spon", "--data", "{d}/nonexistent", "--out", "{d}/m.pt"], 2, "does not exist"),
    (["train", "baseline", "--arch", "fno", "--data", "{d}/nonexistent", "--out", "{d}/m.pt"], 2, "does not exist"),
    (["train", "equino", "--snapshots", "{d}/nonexistent", "--out", "{d}/m.pt"], 2, "does not exist"),
    (["train", "fno"], 2, "invalid choice: 'fno'"),
    # rve, fe2
    (["rve", "solve", "--rve", "NOSUCH", "--strain", "0.01", "0", "0"], 2, "unknown RVE 'NOSUCH'"),
    (["rve", "solve", "--rve", "rve1", "--strain", "0.01", "0", "0"], 2, "did you mean RVE1?"),
    (["rve", "snapshots", "--rve", "NOSUCH", "--samples", "2", "--out", "{d}/s"], 2, "unknown RVE 'NOSUCH'"),
    (["rve", "evaluate", "{d}/missing.pt", "--test", "{d}/nonexistent"], 2, "does not exist"),
    (["fe2", "--macro", "nosuch"], 2, "unknown macro problem 'nosuch'"),
    (["fe2", "--micro", "nosuch"], 2, "unknown micro model 'nosuch'"),
    (["fe2", "--micro", "equino:{d}/missing.pt"], 2, "does not exist"),
    (["fe2", "--steps", "0"], 2, "steps must be an integer >= 1"),
    (["fe2", "--workers", "0"], 2, "--workers must be >= 1"),
    (["fe2", "--load", "nan"], 2, "load must be finite"),
    (["fe2", "--cell", "hex"], 2, "unknown cell 'hex'"),
    # top level
    (["nosuchcommand"], 2, "invalid choice: 'nosuchcommand'"),
    (["info", "--bogus"], 2, "unrecognized arguments: --bogus"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    (d / "raising.py").write_text(RAISING)
    (d / "syntax.py").write_text(SYNTAX)
    (d / "notfam.py").write_text(NOT_FAMILY)
    (d / "buggy.py").write_text(BUGGY)
    (d / "garbage.pt").write_text("garbage\n")
    (d / "emptydir").mkdir()
    return str(d)


def _check_one_line(err: str, code: int, fragment: str):
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("femno: error: "), err
    assert fragment in lines[0], err


@pytest.mark.parametrize("argv, code, fragment", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_one_line_error(capsys, files, argv, code, fragment):
    argv = [a.replace("{d}", files) for a in argv]
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == code, (got, err)
    _check_one_line(err, code, fragment.replace("{d}", files))


def _make_info_run(monkeypatch, func):
    """Make ``femno info`` call ``func`` (to drive main()'s handler with any exception)."""
    from femno.cli import main as cli

    parser_build = cli.build_parser

    def patched():
        parser = parser_build()
        parser._subparsers._group_actions[0].choices["info"].set_defaults(func=func)
        return parser

    monkeypatch.setattr(cli, "build_parser", patched)


def test_internal_error_is_one_line_and_debug_reraises(capsys, monkeypatch):
    import femno.cli.info as info

    def broken(args):
        raise ZeroDivisionError("division by zero in a command")

    monkeypatch.setattr(info, "run", broken)
    monkeypatch.delenv("FEMNO_DEBUG", raising=False)
    from femno.cli import main as cli

    _make_info_run(monkeypatch, broken)
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("femno: internal error: ZeroDivisionError: division by zero in a "
                           "command (set FEMNO_DEBUG=1 for the traceback)")
    monkeypatch.setenv("FEMNO_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["info"])


def test_memory_error_exit_2(capsys, monkeypatch):
    from femno.cli import main as cli

    def oom(args):
        raise MemoryError("Unable to allocate 7.28 TiB")

    _make_info_run(monkeypatch, oom)
    monkeypatch.delenv("FEMNO_DEBUG", raising=False)
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err
    _check_one_line(err, 2, "out of memory")
    assert "smaller --n" in err


def test_memory_estimate_allows_moderate_n():
    from femno.cli.solve import check_memory, estimate_memory
    from femno.fem import FAMILIES

    check_memory("darcy", {"n": 256})  # no error
    small, _ = estimate_memory(FAMILIES["darcy"], {"n": 256})
    big, _ = estimate_memory(FAMILIES["elasticity"], {"n": 256, "element": "P2"})
    assert small < 1e9 and big > small


def test_cg_on_indefinite_matrix_hints_minres(capsys):
    code = main(["solve", "helmholtz", "--n", "16", "--solver", "cg", "--pc", "none"])
    err = capsys.readouterr().err
    assert code == 3
    _check_one_line(err, 3, "did not converge")
    assert "indefinite" in err and "minres" in err


def test_spd_hint_nonsymmetric_and_indefinite():
    import scipy.sparse as sp

    from femno.solvers.factory import spd_hint

    n = 50
    lap = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1]).tocsr()
    assert spd_hint(lap) == ""
    nonsym = (lap + sp.diags([0.5 * np.ones(n - 1)], [1])).tocsr()
    assert "not symmetric" in spd_hint(nonsym) and "gmres" in spd_hint(nonsym)
    indef = (lap - 3.0 * sp.eye(n)).tocsr()
    assert "indefinite" in spd_hint(indef, reason="breakdown")


def test_cg_convergence_error_message_has_hint():
    import scipy.sparse as sp

    from femno.errors import ConvergenceError
    from femno.solvers import krylov

    n = 60
    A = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -0.2 * np.ones(n - 1)], [-1, 0, 1]).tocsr()
    with pytest.raises(ConvergenceError, match="not symmetric.*gmres"):
        krylov("cg", maxiter=3)(A, np.ones(n))


def test_petsc_rejected_option_is_bad_input(capsys):
    pytest.importorskip("petsc4py")
    code = main(["solve", "darcy", "--n", "4", "--backend", "petsc", "--petsc-option", "ksp_type=nosuch"])
    err = capsys.readouterr().err
    assert code == 2
    _check_one_line(err, 2, "femno: error: PETSc: ")
    assert "KSP type nosuch" in err


def test_solve_json_reports_norms(capsys):
    assert main(["solve", "poisson", "--n", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["max_abs_u"] > 0 and res["l2_norm_u_mass"] > 0
