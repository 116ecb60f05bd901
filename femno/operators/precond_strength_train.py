r"""Training of the learned strength of connection
(:class:`~femno.operators.precond_strength.StrengthHead`): a grid search of the classical
threshold, then an evolution strategy on PCG work (no gradient through the aggregation).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from femno.errors import InputError
from femno.operators.precond_amg import pcg_iterations, sa_hierarchy
from femno.operators.precond_strength import THETA_GRID, StrengthHead, threshold_strength

__all__ = ["train_strength"]


def _measure(strength, matrices, rtol):
    """PCG iterations and operator complexities, (M,) each, of SA with ``strength``."""
    its, oc = [], []
    for A in matrices:
        ml = sa_hierarchy(A, strength=strength)
        its.append(pcg_iterations(ml, A, rtol=rtol, maxiter=300))
        oc.append(ml.operator_complexity())
    return np.asarray(its, dtype=float), np.asarray(oc)


#: the objective's penalty per unit of operator complexity (relative) above the cap
COMPLEXITY_PENALTY = 10.0


def _objective(strength, matrices, rtol, ref, max_complexity):
    r"""Mean of :math:`(\text{its}\cdot\text{OC}) / (\text{its}_0\,\text{OC}_0)` over the
    matrices, plus :data:`COMPLEXITY_PENALTY` x the mean excess of
    :math:`\text{OC}/\text{OC}_0` over ``max_complexity`` (when given)."""
    its, oc = _measure(strength, matrices, rtol)
    its0, oc0 = ref
    work = float(np.mean(its * oc / (its0 * oc0)))
    if max_complexity is not None:
        work += COMPLEXITY_PENALTY * float(np.mean(np.maximum(oc / oc0 - max_complexity, 0.0)))
    return work


def train_strength(matrices, *, iterations: int = 15, directions: int = 8, sigma: float = 0.01,
                   lr: float = 0.003, hidden: int = 8, seed: int = 0, rtol: float = 1e-8,
                   max_complexity: float | None = None, progress: bool = True):
    r"""Fit a :class:`StrengthHead` to SPD ``matrices`` (module docstring: grid search of
    :math:`\theta`, then an evolution strategy), minimising PCG work relative to
    :math:`\theta = 0`.

    ``max_complexity``: cap on the operator complexity relative to :math:`\theta = 0`'s
    (e.g. 1.03: at most 3 % more); the excess is penalised in both stages, so the
    result is compared with SA at (nearly) the same complexity.

    Returns
    -------
    head : StrengthHead
        The best centre seen.
    history : dict
        ``theta`` (the tuned classical threshold) and ``grid`` (its work per threshold),
        ``work`` per iteration (the centre's), ``work_theta0`` = 1, ``work_tuned``,
        ``work_learned``, ``seconds``.
    """
    from tqdm.auto import tqdm

    if not matrices:
        raise InputError("train_strength needs at least one matrix")
    t0 = time.perf_counter()
    ref = _measure(threshold_strength(0.0), matrices, rtol)

    def objective(strength):
        return _objective(strength, matrices, rtol, ref, max_complexity)

    grid = {th: objective(threshold_strength(th)) for th in THETA_GRID}
    theta = min(grid, key=grid.get)
    head = StrengthHead(hidden=hidden, theta=theta, seed=seed)
    vec = nn.utils.parameters_to_vector(head.parameters()).detach().double()
    rng = np.random.default_rng(seed)

    def J(v):
        nn.utils.vector_to_parameters(torch.as_tensor(v, dtype=torch.float32), head.parameters())
        return objective(head.strength)

    best_v, best = vec.numpy().copy(), grid[theta]
    m, s2 = np.zeros_like(best_v), np.zeros_like(best_v)
    v = best_v.copy()
    history = {"theta": theta, "grid": grid, "work": [best], "work_theta0": 1.0,
               "work_tuned": grid[theta], "max_complexity": max_complexity}
    bar = tqdm(range(iterations), desc="train strength (ES)", disable=not progress)
    for it in bar:
        eps = rng.standard_normal((directions, v.size))
        diff = np.array([J(v + sigma * e) - J(v - sigma * e) for e in eps])
        g = (diff[:, None] * eps).sum(0) / (2 * sigma * directions)
        m = 0.9 * m + 0.1 * g
        s2 = 0.999 * s2 + 0.001 * g * g
        v = v - lr * (m / (1 - 0.9 ** (it + 1))) / (np.sqrt(s2 / (1 - 0.999 ** (it + 1))) + 1e-8)
        w = J(v)
        history["work"].append(w)
        if w < best:
            best, best_v = w, v.copy()
        bar.set_postfix(work=f"{w:.3f}", best=f"{best:.3f}")
    nn.utils.vector_to_parameters(torch.as_tensor(best_v, dtype=torch.float32), head.parameters())
    history["work_learned"] = best
    history["seconds"] = time.perf_counter() - t0
    return head, history
