r"""Rebuild one sample of a generated dataset from its manifest (``femno solve --dataset``).

A dataset's manifest holds the family spec, its constructor options and the seed; sample
``i`` has parameters ``family.sample(np.random.default_rng([seed, i]))``
(:func:`~femno.datagen.runner.sample_params`).  :func:`dataset_sample` rebuilds the family
the way ``femno generate`` did (:func:`~femno.datagen.runner.load_family`), draws sample
``i``'s parameters, assembles its system and returns it with the stored row, so that a
caller can re-solve it and compare:

>>> import tempfile, numpy as np
>>> from femno.datagen import generate_dataset
>>> from femno.solvers import direct
>>> path = tempfile.mkdtemp() + "/ds"
>>> _ = generate_dataset("poisson", samples=3, out=path, family_options={"n": 6},
...                      method="direct", progress=False)
>>> s = dataset_sample(path, 2)
>>> x = s["system"].expand(direct()(s["system"].A, s["system"].b))
>>> bool(np.allclose(x, s["stored_solution"], rtol=0, atol=1e-12))
True
"""

from __future__ import annotations

import numpy as np

from femno.datagen.store import DatasetStore
from femno.errors import InputError
from femno.fem.families.resolve import input_arrays, load_family, sample_params

__all__ = ["dataset_sample", "compare_with_stored"]


def dataset_sample(path, index: int) -> dict:
    """Sample ``index`` of the dataset at ``path``: rebuilt system and stored row.

    Returns
    -------
    dict
        ``settings`` (the manifest's), ``family``, ``params`` (the sample's parameters,
        drawn again), ``system`` (its :class:`~femno.fem.LinearSystem`, assembled again),
        ``stored_solution`` (n_dofs,) float64, ``stored_inputs`` {name: array} and
        ``row`` (its row in the store, which is in sorted order).

    Raises
    ------
    InputError
        ``path`` is no dataset, ``index`` is out of range, or its block is unfinished.
    """
    store = DatasetStore.open(path)
    settings = store.manifest["settings"]
    index = int(index)
    if not 0 <= index < store.samples:
        raise InputError(f"--sample must be in 0..{store.samples - 1} for {str(path)!r}, "
                         f"got {index}")
    rows = np.flatnonzero(store.zroot["sample_index"][:] == index)
    if rows.size != 1:
        raise InputError(f"sample {index} has {rows.size} rows in {str(path)!r}: the dataset is "
                         "damaged (femno dataset verify PATH)")
    row = int(rows[0])
    if row // store.block not in store.done_blocks():
        raise InputError(f"sample {index} of {str(path)!r} is not computed yet (its block is "
                         "unfinished): run the same femno generate command again to finish it")
    family = load_family(settings["family_spec"], dict(settings.get("family_options") or {}))
    params = sample_params(family, settings["seed"], index)
    root = store.root
    stored_inputs = {name: np.asarray(root[f"inputs/{name}"][row]) for name in root["inputs"]}
    return {"settings": settings, "family": family, "params": params,
            "system": family.assemble(params), "row": row,
            "stored_solution": np.asarray(root["solution"][row], dtype=np.float64),
            "stored_inputs": stored_inputs}


def compare_with_stored(sample: dict, field) -> dict:
    r"""How a re-solved full FE vector ``field`` and the re-drawn inputs match the stored row.

    Returns ``{"dataset_row", "inputs_identical", "solution_rel_diff"}`` with
    :math:`\|x - x_{\text{stored}}\|_2 / \|x_{\text{stored}}\|_2` (the solvers' tolerance
    decides how small it is; direct solves agree to rounding).
    """
    drawn = input_arrays(sample["params"])
    stored = sample["stored_inputs"]
    same = set(drawn) == set(stored) and all(
        np.array_equal(np.asarray(drawn[k], dtype=np.float64), stored[k]) for k in stored)
    ref = sample["stored_solution"]
    field = np.asarray(field, dtype=np.float64)
    if field.shape != ref.shape:
        raise InputError(f"re-solved vector has shape {field.shape}, the stored one {ref.shape}")
    rel = float(np.linalg.norm(field - ref) / max(np.linalg.norm(ref), np.finfo(float).tiny))
    return {"dataset_row": sample["row"], "inputs_identical": bool(same), "solution_rel_diff": rel}
