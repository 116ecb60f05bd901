r"""Learned strength of connection for smoothed aggregation, trained without gradients.

Smoothed aggregation groups the unknowns into aggregates along *strong* couplings. pyamg's
default strength is symmetric with :math:`\theta = 0`. It keeps the coupling
:math:`(i, j)` when

.. math:: s_{ij} = \frac{|a_{ij}|}{\sqrt{|a_{ii}\,a_{jj}|}} \ge \theta ,

so with :math:`\theta = 0` every coupling is strong. On unstructured meshes some
couplings are much weaker than others, and the aggregates then cross them. The
strength decides the aggregates, and through them the whole hierarchy. It is the
lever that ``benchmarks/results/precond-amg.md`` found missing from the learned
prolongation damping.

:class:`StrengthHead` scores every off-diagonal coupling from five scale-free features,
symmetric in :math:`i, j`:

* :math:`s_{ij}`;
* :math:`s_{ij}` relative to the row maxima, the smaller and the larger of
  :math:`s_{ij}/\max_k s_{ik}` and :math:`s_{ij}/\max_k s_{jk}`;
* the sign (:math:`a_{ij} < 0`, M-matrix-like);
* :math:`2 s_{ij} / (\sum_k s_{ik} + \sum_k s_{jk})`.

The coupling is strong when the score :math:`\alpha^T f + b + g_\phi(f)` is positive,
with :math:`g_\phi` a small MLP. The classical threshold is the special case
:math:`\alpha = e_1, b = -\theta, g = 0`, which is how the head starts.

Keeping an edge is a discrete choice, so there is no gradient. Training
(:func:`femno.operators.precond_strength_train.train_strength`) therefore has two stages:

1. a grid search of the classical :math:`\theta` on the training matrices;
2. an evolution strategy (antithetic Gaussian perturbations of all head parameters,
   Adam on the estimated gradient) from that threshold.

Both stages minimise the same objective: PCG iterations times operator complexity
(the work to reach ``rtol``), relative to pyamg's default :math:`\theta = 0`,
averaged over the matrices. The best centre seen is kept. The model is therefore
never worse than the tuned classical threshold *on the training matrices*, and the
benchmark shows what holds on others.

>>> import numpy as np, scipy.sparse as sp
>>> T1 = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(12, 12))
>>> A = (sp.kron(T1, sp.eye(12)) + 0.01 * sp.kron(sp.eye(12), T1)).tocsr()
>>> C = threshold_strength(0.25)(A)          # the weak y-couplings are dropped
>>> int(C.nnz) < int(A.nnz), bool(abs(C - C.T).max() == 0)
(True, True)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

__all__ = ["edge_features", "StrengthHead", "threshold_strength", "strength_from_scores",
           "N_EDGE_FEATURES", "THETA_GRID"]

N_EDGE_FEATURES = 5
#: classical thresholds the first training stage tries (0 is pyamg's default)
THETA_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)


def edge_features(A: sp.csr_matrix):
    """``(rows, cols, F)`` of the off-diagonal nonzeros of ``A``; ``F`` (m, 5) float64,
    the features of the module docstring (symmetric in ``i, j`` for symmetric ``A``)."""
    A = sp.csr_matrix(A)
    A.sum_duplicates()
    n = A.shape[0]
    d = np.abs(A.diagonal())
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    cols = A.indices
    off = rows != cols
    rows, cols, v = rows[off], cols[off], A.data[off]
    den = np.sqrt(d[rows] * d[cols])
    # a zero diagonal (a coarse row of a near-nullspace mode that its aggregate cannot
    # carry, e.g. a rotation on a one-node aggregate): strong for any threshold below 1,
    # as in pyamg's |a_ij|^2 >= theta^2 |a_ii a_jj|
    s = np.where(den > 0, np.abs(v) / np.where(den > 0, den, 1.0), 1.0)
    counts = np.bincount(rows, minlength=n)  # rows are sorted (CSR order)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rmax = np.zeros(n)
    some = counts > 0
    if len(s):
        rmax[some] = np.maximum.reduceat(s, starts[some])
    rsum = np.bincount(rows, weights=s, minlength=n)
    safe = np.where(rmax > 0, rmax, 1.0)
    ri, rj = s / safe[rows], s / safe[cols]
    share = 2.0 * s / np.maximum(rsum[rows] + rsum[cols], np.finfo(float).tiny)
    F = np.column_stack([s, np.minimum(ri, rj), np.maximum(ri, rj), (v < 0).astype(float),
                         share])
    return rows, cols, F


def strength_from_scores(n: int, rows, cols, s, keep) -> sp.csr_matrix:
    """Strength matrix (n, n) csr: the kept couplings ``keep`` (bool, (m,)) with their
    values ``s`` (:math:`s_{ij}`, (m,)), and ones on the diagonal."""
    r, c = rows[keep], cols[keep]
    C = sp.csr_matrix((np.concatenate([s[keep], np.ones(n)]),
                       (np.concatenate([r, np.arange(n)]), np.concatenate([c, np.arange(n)]))),
                      shape=(n, n))
    C.sum_duplicates()
    return C


def threshold_strength(theta: float):
    r"""The classical symmetric strength, :math:`s_{ij} \ge \theta`, as ``A -> C``
    (pyamg's ``symmetric_strength_of_connection``; ``theta = 0`` keeps every coupling)."""
    theta = float(theta)

    def strength(A):
        rows, cols, F = edge_features(A)
        return strength_from_scores(A.shape[0], rows, cols, F[:, 0], F[:, 0] >= theta)

    strength.theta = theta
    return strength


class StrengthHead(nn.Module):
    """Edge scores :math:`\\alpha^T f + b + g_\\phi(f)`, a coupling strong when positive.

    Starts as the classical threshold ``theta`` (:math:`\\alpha = e_1`, :math:`b =
    -\\theta`, :math:`g_\\phi = 0`). The features (:func:`edge_features`) are
    scale-free as they are: ratios of matrix entries, mostly in [0, 1].
    """

    def __init__(self, *, hidden: int = 8, theta: float = 0.0, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            self.linear = nn.Linear(N_EDGE_FEATURES, 1)
            self.mlp = nn.Sequential(nn.Linear(N_EDGE_FEATURES, hidden), nn.Tanh(),
                                     nn.Linear(hidden, 1))
        self.reset_to_threshold(theta)

    def reset_to_threshold(self, theta: float) -> None:
        """Make the head the classical threshold ``theta`` (MLP output zeroed)."""
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0, 0] = 1.0
            self.linear.bias.fill_(-float(theta))
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.zero_()

    def forward(self, F: torch.Tensor) -> torch.Tensor:
        return (self.linear(F) + self.mlp(F))[:, 0]

    def strength(self, A) -> sp.csr_matrix:
        """The strength matrix of ``A`` (csr (n, n)): the couplings scored positive."""
        rows, cols, F = edge_features(A)
        with torch.inference_mode():
            score = self.forward(torch.as_tensor(F, dtype=torch.float32)).double().numpy()
        return strength_from_scores(A.shape[0], rows, cols, F[:, 0], score > 0)
