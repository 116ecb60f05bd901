"""Trajectory export (issue 20 item 5): The Well's loader and PDEBench's layout read it back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from femno.datagen.export import export_dataset, grid_values
from femno.datagen.generate_trajectory import generate_trajectories
from femno.datagen.store import DatasetStore
from femno.errors import InputError
from femno.fem.families import get_family

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    d = tmp_path_factory.mktemp("traj") / "heat"
    generate_trajectories("heat", samples=3, steps=5, out=d, block=2, family_options={"n": 8},
                          progress=False)
    return d


def test_well_export_is_read_by_the_wells_loader(traj, tmp_path):
    pytest.importorskip("the_well")
    from the_well.data import WellDataset

    info = export_dataset(traj, tmp_path / "w", format="well")
    assert info["shape"] == [3, 6, 9, 9] and info["max_interpolation_error"] < 1e-12
    ds = WellDataset(path=str(tmp_path / "w"), well_split_name="train", n_steps_input=1,
                     full_trajectory_mode=True, use_normalization=False)
    assert len(ds) == 3
    item = ds[2]
    U = DatasetStore.open(traj).root["solution"][2]  # rows are samples in index order here
    fam = get_family("heat", n=8)
    _, _, G, _ = grid_values(fam, U, 9, 9)
    got = np.concatenate([item["input_fields"].numpy(), item["output_fields"].numpy()])[..., 0]
    assert np.allclose(got, G, rtol=0, atol=1e-6 * np.abs(G).max())  # float32 in the file
    assert item["boundary_conditions"].tolist() == [[0, 0], [0, 0]]  # WALL on all four sides
    assert np.allclose(item["output_time_grid"].numpy(), 0.01 * np.arange(1, 6))


def test_pdebench_layout(traj, tmp_path):
    info = export_dataset(traj, tmp_path / "p", format="pdebench", name="heat")
    with h5py.File(info["file"], "r") as f:
        assert sorted(f.keys()) == ["0000", "0001", "0002"]
        data = f["0001/data"][:]
        assert data.shape == (6, 9, 9, 1) and f["0001/grid/t"].shape == (6,)
        assert np.allclose(f["0001/grid/x"][:], np.linspace(0, 1, 9))
    U = DatasetStore.open(traj).root["solution"][1]
    # nodal values of the structured P1 mesh, in [x, y] index order
    fam = get_family("heat", n=8)
    i = np.rint(fam.basis.doflocs[0] * 8).astype(int)
    j = np.rint(fam.basis.doflocs[1] * 8).astype(int)
    assert np.allclose(data[:, i, j, 0], U, atol=1e-6 * np.abs(U).max())


def test_grid_finer_than_the_mesh_records_an_interpolation_error(traj, tmp_path):
    # 17 points contain every vertex of the 8 x 8 mesh: back at the dofs exactly;
    # 13 points miss most vertices: the bilinear interpolant of the grid values is not u_h
    assert export_dataset(traj, tmp_path / "f", format="pdebench", nx=17, ny=17)[
        "max_interpolation_error"] < 1e-12
    assert export_dataset(traj, tmp_path / "g", format="pdebench", nx=13, ny=13)[
        "max_interpolation_error"] > 1e-3


def test_refusals(traj, tmp_path):
    with pytest.raises(InputError, match="format"):
        export_dataset(traj, tmp_path / "x", format="netcdf")
    steady = tmp_path / "steady"
    from femno.datagen.generate import generate_dataset

    generate_dataset("heat", samples=2, out=steady, block=2, family_options={"n": 4},
                     progress=False, method="direct")
    with pytest.raises(InputError, match="trajectories"):
        export_dataset(steady, tmp_path / "y", format="well")
    from femno.fem import lshape

    fam = get_family("heat", mesh=lshape(4))
    with pytest.raises(InputError, match="rectangular"):
        grid_values(fam, np.zeros(fam.basis.N), 5, 5)


def test_cli_export(traj, tmp_path, capsys):
    from femno.cli.main import main

    rc = main(["dataset", "export", str(traj), "--format", "well", "--out", str(tmp_path / "c"),
               "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["file"].endswith("data/train/femno_heat.hdf5")
