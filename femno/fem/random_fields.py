r"""Stationary Gaussian random fields by circulant embedding (FFT).

A zero-mean stationary field :math:`g` with covariance
:math:`\operatorname{Cov}(g(x), g(y)) = C(|x - y|)` is sampled on a regular grid
of spacing :math:`h = \ell / p` (``p = points_per_length``) covering the bounding
box of the domain plus a padding of a few correlation lengths, on which the grid
covariance matrix is block circulant:

.. math:: C = F^{-1} \operatorname{diag}(\lambda) F, \qquad
          \lambda = \mathrm{FFT}(c), \qquad
          g_{\mathrm{grid}} = F^{-1} \operatorname{diag}(\sqrt{\lambda^+}) F w,
          \quad w \sim N(0, I),

where :math:`c` is the first row (covariance from grid point 0, minimum-image
distance on the torus) and :math:`\lambda^+ = \max(\lambda, 0)` (the tiny negative
eigenvalues of a truncated squared-exponential kernel are clipped).  Values at
arbitrary points are multilinear interpolants of the grid values.

Kernels (:math:`\sigma^2` = ``variance``, :math:`\ell` = ``length``):

* ``"squared_exponential"`` (alias ``"se"``):
  :math:`C(r) = \sigma^2 \exp(-r^2 / (2\ell^2))`;
* ``"matern"`` with smoothness :math:`\nu`:
  :math:`C(r) = \sigma^2 \frac{2^{1-\nu}}{\Gamma(\nu)} (\sqrt{2\nu} r/\ell)^\nu
  K_\nu(\sqrt{2\nu} r/\ell)` (``nu = 0.5`` is the exponential kernel).

>>> import numpy as np
>>> pts = np.random.default_rng(0).random((1000, 2))
>>> g = gaussian_field(pts, length=0.2, variance=2.0, rng=np.random.default_rng(1))
>>> g.shape, g.dtype
((1000,), dtype('float64'))
>>> a = lognormal_field(pts, length=0.2, variance=1.0, rng=np.random.default_rng(1))
>>> bool(np.all(a > 0))
True
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp
from scipy import special

from femno.errors import InputError

__all__ = ["GaussianRandomField", "FieldAtPoints", "gaussian_field", "lognormal_field"]

_KERNELS = {"squared_exponential": "se", "se": "se", "gaussian": "se", "matern": "matern"}


def _positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise InputError(
            f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


class GaussianRandomField:
    """Sampler of a stationary zero-mean Gaussian random field.

    Parameters
    ----------
    length : float, keyword-only
        Correlation length :math:`\\ell > 0`.
    variance : float, keyword-only
        Point variance :math:`\\sigma^2 > 0`.
    kernel : {"squared_exponential", "se", "matern"}, keyword-only
    nu : float, keyword-only
        Matérn smoothness (ignored for the squared exponential).
    points_per_length : float, keyword-only
        Grid points per correlation length (default 8; interpolation then
        reduces the point variance by < 1 %).
    padding : float, optional, keyword-only
        Padding added to the bounding box in each direction before the grid is
        made periodic; default ``4 * length`` (SE) or ``8 * length`` (Matérn).
    max_grid : int, keyword-only
        Largest allowed number of grid points (memory guard).

    Examples
    --------
    >>> import numpy as np
    >>> grf = GaussianRandomField(length=0.1, kernel="matern", nu=1.5)
    >>> x = np.zeros((2, 2)); x[1, 0] = 0.1
    >>> vals = grf.sample(x, np.random.default_rng(0), size=3, bbox=([0, 0], [1, 1]))
    >>> vals.shape
    (3, 2)
    >>> round(float(grf.covariance(0.1)), 4)
    0.4834
    """

    def __init__(
        self,
        *,
        length: float,
        variance: float = 1.0,
        kernel: str = "squared_exponential",
        nu: float = 1.5,
        points_per_length: float = 8.0,
        padding: float | None = None,
        max_grid: int = 2**25,
    ):
        self.length = _positive(length, "length")
        self.variance = _positive(variance, "variance")
        if kernel not in _KERNELS:
            raise InputError(f"unknown kernel {kernel!r}; valid: {sorted(_KERNELS)}")
        self.kernel = _KERNELS[kernel]
        self.nu = _positive(nu, "nu")
        self.points_per_length = _positive(points_per_length, "points_per_length")
        default_pad = (4.0 if self.kernel == "se" else 8.0) * self.length
        self.padding = default_pad if padding is None else float(padding)
        if not np.isfinite(self.padding) or self.padding < 0:
            raise InputError(f"padding must be >= 0, got {padding!r}")
        self.max_grid = int(max_grid)
        self._cache: dict = {}

    def covariance(self, r) -> np.ndarray:
        """Covariance :math:`C(r)` at distances ``r`` (array_like, float64)."""
        r = np.abs(np.asarray(r, dtype=np.float64)) / self.length
        if self.kernel == "se":
            return self.variance * np.exp(-0.5 * r**2)
        nu = self.nu
        s = np.sqrt(2.0 * nu) * r
        if nu == 0.5:
            return self.variance * np.exp(-s)
        if nu == 1.5:
            return self.variance * (1.0 + s) * np.exp(-s)
        if nu == 2.5:
            return self.variance * (1.0 + s + s**2 / 3.0) * np.exp(-s)
        with np.errstate(invalid="ignore"):
            c = 2.0 ** (1.0 - nu) / special.gamma(nu) * s**nu * special.kv(nu, s)
        return self.variance * np.where(s == 0, 1.0, c)

    def _grid(self, lo: np.ndarray, hi: np.ndarray):
        key = (tuple(np.round(lo, 12)), tuple(np.round(hi, 12)))
        if key in self._cache:
            return self._cache[key]
        h = self.length / self.points_per_length
        shape = tuple(
            sfft.next_fast_len(max(int(np.ceil((hi[d] - lo[d] + self.padding) / h)) + 1, 2))
            for d in range(len(lo))
        )
        if int(np.prod(shape, dtype=np.float64)) > self.max_grid:
            raise InputError(
                f"random-field grid {shape} too large for length={self.length} on a box of "
                f"size {tuple(hi - lo)}; increase length or lower points_per_length"
            )
        r2 = np.zeros(shape)
        for d, n in enumerate(shape):
            k = np.arange(n)
            dist = np.minimum(k, n - k) * h
            r2 = r2 + (dist**2).reshape([-1 if j == d else 1 for j in range(len(shape))])
        lam = sfft.rfftn(self.covariance(np.sqrt(r2))).real
        sqrt_lam = np.sqrt(np.maximum(lam, 0.0))
        self._cache[key] = (h, shape, sqrt_lam)
        return self._cache[key]

    def sample_grid(self, rng: np.random.Generator, *, lo, hi, size: int | None = None):
        """Sample grid values; returns ``(h, values)`` with values of shape ``(size, *grid)``."""
        h, shape, sqrt_lam = self._grid(np.asarray(lo, float), np.asarray(hi, float))
        m = 1 if size is None else int(size)
        w = rng.standard_normal((m,) + shape)
        axes = tuple(range(1, len(shape) + 1))
        g = sfft.irfftn(sfft.rfftn(w, axes=axes) * sqrt_lam, s=shape, axes=axes)
        return h, g

    def sample(self, points, rng: np.random.Generator, *, size: int | None = None, bbox=None):
        """Sample the field at ``points``.

        Parameters
        ----------
        points : array_like, shape (n, d), float64
            Evaluation points, ``d`` in {1, 2, 3}.
        rng : numpy.random.Generator
            Source of randomness; the result is a deterministic function of its state.
        size : int, optional, keyword-only
            Number of independent samples; ``None`` returns one sample.
        bbox : (lo, hi), optional, keyword-only
            Box the grid covers; default the bounding box of ``points``.  Fix it to
            get the same field for different point sets from the same seed.

        Returns
        -------
        ndarray, shape (n,) or (size, n), float64

        For repeated samples at the same points use :meth:`at`, which validates the
        points and builds the interpolation once.
        """
        return self.at(points, bbox=bbox).sample(rng, size=size)

    def at(self, points, *, bbox=None) -> FieldAtPoints:
        """The field restricted to fixed ``points`` (n, d): a sampler with cached interpolation.

        >>> import numpy as np
        >>> grf = GaussianRandomField(length=0.2)
        >>> pts = np.random.default_rng(0).random((50, 2))
        >>> f = grf.at(pts, bbox=([0, 0], [1, 1]))
        >>> a = f.sample(np.random.default_rng(3))
        >>> b = grf.sample(pts, np.random.default_rng(3), bbox=([0, 0], [1, 1]))
        >>> bool(np.array_equal(a, b)), a.shape
        (True, (50,))
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[:, None]
        if pts.ndim != 2 or pts.shape[1] not in (1, 2, 3):
            raise InputError(f"points must have shape (n, d) with d in 1..3, got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise InputError("points contain NaN or inf")
        if bbox is None:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
        else:
            lo, hi = (np.asarray(v, dtype=np.float64).ravel() for v in bbox)
            if lo.shape != (pts.shape[1],) or hi.shape != lo.shape or np.any(hi < lo):
                raise InputError(f"bbox must be (lo, hi) with {pts.shape[1]} coordinates each")
            if np.any(pts < lo - 1e-12) or np.any(pts > hi + 1e-12):
                raise InputError("points lie outside bbox")
        return FieldAtPoints(self, pts, lo, hi)


class FieldAtPoints:
    r"""A :class:`GaussianRandomField` at fixed points: :math:`g(x_i) = (P\, g_{	ext{grid}})_i`.

    :math:`P` (n, grid size) is the sparse multilinear interpolation matrix (``2**d``
    entries per row), built once; a sample costs one FFT pair on the grid and one
    sparse mat-vec.  Made by :meth:`GaussianRandomField.at`.
    """

    def __init__(self, field: GaussianRandomField, pts: np.ndarray, lo, hi):
        self.field, self.lo, self.hi = field, lo, hi
        self.h, self.shape, _ = field._grid(lo, hi)
        self.P = _interpolation_matrix(self.shape, (pts - lo) / self.h)

    def sample(self, rng: np.random.Generator, *, size: int | None = None) -> np.ndarray:
        """Values at the points: shape (n,), or (size, n) with ``size``; float64."""
        rng = _check_rng(rng)
        _, g = self.field.sample_grid(rng, lo=self.lo, hi=self.hi, size=size)
        out = (self.P @ g.reshape(g.shape[0], -1).T).T
        return out[0] if size is None else out


def _interpolation_matrix(shape: tuple, s: np.ndarray) -> sp.csr_matrix:
    """Multilinear interpolation of periodic grid data (``shape``) at grid coordinates s (n, d).

    Rows hold the ``2**d`` corner weights in corner order (the sum runs in that order).
    """
    n, d = s.shape
    i0 = np.floor(s).astype(np.int64)
    f = s - i0
    strides = np.cumprod((1,) + shape[::-1])[:-1][::-1]
    idx = np.zeros((n, 2**d), dtype=np.int64)
    w = np.ones((n, 2**d))
    for corner in range(2**d):
        for k in range(d):
            bit = (corner >> k) & 1
            idx[:, corner] += ((i0[:, k] + bit) % shape[k]) * strides[k]
            w[:, corner] *= f[:, k] if bit else 1.0 - f[:, k]
    size = int(np.prod(shape))
    itype = np.int32 if size < 2**31 and n * 2**d < 2**31 else np.int64
    indptr = np.arange(0, n * 2**d + 1, 2**d, dtype=itype)
    return sp.csr_matrix((w.ravel(), idx.ravel().astype(itype), indptr), shape=(n, size))


def gaussian_field(
    points,
    *,
    length: float,
    variance: float = 1.0,
    kernel: str = "squared_exponential",
    nu: float = 1.5,
    rng: np.random.Generator,
    bbox=None,
) -> np.ndarray:
    """One sample of a zero-mean stationary GRF at ``points`` (n, d); returns (n,) float64.

    See :class:`GaussianRandomField`.  For repeated sampling, build the class once
    (it caches the FFT of the covariance).
    """
    grf = GaussianRandomField(length=length, variance=variance, kernel=kernel, nu=nu)
    return grf.sample(points, rng, bbox=bbox)


def lognormal_field(
    points,
    *,
    length: float,
    variance: float,
    mean: float = 0.0,
    kernel: str = "squared_exponential",
    rng: np.random.Generator,
    bbox=None,
) -> np.ndarray:
    r"""Log-normal field :math:`a(x) = \exp(\mu + g(x))`, :math:`g` a zero-mean GRF.

    ``mean`` is :math:`\mu`, the mean of :math:`\log a`; ``variance`` is that of
    :math:`g`.  Returns shape (n,) float64, strictly positive.
    """
    try:
        mu = float(mean)
    except (TypeError, ValueError):
        raise InputError(f"mean must be a number, got {mean!r}") from None
    if not np.isfinite(mu):
        raise InputError(f"mean must be finite, got {mean!r}")
    g = gaussian_field(points, length=length, variance=variance, kernel=kernel, rng=rng, bbox=bbox)
    return np.exp(mu + g)
