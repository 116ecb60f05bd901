r"""Learned smoothed aggregation: a graph network sets the prolongation smoothing of
pyamg's SA hierarchy, row by row.

Smoothed aggregation (Vaněk, Mandel, Brezina 1996; pyamg's
:func:`~pyamg.aggregation.smoothed_aggregation_solver`) builds on each level the
tentative prolongator :math:`T` from aggregates and the near-nullspace :math:`B`, and
smooths it with one damped Jacobi step

.. math::

    P = (I - \Omega D^{-1} A)\,T,\qquad
    \Omega_{\text{classical}} = \frac{4/3}{\rho(D^{-1}A)}\,I .

:class:`LearnedSA` keeps everything else (strength, aggregation, candidate
improvement, Galerkin coarse operators :math:`P^T A P`, symmetric Gauss-Seidel
smoothing, the pseudo-inverse on the coarsest grid) and replaces the scalar damping by a
diagonal :math:`\Omega = \operatorname{diag}(\omega_i)`,

.. math::

    \omega_i = \frac{4/3}{\rho(D^{-1}A)}\,\exp\bigl(s\,\tanh f_\theta(A, T)_i\bigr),

where :math:`f_\theta` is a message-passing network over the level's matrix graph
(scale-free features of the Jacobi-scaled matrix and of the aggregates; no
coordinates, no grid), applied on every level.  :math:`P` keeps SA's sparsity pattern,
so the operator complexity is that of pyamg SA, and :math:`P B_c = T B_c - \Omega
D^{-1} A B` preserves the near-nullspace as well as SA does.  The network's last layer
starts at zero: an untrained model *is* pyamg SA (the ablation, ``classical=True``),
which the tests check iteration for iteration.

Training (:func:`train_learned_sa`) minimises the two-grid convergence rate
estimated on fresh random vectors, :math:`\tfrac1k\log(\|E^k x\|_A/\|x\|_A)` with
:math:`E = S^T (I - P A_c^{-1} P^T A) S` (:math:`S` a forward Gauss-Seidel sweep),
on every level of small unstructured meshes (dense algebra, :math:`n \lesssim 2000`).

The learned values are not worth much on isotropic problems: even per-matrix optimal
:math:`\omega_i` (free parameters, no network) change PCG iteration counts by at most
one on unstructured Darcy; see ``benchmarks/results/precond-amg.md``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from femno.errors import InputError
from femno.operators.checkpoint import register_model
from femno.operators.fe_torch import to_torch_csr

__all__ = ["LearnedSA", "sa_level", "sa_hierarchy", "level_features", "two_grid_rate",
           "N_FEATURES"]

#: pyamg SA defaults that the hierarchy reproduces
SMOOTHER = ("gauss_seidel", {"sweep": "symmetric"})
IMPROVE = ("block_gauss_seidel", {"sweep": "symmetric", "iterations": 4})
N_FEATURES = 7


def _check_matrix(A) -> sp.csr_matrix:
    if not sp.issparse(A) or A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise InputError(f"learned SA needs a square sparse matrix, got {type(A).__name__}")
    A = sp.csr_matrix(A, dtype=np.float64)
    d = A.diagonal()
    if not np.all(np.isfinite(A.data)) or np.any(d <= 0):
        raise InputError("learned SA needs an SPD matrix: its diagonal has a non-positive "
                         "or non-finite entry")
    return A


def sa_level(A: sp.csr_matrix, B: np.ndarray, *, seed: int = 0, strength=None) -> dict:
    r"""The pieces of one SA level: strength, aggregates, :math:`T`, :math:`D^{-1}AT`, :math:`\rho`.

    Parameters
    ----------
    A : scipy.sparse.csr_matrix, (n, n) float64
    B : ndarray, (n, k) float64
        Near-nullspace candidates (ones for scalar problems); improved by four symmetric
        block Gauss-Seidel sweeps on :math:`A B = 0`, as pyamg does.
    strength : callable, optional, keyword-only
        ``A -> C``, the strength-of-connection matrix the aggregation follows
        (default pyamg's symmetric strength with :math:`\theta = 0`;
        :mod:`femno.operators.precond_strength`).

    Returns
    -------
    dict
        ``T`` (n, nc*k) csr, ``G`` = :math:`D^{-1} A T` csr, ``rho`` =
        :math:`\rho(D^{-1}A)` (15 Arnoldi/Lanczos steps from a seeded start),
        ``Bc`` (nc*k, k) coarse candidates, ``agg`` (n,) aggregate of each row.
    """
    from pyamg.aggregation.aggregate import standard_aggregation
    from pyamg.aggregation.tentative import fit_candidates
    from pyamg.relaxation.utils import relaxation_as_linear_operator
    from pyamg.strength import symmetric_strength_of_connection
    from pyamg.util.linalg import approximate_spectral_radius

    C = symmetric_strength_of_connection(A, theta=0.0) if strength is None else strength(A)
    AggOp, _ = standard_aggregation(C)
    B = relaxation_as_linear_operator(IMPROVE, A, np.zeros((A.shape[0], 1))) @ B
    T, Bc = fit_candidates(AggOp, B)
    T = sp.csr_matrix(T)
    Dinv = sp.diags(_inverse_or_zero(A.diagonal()))  # a zero coarse row: 0, as pyamg
    DA = sp.csr_matrix(Dinv @ A)
    x0 = np.random.default_rng(seed).random((A.shape[0], 1))
    rho = float(approximate_spectral_radius(DA, initial_guess=x0, symmetric=True))
    agg = _aggregate_of_rows(sp.csr_matrix(AggOp))
    return {"T": T, "G": sp.csr_matrix(DA @ T), "rho": rho, "B": B, "Bc": Bc, "agg": agg,
            "n_aggregates": int(AggOp.shape[1])}


def _inverse_or_zero(d: np.ndarray) -> np.ndarray:
    """``1 / d`` with 0 where ``d == 0`` (pyamg's ``get_diagonal(inv=True)``): coarse
    rows of a near-nullspace mode that a one-node aggregate cannot carry are zero."""
    out = np.zeros_like(d, dtype=np.float64)
    np.divide(1.0, d, out=out, where=d != 0)
    return out


def _scaled_couplings(A: sp.csr_matrix):
    r"""``(|W|, rowsum(S))``: :math:`|W|` the absolute off-diagonal part of
    :math:`S = D^{-1/2} A D^{-1/2}` (csr, sorted, no explicit zeros) and S's row sums."""
    s = np.sqrt(_inverse_or_zero(np.abs(A.diagonal())))
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    vals = A.data * s[rows] * s[A.indices]
    rowsum = np.bincount(rows, weights=vals, minlength=A.shape[0])
    keep = (A.indices != rows) & (vals != 0)
    W = sp.csr_matrix((np.abs(vals[keep]), A.indices[keep], np.r_[0, np.cumsum(
        np.bincount(rows[keep], minlength=A.shape[0]))]), shape=A.shape)
    return W, rowsum


def _row_max(M: sp.csr_matrix) -> np.ndarray:
    out = np.zeros(M.shape[0])
    nz = np.diff(M.indptr) > 0
    if M.nnz:
        out[nz] = np.maximum.reduceat(M.data, M.indptr[:-1][nz])
    return out


def _aggregate_of_rows(AggOp: sp.csr_matrix) -> np.ndarray:
    """Aggregate index of every row, (n,) int64; rows pyamg left unaggregated (no strong
    coupling: an empty row of ``AggOp``) get singleton ids after the real aggregates."""
    n, nagg = AggOp.shape
    agg = np.empty(n, dtype=np.int64)
    has = np.diff(AggOp.indptr) > 0
    agg[has] = AggOp.indices[AggOp.indptr[:-1][has]]
    agg[~has] = nagg + np.arange(int((~has).sum()))
    return agg


def level_features(A: sp.csr_matrix, level: dict, couplings=None) -> np.ndarray:
    r"""Scale-free node features of one level, (n, :data:`N_FEATURES`) float64.

    With :math:`S = D^{-1/2} A D^{-1/2}` and :math:`W = S - I`: the row sum of
    :math:`S` (zero inside a Neumann-like operator, positive at Dirichlet rows), the
    row sum and the largest entry of :math:`|W|`, the share of :math:`|W|` inside the
    row's own aggregate, the log aggregate size, the log row length, and the share of
    :math:`|D^{-1}AT|` outside the row's own aggregate column(s).  ``couplings``: the
    result of :func:`_scaled_couplings` if already computed.
    """
    absW, srow = _scaled_couplings(A) if couplings is None else couplings
    n = A.shape[0]
    rows = np.repeat(np.arange(n), np.diff(absW.indptr))
    agg = level["agg"]
    same = agg[absW.indices] == agg[rows]
    tot = np.bincount(rows, weights=absW.data, minlength=n)
    inside = np.bincount(rows, weights=absW.data * same, minlength=n)
    size = np.bincount(agg)[agg]
    G = level["G"]
    k = max(1, level["T"].shape[1] // max(1, int(level["n_aggregates"])))
    grows = np.repeat(np.arange(n), np.diff(G.indptr))
    gabs = np.abs(G.data)
    own = (G.indices // k) == agg[grows]
    gtot = np.bincount(grows, weights=gabs, minlength=n)
    gout = np.bincount(grows, weights=gabs * ~own, minlength=n)
    safe = np.where(tot > 0, tot, 1.0)
    return np.column_stack([
        srow, tot, _row_max(absW), inside / safe, np.log(size),
        np.log1p(np.diff(absW.indptr)), gout / np.where(gtot > 0, gtot, 1.0)])


def _mean_graph(A: sp.csr_matrix, couplings=None) -> torch.Tensor:
    """Row-normalised |scaled off-diagonal| as a float32 torch CSR (mean aggregation)."""
    W, _ = _scaled_couplings(A) if couplings is None else couplings
    tot = np.asarray(W.sum(axis=1)).ravel()
    W = sp.csr_matrix(sp.diags(1.0 / np.where(tot > 0, tot, 1.0)) @ W)
    return to_torch_csr(W, dtype=torch.float32)


@register_model("precond-amg")
class LearnedSA(nn.Module):
    r"""Graph network for the per-row prolongation damping of smoothed aggregation.

    Parameters
    ----------
    channels : int, keyword-only
        Hidden width (default 16).
    layers : int, keyword-only
        Message-passing layers :math:`h \leftarrow h + \sigma(h\Theta_s + (\bar W h)
        \Theta_n)`, :math:`\bar W` the row-normalised scaled couplings (default 3).
    span : float, keyword-only
        :math:`s` above: :math:`\omega_i` stays within :math:`e^{\pm s}` of SA's value
        (default 0.5).
    seed : int, keyword-only
    strength : bool, keyword-only
        Add a learned strength of connection
        (:class:`~femno.operators.precond_strength.StrengthHead`, trained by
        :func:`~femno.operators.precond_strength_train.train_strength`) that decides the
        aggregates on every level; ``False`` (default) keeps pyamg's.
    strength_hidden : int, keyword-only
        Hidden width of that head's MLP (default 8).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> T1 = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(20, 20))
    >>> A = (sp.kron(T1, sp.eye(20)) + sp.kron(sp.eye(20), T1)).tocsr()
    >>> ml = LearnedSA().hierarchy(A)              # untrained: pyamg SA
    >>> x = ml.solve(np.ones(400), tol=1e-10, accel="cg")
    >>> bool(np.linalg.norm(A @ x - 1) < 1e-8 * 20)
    True
    """

    def __init__(self, *, channels: int = 16, layers: int = 3, span: float = 0.5,
                 seed: int = 0, strength: bool = False, strength_hidden: int = 8):
        super().__init__()
        if channels < 1 or layers < 0 or not span > 0:
            raise InputError("LearnedSA needs channels >= 1, layers >= 0 and span > 0")
        self.config = {"channels": int(channels), "layers": int(layers),
                       "span": float(span), "seed": int(seed)}
        self.strength_head = None
        if strength:
            from femno.operators.precond_strength import StrengthHead

            self.config.update(strength=True, strength_hidden=int(strength_hidden))
            self.strength_head = StrengthHead(hidden=int(strength_hidden), seed=int(seed))
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            C = int(channels)
            self.lift = nn.Linear(N_FEATURES, C)
            self.self_w = nn.ModuleList(nn.Linear(C, C) for _ in range(layers))
            self.nbr_w = nn.ModuleList(nn.Linear(C, C, bias=False) for _ in range(layers))
            self.proj = nn.Linear(C, 1)
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        """Damping factors relative to SA's, (n,), from (n, F) features and the graph."""
        h = torch.tanh(self.lift(features))
        for ws, wn in zip(self.self_w, self.nbr_w, strict=False):
            h = h + torch.tanh(ws(h) + wn(graph @ h))
        return torch.exp(self.config["span"] * torch.tanh(self.proj(h)[:, 0]))

    def omega(self, A: sp.csr_matrix, level: dict) -> np.ndarray:
        """Per-row damping :math:`\\omega_i` of one level, (n,) float64 (inference)."""
        cpl = _scaled_couplings(A)
        f = torch.as_tensor(level_features(A, level, cpl), dtype=torch.float32)
        with torch.inference_mode():
            factor = self(f, _mean_graph(A, cpl)).double().numpy()
        return (4.0 / 3.0) / level["rho"] * factor

    def hierarchy(self, A, *, B=None, classical: bool = False, max_coarse: int = 10,
                  max_levels: int = 10):
        """The SA hierarchy of ``A`` with the learned parts (``classical=True``: SA's
        damping and pyamg's default strength, the ablation)."""
        fn = None if classical else self.omega
        st = None if classical or self.strength_head is None else self.strength_head.strength
        return sa_hierarchy(A, omega=fn, B=B, max_coarse=max_coarse, max_levels=max_levels,
                            strength=st)


def sa_hierarchy(A, *, omega=None, B=None, max_coarse: int = 10, max_levels: int = 10,
                 strength=None):
    r"""pyamg SA with a per-row prolongation damping ``omega(A, level) -> (n,)``.

    ``omega=None`` is SA's :math:`\tfrac43/\rho(D^{-1}A)` and gives the same hierarchy
    (operator complexity, iterations) as ``pyamg.smoothed_aggregation_solver(A, B)``;
    ``strength`` (``A -> C`` on every level, see :func:`sa_level`) replaces pyamg's
    default strength of connection.

    Returns
    -------
    pyamg.multilevel.MultilevelSolver
        Symmetric Gauss-Seidel pre/post smoothing, pseudo-inverse on the coarsest level.
    """
    from pyamg.multilevel import MultilevelSolver
    from pyamg.relaxation.smoothing import change_smoothers

    A = _check_matrix(A)
    B = np.ones((A.shape[0], 1)) if B is None else np.asarray(B, dtype=np.float64)
    if B.ndim == 1:
        B = B[:, None]
    if B.shape[0] != A.shape[0]:
        raise InputError(f"near-nullspace B has {B.shape[0]} rows, the matrix {A.shape[0]}")
    levels = []
    while len(levels) + 1 < max_levels and A.shape[0] > max_coarse:
        lv = sa_level(A, B, strength=strength)
        w = np.full(A.shape[0], (4.0 / 3.0) / lv["rho"]) if omega is None else omega(A, lv)
        P = sp.csr_matrix(lv["T"] - sp.diags(w) @ lv["G"])
        level = MultilevelSolver.Level()
        level.A, level.B, level.P, level.R = A, lv["B"], P, sp.csr_matrix(P.T)
        levels.append(level)
        A, B = sp.csr_matrix(P.T @ A @ P), lv["Bc"]
    level = MultilevelSolver.Level()
    level.A, level.B = A, B
    levels.append(level)
    ml = MultilevelSolver(levels, coarse_solver="pinv")
    change_smoothers(ml, SMOOTHER, SMOOTHER)
    return ml


def two_grid_rate(A: torch.Tensor, P: torch.Tensor, X: torch.Tensor, *, k: int = 6) -> torch.Tensor:
    r"""Mean estimated two-grid rate :math:`\tfrac1k\log(\|E^kx\|_A/\|x\|_A)` (dense, differentiable).

    ``A`` (n, n), ``P`` (n, nc), ``X`` (n, m) float64; :math:`E` is a forward
    Gauss-Seidel sweep, the Galerkin coarse correction and a backward sweep.
    """
    L, U = torch.tril(A), torch.triu(A)
    Ac = P.T @ A @ P
    cho = torch.linalg.cholesky(Ac + 1e-12 * torch.eye(Ac.shape[0], dtype=A.dtype) * Ac.diagonal().max())

    def E(x):
        x = x - torch.linalg.solve_triangular(L, A @ x, upper=False)
        x = x - P @ torch.cholesky_solve(P.T @ (A @ x), cho)
        return x - torch.linalg.solve_triangular(U, A @ x, upper=True)

    def anorm2(x):
        return (x * (A @ x)).sum(0)

    y = X
    for _ in range(k):
        y = E(y)
    return (torch.log(anorm2(y) / anorm2(X)) / (2 * k)).mean()


def _training_levels(A: sp.csr_matrix, *, min_size: int, max_size: int, strength=None) -> list:
    """Levels of ``A``'s SA hierarchy (classical damping; ``strength`` as for
    :func:`sa_level`) with min_size <= n <= max_size, as tensors."""
    out, B = [], np.ones((A.shape[0], 1))
    while A.shape[0] >= min_size:
        lv = sa_level(A, B, strength=strength)
        w = (4.0 / 3.0) / lv["rho"]
        if A.shape[0] <= max_size:
            out.append({"A": torch.as_tensor(A.toarray()), "T": torch.as_tensor(lv["T"].toarray()),
                        "G": torch.as_tensor(lv["G"].toarray()), "w": w,
                        "f": torch.as_tensor(level_features(A, lv), dtype=torch.float32),
                        "graph": _mean_graph(A)})
        P = sp.csr_matrix(lv["T"] - w * lv["G"])
        A, B = sp.csr_matrix(P.T @ A @ P), lv["Bc"]
    return out


def pcg_iterations(ml, A, *, rtol: float = 1e-8, seed: int = 0, maxiter: int = 500) -> int:
    """PCG iterations of the V-cycle ``ml`` on ``A x = b`` (b seeded normal) to ``rtol``."""
    b = np.random.default_rng(seed).standard_normal(A.shape[0])
    res: list = []
    ml.solve(b, tol=rtol, accel="cg", residuals=res, maxiter=maxiter)
    return len(res) - 1


def train_learned_sa(matrices, *, validation=(), epochs: int = 40, lr: float = 3e-3,
                     probes: int = 16, k: int = 6, channels: int = 16, layers: int = 3,
                     span: float = 0.5, seed: int = 0, max_size: int = 2500,
                     progress: bool = True, strength_head=None):
    r"""Fit :class:`LearnedSA` to a list of SPD matrices by the two-grid rate.

    Every level of each matrix's classical SA hierarchy with 30 to ``max_size`` rows is
    a training item; each epoch visits all items once with ``probes`` fresh random
    vectors and minimises :func:`two_grid_rate` (``k`` cycles) minus the classical
    rate of the same vectors.

    Parameters
    ----------
    matrices : list of scipy.sparse matrices
        Small SPD training matrices (dense algebra: keep them under ``max_size`` rows).
    validation : list of scipy.sparse matrices, keyword-only
        Held-out matrices: PCG iterations of the learned and the classical hierarchy
        are recorded after training.
    strength_head : StrengthHead, optional, keyword-only
        A trained strength of connection
        (:func:`~femno.operators.precond_strength_train.train_strength`): the model keeps it,
        and the damping is trained on the levels it makes.

    Returns
    -------
    model : LearnedSA
    history : dict
        ``loss`` per epoch (mean rate change, negative is better), ``rate_classical``,
        ``rate_learned`` (mean two-grid rates at the end), ``validation`` list of
        ``{"dofs", "its_learned", "its_classical"}``.
    """
    from tqdm.auto import tqdm

    model = LearnedSA(channels=channels, layers=layers, span=span, seed=seed,
                      strength=strength_head is not None,
                      strength_hidden=(strength_head.mlp[0].out_features
                                       if strength_head is not None else 8))
    st = None
    if strength_head is not None:
        model.strength_head.load_state_dict(strength_head.state_dict())
        st = model.strength_head.strength
    items = [it for A in matrices for it in _training_levels(_check_matrix(A), min_size=30,
                                                             max_size=max_size, strength=st)]
    if not items:
        raise InputError(f"no training level between 30 and {max_size} rows: use smaller "
                         "or larger training matrices")
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict = {"loss": [], "items": len(items)}

    def rates(item, X, learned=True):
        factor = model(item["f"], item["graph"]).double() if learned else 1.0
        w = item["w"] * factor
        P = item["T"] - (w[:, None] if learned else w) * item["G"]
        return two_grid_rate(item["A"], P, X, k=k)

    bar = tqdm(range(epochs), desc="train learned SA", disable=not progress)
    for _ in bar:
        total = 0.0
        for i in torch.randperm(len(items), generator=gen).tolist():
            item = items[i]
            X = torch.randn(item["A"].shape[0], probes, generator=gen, dtype=torch.float64)
            with torch.no_grad():
                base = rates(item, X, learned=False)
            loss = rates(item, X) - base
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history["loss"].append(total / len(items))
        bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")
    model.eval()
    X = [torch.randn(it["A"].shape[0], 64, generator=gen, dtype=torch.float64) for it in items]
    with torch.no_grad():
        history["rate_classical"] = float(np.mean(
            [np.exp(float(rates(it, x, learned=False))) for it, x in zip(items, X, strict=False)]))
        history["rate_learned"] = float(np.mean(
            [np.exp(float(rates(it, x))) for it, x in zip(items, X, strict=False)]))
    history["validation"] = [
        {"dofs": int(A.shape[0]), "its_learned": pcg_iterations(model.hierarchy(A), A),
         "its_classical": pcg_iterations(model.hierarchy(A, classical=True), A)}
        for A in validation]
    return model, history


def unstructured_family_matrices(family: str = "darcy", *, sizes=(12, 16, 24, 32),
                                 samples: int = 2, seed: int = 0, options=None) -> list:
    """Matrices of a femno family on jittered Delaunay meshes (squares and disks).

    ``samples`` meshes per size (even ones :func:`~femno.fem.mesh.unstructured_square`,
    odd ones :func:`~femno.fem.mesh.unstructured_disk`), each with one sample of the
    family's parameters; mesh seeds and parameter seeds are ``seed + i``.
    """
    from femno.fem import get_family, unstructured_disk, unstructured_square

    out, i = [], 0
    for n in sizes:
        for s in range(samples):
            make = unstructured_square if s % 2 == 0 else unstructured_disk
            fam = get_family(family, mesh=make(int(n), seed=seed + i), **(options or {}))
            out.append(fam.assemble(fam.sample(np.random.default_rng(seed + i))).A.tocsr())
            i += 1
    return out
