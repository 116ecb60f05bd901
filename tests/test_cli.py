"""The `femno` command line: outputs, exit codes and error messages."""

import json
import subprocess
import sys

import pytest

from femno.cli.main import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands():
    proc = subprocess.run([sys.executable, "-m", "femno", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "solve" in proc.stdout and "info" in proc.stdout


def test_solve_help_names_families_and_pcs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["solve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("darcy", "helmholtz", "elasticity", "amg", "--backend"):
        assert word in out


def test_info_json(capsys):
    code, out, _ = run_cli(capsys, "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["backends"]["scipy"] is True
    assert info["packages"]["scikit-fem"]


def test_solve_darcy_amg_json(capsys):
    code, out, _ = run_cli(capsys, "solve", "darcy", "--n", "48", "--pc", "amg", "--json")
    assert code == 0
    res = json.loads(out)
    for key in ("dofs", "iterations", "residual", "converged", "setup_s", "solve_s"):
        assert key in res
    assert res["dofs"] == 47 * 47
    assert res["converged"] is True and res["residual"] <= 1e-8
    assert 1 <= res["iterations"] <= 30  # AMG-PCG, not plain CG


def test_solve_table_output(capsys):
    code, out, _ = run_cli(capsys, "solve", "poisson", "--n", "16")
    assert code == 0
    assert "iterations" in out and "converged" in out


@pytest.mark.parametrize("family", ["poisson", "darcy-pwc", "helmholtz", "heat", "elasticity"])
def test_solve_every_family_converges(capsys, family):
    code, out, err = run_cli(capsys, "solve", family, "--n", "24", "--json")
    assert code == 0, err
    assert json.loads(out)["converged"] is True


def test_solve_same_seed_same_answer(capsys):
    r = []
    for seed in ("3", "3", "4"):
        code, out, _ = run_cli(capsys, "solve", "darcy", "--n", "16", "--seed", seed, "--json", "--solver", "direct")
        assert code == 0
        r.append(json.loads(out))
    assert r[0]["residual"] == r[1]["residual"]


def test_not_converged_exit_code(capsys):
    code, out, err = run_cli(capsys, "solve", "darcy", "--n", "32", "--pc", "none", "--maxiter", "3", "--json")
    assert code == 3
    assert json.loads(out)["converged"] is False
    assert "did not converge" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["solve", "nosuchfamily"], "nosuchfamily"),
        (["solve", "darcy", "--pc", "nosuchpc"], "nosuchpc"),
        (["solve", "darcy", "--rtol", "-1"], "rtol"),
        (["solve", "darcy", "--mesh", "/nonexistent/mesh.msh"], "mesh.msh"),
        (["solve", "darcy", "-o", "variance"], "KEY=VALUE"),
        (["solve", "darcy", "--petsc-option", "a=1"], "--backend petsc"),
    ],
)
def test_bad_input_exit_code_2(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err


def test_garbled_mesh_file(capsys, tmp_path):
    bad = tmp_path / "garbled.msh"
    bad.write_text("this is not a mesh\n$MeshFormat\n???")
    code, _, err = run_cli(capsys, "solve", "poisson", "--mesh", str(bad))
    assert code == 2
    assert "garbled.msh" in err


def test_mesh_file_round_trip(capsys, tmp_path):
    from femno.fem import unit_square

    path = tmp_path / "square.vtk"
    unit_square(8).save(str(path))
    code, out, err = run_cli(capsys, "solve", "poisson", "--mesh", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["dofs"] == 7 * 7


def test_save_and_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    vtu, png = tmp_path / "u.vtu", tmp_path / "u.png"
    code, _, err = run_cli(capsys, "solve", "darcy", "--n", "16", "--save", str(vtu), "--plot", str(png))
    assert code == 0, err
    assert vtu.stat().st_size > 0 and png.stat().st_size > 0
    import meshio

    m = meshio.read(vtu)
    assert "u" in m.point_data and m.point_data["u"].shape == (17 * 17,)


@pytest.mark.petsc
def test_solve_petsc_backend_json(capsys):
    code, out, err = run_cli(capsys, "solve", "darcy", "--n", "48", "--backend", "petsc", "--pc", "hypre", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["backend"] == "petsc" and res["converged"] is True and res["residual"] <= 1e-8


def test_console_script_runs():
    proc = subprocess.run(["femno", "solve", "darcy", "--n", "16", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["converged"] is True


def test_solve_reproduces_a_dataset_sample(capsys, tmp_path):
    """`femno solve --dataset P --sample I` and `femno solve FAMILY --sample I --seed S`
    rebuild dataset sample I exactly (same inputs, same solution to rounding)."""
    import numpy as np

    from femno.datagen import generate_dataset
    from femno.datagen.store import DatasetStore

    path = tmp_path / "ds"
    generate_dataset("darcy", samples=6, out=path, seed=7, block=3, method="direct",
                     family_options={"n": 8}, progress=False)
    root = DatasetStore.open(path).root
    row = int(np.flatnonzero(root["sample_index"][:] == 4)[0])
    stored = root["solution"][row]
    code, out, _ = run_cli(capsys, "solve", "--dataset", str(path), "--sample", "4",
                           "--solver", "direct", "--json")
    res = json.loads(out)
    assert code == 0 and res["inputs_identical"] and res["dataset_row"] == row
    assert res["solution_rel_diff"] <= 1e-12 and res["family"] == "darcy" and res["seed"] == 7
    # the same sample from the family name, seed and index alone
    code, out, _ = run_cli(capsys, "solve", "darcy", "--n", "8", "--seed", "7", "--sample", "4",
                           "--solver", "direct", "--json")
    assert code == 0
    assert abs(json.loads(out)["max_abs_u"] - np.abs(stored).max()) <= 1e-14 * np.abs(stored).max()
    # ... which is not what the plain --seed 7 draws
    code, out, _ = run_cli(capsys, "solve", "darcy", "--n", "8", "--seed", "7", "--solver",
                           "direct", "--json")
    assert abs(json.loads(out)["max_abs_u"] - np.abs(stored).max()) > 1e-6 * np.abs(stored).max()
    # bad requests are clear errors
    for argv, msg in ((("--sample", "6"), "0..5"), ((), "needs --sample"),
                      (("--sample", "1", "-o", "n=4"), "manifest")):
        code, _, err = run_cli(capsys, "solve", "--dataset", str(path), *argv)
        assert code == 2 and msg in err, err
    code, _, err = run_cli(capsys, "solve", "poisson", "--dataset", str(path), "--sample", "1")
    assert code == 2 and "holds 'darcy'" in err
    code, _, err = run_cli(capsys, "solve", "darcy", "--sample", "-1")
    assert code == 2 and ">= 0" in err
    (path / "done" / "block-000001.json").unlink()  # rows 3..5: an unfinished block
    code, _, err = run_cli(capsys, "solve", "--dataset", str(path), "--sample",
                           str(int(root["sample_index"][4])))
    assert code == 2 and "not computed yet" in err
