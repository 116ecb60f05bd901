"""The own-family guide (docs/own-family.md, demos/my_family.py) runs end to end, and
the Poisson family with a given source matches manufactured solutions."""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from femno.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demos" / "my_family.py"
GUIDE = ROOT / "docs" / "own-family.md"
SPEC = f"{DEMO}:HotSpot"


def test_guide_shows_the_demo_file_verbatim():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert blocks, "docs/own-family.md has no python block"
    assert blocks[0] == DEMO.read_text(), "docs/own-family.md and demos/my_family.py differ"


def test_solve_own_family_json(capsys):
    code = main(["solve", SPEC, "--n", "16", "--json", "-o", "width=0.1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    assert res["converged"] and res["solver"] == "cg" and res["pc"] == "amg"
    # u = 0 on left/right only: 17 rows x 15 interior columns of P1 nodes are free
    assert res["dofs"] == 17 * 15
    assert 0 < res["max_abs_u"] and 0 < res["l2_norm_u_mass"] <= res["max_abs_u"]


def test_own_family_bad_option(capsys):
    assert main(["solve", SPEC, "--n", "4", "-o", "width=-1"]) == 2
    assert "width must be positive" in capsys.readouterr().err


def test_generate_own_family_and_load(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    from femno.datagen.torch_dataset import FemnoDataset

    out = tmp_path / "hotspot.femno"
    code = main(["generate", SPEC, "--n", "8", "--samples", "4", "--block", "2",
                 "--out", str(out), "--json"])
    res, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(res)
    assert summary["complete"] and summary["done"] == 4 and summary["family"] == "hotspot"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete dataset: no "incomplete" warning
        ds = FemnoDataset(out, dtype=torch.float64)
    assert len(ds) == 4 and sorted(ds.inputs) == ["a", "center"]
    x, y = ds[0]
    assert x.shape == (4,) and y.shape == (81,)  # 2 + 2 inputs; 9 x 9 P1 nodes
    assert torch.all(y[ds.dirichlet] == 0) and torch.any(y != 0)


def test_solve_accepts_recipe_names(capsys):
    code = main(["solve", "skr-darcy", "--n", "8", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["converged"]


# -- Poisson with a given source ----------------------------------------------------------
def test_poisson_unit_source_max(capsys):
    """-Δu = 1 on the unit square, u = 0 on the boundary: max u = 0.0736713..."""
    code = main(["solve", "poisson", "--n", "48", "-o", "source=1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert abs(json.loads(out)["max_abs_u"] - 0.0736713) < 1e-3


def _sin_sin_errors(n):
    from femno.fem.families.scalar import Poisson
    from femno.solvers import direct

    fam = Poisson(n=n, source="2*pi**2*sin(pi*x)*sin(pi*y)")
    system = fam.assemble(fam.sample(np.random.default_rng(0)))
    u = system.expand(direct()(system.A, system.b))
    x, y = fam.basis.doflocs
    e = u - np.sin(np.pi * x) * np.sin(np.pi * y)
    from skfem.models.poisson import mass

    M = mass.assemble(fam.basis)
    return np.abs(e).max(), np.sqrt(e @ (M @ e))


def test_poisson_manufactured_solution_second_order():
    errs = np.array([_sin_sin_errors(n) for n in (8, 16, 32)])
    rates = np.log2(errs[:-1] / errs[1:])  # (2 refinements, max/L2)
    assert np.all(rates > 1.8), rates
    assert errs[-1, 0] < 3e-3


def test_poisson_source_keeps_random_default():
    from femno.fem.families.scalar import Poisson

    fam = Poisson(n=4)
    p0, p1 = fam.sample(np.random.default_rng(0)), fam.sample(np.random.default_rng(1))
    assert "coef" in p0 and not np.allclose(p0["coef"], p1["coef"])


def test_demo_script_runs():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "AMG-CG iterations" in proc.stdout
