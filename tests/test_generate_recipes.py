"""data_gen recipes: registered for `femno generate`, correct discretizations, tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")

ROOT = Path(__file__).resolve().parents[1]


def recipes():
    sys.path.insert(0, str(ROOT / "data_gen"))
    import recipes as mod

    return mod


@pytest.mark.parametrize("name, n", [("skr-darcy", 8), ("skr-thermal", 8), ("skr-poisson", 8),
                                     ("skr-helmholtz", 8), ("darcy3d", 3), ("skr-darcy-paper", 8)])
def test_recipe_dataset_solves_its_systems(tmp_path, name, n):
    from femno.datagen.generate import generate_dataset
    from femno.datagen.store import DatasetStore

    out = tmp_path / f"{name}.femno"
    s = generate_dataset(name, samples=6, out=str(out), block=4, family_options={"n": n},
                         progress=False, method="direct")
    assert s["done"] == 6 and s["failures"] == 0
    store = DatasetStore.open(out)
    fam = recipes().RECIPES[name](n=n)
    sol, idx = store.root["solution"][:], store.root["sample_index"][:]
    for row in (0, 5):
        system = fam.assemble(fam.sample(np.random.default_rng([0, int(idx[row])])))
        x = sol[row]
        assert np.linalg.norm(system.b - system.A @ x[system.free]) <= 1e-8 * np.linalg.norm(system.b)
        np.testing.assert_array_equal(x[store.root["fe/dirichlet"][:]],
                                      system.x_bc[store.root["fe/dirichlet"][:]])
    if name == "skr-thermal":  # maximum principle, and the edge temperatures are the data
        assert sol.min() >= -100 and sol.max() <= 100
        assert (store.root["inputs/t_left"][:] <= 0).all()
    if name == "skr-poisson":
        assert fam.fixed_matrix and np.abs(sol[:, store.root["fe/dirichlet"][:]]).max() > 0


def test_recipe_sizes_match_paper():
    mod = recipes()
    import skfem

    sizes = {"skr-darcy": 6400, "skr-helmholtz": 10000, "skr-thermal": 11223}
    for name, m in sizes.items():
        fam = mod.RECIPES[name]()
        assert fam.basis.N - len(fam.dirichlet_dofs()) == m
    # 3D default size without building the (slow) basis: Q1 hexahedra, n = 64
    assert (64 - 1) ** 3 >= 250_000
    assert mod.Darcy3D(n=2).mesh.__class__ is skfem.MeshHex1
    assert mod.SKRHelmholtz(n=4).spd is False and mod.SKRThermal(n=4).fixed_matrix


def test_paper_darcy_is_the_papers_matrix():
    """skr-darcy-paper: A = L5 diag(a), i.e. A x = L5 (a * x), nonsymmetric; 80^2 unknowns."""
    import scipy.sparse as sp

    mod = recipes()
    fam = mod.SKRDarcyPaper(n=6)
    params = fam.sample(np.random.default_rng(3))
    system = fam.assemble(params)
    m = 5  # interior nodes per side
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    L5 = (sp.kron(T, sp.eye(m)) + sp.kron(sp.eye(m), T)).toarray()
    a = params["a"][system.free]
    # node order of the free dofs: sort by (y, x) to compare with the Kronecker layout
    xy = fam.basis.doflocs[:, system.free]
    perm = np.lexsort((xy[0], xy[1]))
    A = system.A.toarray()[np.ix_(perm, perm)]
    np.testing.assert_allclose(A, L5 @ np.diag(a[perm]), rtol=1e-14)
    assert np.abs(A - A.T).max() > 1e-3  # not symmetric
    np.testing.assert_allclose(system.b, (1.0 / 6) ** 2)
    assert fam.spd is False and not fam.fixed_matrix
    assert mod.SKRDarcyPaper().basis.N - len(mod.SKRDarcyPaper().dirichlet_dofs()) == 6400
    with pytest.raises(Exception, match="positive nodal values"):
        fam.assemble({"a": -params["a"]})


def test_recipe_script_runs(tmp_path):
    out = tmp_path / "t.femno"
    p = subprocess.run([sys.executable, str(ROOT / "data_gen" / "skr_thermal.py"), "--samples",
                        "5", "--out", str(out), "--n", "6", "--block", "2", "--json",
                        "--method", "block"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["done"] == 5
    p = subprocess.run([sys.executable, "-m", "femno", "dataset", "inspect", str(out), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert json.loads(p.stdout)["family"] == "skr-thermal"


def test_recipes_ship_in_the_package_and_env_file_extends(tmp_path, monkeypatch):
    """Recipes resolve from the installed package (no data_gen/ needed); $FEMNO_RECIPES
    adds to them; a missing $FEMNO_RECIPES file is a clear error."""
    import femno
    from femno.datagen import runner
    from femno.errors import InputError
    from femno.fem.families import recipes as pkg

    assert Path(pkg.__file__).resolve().is_relative_to(Path(femno.__file__).resolve().parent)
    monkeypatch.delenv("FEMNO_RECIPES", raising=False)
    assert set(pkg.RECIPES) <= set(runner.recipe_registry())
    assert runner.load_family("skr-darcy", {"n": 4}).name == "skr-darcy"
    extra = tmp_path / "mine.py"
    extra.write_text("from femno.fem.families import Poisson\n"
                     "class Mine(Poisson):\n    name = 'mine'\n"
                     "RECIPES = {'mine': Mine}\n")
    monkeypatch.setenv("FEMNO_RECIPES", str(extra))
    reg = runner.recipe_registry()
    assert "mine" in reg and "skr-darcy" in reg
    monkeypatch.setenv("FEMNO_RECIPES", str(tmp_path / "missing.py"))
    with pytest.raises(InputError, match="FEMNO_RECIPES"):
        runner.recipe_registry()
