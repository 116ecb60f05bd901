"""The dataset store: layout, chunking by block, markers, creation leftovers, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from femno.errors import InputError

pytest.importorskip("zarr")

from femno.datagen.store import DatasetStore, inspect_dataset, write_json_atomic  # noqa: E402


def make(path, samples=10, block=4):
    manifest = {"format": "femno-dataset", "created": "now", "layout": {},
                "settings": {"samples": samples, "block": block, "family": "toy"}}
    arrays = {"solution": ((3,), "f8"), "sample_index": ((), "i8"),
              "stats/iterations": ((), "i8"), "stats/residual": ((), "f8"),
              "stats/time": ((), "f8"), "stats/converged": ((), "bool")}
    static = {"sample_index": np.arange(samples)[::-1], "mesh/points": np.zeros((4, 2))}
    return DatasetStore.create(path, manifest=manifest, arrays=arrays, static=static)


def test_create_chunks_and_fill(tmp_path):
    store = make(tmp_path / "d")
    assert store.n_blocks == 3 and store.rows(2) == (8, 10)
    assert store.root["solution"].chunks == (4, 3)
    assert np.isnan(store.root["solution"][:]).all()
    assert (store.root["stats/iterations"][:] == -1).all()
    assert store.root["sample_index"][0] == 9
    assert store.done_blocks() == set() and store.done_rows().size == 0


def test_block_write_and_marker(tmp_path):
    store = make(tmp_path / "d")
    store.write_block(1, {"solution": np.ones((4, 3)), "stats/iterations": np.arange(4),
                          "stats/residual": np.zeros(4), "stats/time": np.zeros(4),
                          "stats/converged": np.ones(4, bool)})
    assert store.done_blocks() == set()  # data without marker does not count
    store.mark_done(1, {"method": "x"})
    assert store.done_blocks() == {1}
    assert store.done_rows().tolist() == [4, 5, 6, 7]
    assert not list((tmp_path / "d" / "done").glob(".*tmp"))
    with pytest.raises(InputError, match="rows"):
        store.write_block(2, {"solution": np.ones((4, 3))})  # last block has 2 rows
    info = inspect_dataset(tmp_path / "d")
    assert info["samples_done"] == 4 and info["blocks_done"] == 1 and not info["complete"]
    assert info["stats"]["max_iterations"] == 3 and info["methods_used"] == ["x"]


def test_prepare_directory_rules(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        DatasetStore.prepare_directory(tmp_path / "f")
    d = tmp_path / "leftover"
    (d / "data.zarr").mkdir(parents=True)
    DatasetStore.prepare_directory(d)  # creation leftovers are cleared
    assert list(d.iterdir()) == []
    (d / "mine.txt").write_text("x")
    with pytest.raises(InputError, match="not a femno dataset"):
        DatasetStore.prepare_directory(d)


def test_open_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        DatasetStore.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a femno dataset"):
        DatasetStore.open(tmp_path / "empty")
    write_json_atomic(tmp_path / "empty" / "femno.json", {"format": "other"})
    with pytest.raises(InputError, match="manifest"):
        DatasetStore.open(tmp_path / "empty")
    make(tmp_path / "ok")
    m = json.loads((tmp_path / "ok" / "femno.json").read_text())
    assert m["arrays"]["solution"] == [[3], "f8"]
