r"""Learned preconditioners in the solver layer: DCDM and :class:`NeuralPreconditioner`.

:func:`dcdm` is the deep conjugate direction method (Kaneda et al., ICML 2023):
a network maps the normalised residual to a search direction,

.. math::

    z_j = f(r_j / \|r_j\|),\qquad
    d_j = z_j - \sum_{i=j-k}^{j-1} \frac{z_j^T A d_i}{d_i^T A d_i} d_i,\qquad
    \alpha_j = \frac{d_j^T r_j}{d_j^T A d_j},\qquad
    x_{j+1} = x_j + \alpha_j d_j,\quad r_{j+1} = b - A x_{j+1},

(exact line search, ``A``-orthogonal to the ``k`` previous directions, true
residual).  It stops at :math:`\|r\| \le \max(\mathrm{rtol}\|b\|, \mathrm{atol})`.
Safeguards: a direction with :math:`d^T A d \le \epsilon \|d\|\|A d\|` or a
non-finite one is replaced by the Jacobi direction :math:`D^{-1} r`; when the
residual has not reached a new minimum (by 0.1 %) for ``patience`` steps, one
Jacobi step is taken, and after ``max_stalls`` stalls the network is switched off
(the iteration continues as truncated Jacobi-PCG, so any network, even an
untrained one, ends in a converged solve).  A non-positive curvature of the
Jacobi direction itself means ``A`` is not SPD: ``reason="breakdown"``.

The same loop runs on numpy/scipy data and on torch tensors (a torch sparse CSR
matrix on the GPU, see :func:`~femno.operators.fe_torch.to_torch_csr`).

:class:`NeuralPreconditioner` wraps a trained model of
:mod:`femno.operators.precond_nets` as a femno
:class:`~femno.solvers.base.Preconditioner`: ``apply(r) = ||r|| f(r/||r||)`` for
the residual networks (nonlinear: use ``fcg``/``fgmres``/``dcdm``, in scipy or in
PETSc through the ``PCPYTHON`` bridge), ``apply(r) = L^{-T} L^{-1} r`` for the SPD
factor model (``symmetric=True``: plain ``cg`` is valid).

>>> import numpy as np, scipy.sparse as sp
>>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(15, 15))
>>> A = (sp.kron(T, sp.eye(15)) + sp.kron(sp.eye(15), T)).tocsr()
>>> x, info = dcdm(A, np.ones(225), rtol=1e-10)          # no network: Jacobi directions
>>> info["reason"], bool(np.linalg.norm(A @ x - 1) <= 1e-10 * 15)
('rtol', True)
"""

from __future__ import annotations

from collections import deque

import numpy as np

from femno.errors import InputError
from femno.registry import Registry
from femno.solvers.base import Preconditioner
from femno.solvers.krylov import default_maxiter

__all__ = ["dcdm", "NeuralPreconditioner", "load_neural_preconditioner", "NET_KINDS",
           "NEURAL_MODEL_LOADERS", "register_neural_loader", "neural_model_loader"]

#: model kinds that map residuals to directions (nonlinear: flexible methods only); the
#: SPD factor model ``precond-spd`` has ``factor(A)``, learned smoothed aggregation
#: ``precond-amg`` has ``hierarchy(A)`` (a pyamg V-cycle), the others ``prepare`` + ``forward``.
NET_KINDS = ("precond-cnn", "precond-gnn", "precond-spd", "precond-amg")

#: Loaders of learned-preconditioner model files: name -> ``loader(path) -> torch.nn.Module``.
#: The solver layer does not import :mod:`femno.operators` (it sits above): the operators
#: side registers its checkpoint reader with :func:`register_neural_loader` when
#: :mod:`femno.operators.precond_nets` is imported.
NEURAL_MODEL_LOADERS: dict = {}

#: Name of the loader used for ``"neural:PATH"`` and ``NeuralPreconditioner(path)``.
DEFAULT_NEURAL_LOADER = "femno"

