r"""Networks of femno's learned preconditioners (issue 7).

Four registered model kinds, all used through
:class:`femno.solvers.neural.NeuralPreconditioner`:

=============== ============================================================= ==========
kind            what it computes                                              solver
=============== ============================================================= ==========
precond-cnn     :class:`MGCNN`: :math:`q = f(r/\|r\|)` on the grid image of    dcdm, fcg
                the residual, a U-Net whose levels share their weights, so it
                recurses down to a ~2x2 grid at any size (coarse levels);
                optionally below ``smooth_levels`` Jacobi two-grid levels
precond-gnn     :class:`~.precond_graph.DofGraphNet`: message passing over the matrix graph    dcdm, fcg
                (dofs that share an element), for any FE mesh
precond-spd     :class:`~.precond_graph.LearnedIC`: a sparse lower-triangular :math:`L` on the cg, fcg
                IC(0) pattern predicted from local matrix entries, positive
                diagonal by softplus; :math:`M = L L^T` is SPD by construction
precond-amg     :class:`~.precond_amg.LearnedSA`: pyamg's smoothed aggregation  cg, fcg
                with the prolongation damping of every level set per row by
                a graph network (an SA V-cycle: symmetric, linear)
=============== ============================================================= ==========

All three work on the Jacobi-scaled system :math:`\tilde A = D^{-1/2} A D^{-1/2}`,
:math:`D = \operatorname{diag}(A)`: the residual enters as :math:`D^{-1/2} r` and
the direction leaves as :math:`D^{-1/2} \tilde q`, which removes most of a
coefficient's amplitude from what the network must learn.  The residual networks
are bias-free with leaky-ReLU activations (or none: ``act="linear"``), hence
positively homogeneous,
:math:`f(c r) = c f(r)` for :math:`c > 0`; they run in float32 on unit-norm
input, the solvers do all the rest in float64.

Matrix-dependent data that is not trained (grid layout, scaling, graph) is built
once per matrix by ``model.prepare(A)`` into a *context* dict; ``model(x, ctx)``
then maps a batch ``x`` of shape ``(B, m)`` (float32) to directions ``(B, m)``.

The grid side (layout, scaling, stencils, Galerkin levels) is in
:mod:`femno.operators.precond_grid`.

>>> import numpy as np, scipy.sparse as sp, torch
>>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(7, 7))
>>> A = (sp.kron(T, sp.eye(7)) + sp.kron(sp.eye(7), T)).tocsr()
>>> net = MGCNN(channels=4, seed=0)
>>> ctx = net.prepare(A)
>>> ctx["layout"].shape
(7, 7)
>>> q = net(torch.ones(2, 49), ctx)
>>> tuple(q.shape), bool(torch.allclose(net(3 * torch.ones(2, 49), ctx), 3 * q, atol=1e-5))
((2, 49), True)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from femno.errors import InputError
from femno.operators.checkpoint import load_model, register_model
from femno.operators.precond_grid import (
    GridLayout,
    JacobiLevels,
    _stencil_apply,
    galerkin_hierarchy,
    grid_stencil,
    scaled_matrix,
    stencil_levels,
)
from femno.solvers.neural import NET_KINDS, register_neural_loader

__all__ = ["GridLayout", "grid_stencil", "MGCNN", "scaled_matrix", "NET_KINDS"]

# NET_KINDS (the learned-preconditioner model kinds) is defined by the solver layer that
# applies them and re-exported here; importing this module registers the model-file
# loader used by "neural:PATH" (femno.solvers.neural.register_neural_loader).
register_neural_loader("femno", load_model)


ACTIVATIONS = ("linear", "leaky")


def _act(kind: str = "leaky"):
    if kind not in ACTIVATIONS:
        raise InputError(f"unknown activation {kind!r}; valid: {', '.join(ACTIVATIONS)}")
    return nn.Identity() if kind == "linear" else nn.LeakyReLU(0.2)


def _conv(cin, cout, **kw):
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw)


@register_model("precond-cnn")
class MGCNN(nn.Module):
    r"""Multilevel CNN on the grid image of the residual; weights shared by all levels.

    The network :math:`N` on a one-channel image :math:`r` (one level, features
    ``C`` channels) is

    .. math::

        h_1 = S_{pre}(L r) \odot g_{pre},\quad
        e_c = N(R\, T h_1),\quad
        N(r) = Q\,\big(S_{post}([h_1, F P e_c]) \odot g_{post}\big)

    (lift :math:`L`, projection :math:`Q`, one-channel interfaces :math:`T, F`):
    its coarse-grid solver is *the network itself* on the restricted one-channel
    residual, so training on several grid sizes trains every level as a solver and
    the recursion extends to any number of levels,
    with :math:`P` bilinear prolongation and :math:`R = P^T` full weighting (fixed:
    the self-similar choice for 2D finite elements, no per-level gain to learn) and
    :math:`S` stacks of ``depth`` 3x3 convolutions; below ``min_size`` pixels a
    coarse stack replaces the recursion.  The gates :math:`g = \exp(\tanh(G(\sigma)))`
    come from a small CNN :math:`G` on the operator's scaled 8-neighbour stencil
    :math:`\sigma` (:func:`grid_stencil`, average-pooled to each level), so the
    network adapts to the coefficient field while staying linear (``act="linear"``)
    or positively homogeneous in the residual.  Input: one channel (the
    Jacobi-scaled residual), output: one channel.  Zero padding is the homogeneous
    Dirichlet condition.  Cost per application: O(C^2 m); without autograd a
    per-matrix plan (:meth:`prepare_inference`: channels_last feature maps, dense
    coarsest levels for linear networks) makes it 1.1-1.3x cheaper on CPU, same map.

    **Jacobi levels** (``smooth_levels`` :math:`k > 0`): the ``k`` finest levels
    are not convolved; each is a two-grid step on the Galerkin operator
    :math:`A_\ell` (:func:`~.precond_grid.galerkin_hierarchy`) with one damped-Jacobi sweep
    before and after and the next level as coarse solver,

    .. math::

        x_1 = \omega D_\ell^{-1} r,\quad r_1 = r - A_\ell x_1,\quad
        e = P\, V_{\ell+1}(R r_1),\quad
        \alpha = \frac{e^T r_1}{e^T A_\ell e},\quad
        V_\ell(r) = x_1 + \alpha e + \omega D_\ell^{-1}(r_1 - \alpha A_\ell e),

    and :math:`V_k = N` is the network on the level-:math:`k` image.  The step
    :math:`\alpha` (an :math:`A_\ell`-optimal scaling of the coarse correction)
    removes the network's arbitrary scale; :math:`V_0` is positively homogeneous (not
    linear).  Cost: ~30 flops per fine pixel instead of :math:`O(C^2)`, the network
    runs on a grid :math:`4^k` times smaller.  Measured (Darcy 512^2, one thread, the
    model trained with ``k = 0``, ``benchmarks/results/precond.md``): ``k = 2`` makes
    an application 3.8x cheaper (61 vs 233 ms) with flexible-CG iterations 37-50 vs
    46-50 (Darcy 64^2-512^2) and 12-14 vs 22-23 (Poisson).  Jacobi levels down to
    the coarsest grid (the network only on ~3x3: geometric multigrid) need fewer
    still (19-20 / 13): the trained network is a weaker coarse solver than Galerkin
    levels.  ``omega`` 0.6-0.9 give about the same counts; 1.0 fails (the
    checkerboard mode is not damped).  On CPU, :meth:`apply_numpy` runs the Jacobi
    levels in float64 scipy (one sparse product per operator instead of eight
    shifted image products; Darcy 64^2: 1.8 vs 3.2 ms per application).

    Parameters
    ----------
    channels : int
    depth : int
        Convolutions per smoothing stack.
    min_size : int
        Coarsest grid side.
    act : {"linear", "leaky"}
        ``"linear"``: no activation in the residual path, the network is a learned
        *linear* multilevel operator (not symmetric: still flexible CG / DCDM);
        measured to give fewer iterations than the leaky-ReLU network at the same
        training cost.
    seed : int
        Initialisation seed.
    smooth_levels : int
        Finest levels done by Jacobi two-grid steps instead of the network (default
        0: the network on every level; a ``prepare`` argument overrides it per matrix).
    omega : float
        Jacobi damping of those levels.
    """

    def __init__(self, *, channels: int = 8, depth: int = 2, min_size: int = 3,
                 act: str = "linear", seed: int = 0, smooth_levels: int = 0,
                 omega: float = 0.8):
        super().__init__()
        if channels < 1 or depth < 1 or min_size < 3:
            raise InputError("channels and depth must be >= 1, min_size >= 3")
        if smooth_levels < 0 or not 0.0 < omega < 2.0:
            raise InputError(f"smooth_levels must be >= 0 (got {smooth_levels}) and omega in "
                             f"(0, 2) (got {omega})")
        self.config = {"channels": int(channels), "depth": int(depth),
                       "min_size": int(min_size), "act": act, "seed": int(seed),
                       "smooth_levels": int(smooth_levels), "omega": float(omega)}
        _act(act)
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            C = channels

            def stack(cin, k):
                layers = [_conv(cin, C), _act(act)]
                for _ in range(k - 1):
                    layers += [_conv(C, C), _act(act)]
                return nn.Sequential(*layers)

            self.lift = _conv(1, C)
            self.pre = stack(C, depth)
            self.post = stack(2 * C, depth)
            self.coarse = stack(C, depth)
            self.proj = _conv(C, 1)
            self.to_coarse = _conv(C, 1)
            self.from_coarse = _conv(1, C)
            self.gate = nn.Sequential(nn.Conv2d(8, C, 3, padding=1), nn.Tanh(),
                                      nn.Conv2d(C, 2 * C, 3, padding=1))
            nn.init.zeros_(self.gate[-1].weight)
            nn.init.zeros_(self.gate[-1].bias)
        # bilinear prolongation P and full weighting R = P^T (one-channel stencils)
        w = torch.tensor([0.5, 1.0, 0.5])
        self.register_buffer("_pk", torch.outer(w, w)[None, None].clone(), persistent=False)

    def prepare(self, A, *, layout: GridLayout | None = None,
                smooth_levels: int | None = None) -> dict:
        """Context for matrix ``A``: grid layout (default :meth:`GridLayout.from_matrix`),
        Jacobi scaling ``D^{-1/2}``, the scaled stencil image and, for ``smooth_levels``
        (default ``config["smooth_levels"]``; at most all but the coarsest level), the
        Galerkin operators of the Jacobi levels (:func:`~.precond_grid.galerkin_hierarchy`:
        float32 stencils in ``"smooth"`` for the torch path, float64 matrices in
        ``"levels64"`` for :meth:`apply_numpy`)."""
        At, s = scaled_matrix(A)
        layout = GridLayout.from_matrix(A) if layout is None else layout
        if layout.perm.size != A.shape[0]:
            raise InputError(f"grid layout has {layout.perm.size} dofs, matrix {A.shape[0]}")
        k = self.config.get("smooth_levels", 0) if smooth_levels is None else int(smooth_levels)
        if k < 0:
            raise InputError(f"smooth_levels must be >= 0, got {k}")
        k = min(k, len(self._sizes(layout.shape)) - 1)
        mats = galerkin_hierarchy(At, layout, max(k, 1))
        levels = stencil_levels(mats)
        return {"layout": layout, "scale": torch.as_tensor(s, dtype=torch.float32),
                "scale64": s, "stencil": levels[0][0], "smooth": levels[:k],
                "levels64": mats[:k]}

    def _sizes(self, shape) -> list:
        """Image shape of every level (``_restrict`` halves: ``h -> h // 2``)."""
        sizes = [tuple(shape)]
        while min(sizes[-1]) > self.config["min_size"]:
            sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
        return sizes

    @staticmethod
    def _odd(t):
        """Zero-pad (Dirichlet) the last two dims to odd sizes: coarse node j = fine 2j+1."""
        H, W = t.shape[-2:]
        return nn.functional.pad(t, (0, 1 - W % 2, 0, 1 - H % 2))

    def _restrict(self, r):
        return nn.functional.conv2d(self._odd(r), self._pk, stride=2)

    def _prolong(self, e, H, W):
        return nn.functional.conv_transpose2d(e, self._pk, stride=2)[..., :H, :W]

    def _gates(self, st, start: int = 0):
        """Gates of every level from the stencil image ``st`` (1, 8, H, W); ``None``
        for the levels below ``start`` (Jacobi levels)."""
        gates = []
        while True:
            if len(gates) < start:
                gates.append(None)
            else:
                g = torch.exp(torch.tanh(self.gate(st)))
                gates.append(g.chunk(2, dim=1))
            if min(st.shape[-2:]) <= self.config["min_size"]:
                return gates
            st = nn.functional.avg_pool2d(self._odd(st), 3, stride=2)

    def _vcycle(self, r, levels, gates, lvl=0, plan=None):
        """Jacobi two-grid level ``lvl`` (class docstring), the network below them."""
        if lvl == len(levels):
            return self._net(r, gates, lvl, plan)
        st, d = levels[lvl]
        wd = self.config.get("omega", 0.8) / (1.0 if d is None else d)
        x = wd * r
        r1 = r - _stencil_apply(x, st, d)
        H, W = r.shape[-2:]
        e = self._prolong(self._vcycle(self._restrict(r1), levels, gates, lvl + 1, plan), H, W)
        ae = _stencil_apply(e, st, d)
        num, den = (e * r1).sum((1, 2, 3), keepdim=True), (e * ae).sum((1, 2, 3), keepdim=True)
        ok = den > 0
        alpha = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), 0.0)
        return x + alpha * e + wd * (r1 - alpha * ae)

    def _net(self, img, gates, lvl=0, plan=None):
        """The whole network on a one-channel image; its coarse solver is itself.

        ``plan`` (inference only, see :meth:`_plan`): per level the memory format of
        the ``C``-channel feature maps, and the level whose sub-network is replaced
        by its precomputed dense matrix.
        """
        if plan is not None and lvl == plan["dense_level"]:
            B, p = img.shape[0], plan["dense"].shape[0]
            return (img.reshape(B, p) @ plan["dense"]).reshape(img.shape)
        fmt = torch.contiguous_format if plan is None else plan["formats"][lvl]
        gpre, gpost = gates[lvl]
        h1 = self.pre(self.lift(img).contiguous(memory_format=fmt)) * gpre
        H, W = h1.shape[-2:]
        if min(H, W) <= self.config["min_size"]:
            return self.proj(self.coarse(h1) * gpost)
        ec = self._net(self._restrict(self.to_coarse(h1)), gates, lvl + 1, plan)
        u = self.from_coarse(self._prolong(ec, H, W)).contiguous(memory_format=fmt)
        return self.proj(self.post(torch.cat([h1, u], dim=1)) * gpost)

    #: inference: ``channels_last`` feature maps from this many pixels per level up
    #: (2-3x faster small-channel convolutions there; slower on small images)
    CHANNELS_LAST_MIN = 48 * 48
    #: inference, linear networks: coarsest levels with at most this many pixels are
    #: one dense matrix (built once per matrix from the unit images, same linear map)
    DENSE_MAX = 64

    @torch.no_grad()
    def _plan(self, gates, device) -> dict:
        r"""Inference plan for the gates of one matrix: per-level formats, dense coarse map.

        For ``act="linear"`` the sub-network at level :math:`\ell` is a fixed linear
        map :math:`N_\ell` of the one-channel image (gates fixed per matrix), so on
        small levels (:math:`p = HW \le` ``DENSE_MAX``) it is evaluated once on the
        ``p`` unit images, giving the dense ``(p, p)`` float32 matrix ``M`` with
        :math:`N_\ell(x) = x M` (rows of ``M`` are :math:`N_\ell(e_i)`): a single
        product replaces ~10 small convolutions per level.
        """
        sizes = self._sizes(next(g[0] for g in gates if g is not None).shape[-2:])
        start = sum(g is None for g in gates)
        sizes = [(0, 0)] * start + sizes[:len(gates) - start]
        formats = [torch.channels_last if h * w >= self.CHANNELS_LAST_MIN
                   else torch.contiguous_format for h, w in sizes]
        plan = {"formats": formats, "dense_level": -1, "dense": None}
        if self.config["act"] != "linear":
            return plan
        small = [i for i, (h, w) in enumerate(sizes) if i >= start and h * w <= self.DENSE_MAX]
        if small:
            lvl = small[0]
            h, w = sizes[lvl]
            eye = torch.eye(h * w, dtype=torch.float32, device=device).reshape(h * w, 1, h, w)
            build = dict(plan, formats=[torch.channels_last] * len(sizes))  # batch of p
            dense = self._net(eye, gates, lvl, build).reshape(h * w, h * w)
            plan.update(dense_level=lvl, dense=dense.contiguous())
        return plan

    def forward(self, x: torch.Tensor, ctx: dict, *, fast: bool = True) -> torch.Tensor:
        """``x``: (B, m) float32 residuals -> (B, m) directions.

        Without autograd (inference) the gates and the inference plan
        (:meth:`_plan`) are computed once and kept in ``ctx``; ``fast=False`` runs
        the plain path instead (NCHW, every level convolved: the reference).
        """
        s = ctx["scale"].to(x.device)
        lay = ctx["layout"]
        levels = ctx.get("smooth", [])
        if levels and levels[0][0].device != x.device:  # once per matrix and device
            levels = ctx["smooth"] = [(st.to(x.device), None if d is None else d.to(x.device))
                                      for st, d in levels]
        if torch.is_grad_enabled():
            gates, plan = self._gates(ctx["stencil"].to(x.device), len(levels)), None
        elif not fast:
            if "_gates_ref" not in ctx:
                ctx["_gates_ref"] = self._gates(ctx["stencil"].to(x.device), len(levels))
            gates, plan = ctx["_gates_ref"], None
        else:
            if "_plan" not in ctx:
                self.prepare_inference(ctx, device=x.device)
            gates, plan = ctx["_gates"], ctx["_plan"]
        img = lay.to_image(x * s).unsqueeze(1)
        out = self._vcycle(img, levels, gates, 0, plan).squeeze(1)
        return lay.from_image(out) * s

    @torch.no_grad()
    def prepare_inference(self, ctx: dict, *, device=None) -> dict:
        """Add the gates and the inference plan (:meth:`_plan`) to ``ctx`` (once per
        matrix; done lazily by the first call without autograd otherwise)."""
        device = ctx["stencil"].device if device is None else device
        gates = self._gates(ctx["stencil"].to(device), len(ctx.get("smooth", [])))
        plan = self._plan(gates, device)
        ctx["_gates"] = [None if gg is None else tuple(g.contiguous(memory_format=f) for g in gg)
                         for gg, f in zip(gates, plan["formats"], strict=True)]
        ctx["_plan"] = plan
        mats = ctx.get("levels64", [])
        ctx["_jacobi"] = JacobiLevels(mats, omega=self.config.get("omega", 0.8)) if mats else None
        return ctx

    @torch.no_grad()
    def apply_numpy(self, r: np.ndarray, ctx: dict) -> np.ndarray:
        r"""One application to a float64 residual ``r`` of shape ``(m,)`` (CPU inference).

        The same map as :meth:`forward` up to float32 rounding, computed with the
        Jacobi levels in float64 scipy (:class:`~.precond_grid.JacobiLevels`) and
        the network, in float32 on the unit-norm image, only on the grid below
        them (positive homogeneity: :math:`N(v) = \|v\| N(v / \|v\|)`).  On small
        grids this is several times cheaper than the torch image path, whose cost
        there is per-operation overhead (Darcy 64^2, ``smooth_levels=2``: 0.9 vs
        3.2 ms per application, one thread).
        """
        if "_plan" not in ctx:
            self.prepare_inference(ctx)
        lay, s = ctx["layout"], ctx["scale64"]
        gates, plan, jacobi = ctx["_gates"], ctx["_plan"], ctx["_jacobi"]
        lvl = len(ctx.get("smooth", []))
        device = ctx["stencil"].device

        def network(v, shape):
            nv = float(np.linalg.norm(v))
            if nv == 0.0:
                return np.zeros_like(v)
            img = torch.as_tensor(v / nv, dtype=torch.float32, device=device)
            out = self._net(img.reshape(1, 1, *shape), gates, lvl, plan)
            return out.reshape(-1).to(torch.float64).cpu().numpy() * nv

        x = s * np.asarray(r, dtype=np.float64)
        if not lay.identity:
            x = x[lay.perm]
        y = network(x, lay.shape) if jacobi is None else jacobi(x, network)
        if not lay.identity:
            y = y[lay.inverse]
        return s * y
