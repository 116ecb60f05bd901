"""The README's Python example runs as written (examples that run)."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_example():
    assert python_blocks()


@pytest.mark.skipif(importlib.util.find_spec("petsc4py") is None, reason="example uses the PETSc backend")
@pytest.mark.parametrize("block", python_blocks())
def test_readme_python_block_runs(block, capsys):
    namespace = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    if "log_a" in namespace:  # the femno.hybrid example: a real gradient came back
        g = namespace["log_a"].grad
        assert g is not None and bool(g.isfinite().all()) and float(g.abs().max()) > 0
        return
    assert "solver" in namespace
    stats = namespace["solver"].stats
    assert stats.converged and stats.residual <= 1e-8
    if "rve" in namespace:
        assert abs(namespace["rve"].volume_fraction() - 0.55) < 0.01