#: Lazy plugin loading: loader name -> module whose import registers it.
#: :func:`neural_model_loader` imports that module by name (``importlib``) the first time
#: the loader is asked for and missing, so ``krylov("fcg", pc="neural:MODEL")`` works after
#: a plain ``import femno``.  Not an import dependency of this module: with the plugin
#: absent (no torch, say) it raises :class:`~femno.errors.FemnoError`.
NEURAL_LOADER_PLUGINS: dict = {"femno": "femno.operators.precond_nets"}


def _loaders():
    """The registry over the module's current tables (tests may rebind them)."""
    return Registry(NEURAL_MODEL_LOADERS, NEURAL_LOADER_PLUGINS, what="neural model loader",
                    hint="femno.solvers.neural.register_neural_loader",
                    unavailable="learned preconditioners are not available")


def register_neural_loader(name: str, loader) -> None:
    """Register ``loader(path) -> torch.nn.Module`` under ``name``."""
    _loaders().register(name, loader)


def neural_model_loader(name: str = DEFAULT_NEURAL_LOADER):
    """The model-file loader registered as ``name`` (importing its plugin on first use)."""
    return _loaders().get(name)


def _is_torch(v) -> bool:
    return type(v).__module__.startswith("torch")


def _diagonal(A):
    if _is_torch(A):
        import torch

        C = A.to_sparse_coo().coalesce()
        i = C.indices()
        on = i[0] == i[1]
        d = torch.zeros(A.shape[0], dtype=C.values().dtype, device=C.values().device)
        d[i[0][on]] = C.values()[on]
        return d
    if not hasattr(A, "diagonal"):  # a LinearOperator: residual directions
        return np.ones(A.shape[0])
    return np.asarray(A.diagonal(), dtype=np.float64)


def dcdm(A, b, *, x0=None, M=None, rtol=1e-8, atol=0.0, maxiter=None, callback=None, k=2,
         patience=8, max_stalls=2, curvature_tol=1e-12, inv_diag=None):
    r"""Deep conjugate direction method (see the module docstring for the recurrence).

    Parameters
    ----------
    A : sparse matrix (n, n) or torch sparse CSR tensor
        Symmetric positive definite.
    b : ndarray (n,) float64, or torch tensor on ``A``'s device
    M : callable, optional
        ``M(r) -> z``: the direction map (a network, e.g.
        ``NeuralPreconditioner.apply``); its scale does not matter.  ``None``:
        Jacobi directions only.
    k : int
        Previous directions to ``A``-orthogonalise against (DCDM uses 2).
    patience, max_stalls : int
        Stall detection (see module docstring).
    curvature_tol : float
        Relative curvature threshold :math:`\epsilon`.
    inv_diag : array, optional
        :math:`D^{-1}` for the fallback (default from ``A``; the identity, i.e.
        residual directions, when ``A`` is an operator without ``diagonal()``).

    Returns
    -------
    x : same type as ``b``
    info : dict
        ``iterations`` (search directions; each costs two products with ``A``:
        :math:`A d` and the true residual), ``residuals`` (true relative
        residuals), ``residual_kind="true"``, ``reason``, ``fallbacks`` (Jacobi
        steps taken instead of the network), ``net_steps``, ``stalls``.
    """
    if int(k) < 0:
        raise InputError(f"k must be >= 0, got {k!r}")
    torch_mode = _is_torch(b)

    def dot(u, v):
        return float(u @ v)

    x = (b * 0.0) if x0 is None else (x0.clone() if torch_mode else np.array(x0, dtype=np.float64))
    n = int(b.shape[0])
    maxiter = default_maxiter(n) if maxiter is None else int(maxiter)
    bnorm = dot(b, b) ** 0.5
    tol = max(rtol * bnorm, atol)
    r = b - A @ x if x0 is not None else b * 1.0
    rnorm = dot(r, r) ** 0.5

    def rel(v):
        return v / bnorm if bnorm > 0 else v

    hist = [rel(rnorm)]
    if inv_diag is None:
        d = _diagonal(A)
        if not bool((d > 0).all()):
            raise InputError("dcdm: the matrix has a non-positive diagonal entry: not SPD")
        inv_diag = 1.0 / d
    dirs = deque(maxlen=int(k)) if k > 0 else None
    it = fallbacks = net_steps = stalls = 0
    net_on, force = M is not None, False
    reason = "maxiter"
    best = [rnorm]  # best residual after each step

    def direction(use_net):
        """``(d, A d, d^T A d, curvature ok)`` for the network or the Jacobi direction."""
        z = M(r / rnorm) if use_net else inv_diag * r
        d = z
        for di, adi, dadi in (dirs or ()):
            d = d - (dot(z, adi) / dadi) * di
        Ad = A @ d
        dAd = dot(d, Ad)
        dn, adn = dot(d, d) ** 0.5, dot(Ad, Ad) ** 0.5
        return d, Ad, dAd, bool(np.isfinite(dAd) and dAd > curvature_tol * dn * adn and dn > 0)

    while True:
        if bnorm == 0.0:
            x = b * 0.0
            hist, reason = [0.0], "zero rhs"
            break
        if rnorm <= tol:
            reason = "rtol"
            break
        if it >= maxiter:
            break
        use_net = net_on and not force
        fallbacks += int(net_on and force)
        force = False
        d, Ad, dAd, ok = direction(use_net)
        if not ok and use_net:  # breakdown of the network direction: classical one
            fallbacks += 1
            use_net = False
            d, Ad, dAd, ok = direction(False)
        it += 1
        if not ok:
            hist.append(hist[-1])
            reason = "breakdown"
            break
        net_steps += int(use_net)
        alpha = dot(d, r) / dAd
        x = x + alpha * d
        r = b - A @ x
        rnorm = dot(r, r) ** 0.5
        if not np.isfinite(rnorm):
            reason = "breakdown"
            hist.append(float("nan"))
            break
        hist.append(rel(rnorm))
        if dirs is not None:
            dirs.append((d, Ad, dAd))
        best.append(min(best[-1], rnorm))
        if callback is not None:
            callback(x)
        if net_on and len(best) > patience and best[-1] > (1 - 1e-3) * best[-1 - patience]:
            stalls += 1
            force = True
            best = [best[-1]]  # a fresh window after the fallback step
            if stalls >= max_stalls:
                net_on = False
    info = {"iterations": it, "residuals": [float(h) for h in hist], "residual_kind": "true",
            "reason": reason, "fallbacks": fallbacks, "net_steps": net_steps, "stalls": stalls}
    return x, info


