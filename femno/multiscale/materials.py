r"""Plane-strain material laws of the RVE problems (SPEC §2), numpy and torch.

Strains and stresses are Voigt vectors in the order ``xx, yy, xy``.  Strain inputs
use the *engineering* shear :math:`e = [\varepsilon_{xx}, \varepsilon_{yy},
\gamma_{xy}]`, :math:`\gamma_{xy} = 2\varepsilon_{xy}`; stresses are
:math:`[\sigma_{xx}, \sigma_{yy}, \sigma_{xy}]`, so that :math:`\sigma \cdot e` is
the work density.  With the tensor strain :math:`\varepsilon = [e_0, e_1, e_2/2]`,
:math:`m = [1, 1, 0]`, :math:`\operatorname{tr}\varepsilon = e_0 + e_1`
(plane strain, :math:`\varepsilon_{zz} = 0`) and

.. math::

    \operatorname{dev}\varepsilon = \varepsilon - \tfrac13 \operatorname{tr}\varepsilon\, m,
    \qquad \|\operatorname{dev}\varepsilon\|^2 = d_{xx}^2 + d_{yy}^2 + 2 d_{xy}^2,

the laws are

* :class:`LinearElastic`: :math:`\sigma = K \operatorname{tr}\varepsilon\, m + 2G\operatorname{dev}\varepsilon`;
* :class:`NonlinearElasticMatrix`: :math:`\sigma = K \operatorname{tr}\varepsilon\, m +
  \operatorname{dev}\varepsilon\; \alpha / (\beta + \|\operatorname{dev}\varepsilon\|)`.

The tangent :math:`C = \partial\sigma/\partial e` (3x3, with respect to the
engineering strain) is exact.  Note that the matrix law as specified (norm over the
in-plane components only) has no strain energy, so its tangent is not symmetric.

>>> import numpy as np
>>> s, C = MATRIX.stress_and_tangent(np.array([[0.01, 0.0, 0.005]]))
>>> s.shape, C.shape
((1, 3), (1, 3, 3))
>>> s0, C0 = FIBRE.stress_and_tangent(np.zeros((1, 3)))
>>> round(float(C0[0, 2, 2]), 2)  # shear modulus G
29918.03
"""

from __future__ import annotations

import numpy as np

from femno.errors import InputError

__all__ = ["LinearElastic", "NonlinearElasticMatrix", "FIBRE", "MATRIX", "MATERIALS",
           "check_strains"]

_M = np.array([1.0, 1.0, 0.0])
# d(dev eps, tensor components xx, yy, xy) / d(engineering strain e)
_P = np.array([[2.0 / 3.0, -1.0 / 3.0, 0.0], [-1.0 / 3.0, 2.0 / 3.0, 0.0], [0.0, 0.0, 0.5]])
_W = np.array([1.0, 1.0, 2.0])


