"""The lower layers' plug points (solvers.neural, datagen.initial_guess, multiscale.micro):
filled by operators at import, lazily imported by module name when empty, clear errors."""

import subprocess
import sys

import pytest

from femno.datagen import initial_guess
from femno.errors import FemnoError, InputError
from femno.multiscale import micro
from femno.solvers import neural


def test_missing_entries_raise_clear_errors():
    with pytest.raises(FemnoError, match="register_neural_loader"):
        neural.neural_model_loader("no-such-loader")
    with pytest.raises(FemnoError, match="register_initial_guess"):
        initial_guess.provider("no-such-provider")
    with pytest.raises(FemnoError, match="register_micro_loader"):
        micro.micro_loader("no-such-kind")
    with pytest.raises(InputError):
        neural.register_neural_loader("x", None)


def test_missing_plugin_module_is_a_femno_error(monkeypatch):
    monkeypatch.setitem(neural.NEURAL_LOADER_PLUGINS, "ghost", "femno.no_such_module")
    with pytest.raises(FemnoError, match="not available"):
        neural.neural_model_loader("ghost")


def test_registration_fills_the_registry(monkeypatch):
    monkeypatch.setattr(initial_guess, "PROVIDERS", {})
    seen = []
    initial_guess.register_initial_guess("t", lambda p, f: "guess", check=lambda p, f: seen.append(p))
    initial_guess.check_initial_guess("m.pt", None, name="t")
    assert seen == ["m.pt"] and initial_guess.load_initial_guess("m.pt", None, name="t") == "guess"


def test_plugins_load_by_name_after_plain_import():
    """Without importing femno.operators, each plug point finds the operators' entry."""
    code = (
        "import sys, femno\n"
        "from femno.solvers import neural\n"
        "from femno.datagen import initial_guess\n"
        "from femno.multiscale import micro\n"
        "assert not any(m.startswith('femno.operators') for m in sys.modules)\n"
        "load, provider = neural.neural_model_loader(), initial_guess.provider()\n"
        "assert callable(micro.micro_loader('equino'))\n"
        "from femno.operators.checkpoint import load_model\n"
        "from femno.operators.surrogate import cached_initial_guess\n"
        "assert load is load_model and provider.load is cached_initial_guess\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
