"""Tests of femno.datagen.sorting: greedy / grouped chains, 2-opt, PCA order."""

import numpy as np
import pytest

from femno.datagen.sorting import (
    SORT_METHODS,
    chain_length,
    check_permutation,
    greedy_chain,
    grouped_chain,
    pca_order,
    sort_systems,
    two_opt,
)
from femno.errors import InputError
from femno.fem.families import get_family


@pytest.fixture(scope="module")
def field_features():
    """200 Gaussian-random-field coefficient features (Darcy family, coarse log a)."""
    fam = get_family("darcy", n=16, length=0.2)
    rng = np.random.default_rng(0)
    return np.array([fam.features(fam.sample(rng)) for _ in range(200)])


def is_perm(p, n):
    return sorted(np.asarray(p).tolist()) == list(range(n))


@pytest.mark.parametrize("method", [m for m in SORT_METHODS if m not in ("none", "random")])
def test_sort_lowers_chain_length_against_random(field_features, method):
    F = field_features
    order, seconds = sort_systems(F, method=method)
    assert is_perm(order, len(F)) and seconds >= 0
    sorted_len = chain_length(F, order)
    rng = np.random.default_rng(1)
    random_lens = [chain_length(F, rng.permutation(len(F))) for _ in range(5)]
    assert sorted_len < min(random_lens)
    if method != "pca":  # nearest-neighbour chains are much shorter than random ones
        assert sorted_len < 0.9 * min(random_lens)


def test_greedy_is_nearest_neighbour_chain(field_features):
    F = field_features[:50]
    order = greedy_chain(F, start=7)
    assert order[0] == 7 and is_perm(order, 50)
    visited = {int(order[0])}
    for t in range(1, 50):  # each step takes the nearest unvisited system
        d = np.linalg.norm(F - F[order[t - 1]], axis=1)
        d[list(visited)] = np.inf
        assert np.isclose(d[order[t]], d.min())
        visited.add(int(order[t]))


@pytest.mark.parametrize("groups", [None, 1, 3, 7, 500])
def test_grouped_chain_is_permutation(field_features, groups):
    order = grouped_chain(field_features, groups=groups)
    assert is_perm(order, len(field_features))
    assert order.dtype == np.int64


def test_two_opt_never_lengthens(field_features):
    F = field_features
    base = greedy_chain(F)
    better = two_opt(F, base)
    assert is_perm(better, len(F))
    assert chain_length(F, better) <= chain_length(F, base) + 1e-12
    # on a shuffled line 2-opt recovers a much shorter path
    x = np.random.default_rng(3).permutation(30).astype(float)[:, None]
    p = two_opt(x, np.arange(30))
    assert chain_length(x, p) < 0.5 * chain_length(x, np.arange(30))


def test_small_and_degenerate_inputs():
    assert greedy_chain(np.zeros((0, 3))).shape == (0,)
    assert greedy_chain([[1.0]]).tolist() == [0]
    assert is_perm(grouped_chain(np.ones((5, 2)), groups=2), 5)  # identical features
    assert is_perm(pca_order(np.ones((4, 2))), 4)
    assert chain_length([[0.0], [1.0]], [1, 0]) == 1.0
    o, _ = sort_systems(np.random.default_rng(0).normal(size=(10, 2)), method="random", seed=1)
    assert is_perm(o, 10)


def test_bad_inputs():
    with pytest.raises(InputError, match="unknown sort method"):
        sort_systems(np.ones((3, 2)), method="tsp")
    with pytest.raises(InputError, match="NaN"):
        greedy_chain([[0.0], [np.nan]])
    with pytest.raises(InputError, match="start"):
        greedy_chain(np.ones((3, 1)), start=3)
    with pytest.raises(InputError, match="groups"):
        grouped_chain(np.ones((3, 1)), groups=0)
    with pytest.raises(InputError, match="length 2 but there are 3"):
        check_permutation([0, 1], 3)
    with pytest.raises(InputError, match="not a permutation"):
        check_permutation([0, 2, 2], 3)
    with pytest.raises(InputError, match="outside"):
        check_permutation([0, 1, 3], 3)
    with pytest.raises(InputError, match=r"\(N, d\)"):
        sort_systems(np.ones((2, 2, 2)))