def check_strains(strains, *, what: str = "strain") -> np.ndarray:
    """Validate macro strains: array_like of shape (3,) or (n, 3), finite.

    Returns
    -------
    ndarray, shape (n, 3), float64

    >>> check_strains([0.01, 0.0, 0.0]).shape
    (1, 3)
    """
    try:
        e = np.asarray(strains, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be numeric: {exc}") from exc
    if e.ndim == 1:
        e = e[None, :]
    if e.ndim != 2 or e.shape[1] != 3:
        raise InputError(f"{what} must have shape (3,) or (n, 3) = [eps_xx, eps_yy, gamma_xy], "
                         f"got shape {np.shape(strains)}")
    if not np.all(np.isfinite(e)):
        raise InputError(f"{what} contains NaN or inf")
    return e


class LinearElastic:
    r"""Isotropic linear elasticity :math:`\sigma = K\operatorname{tr}\varepsilon\,m + 2G\operatorname{dev}\varepsilon`.

    Parameters
    ----------
    K, G : float
        Bulk and shear moduli (> 0).
    """

    def __init__(self, K: float, G: float):
        if not (K > 0 and G > 0):
            raise InputError(f"moduli must be positive, got K={K}, G={G}")
        self.K, self.G = float(K), float(G)
        self._C = self.K * np.outer(_M, _M) + 2.0 * self.G * _P

    def __repr__(self):
        return f"LinearElastic(K={self.K}, G={self.G})"

    def tangent(self) -> np.ndarray:
        """Constant tangent, shape (3, 3)."""
        return self._C.copy()

    def stress_and_tangent(self, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stress (n, 3) and tangent (n, 3, 3) at engineering strains ``eps`` (n, 3), float64."""
        eps = np.asarray(eps, dtype=np.float64)
        return eps @ self._C.T, np.broadcast_to(self._C, eps.shape[:-1] + (3, 3)).copy()

    def stress_torch(self, eps):
        """Differentiable stress of a torch tensor ``eps`` (..., 3)."""
        import torch

        C = torch.as_tensor(self._C, dtype=eps.dtype, device=eps.device)
        return eps @ C.T


class NonlinearElasticMatrix:
    r"""Nonlinear elastic matrix :math:`\sigma = K\operatorname{tr}\varepsilon\,m + \operatorname{dev}\varepsilon\,\alpha/(\beta + \|\operatorname{dev}\varepsilon\|)`.

    With :math:`d = P e` (:math:`P` maps engineering strain to deviatoric tensor
    components), :math:`n = \sqrt{d^T W d}`, :math:`W = \mathrm{diag}(1,1,2)`,
    :math:`f(n) = \alpha/(\beta+n)`:

    .. math:: C = K m m^T + f P - \frac{\alpha}{(\beta+n)^2\, n}\, d\,(W d)^T P .

    Parameters
    ----------
    K, alpha, beta : float
        Bulk modulus, deviatoric stress scale and strain scale (> 0); the small-strain
        shear modulus is :math:`\alpha / (2\beta)`.
    """

    def __init__(self, K: float, alpha: float, beta: float):
        if not (K > 0 and alpha > 0 and beta > 0):
            raise InputError(f"parameters must be positive, got K={K}, alpha={alpha}, beta={beta}")
        self.K, self.alpha, self.beta = float(K), float(alpha), float(beta)

    def __repr__(self):
        return f"NonlinearElasticMatrix(K={self.K}, alpha={self.alpha}, beta={self.beta})"

    def stress_and_tangent(self, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stress (n, 3) and tangent (n, 3, 3) at engineering strains ``eps`` (n, 3), float64."""
        eps = np.asarray(eps, dtype=np.float64)
        tr = eps[..., 0] + eps[..., 1]
        d = eps @ _P.T
        n = np.sqrt(np.einsum("...i,i,...i->...", d, _W, d))
        f = self.alpha / (self.beta + n)
        sigma = self.K * tr[..., None] * _M + f[..., None] * d
        g = self.alpha / ((self.beta + n) ** 2 * np.maximum(n, 1e-300))
        wdp = (d * _W) @ _P  # (W d)^T P
        C = (self.K * np.outer(_M, _M) + f[..., None, None] * _P
             - g[..., None, None] * d[..., :, None] * wdp[..., None, :])
        return sigma, C

    def stress_torch(self, eps):
        """Differentiable stress of a torch tensor ``eps`` (..., 3) (finite gradient at 0)."""
        import torch

        P = torch.as_tensor(_P, dtype=eps.dtype, device=eps.device)
        W = torch.as_tensor(_W, dtype=eps.dtype, device=eps.device)
        m = torch.as_tensor(_M, dtype=eps.dtype, device=eps.device)
        tr = eps[..., 0] + eps[..., 1]
        d = eps @ P.T
        n = torch.sqrt((d * d * W).sum(-1) + 1e-30)
        return self.K * tr[..., None] * m + (self.alpha / (self.beta + n))[..., None] * d


#: Fibre (material id 2): E = 73 GPa, nu = 0.22 (MPa units).
FIBRE = LinearElastic(43452.38, 29918.03)
#: Matrix (material id 1).
MATRIX = NonlinearElasticMatrix(4780.0, 50.0, 0.06)
#: Material id -> law, as in the RVE element files.
MATERIALS = {1: MATRIX, 2: FIBRE}
