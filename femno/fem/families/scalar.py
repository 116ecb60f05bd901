r"""Scalar families: Poisson, Darcy (log-normal and checkerboard), Helmholtz, heat.

All use homogeneous Dirichlet conditions on the whole boundary and assemble through
scikit-fem forms with coefficients given at the quadrature points.
"""

from __future__ import annotations

import numpy as np
import skfem
from skfem.helpers import dot, grad
from skfem.models.poisson import laplace, mass

from femno.errors import InputError
from femno.fem.families.base import Family, fourier_source, positive_number

__all__ = ["Poisson", "Darcy", "DarcyPWC", "Helmholtz", "Heat"]


@skfem.BilinearForm
def _diffusion(u, v, w):
    return w.a * dot(grad(u), grad(v))


@skfem.BilinearForm
def _weighted_mass(u, v, w):
    return w.c * u * v


@skfem.LinearForm
def _source(v, w):
    return w.f * v


def _int_option(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"option {name!r} must be an integer >= {low}, got {value!r}")
    return int(value)


class _ScalarFamily(Family):
    """Shared helpers: cached Laplacian/mass, load vectors, Fourier sources."""

    def _matrix(self, key: str):
        if key not in self._cache:
            form = {"laplace": laplace, "mass": mass}[key]
            self._cache[key] = form.assemble(self.basis).tocsr()
        return self._cache[key]

    def _load(self, f) -> np.ndarray:
        r"""Load vector :math:`\int f v` for f a number, callable f(x) or (nelems, nqp) array."""
        if callable(f):
            x = self.basis.mapping.F(self.basis.X)
            f = np.asarray(f(x), dtype=np.float64)
        if np.ndim(f) == 0:
            fv = float(f)
            if not np.isfinite(fv):
                raise InputError(f"source f must be finite, got {f!r}")
            if "unit_load" not in self._cache:
                self._cache["unit_load"] = _source.assemble(self.basis, f=np.ones(self.qp_shape))
            return fv * self._cache["unit_load"]
        arr = self.coefficient(f, "f", positive=False)
        return _source.assemble(self.basis, f=arr)

    def _fourier_coef(self, rng, modes: int, decay: float) -> np.ndarray:
        k = np.arange(1, modes + 1)
        scale = (k[:, None] ** 2 + k[None, :] ** 2) ** (-decay / 2.0)
        return rng.standard_normal((modes, modes)) * scale

    def _fourier_at_qp(self, coef) -> np.ndarray:
        coef = self._check_fourier(coef)
        xi, eta = self.scaled_coords(self.basis.mapping.F(self.basis.X))
        return fourier_source(xi, eta, coef)

    @staticmethod
    def _check_fourier(coef) -> np.ndarray:
        coef = np.asarray(coef, dtype=np.float64)
        if coef.ndim != 2 or coef.shape[0] != coef.shape[1] or not np.all(np.isfinite(coef)):
            raise InputError(f"params['coef'] must be a finite (m, m) array, got {coef.shape}")
        return coef

    def _fourier_load(self, coef) -> np.ndarray:
        r"""Load of the sine series by its affine decomposition, shape (N,).

        :math:`b = \sum_{pq} c_{pq} B_{pq}`, :math:`B_{pq} = \int \sin(p\pi\xi)
        \sin(q\pi\eta)\, v`, the :math:`m^2` vectors assembled once (equal to
        ``_load(_fourier_at_qp(coef))`` to rounding).
        """
        coef = self._check_fourier(coef)
        m = coef.shape[0]
        if m * m * self.basis.N * 8 > 2**28:  # > 256 MB of vectors: assemble per sample
            return self._load(self._fourier_at_qp(coef))
        key = ("fourier-load", m)
        if key not in self._cache:
            B = np.empty((m * m, self.basis.N))
            for idx in range(m * m):
                unit = np.zeros((m, m))
                unit[divmod(idx, m)] = 1.0
                B[idx] = _source.assemble(self.basis, f=self._fourier_at_qp(unit))
            self._cache[key] = B
        return coef.ravel() @ self._cache[key]

    def _log_field(self, rng) -> np.ndarray:
        """Gaussian field g at the quadrature points (or per element), shape (nelems, nqp)."""
        o = self.options
        length = positive_number(o["length"], "length")
        variance = positive_number(o["variance"], "variance")
        if o.get("coefficient_at", "quadrature") == "element":
            from femno.fem.random_fields import GaussianRandomField

            key = ("grf-el", length, variance)
            if key not in self._cache:
                c = np.ascontiguousarray(self.mesh.p[:, self.mesh.t].mean(axis=1).T)
                grf = GaussianRandomField(length=length, variance=variance)
                self._cache[key] = grf.at(c, bbox=(self.lo, self.hi))
            g = self._cache[key].sample(rng)
            return np.repeat(g[:, None], self.qp_shape[1], axis=1)
        return self.random_field(rng, length=length, variance=variance)

    def _check_common(self) -> None:
        o = self.options
        for key in ("length", "variance"):
            if key in o:
                positive_number(o[key], key)
        if "modes" in o:
            o["modes"] = _int_option(o["modes"], "modes")
        if "coefficient_at" in o and o["coefficient_at"] not in ("quadrature", "element"):
            raise InputError(
                f"option 'coefficient_at' must be 'quadrature' or 'element', "
                f"got {o['coefficient_at']!r}"
            )
        if "f" in o and not callable(o["f"]):
            self._load(o["f"])  # validates

    def _summary(self, name: str, arr) -> dict:
        arr = np.asarray(arr)
        return {
            f"{name}_min": float(arr.min()),
            f"{name}_max": float(arr.max()),
            f"{name}_mean": float(arr.mean()),
        }


