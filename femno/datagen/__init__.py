r"""Fast generation of training data from parametric families.

:func:`solve_sequence` solves :math:`N` linear systems :math:`A_i x_i = b_i`
reusing whatever pays between them -- sorted Krylov subspace recycling (SKR,
GCRO-DR with a carried recycle space, as published), deflated CG, AMG hierarchy
reuse, sparse direct factorization / symbolic-analysis reuse, block solves for a fixed matrix --
and ``method="auto"`` picks the fastest from the structure and a short timed probe.
:mod:`femno.datagen.sorting` orders systems so that neighbours are similar.

>>> import numpy as np
>>> from femno.fem.families import get_family
>>> fam = get_family("darcy", n=8)
>>> rng = np.random.default_rng(0)
>>> systems = [fam.assemble(fam.sample(rng)) for _ in range(4)]
>>> res = solve_sequence(systems, method="direct")
>>> len(res.solutions), bool(res.converged.all())
(4, True)
"""

from femno.datagen.auto import analyze
from femno.datagen.generate import generate_dataset
from femno.datagen.sequence import (
    SEQUENCE_METHODS,
    SequenceResult,
    default_features,
    load_systems,
    solve_sequence,
)
from femno.datagen.sorting import (
    SORT_METHODS,
    chain_length,
    greedy_chain,
    grouped_chain,
    pca_order,
    sort_systems,
    two_opt,
)
from femno.datagen.store import DatasetStore, inspect_dataset


def __getattr__(name):  # FemnoDataset needs torch: import it only when asked for
    if name == "FemnoDataset":
        from femno.datagen.torch_dataset import FemnoDataset

        return FemnoDataset
    raise AttributeError(f"module 'femno.datagen' has no attribute {name!r}")


__all__ = [
    "generate_dataset",
    "DatasetStore",
    "inspect_dataset",
    "FemnoDataset",
    "solve_sequence",
    "SequenceResult",
    "SEQUENCE_METHODS",
    "load_systems",
    "default_features",
    "analyze",
    "sort_systems",
    "SORT_METHODS",
    "greedy_chain",
    "grouped_chain",
    "pca_order",
    "two_opt",
    "chain_length",
]
