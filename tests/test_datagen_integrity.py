"""Datasets that cannot go silently wrong: checksums + verify + repair, writer lock, partial data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from femno.cli.main import main
from femno.errors import InputError

pytest.importorskip("zarr")

from femno.datagen.store import (  # noqa: E402
    DatasetDamagedError,
    DatasetLockedError,
    DatasetStore,
    lock_path,
    require_complete,
    writer_lock,
)

N, BLOCK = 24, 8
ARGS = ["darcy", "--n", "8", "--samples", str(N), "--block", str(BLOCK), "--method", "amg-cg"]
KW = dict(samples=N, block=BLOCK, family_options={"n": 8}, method="amg-cg", progress=False)


def gen(out, **kw):
    from femno.datagen.generate import generate_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return generate_dataset("darcy", out=str(out), **{**KW, **kw})


def arrays(path):
    store = DatasetStore.open(path)
    return {k: store.zroot[k][:] for k in store.array_names() if k != "stats/time"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.femno"
    res = gen(out)
    assert res["complete"]
    return out


@pytest.fixture
def copy(reference, tmp_path):
    out = tmp_path / "d.femno"
    shutil.copytree(reference, out)
    return out


def chunk(path, name, b):
    store = DatasetStore.open(path)
    arr = store.zroot[name]
    key = arr.metadata.encode_chunk_key((b,) + (0,) * (arr.ndim - 1))
    return Path(path) / "data.zarr" / name / key


def assert_same(p, q):
    a, b = arrays(p), arrays(q)
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k


def test_markers_hold_checksums_and_sizes(reference):
    store = DatasetStore.open(reference)
    m = store.marker(1)
    assert set(m["arrays"]) == set(store.block_arrays())
    assert "solution" in m["arrays"] and "sample_index" not in m["arrays"]
    rec = m["arrays"]["solution"]
    assert len(rec["sha256"]) == 64 and rec["files"] == {
        "c/1/0": chunk(reference, "solution", 1).stat().st_size}
    assert "sample_index" in store.manifest["checksums"]
    report = store.verify()
    assert report["ok"] and report["blocks_ok"] == 3 and not report["damaged"]


def test_verify_clean_exit_0(reference, tmp_path, capsys):
    assert main(["dataset", "verify", str(reference)]) == 0
    assert "all 3 blocks intact" in capsys.readouterr().out
    assert main(["dataset", "verify", str(reference), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["dataset", "verify", str(reference), "--quick"]) == 0
    assert main(["dataset", "verify", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_loader_items_refuse_chunk_lost_after_opening(copy):
    from femno.datagen.torch_dataset import FemnoDataset

    ds = FemnoDataset(copy)
    assert len(ds) == N and np.isfinite(ds[N - 1][1].numpy()).all()
    chunk(copy, "solution", 2).unlink()
    k = int(np.nonzero(ds.rows == 17)[0][0])
    with pytest.raises(InputError, match=r"'solution', chunk c/2/0 \(block 2, samples 16-23\)"):
        ds[k]
    ds[0]  # other blocks still read
    with pytest.raises(InputError, match="femno generate"):
        DatasetStore.open(copy).root["solution"].get_orthogonal_selection((np.arange(N),))


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_chunk_detected_refused_and_repaired(reference, copy, capsys, damage):
    f = chunk(copy, "solution", 1)
    if damage == "delete":
        f.unlink()
    else:
        f.write_bytes(f.read_bytes()[:100])
    # verify: exit 1, names the block by sample range
    assert main(["dataset", "verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "block 1 (samples 8-15): solution:" in out
    assert ("missing" if damage == "delete" else "100 bytes") in out
    assert "block 0" not in out and "block 2" not in out
    assert main(["dataset", "verify", str(copy), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert [d["block"] for d in rep["damaged"]] == [1] and rep["damaged"][0]["samples"] == [8, 15]
    # inspect no longer claims complete
    assert main(["dataset", "inspect", str(copy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert not info["complete"] and info["blocks_damaged"] == [1]
    # the loader refuses with the array, the samples and the repair command
    from femno.datagen.torch_dataset import FemnoDataset

    with pytest.raises(InputError) as exc:
        FemnoDataset(copy)
    msg = str(exc.value)
    assert "solution" in msg and "8-15" in msg and "femno generate" in msg
    assert f"femno dataset verify {copy}" in msg
    # reads of the store refuse too (never NaN rows / bare zstd errors)
    store = DatasetStore.open(copy)
    with pytest.raises(DatasetDamagedError) as exc:
        store.array("solution")[:]
    msg = str(exc.value)
    assert "'solution'" in msg and "c/1/0" in msg and "8-15" in msg and "femno generate" in msg
    assert np.isfinite(store.array("solution")[0:8]).all()  # intact blocks still read
    # the same generate command repairs exactly that block, bit-identical
    assert main(["generate", *ARGS, "--out", str(copy), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res.get("repaired_blocks", [1]) == [1] and res["done"] == BLOCK
    assert_same(copy, reference)
    assert main(["dataset", "verify", str(copy)]) == 0


def test_bitflip_checksum_mismatch_repaired(reference, copy, capsys):
    store = DatasetStore.open(copy, mode="r+")
    bad = store.zroot["inputs/a"][16:24].copy()
    bad[3].flat[5] += 1.0
    store.zroot["inputs/a"][16:24] = bad
    f = chunk(copy, "inputs/a", 2)  # make the chunk size agree: only the checksum tells
    marker = Path(copy) / "done" / "block-000002.json"
    m = json.loads(marker.read_text())
    m["arrays"]["inputs/a"]["files"]["c/2/0/0"] = f.stat().st_size
    marker.write_text(json.dumps(m))
    assert DatasetStore.open(copy).verify(quick=True)["ok"]
    rep = store.verify()
    assert [(d["block"], p["array"], p["problem"]) for d in rep["damaged"]
            for p in d["problems"]] == [(2, "inputs/a", "checksum mismatch")]
    assert main(["dataset", "verify", str(copy)]) == 1
    assert "block 2 (samples 16-23): inputs/a: checksum mismatch" in capsys.readouterr().out
    res = gen(copy)
    assert res["repaired_blocks"] == [2] and res["done"] == BLOCK
    assert_same(copy, reference)


def test_missing_marker_reported_and_resumed(reference, copy, capsys):
    (Path(copy) / "done" / "block-000002.json").unlink()
    assert main(["dataset", "verify", str(copy)]) == 1
    assert "incomplete: 1 of 3 blocks not generated yet (blocks 2)" in capsys.readouterr().out
    with pytest.warns(RuntimeWarning, match="16 of 24 samples complete"):
        from femno.datagen.torch_dataset import FemnoDataset

        ds = FemnoDataset(copy)
    assert len(ds) == 16
    # training refuses an incomplete dataset unless --allow-partial
    data = ["--data", str(copy)]
    for cmd in (["train", "spon", *data], ["train", "baseline", "--arch", "fno", *data],
                ["train", "equino", "--snapshots", str(copy)]):
        code = main([*cmd, "--out", str(Path(copy).parent / "m.pt")])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "16 of 24 samples complete" in err and "--allow-partial" in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert require_complete(copy, allow_partial=True).done_rows().size == 16  # --allow-partial
    res = gen(copy)
    assert res["done"] == BLOCK and res["complete"]
    assert_same(copy, reference)
    assert require_complete(copy).done_rows().size == N


def test_static_damage_not_repairable(copy):
    chunk(copy, "sample_index", 0).unlink()
    rep = DatasetStore.open(copy).verify()
    assert rep["static"] and not rep["ok"]
    with pytest.raises(InputError, match="cannot be recomputed"):
        gen(copy)


HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, str(os.getpid()).encode())
    print("locked", flush=True)
    time.sleep(60)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl")
def test_second_writer_refused_exit_2(tmp_path, capsys):
    out = tmp_path / "new.femno"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path(out))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["generate", *ARGS, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "being written by another process" in err and f"pid {holder.pid}" in err
        assert not out.exists()  # nothing created by the refused process
        with pytest.raises(DatasetLockedError):
            with writer_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the lock with the holder: no stale lock
    with writer_lock(out):
        with writer_lock(out):  # re-entrant in one process
            pass
    assert not lock_path(out).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl")
def test_two_creators_one_valid_store(reference, tmp_path):
    out = tmp_path / "race.femno"
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "femno.cli.main", "generate", *ARGS, "--out", str(out)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(r[0] for r in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, err in results:
        if code == 2:
            assert "being written by another process" in err and "Traceback" not in err
    assert (out / "femno.json").is_file()
    assert DatasetStore.open(out).verify()["ok"]
    assert_same(out, reference)