_EXPR_NAMES = {name: getattr(np, name) for name in (
    "sin", "cos", "tan", "exp", "log", "sqrt", "abs", "sinh", "cosh", "tanh", "arctan",
    "minimum", "maximum", "where", "pi", "e")}


def _eval_source(expr: str, x) -> np.ndarray:
    """Evaluate a source expression in ``x, y`` (and ``z``) with numpy functions."""
    names = dict(_EXPR_NAMES, x=x[0], y=x[1], z=x[2] if x.shape[0] > 2 else np.zeros_like(x[0]))
    try:
        with np.errstate(all="ignore"):  # NaN/inf are reported below
            value = eval(compile(expr, "<source>", "eval"), {"__builtins__": {}}, names)  # noqa: S307
    except Exception as exc:  # noqa: BLE001 - any bad expression is bad input
        raise InputError(
            f"cannot evaluate source {expr!r}: {type(exc).__name__}: {exc} (use x, y, z, pi and "
            f"numpy functions {', '.join(sorted(k for k in _EXPR_NAMES if len(k) > 2))})"
        ) from None
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), x[0].shape)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"source {expr!r} is not finite everywhere on the mesh")
    return np.array(arr)


class Poisson(_ScalarFamily):
    r"""Poisson problem :math:`-\Delta u = f`, :math:`u = 0` on :math:`\partial\Omega`.

    By default the source is a random sine series over the bounding box (scaled to
    :math:`[0,1]^2`): :math:`f = \sum_{p,q=1}^{m} c_{pq} \sin(p\pi\xi)\sin(q\pi\eta)`,
    :math:`c_{pq} \sim N(0, (p^2+q^2)^{-\text{decay}})`.  With the ``source`` option
    the problem is posed directly: a number (``-o source=1``) or an expression in
    ``x, y`` (``-o "source=2*pi**2*sin(pi*x)*sin(pi*y)"``, exact solution
    :math:`\sin\pi x \sin\pi y` on the unit square); every sample is then the same
    system.  The matrix is the same for every sample.

    Options: ``modes`` (m, default 4), ``decay`` (default 2.0), ``source`` (default
    none: random).  Parameters: ``{"coef": (m, m) float64}``, or ``{"f": (nelems,
    nqp)}`` (the source at the quadrature points) with ``source``.

    >>> import numpy as np
    >>> fam = Poisson(n=8)
    >>> sys = fam.assemble(fam.sample(np.random.default_rng(0)))
    >>> sys.dofs, sys.meta["family"]
    (49, 'poisson')
    >>> fam = Poisson(n=8, source=1.0)
    >>> float(fam.sample(None)["f"].max())
    1.0
    """

    name = "poisson"
    fixed_matrix = True
    OPTIONS = {"modes": 4, "decay": 2.0, "source": None}

    def _setup(self):
        self._check_common()
        self.options["decay"] = float(self.options["decay"])
        src = self.options["source"]
        if src is None:
            return
        if isinstance(src, bool):
            raise InputError(f"option 'source' must be a number or an expression, got {src!r}")
        if isinstance(src, (int, float, np.integer, np.floating)):
            if not np.isfinite(float(src)):
                raise InputError(f"option source must be finite, got {src!r}")
            f = np.full(self.qp_shape, float(src))
        elif isinstance(src, str):
            f = _eval_source(src, self.basis.mapping.F(self.basis.X))
        else:
            raise InputError(f"option 'source' must be a number or an expression, got {src!r}")
        self._cache["source_qp"] = f

    def sample(self, rng):
        if "source_qp" in self._cache:
            return {"f": self._cache["source_qp"].copy()}
        return {"coef": self._fourier_coef(rng, self.options["modes"], self.options["decay"])}

    def assemble_full(self, params, *, matrix=True):
        if "coef" in params:
            b = self._fourier_load(params["coef"])
        elif "f" in params:
            b = self._load(params["f"])
        else:
            raise InputError("Poisson params need 'coef' (random source) or 'f' (source at qp)")
        return (self._matrix("laplace") if matrix else None), b

    def features(self, params):
        if "coef" in params:
            return np.asarray(params["coef"], dtype=np.float64).ravel()
        f = np.asarray(params["f"], dtype=np.float64)
        return np.array([f.mean(), f.std()])


