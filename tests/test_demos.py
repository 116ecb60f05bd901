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
