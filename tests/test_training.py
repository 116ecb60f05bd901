"""The one training loop: resume after an interruption, checkpoint format, bad input."""

import pytest
import torch

from femno.errors import InputError
from femno.operators.checkpoint import load_model, read_checkpoint, register_model, save_model
from femno.operators.training import fit


@register_model("test-mlp")
class _MLP(torch.nn.Module):
    def __init__(self, width=8, seed=0):
        super().__init__()
        self.config = {"width": width, "seed": seed}
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, 1)).double()

    def forward(self, x):
        return self.net(x)


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 2, generator=g, dtype=torch.float64)
    return torch.utils.data.TensorDataset(x, torch.sin(3 * x[:, :1]) * x[:, 1:])


def _loss(m, b):
    return ((m(b[0]) - b[1]) ** 2).mean()


OPTS = dict(epochs=12, batch_size=16, lr=1e-2, lbfgs_iters=5, seed=3, device="cpu",
            progress=False)


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    ref = _MLP()
    fit(ref, _loss, _data(), **OPTS)

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def interrupting_loss(m, b):
        calls["n"] += 1
        if calls["n"] == 4 * 5 + 2:  # in the middle of epoch 6 (4 batches per epoch)
            raise Stop
        return _loss(m, b)

    ckpt = tmp_path / "m.state"
    model = _MLP()
    with pytest.raises(Stop):
        fit(model, interrupting_loss, _data(), checkpoint=ckpt, **OPTS)
    resumed = _MLP()
    res = fit(resumed, _loss, _data(), checkpoint=ckpt, resume=True, **OPTS)
    assert res.resumed_from == 5
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_validation_keeps_best_weights():
    model = _MLP()
    seen = []

    def val(m):
        v = float(_loss(m, _data().tensors))
        seen.append(v)
        return v

    res = fit(model, _loss, _data(), val_fn=val, **OPTS)
    assert res.best_val == min(seen)
    assert float(_loss(model, _data().tensors)) == pytest.approx(min(seen), rel=1e-12)


def test_checkpoint_round_trip_and_errors(tmp_path):
    m = _MLP(width=4)
    path = save_model(m, tmp_path / "m.pt", meta={"note": "x"})
    m2 = load_model(path, kind="test-mlp")
    assert m2.meta["note"] == "x" and "torch" in m2.meta["versions"]
    x = torch.rand(3, 2, dtype=torch.float64)
    assert torch.equal(m(x), m2(x))
    with pytest.raises(InputError, match="expected 'spon'"):
        load_model(path, kind="spon")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_bad_input():
    with pytest.raises(InputError, match="empty"):
        fit(_MLP(), _loss, torch.utils.data.TensorDataset(torch.zeros(0, 2)), progress=False)
    with pytest.raises(InputError):
        fit(_MLP(), _loss, _data(), epochs=-1, progress=False)


def test_lbfgs_history_records_the_loss_after_the_phase():
    model = _MLP()
    res = fit(model, _loss, _data(), **{**OPTS, "lbfgs_iters": 30})
    h = res.history[-1]
    assert h["phase"] == "lbfgs" and h["loss"] < h["start_loss"]
    full = next(iter(torch.utils.data.DataLoader(_data(), batch_size=len(_data()))))
    assert abs(h["loss"] - float(_loss(model, full))) <= 1e-12 * max(1.0, h["loss"])