class Darcy(_ScalarFamily):
    r"""Darcy flow :math:`-\nabla\cdot(a \nabla u) = f`, :math:`u = 0` on :math:`\partial\Omega`.

    :math:`a = \exp(\mu + g)` with :math:`g` a squared-exponential Gaussian field
    (:mod:`femno.fem.random_fields`) evaluated at the quadrature points
    (``coefficient_at="quadrature"``) or element centroids (``"element"``).

    Options: ``length`` (0.1), ``variance`` (1.0), ``mean`` (:math:`\mu`, 0.0),
    ``f`` (number or callable ``f(x)``, 1.0), ``coefficient_at``.
    Parameters: ``{"a": (nelems, nqp) float64}`` (a number or a per-element array is
    accepted too); must be positive.

    >>> import numpy as np
    >>> fam = Darcy(n=8, length=0.3)
    >>> sys = fam.assemble(fam.sample(np.random.default_rng(0)))
    >>> bool(abs(sys.A - sys.A.T).max() < 1e-12)
    True
    """

    name = "darcy"
    OPTIONS = {
        "length": 0.1,
        "variance": 1.0,
        "mean": 0.0,
        "f": 1.0,
        "coefficient_at": "quadrature",
    }

    def _setup(self):
        self._check_common()
        mu = self.options["mean"]
        if not np.isfinite(float(mu)):
            raise InputError(f"option 'mean' must be finite, got {mu!r}")

    def sample(self, rng):
        return {"a": np.exp(float(self.options["mean"]) + self._log_field(rng))}

    def matrix_terms(self):
        return [(_diffusion, {"a": 1.0})]

    def matrix_coefficients(self, params):
        return [self.coefficient(params["a"], "a")]

    def assemble_full(self, params, *, matrix=True):
        a = self.coefficient(params["a"], "a")
        K = _diffusion.assemble(self.basis, a=a).tocsr() if matrix else None
        return K, self._load(self.options["f"])

    def features(self, params):
        a = self.coefficient(params["a"], "a")
        return self.coarse(np.log(a).mean(axis=1))

    def coefficient_summary(self, params):
        return self._summary("a", params["a"])


