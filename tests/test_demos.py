"""Every demo runs end to end on a small size (examples that run)."""

import subprocess
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parents[1] / "demos"


def test_darcy_solvers_demo(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, str(DEMOS / "darcy_solvers.py"), "--n", "16", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SA-AMG-PCG" in proc.stdout and "converged" in proc.stdout
    assert "NOT converged" not in proc.stdout
    assert out.stat().st_size > 10_000  # a real figure, not an empty canvas


def _run_demo(name, *args, timeout=600):
    proc = subprocess.run([sys.executable, str(DEMOS / name), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_rve_equino_demo(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "rve.png"
    stdout = _run_demo("rve_equino.py", "--samples", 4, "--modes", 3, "--epochs", 5,
                       "--lbfgs-iters", 2, "--out", out)
    assert "tangent" in stdout.lower()
    assert out.stat().st_size > 10_000


def test_neural_warm_start_demo():
    stdout = _run_demo("neural_warm_start.py", "--quick")
    assert "warm start" in stdout.lower() and "spon prediction" in stdout


def test_hybrid_inverse_darcy_demo():
    stdout = _run_demo("hybrid_inverse_darcy.py", "--n", 12, "--obs", 60, "--iters", 40)
    line = next(ln for ln in stdout.splitlines() if ln.startswith("relative L2 error of log a"))
    nums = [float(t.strip(",")) for t in line.replace("(constant)", "").split()
            if t.strip(",").replace(".", "", 1).isdigit()]
    start, recovered, best = nums
    assert recovered < 0.5 * start and best <= recovered + 1e-12


def test_hybrid_neural_law_demo():
    stdout = _run_demo("hybrid_neural_law.py", "--n", 8, "--steps", 600, "--hyperelastic")
    orders = next(ln for ln in stdout.splitlines() if "estimated orders" in ln)
    assert max(float(t.strip(",")) for t in orders.split(":")[1].split()) > 1.8
    assert "iterations" in stdout and "L2 difference" in stdout
    line = next(ln for ln in stdout.splitlines() if "neural vs exact law" in ln)
    assert float(line.split()[-1]) < 0.1  # the neural hyperelastic bar is close to the exact one
