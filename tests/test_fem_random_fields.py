"""Gaussian random fields: statistics, determinism, input validation."""

import numpy as np
import pytest

from femno.errors import InputError
from femno.fem import GaussianRandomField, gaussian_field, lognormal_field

BOX = ([0.0, 0.0], [1.0, 1.0])


@pytest.mark.parametrize(
    "kernel,nu,rho",
    [
        ("squared_exponential", 1.5, np.exp(-0.5)),
        ("matern", 1.5, (1 + np.sqrt(3)) * np.exp(-np.sqrt(3))),
    ],
)
def test_variance_and_correlation(kernel, nu, rho):
    length, var = 0.25, 2.0
    grf = GaussianRandomField(
        length=length, variance=var, kernel=kernel, nu=nu, points_per_length=6
    )
    assert grf.covariance(length) == pytest.approx(var * rho)
    # pairs of points at distance `length` (off-grid positions)
    a = np.array([[0.013, 0.071], [0.52, 0.007], [0.71, 0.02]])
    b = a + np.array([length * np.cos(0.7), length * np.sin(0.7)])
    far = a + np.array([0.0, 4 * length])
    S = grf.sample(
        np.vstack([a, b, far]), np.random.default_rng(123), size=2500, bbox=([0, 0], [1, 1.1])
    )
    assert S.shape == (2500, 9)
    assert np.allclose(S.var(axis=0), var, rtol=0.1)
    assert abs(S.mean()) < 0.1
    k = len(a)
    corr = [np.corrcoef(S[:, i], S[:, k + i])[0, 1] for i in range(k)]
    np.testing.assert_allclose(corr, rho, atol=0.06)
    corr_far = [np.corrcoef(S[:, i], S[:, 2 * k + i])[0, 1] for i in range(k)]
    assert np.all(np.abs(corr_far) < 0.08)


def test_deterministic_and_many_points():
    pts = np.random.default_rng(0).random((10**6, 2))
    g1 = gaussian_field(pts, length=0.05, rng=np.random.default_rng(7), bbox=BOX)
    g2 = gaussian_field(pts, length=0.05, rng=np.random.default_rng(7), bbox=BOX)
    g3 = gaussian_field(pts, length=0.05, rng=np.random.default_rng(8), bbox=BOX)
    assert g1.shape == (10**6,) and g1.dtype == np.float64
    np.testing.assert_array_equal(g1, g2)
    assert not np.allclose(g1, g3)
    # same field for a subset of the points when the box is fixed
    g4 = gaussian_field(pts[:10], length=0.05, rng=np.random.default_rng(7), bbox=BOX)
    np.testing.assert_allclose(g4, g1[:10], atol=1e-12)


def test_lognormal_and_3d():
    pts = np.random.default_rng(1).random((500, 3))
    a = lognormal_field(pts, length=0.3, variance=0.5, mean=1.0, rng=np.random.default_rng(0))
    assert a.shape == (500,) and np.all(a > 0)
    assert np.log(a).mean() == pytest.approx(1.0, abs=0.6)


def test_bad_inputs():
    with pytest.raises(InputError, match="length"):
        GaussianRandomField(length=-1.0)
    with pytest.raises(InputError, match="variance"):
        GaussianRandomField(length=1.0, variance=float("nan"))
    with pytest.raises(InputError, match="unknown kernel 'rbf'"):
        GaussianRandomField(length=1.0, kernel="rbf")
    grf = GaussianRandomField(length=0.1)
    with pytest.raises(InputError, match="rng must be a numpy Generator"):
        grf.sample(np.zeros((3, 2)), 42)
    with pytest.raises(InputError, match="points"):
        grf.sample(np.zeros((3, 5)), np.random.default_rng(0))
    with pytest.raises(InputError, match="too large"):
        GaussianRandomField(length=1e-5).sample(
            np.array([[0, 0], [1, 1.0]]), np.random.default_rng(0)
        )