class DarcyPWC(_ScalarFamily):
    r"""Darcy flow with a piecewise-constant coefficient on a ``k x k`` checkerboard.

    The bounding box is cut into :math:`k \times k` equal cells; element :math:`e`
    takes the value of the cell holding its centroid; values are uniform in
    ``[low, high]``.

    Options: ``k`` (4), ``low`` (1.0), ``high`` (10.0), ``f`` (1.0).
    Parameters: ``{"values": (k, k) float64}`` (``values[i, j]``: cell ``i`` in x,
    ``j`` in y), positive.
    """

    name = "darcy-pwc"
    OPTIONS = {"k": 4, "low": 1.0, "high": 10.0, "f": 1.0}

    def _setup(self):
        self._check_common()
        o = self.options
        o["k"] = _int_option(o["k"], "k")
        o["low"], o["high"] = positive_number(o["low"], "low"), positive_number(o["high"], "high")
        if o["high"] < o["low"]:
            raise InputError(f"option 'high' ({o['high']}) must be >= 'low' ({o['low']})")
        k = o["k"]
        xi, eta = self.scaled_coords(self.mesh.p[:, self.mesh.t].mean(axis=1))
        self._cell = (
            np.clip((xi * k).astype(np.int64), 0, k - 1),
            np.clip((eta * k).astype(np.int64), 0, k - 1),
        )

    def sample(self, rng):
        k = self.options["k"]
        return {"values": rng.uniform(self.options["low"], self.options["high"], (k, k))}

    def _per_element(self, params):
        k = self.options["k"]
        vals = np.asarray(params["values"], dtype=np.float64)
        if vals.shape != (k, k):
            raise InputError(f"params['values'] must have shape ({k}, {k}), got {vals.shape}")
        return self.coefficient(vals[self._cell], "values")

    def matrix_terms(self):
        return [(_diffusion, {"a": 1.0})]

    def matrix_coefficients(self, params):
        return [self._per_element(params)]

    def assemble_full(self, params, *, matrix=True):
        a = self._per_element(params)
        K = _diffusion.assemble(self.basis, a=a).tocsr() if matrix else None
        return K, self._load(self.options["f"])

    def features(self, params):
        return np.log(np.asarray(params["values"], dtype=np.float64)).ravel()

    def coefficient_summary(self, params):
        return self._summary("a", params["values"])


class Helmholtz(_ScalarFamily):
    r"""Helmholtz problem :math:`-\Delta u - k(x)^2 u = f`, :math:`u=0` on :math:`\partial\Omega`.

    :math:`k(x) = k_0 \exp(g(x))` with :math:`g` a Gaussian field; the source is the
    random sine series of :class:`Poisson`.  The matrix :math:`K - M_{k^2}` is
    symmetric and indefinite once :math:`k_0^2` exceeds the smallest Dirichlet
    eigenvalue (:math:`2\pi^2` on the unit square).

    Options: ``k`` (:math:`k_0`, 10.0), ``length`` (0.2), ``variance`` (0.05),
    ``modes`` (4), ``decay`` (2.0).
    Parameters: ``{"k": (nelems, nqp), "coef": (m, m)}``.
    """

    name = "helmholtz"
    spd = False
    OPTIONS = {"k": 10.0, "length": 0.2, "variance": 0.05, "modes": 4, "decay": 2.0}

    def _setup(self):
        self._check_common()
        self.options["k"] = positive_number(self.options["k"], "k")
        self.options["decay"] = float(self.options["decay"])

    def sample(self, rng):
        o = self.options
        k = o["k"] * np.exp(self._log_field(rng))
        return {"k": k, "coef": self._fourier_coef(rng, o["modes"], o["decay"])}

    def matrix_terms(self):
        return [(_diffusion, {"a": 1.0}), (_weighted_mass, {"c": 1.0})]

    def matrix_coefficients(self, params):
        k = self.coefficient(params["k"], "k", positive=False)
        return [1.0, -(k**2)]

    def assemble_full(self, params, *, matrix=True):
        k = self.coefficient(params["k"], "k", positive=False)
        A = None
        if matrix:
            A = (self._matrix("laplace") - _weighted_mass.assemble(self.basis, c=k**2)).tocsr()
        return A, self._fourier_load(params["coef"])

    def features(self, params):
        k = np.abs(self.coefficient(params["k"], "k", positive=False)).mean(axis=1)
        return np.concatenate([self.coarse(k), np.asarray(params["coef"], float).ravel()])

    def coefficient_summary(self, params):
        return self._summary("k", params["k"])