def load_neural_preconditioner(path, **options) -> NeuralPreconditioner:
    """``NeuralPreconditioner`` from a model file (``make_preconditioner("neural:PATH")``)."""
    return NeuralPreconditioner(path, **options)


class NeuralPreconditioner(Preconditioner):
    r"""A learned model of :mod:`femno.operators.precond_nets` as a preconditioner.

    Parameters
    ----------
    model : torch.nn.Module or path
        A ``precond-cnn``, ``precond-gnn`` or ``precond-spd`` model, or its file.
    layout : GridLayout, optional, keyword-only
        Grid layout for the CNN (default: inferred from the matrix, lexicographic).
    device : str, optional, keyword-only
        Where the network runs (default CPU); ``apply`` accepts numpy arrays
        (copied to the device and back) or torch tensors already there.
    fast : bool, keyword-only
        CNN only: precompute the inference plan at setup (channels_last feature
        maps on large levels, dense coarse map for linear networks; same map up to
        float32 rounding, :meth:`~femno.operators.precond_nets.MGCNN.prepare_inference`);
        numpy residuals go through
        :meth:`~femno.operators.precond_nets.MGCNN.apply_numpy` (Jacobi levels
        in float64 scipy).
        ``False``: the plain path (the reference, for benchmarks).
    smooth_levels : int, optional, keyword-only
        CNN only: finest levels done as Jacobi two-grid steps with the network as
        coarse solver (default: the model's ``config["smooth_levels"]``; see
        :class:`~femno.operators.precond_nets.MGCNN`).  ``2`` makes an
        application 3.8x cheaper at 512^2 with about as many or fewer iterations.
    near_nullspace : ndarray (n, r), optional, keyword-only
        ``precond-amg`` only (others ignore it): the near-nullspace modes of the SA
        hierarchy (rigid-body modes for elasticity); ``krylov(..., near_nullspace=B,
        pc="neural:MODEL")`` passes them.

    Notes
    -----
    The CNN map is not symmetric (and, with Jacobi levels, not linear): use it in a
    flexible method, ``krylov("fcg", pc=..., mmax=30)`` (the default truncation;
    Darcy needs about half the iterations at 30 that it needs at 3) or ``"dcdm"``.

    Attributes
    ----------
    symmetric : bool
        True for ``precond-spd`` (a fixed SPD operator :math:`(L L^T)^{-1}`) and
        ``precond-amg`` (a symmetric SA V-cycle): plain ``cg`` is valid.
    applies : int
        Network applications so far.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from femno.operators.precond_nets import MGCNN
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(9, 9))
    >>> A = (sp.kron(T, sp.eye(9)) + sp.kron(sp.eye(9), T)).tocsr()
    >>> pc = NeuralPreconditioner(MGCNN(channels=4)).setup(A)
    >>> pc.apply(np.ones(81)).shape, pc.symmetric
    ((81,), False)
    """

    name = "neural"

    def __init__(self, model, *, layout=None, device=None, fast: bool = True,
                 smooth_levels: int | None = None, near_nullspace=None):
        super().__init__()
        import torch

        if not isinstance(model, torch.nn.Module):
            model = neural_model_loader()(model)
        kind = getattr(type(model), "model_kind", None)
        if kind not in NET_KINDS:
            raise InputError(f"model of kind {kind!r} is not a learned preconditioner; "
                             f"expected one of {', '.join(NET_KINDS)}")
        self.kind = kind
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.layout = layout
        self.symmetric = kind in ("precond-spd", "precond-amg")
        self.applies = 0
        self._torch = torch
        self._kw = {} if fast or kind != "precond-cnn" else {"fast": False}
        self._numpy = fast and kind == "precond-cnn"
        if smooth_levels is not None and kind != "precond-cnn":
            raise InputError(f"smooth_levels is a CNN option; model kind {kind!r} has none")
        self._prep = {} if smooth_levels is None else {"smooth_levels": int(smooth_levels)}
        # learned SA builds its hierarchy on these modes (pyamg's B); other kinds ignore them
        self.near_nullspace = near_nullspace if kind == "precond-amg" else None

    def _setup(self, A):
        import scipy.sparse.linalg as spla

        if self.kind == "precond-amg":  # learned SA: the network runs once per level, here
            self.ml = self.model.hierarchy(A, B=self.near_nullspace)
            self._vcycle = self.ml.aspreconditioner(cycle="V")
            return
        if self.kind == "precond-spd":
            self.L = self.model.factor(A)
            self.lu = spla.splu(self.L.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0,
                                options={"SymmetricMode": True})
            return
        ctx = self.model.prepare(A, layout=self.layout, **self._prep)
        self.ctx = {key: (v.to(self.device) if isinstance(v, self._torch.Tensor) else v)
                    for key, v in ctx.items()}
        if not self._kw and hasattr(self.model, "prepare_inference"):  # per-matrix work, timed as setup
            with self._torch.inference_mode():
                self.model.prepare_inference(self.ctx, device=self.device)

    def apply(self, r):
        if self.shape is None:
            raise RuntimeError("neural preconditioner used before setup(A)")
        self.applies += 1
        if self.kind == "precond-amg":
            return self._vcycle @ np.asarray(r, dtype=np.float64)
        if self.kind == "precond-spd":
            r = np.asarray(r, dtype=np.float64)
            return self.lu.solve(self.lu.solve(r), trans="T")
        torch = self._torch
        is_t = isinstance(r, torch.Tensor)
        if not is_t and self._numpy:  # Jacobi levels in float64 scipy, network below
            return self.model.apply_numpy(r, self.ctx)
        rt = r if is_t else torch.as_tensor(np.asarray(r, dtype=np.float64), device=self.device)
        nrm = torch.linalg.vector_norm(rt)
        if float(nrm) == 0.0:
            return r * 0.0
        with torch.inference_mode():  # no autograd bookkeeping; cached gates, channels_last
            q = self.model((rt / nrm).to(torch.float32).unsqueeze(0), self.ctx, **self._kw)[0]
        q = q.to(torch.float64) * nrm
        return q if is_t else q.cpu().numpy()