class Heat(_ScalarFamily):
    r"""One implicit Euler step of :math:`u_t - \nabla\cdot(a\nabla u) = f`:

    .. math:: (M + \Delta t\, K(a))\, u = M u_{\mathrm{prev}} + \Delta t\, F,

    homogeneous Dirichlet; :math:`a` log-normal as in :class:`Darcy`;
    :math:`u_{\mathrm{prev}}` a random sine series interpolated at the dofs.

    Options: ``dt`` (0.01), ``length`` (0.1), ``variance`` (1.0), ``mean`` (0.0),
    ``f`` (1.0), ``modes`` (4), ``coefficient_at``.
    Parameters: ``{"a": (nelems, nqp), "u_prev": (N,)}``.
    """

    name = "heat"
    OPTIONS = {
        "dt": 0.01,
        "length": 0.1,
        "variance": 1.0,
        "mean": 0.0,
        "f": 1.0,
        "modes": 4,
        "coefficient_at": "quadrature",
    }

    def _setup(self):
        self._check_common()
        self.options["dt"] = positive_number(self.options["dt"], "dt")

    def sample(self, rng):
        o = self.options
        a = np.exp(float(o["mean"]) + self._log_field(rng))
        coef = self._fourier_coef(rng, o["modes"], 2.0)
        m = coef.shape[0]
        key = ("dof-sines", m)
        if key not in self._cache:  # sin(p pi xi), sin(q pi eta) at the dofs: once per mesh
            xi, eta = self.scaled_coords(self.basis.doflocs)
            k = np.arange(1, m + 1)[:, None]
            self._cache[key] = (np.sin(np.pi * k * xi), np.sin(np.pi * k * eta))
        sx, sy = self._cache[key]
        return {"a": a, "u_prev": np.einsum("pn,pq,qn->n", sx, coef, sy)}

    def _u_prev(self, params):
        u = np.asarray(params["u_prev"], dtype=np.float64)
        if u.shape != (self.basis.N,) or not np.all(np.isfinite(u)):
            raise InputError(f"params['u_prev'] must be finite with shape ({self.basis.N},)")
        return u

    def matrix_terms(self):
        return [(_weighted_mass, {"c": 1.0}), (_diffusion, {"a": 1.0})]

    def matrix_coefficients(self, params):
        return [1.0, self.options["dt"] * self.coefficient(params["a"], "a")]

    def assemble_full(self, params, *, matrix=True):
        a = self.coefficient(params["a"], "a")
        dt = self.options["dt"]
        M = self._matrix("mass")
        A = (M + dt * _diffusion.assemble(self.basis, a=a)).tocsr() if matrix else None
        return A, M @ self._u_prev(params) + dt * self._load(self.options["f"])

    def operators(self, params):
        """``(M, K(a), F)``: full mass and stiffness matrices (CSR) and load vector.

        The time-dependent form :math:`M u_t + K u = F` behind one step; used by
        :func:`femno.datagen.trajectory.solve_trajectory`. ``K`` is assembled by
        scikit-fem on every call.
        """
        a = self.coefficient(params["a"], "a")
        K = _diffusion.assemble(self.basis, a=a).tocsr()
        return self._matrix("mass").tocsr(), K, self._load(self.options["f"])

    def features(self, params):
        a = self.coefficient(params["a"], "a")
        u = self._u_prev(params)[self.basis.element_dofs].mean(axis=0)
        return np.concatenate([self.coarse(np.log(a).mean(axis=1)), self.coarse(u)])

    def coefficient_summary(self, params):
        return self._summary("a", params["a"])
