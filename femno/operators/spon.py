r"""Structure-preserving operator networks (SPON, SPEC §3) and their multigrid form.

:math:`S = D \circ P \circ E`:

* **Encoder** :math:`E` (:class:`femno.operators.fe_data.Encoder`, no weights): the
  input functions as coefficients of a scalar input FE space on the mesh
  (:math:`L^2` projection or interpolation), given to the model as ``x`` of shape
  ``(B, C, n_in_dofs)``.
* **Processor** :math:`P` (the only trained part): message passing on the graph of
  the FE dofs (dofs connected when they share an element).  Node features: the
  normalized input coefficients at the dof (log of widely spread positive ones), the dof position (scaled to the
  bounding box), a Dirichlet flag, the lifting value and, for vector spaces, the
  component; edge features :math:`[(x_j - x_i)/h, |x_j - x_i|/h]` with :math:`h` the
  mean edge length.  Each layer
  :math:`h_i \leftarrow h_i + \phi(h_i, \mathrm{mean}_{j \to i}\, \psi(h_i, h_j, e_{ij}))`.
* **Decoder** :math:`D`: one number per dof, the coefficient of the output FE basis
  function, so the output *is* an FE function:

  .. math:: u = g + (1 - \chi_D) \odot s\, N_\theta(x, g),

  with :math:`g` the lifting (Dirichlet data on the Dirichlet dofs, zero elsewhere),
  :math:`\chi_D` their indicator and :math:`s` the target scale.  Dirichlet values
  hold exactly (bit for bit) for any weights.

``spon-mg`` runs a V-cycle: light message-passing layers on the fine dofs, restriction
:math:`h_c = R h` (:math:`R = D^{-1} P^T`, row-normalized FE restriction) down a
hierarchy of coarse levels, the heavy layers on the coarsest, FE prolongation
:math:`h \mathrel{+}= P W h_c` back up and light fine layers again (levels:
:func:`femno.operators.fe_torch.coarse_hierarchy`; automatic for any 2-D/3-D mesh, or
a given coarse mesh, e.g. the one a refined mesh was made from).

The models hold no mesh data in their weights: :meth:`SPON.bind` builds the graph of
any mesh (non-persistent buffers), so a saved model applies to other meshes,
unstructured ones included, as long as the input channels and the number of vector
components agree.

>>> import torch
>>> from femno.fem.mesh import unstructured_square
>>> from femno.fem.spaces import make_basis
>>> from femno.fem.bc import boundary_dofs
>>> basis = make_basis(unstructured_square(6, seed=0), "P1")
>>> model = SPON(channels=["a"], width=8, layers=2).bind(basis, boundary_dofs(basis))
>>> x = torch.rand(3, 1, basis.N, dtype=torch.float64)
>>> lift = torch.zeros(3, basis.N, dtype=torch.float64)
>>> lift[:, model.graph_dirichlet] = 0.5
>>> u = model(x, lift)
>>> u.shape, bool((u[:, model.graph_dirichlet] == 0.5).all())
(torch.Size([3, 49]), True)
"""

from __future__ import annotations

import numpy as np
import skfem
import torch
from torch import nn

from femno.errors import InputError
from femno.operators.checkpoint import register_model
from femno.operators.fe_torch import (
    coarse_hierarchy,
    dof_graph,
    edge_features,
    mass_matrix,
    to_torch_sparse,
)
from femno.operators.layers import GlobalMix, InputKernel, MessagePassing, mlp

__all__ = ["SPON", "SPONMG", "make_spon", "ARCHS"]


#: the graph tensors a MessagePassing layer takes, in order
_MP_TENSORS = ("src", "dst", "edge_attr", "inv_deg")


class _Graph(nn.Module):
    """Non-persistent tensors of one FE graph (moved by ``.to``; not in state_dict)."""

    def __init__(self, tensors: dict):
        super().__init__()
        for k, v in tensors.items():
            self.register_buffer(k, v, persistent=False)


def _graph_tensors(pos, edges, dtype, scale, weights):
    """Edge lists, features, 1/in-degree (0 for a node without incoming edges) and the
    node weights (``weights``, the lumped mass, normalized to sum 1)."""
    ea, h = edge_features(pos, edges, scale=scale)
    deg = np.bincount(edges[1], minlength=pos.shape[0]).astype(np.float64)
    inv_deg = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    w = np.asarray(weights, np.float64)
    return {"src": torch.as_tensor(edges[0]), "dst": torch.as_tensor(edges[1]),
            "edge_attr": torch.as_tensor(ea, dtype=dtype),
            "inv_deg": torch.as_tensor(inv_deg, dtype=dtype)[:, None],
            "weights": torch.as_tensor(w / w.sum(), dtype=dtype)}


@register_model("spon")
class SPON(nn.Module):
    r"""Structure-preserving operator network on the dofs of an FE space.

    Parameters
    ----------
    channels : list of str, keyword-only
        Names of the input channels (``FEData.channels``).
    n_components : int, keyword-only
        Vector components of the output space (1: scalar).
    dim : int, keyword-only
        Space dimension.
    width, layers : int, keyword-only
        Hidden width and number of message-passing layers.
    element, family : str, keyword-only
        Recorded for checks and reporting.
    **extra
        Further plain values kept in ``config``: ``encode`` (the input encoding the
        model was trained with, checked by :meth:`bind`); ``edges`` (``"mesh"``: edge
        vectors in units of the mean edge length of each graph, the default;
        ``"domain"``: in units of 1/16 of the domain extent, so messages see physical
        distances; ``"absolute"``: in units of 1/16, for data whose domains share one
        coordinate box, as femno's geometry datasets do); ``positions`` (``"box"``:
        node positions scaled to each mesh's bounding box, the default; ``"absolute"``:
        the coordinates as they are, so that domains of different shapes in one box
        keep their place); ``global_rank`` (0, the default: off; r > 0: a
        :class:`~femno.operators.layers.GlobalMix` of rank r after every
        message-passing layer of the processor, after every heavy coarsest-level
        layer in ``spon-mg``); ``input_rank`` (0: off; r > 0: an
        :class:`~femno.operators.layers.InputKernel` of rank r on the encoded
        features); ``input_skip`` (False: off; True, with ``input_rank``: the same
        kernel integral also added to the output through a linear map, so a linear
        solution operator :math:`u = \int G(\cdot, y) f(y)\,dy` has a path that is
        linear end to end; zero at initialisation); ``fourier`` (0: off; k > 0
        adds :math:`\sin, \cos(j\pi \hat x_d)`, :math:`j \le k`, of the position
        scaled to the bounding box to the node features).

    Notes
    -----
    Everything passed is stored in ``config`` (the checkpoint rebuilds the model with
    ``cls(**config)``); the weights and the normalization buffers (``x_mean``,
    ``x_std``, ``x_log``, ``y_scale``) are the state.  The graph of a mesh
    (``model.graph``, non-persistent buffers) is built by :meth:`bind`, which
    :meth:`predict` calls for each new :class:`FEData`.
    """

    def __init__(self, *, channels, n_components=1, dim=2, width=64, layers=6, element="",
                 family="", **extra):
        super().__init__()
        for key in ("fourier", "global_rank", "input_rank"):
            v = extra.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InputError(f"{key} must be an integer >= 0, got {v!r}")
        if not isinstance(extra.get("input_skip", False), (bool, np.bool_)):
            raise InputError(f"input_skip must be True or False, got {extra['input_skip']!r}")
        if extra.get("input_skip") and not extra.get("input_rank"):
            raise InputError("input_skip needs input_rank > 0 (it reuses the input kernel)")
        if extra.get("edges", "mesh") not in ("mesh", "domain", "absolute"):
            raise InputError(f"edges must be 'mesh', 'domain' or 'absolute', got {extra['edges']!r}")
        if extra.get("positions", "box") not in ("box", "absolute"):
            raise InputError(f"positions must be 'box' or 'absolute', got {extra['positions']!r}")
        self.config = {"channels": list(channels), "n_components": int(n_components),
                       "dim": int(dim), "width": int(width), "layers": int(layers),
                       "element": element, "family": family, **extra}
        c = len(channels)
        self.n_feat = (c + dim + 2 + (n_components if n_components > 1 else 0)
                       + 2 * dim * int(extra.get("fourier", 0)))
        # data normalization (persistent, set by fit_normalization)
        self.register_buffer("x_mean", torch.zeros(c, dtype=torch.float64))
        self.register_buffer("x_std", torch.ones(c, dtype=torch.float64))
        self.register_buffer("x_log", torch.zeros(c, dtype=torch.bool))
        self.register_buffer("y_scale", torch.ones((), dtype=torch.float64))
        self.encoder = mlp(self.n_feat, width, width=width)
        r = int(extra.get("input_rank", 0))
        self.input_kernel = (InputKernel(self.n_feat - c - 1, c, width, r) if r else None)
        self.input_skip = nn.Linear(r, 1, bias=False) if extra.get("input_skip") else None
        if self.input_skip is not None:
            nn.init.zeros_(self.input_skip.weight)
        self.decoder = mlp(width, 1, width=width)
        self._build_processor()
        self.graph = None

    # -- architecture hooks ----------------------------------------------------------------
    def _build_processor(self):
        w, e = self.config["width"], self.config["dim"] + 1
        self.mp = nn.ModuleList(MessagePassing(w, e) for _ in range(self.config["layers"]))
        self._build_mix()

    def _build_mix(self):
        r, n = int(self.config.get("global_rank", 0)), self.config["layers"]
        self.mix = nn.ModuleList(GlobalMix(self.config["width"], r) for _ in range(n if r else 0))

    def _level(self, k, *names):
        """Graph tensors ``names`` of level ``k`` (0: the dofs; k >= 1: coarse level k)."""
        return tuple(getattr(self.graph, n if k == 0 else f"l{k}_{n}") for n in names)

    def _heavy(self, h, k):
        """The ``layers`` message-passing layers on level ``k``, each followed by its
        GlobalMix (if any)."""
        *args, weights = self._level(k, *_MP_TENSORS, "weights")
        for i, layer in enumerate(self.mp):
            h = layer(h, *args)
            if len(self.mix):
                h = self.mix[i](h, weights)
        return h

    def _process(self, h):
        return self._heavy(h, 0)

    def _bind_extra(self, basis, tensors, dtype, **kw):
        pass

    def _scale_of(self, pos):
        """Length unit of the edge features: None (mean edge length of each graph) for
        ``edges="mesh"``, the domain extent / 16 for ``edges="domain"``."""
        edges = self.config.get("edges", "mesh")
        if edges == "mesh":
            return None
        if edges == "absolute":
            return 1.0 / 16.0
        return float((pos.max(axis=0) - pos.min(axis=0)).max()) / 16.0

    def _scaled_positions(self, pos):
        """Node positions as the network sees them (see ``positions``)."""
        if self.config.get("positions", "box") == "absolute":
            return np.asarray(pos, dtype=np.float64)
        lo, hi = pos.min(axis=0), pos.max(axis=0)
        return (pos - lo) / max(float((hi - lo).max()), 1e-300)

    # -- binding to a mesh -------------------------------------------------------------------
    def bind(self, basis, dirichlet=None, **kw):
        """Build the dof graph of ``basis`` (a skfem basis or an :class:`FEData`).

        ``dirichlet``: Dirichlet dof indices (default ``basis.dirichlet`` of an FEData).
        Extra keywords go to the variant (``coarse=``, ``levels=`` for ``spon-mg``).
        Returns ``self``; the graph lives on the model's device.
        """
        from femno.operators.fe_data import FEData

        if isinstance(basis, FEData):
            fe = basis
            if fe.channels != self.config["channels"]:
                raise InputError(f"model expects input channels {self.config['channels']}, "
                                 f"the data has {fe.channels}")
            enc = self.config.get("encode")
            if enc is not None and fe.encode != enc:
                raise InputError(f"model was trained on {enc!r}-encoded inputs, the data is "
                                 f"{fe.encode!r}-encoded")
            basis, dirichlet = fe.basis, fe.dirichlet if dirichlet is None else dirichlet
        if not isinstance(basis, skfem.CellBasis):
            raise InputError(f"bind expects an FEData or a skfem CellBasis, got {type(basis).__name__}")
        if dirichlet is None:
            raise InputError("bind(basis, dirichlet): the Dirichlet dofs are required")
        vector = isinstance(basis.elem, skfem.ElementVector)
        dim = basis.mesh.p.shape[0]
        ncomp = dim if vector else 1
        if ncomp != self.config["n_components"] or dim != self.config["dim"]:
            raise InputError(f"model is for {self.config['n_components']}-component fields in "
                             f"{self.config['dim']}-D, the space has {ncomp} in {dim}-D")
        param = next(self.parameters())
        dtype, device = param.dtype, param.device
        N = int(basis.N)
        pos = basis.doflocs.T
        pos_n = self._scaled_positions(pos)
        edges = dof_graph(basis.element_dofs, N)
        self._edge_scale = self._scale_of(pos)
        lumped = np.asarray(mass_matrix(basis).sum(axis=1)).ravel()
        t = _graph_tensors(pos, edges, dtype, self._edge_scale, lumped)
        self._lumped = lumped
        mask = np.zeros(N, bool)
        dirichlet = np.asarray(dirichlet, dtype=np.int64)
        if dirichlet.size and (dirichlet.min() < 0 or dirichlet.max() >= N):
            raise InputError("Dirichlet dof index out of range")
        mask[dirichlet] = True
        comp = np.arange(N) % ncomp
        static = [pos_n, mask[:, None].astype(float)]
        k = np.arange(1, int(self.config.get("fourier", 0)) + 1)
        if k.size:  # sin/cos(k pi x) of the box-scaled position, k = 1..fourier
            arg = np.pi * pos_n[:, :, None] * k
            static += [np.sin(arg).reshape(N, -1), np.cos(arg).reshape(N, -1)]
        if ncomp > 1:
            static.append(np.eye(ncomp)[comp])
        t["static"] = torch.as_tensor(np.hstack(static), dtype=dtype)
        t["bmask"] = torch.as_tensor(mask)
        t["in_of_dof"] = torch.as_tensor(np.arange(N) // ncomp)
        self._bind_extra(basis, t, dtype, **kw)
        self.graph = _Graph(t).to(device)
        self.graph_n, self.graph_n_in = N, N // ncomp
        self.graph_dirichlet = dirichlet
        self._bound_to = None
        return self

    # -- normalization -----------------------------------------------------------------------
    @torch.no_grad()
    def fit_normalization(self, X: torch.Tensor, Y: torch.Tensor) -> SPON:
        """Per-channel mean/std of ``X`` (S, C, n_in) and the RMS of ``Y`` (S, N).

        Channels that are positive with a spread max/min > 4 (e.g. a log-normal
        permeability) are fed as their logarithm."""
        X, Y = X.double(), Y.double()
        lo, hi = X.amin(dim=(0, 2)), X.amax(dim=(0, 2))
        self.x_log.copy_((lo > 0) & (hi > 4 * lo))
        X = self._log(X)
        self.x_mean.copy_(X.mean(dim=(0, 2)))
        self.x_std.copy_(X.std(dim=(0, 2)).clamp_min(1e-12))
        self.y_scale.copy_(Y.pow(2).mean().sqrt().clamp_min(1e-12))
        return self

    def _log(self, x):
        """Logarithm of the ``x_log`` channels of x (B, C, n) (clamped at 1e-12)."""
        if not bool(self.x_log.any()):
            return x
        return torch.where(self.x_log[:, None], torch.log(x.clamp_min(1e-12)), x)

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lift: torch.Tensor) -> torch.Tensor:
        """Predict full FE coefficient vectors.

        Parameters
        ----------
        x : tensor (B, C, n_in_dofs)
            Encoded inputs.
        lift : tensor (B, N)
            Dirichlet data on the Dirichlet dofs (other entries are ignored).

        Returns
        -------
        tensor (B, N), dtype of ``lift``; equal to ``lift`` on the Dirichlet dofs.
        """
        g = self.graph
        if g is None:
            raise InputError("the model is not bound to a mesh: call model.bind(fe_data)")
        C = len(self.config["channels"])
        if x.ndim != 3 or x.shape[1] != C or x.shape[2] != self.graph_n_in:
            raise InputError(f"x must have shape (B, {C}, {self.graph_n_in}), got {tuple(x.shape)}")
        if lift.ndim != 2 or lift.shape != (x.shape[0], self.graph_n):
            raise InputError(f"lift must have shape ({x.shape[0]}, {self.graph_n}), "
                             f"got {tuple(lift.shape)}")
        dtype = g.static.dtype
        xn = ((self._log(x.double()) - self.x_mean[:, None]) / self.x_std[:, None]).to(dtype)
        xn = xn[:, :, g.in_of_dof].transpose(1, 2)                       # (B, N, C)
        gl = torch.where(g.bmask, lift, torch.zeros_like(lift))
        feat = torch.cat([xn, g.static.expand(x.shape[0], -1, -1),
                          (gl / self.y_scale).to(dtype)[..., None]], dim=-1)
        h = self.encoder(feat)
        if self.input_kernel is not None:
            kern = self.input_kernel.kernel(g.static, xn, g.weights)
            h = h + self.input_kernel.out(kern)
        out = self.decoder(self._process(h))[..., 0]
        if self.input_skip is not None:
            out = out + self.input_skip(kern)[..., 0]
        out = out.to(lift.dtype) * self.y_scale.to(lift.dtype)
        return torch.where(g.bmask, gl, gl + out)

    @torch.no_grad()
    def predict(self, data, *, batch_size: int = 64) -> torch.Tensor:
        """Predictions (S, N) float64 for an :class:`FEData` (binds the model to it)."""
        token = data._shared.setdefault("bind_token", object())  # same mesh and spaces
        if self.graph is None or getattr(self, "_bound_to", None) is not token:
            self.bind(data)
            self._bound_to = token
        dev = next(self.parameters()).device
        outs = []
        for i in range(0, data.n_samples, batch_size):
            outs.append(self(data.X[i:i + batch_size].to(dev).double(),
                             data.lift[i:i + batch_size].to(dev).double()).cpu())
        return torch.cat(outs)


@register_model("spon-mg")
class SPONMG(SPON):
    r"""Multigrid SPON: a V-cycle of message passing over a hierarchy of coarse levels.

    Fine level: ``fine_layers`` layers before and after; each intermediate coarse
    level: one layer down and one up; coarsest level: the ``layers`` heavy layers.
    Between levels :math:`h_{k} = W [R_k h_{k-1}, s_k]` (restriction, coarse node
    features :math:`s_k`) and :math:`h_{k-1} \mathrel{+}= P_k U h_k` (FE prolongation).
    The weights of the transfers and of the intermediate layers are shared by all
    levels, so the depth of the hierarchy may differ from mesh to mesh: by default
    (``levels=None``) each mesh is coarsened until about ``coarsest`` nodes remain
    (:func:`femno.operators.fe_torch.coarse_hierarchy`), so a finer mesh of the same
    domain gets more levels and the heavy layers see a similar coarse resolution.
    ``levels=k`` fixes the depth; ``bind(..., coarse=mesh)`` makes a given coarse mesh
    the first level.
    """

    def __init__(self, *, fine_layers=2, levels=None, coarsest=64, **kw):
        if levels is not None and (isinstance(levels, bool)
                                   or not isinstance(levels, (int, np.integer)) or levels < 1):
            raise InputError(f"levels must be an integer >= 1 or None, got {levels!r}")
        super().__init__(fine_layers=int(fine_layers), levels=None if levels is None else
                         int(levels), coarsest=int(coarsest), **kw)

    def _build_processor(self):
        c = self.config
        w, e = c["width"], c["dim"] + 1

        def stack(n):
            return nn.ModuleList(MessagePassing(w, e) for _ in range(n))

        self.pre, self.post, self.mp = stack(c["fine_layers"]), stack(c["fine_layers"]), stack(
            c["layers"])
        self._build_mix()
        self.mid_pre, self.mid_post = MessagePassing(w, e), MessagePassing(w, e)
        self.down = nn.Linear(w + c["dim"] + 1, w)
        self.up = nn.Linear(w, w)

    def _bind_extra(self, basis, t, dtype, coarse=None, levels=None):
        self.hierarchy = coarse_hierarchy(
            basis.mesh, basis.doflocs, coarse=coarse,
            levels=self.config["levels"] if levels is None else levels,
            coarsest=self.config["coarsest"])
        w = self._lumped
        for k, lvl in enumerate(self.hierarchy, start=1):
            w = lvl.P.T @ w  # partition of unity: the coarse nodes' share of the mass
            t.update({f"l{k}_{name}": v
                      for name, v in _graph_tensors(lvl.pos, lvl.edges, dtype,
                                                    self._edge_scale, w).items()})
            cpos = self._scaled_positions(lvl.pos)
            t[f"l{k}_static"] = torch.as_tensor(np.hstack([cpos, lvl.boundary[:, None]]),
                                                dtype=dtype)
            R = lvl.P.T.tocsr()
            rs = np.asarray(np.abs(R).sum(axis=1)).ravel()
            t[f"l{k}_P"] = to_torch_sparse(lvl.P, dtype=dtype)
            t[f"l{k}_R"] = to_torch_sparse(R.multiply(1.0 / np.maximum(rs, 1e-300)[:, None]),
                                           dtype=dtype)
        self.coarse = self.hierarchy[0]
        self.n_levels = len(self.hierarchy)

    @staticmethod
    def _apply_sparse(A, h):
        """A (M, N) sparse times h (B, N, W) -> (B, M, W)."""
        B, N, W = h.shape
        out = torch.sparse.mm(A, h.transpose(0, 1).reshape(N, B * W))
        return out.reshape(A.shape[0], B, W).transpose(0, 1)

    def _layers(self, layers, h, k):
        args = self._level(k, *_MP_TENSORS)
        for layer in layers:
            h = layer(h, *args)
        return h

    def _process(self, h):
        g, L = self.graph, self.n_levels
        h = self._layers(self.pre, h, 0)
        stack = []
        for k in range(1, L + 1):
            stack.append(h)
            hc = self._apply_sparse(getattr(g, f"l{k}_R"), h)
            static = getattr(g, f"l{k}_static").expand(h.shape[0], -1, -1)
            h = self.down(torch.cat([hc, static], dim=-1))
            if k < L:
                h = self._layers([self.mid_pre], h, k)
        h = self._heavy(h, L)
        for k in range(L, 0, -1):
            h = stack.pop() + self._apply_sparse(getattr(g, f"l{k}_P"), self.up(h))
            if k > 1:
                h = self._layers([self.mid_post], h, k - 1)
        return self._layers(self.post, h, 0)


ARCHS = {"spon": SPON, "spon-mg": SPONMG}


def make_spon(arch: str, data, *, width: int = 64, layers: int = 6, seed: int = 0, **kw):
    """A new model of ``arch`` for ``data`` (FEData), normalized on it and bound to its mesh.

    ``kw``: extra model options (``global_rank``, ``input_rank``, ``input_skip``,
    ``fourier``; and
    ``fine_layers``, ``levels``, ``coarsest`` for ``spon-mg``)."""
    if arch not in ARCHS:
        raise InputError(f"unknown SPON architecture {arch!r}; valid: {sorted(ARCHS)}")
    for name, v in (("width", width), ("layers", layers)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name} must be an integer >= 1, got {v!r}")
    if data.Y is None:
        raise InputError("training data needs targets (FEData.Y)")
    torch.manual_seed(int(seed))
    model = ARCHS[arch](channels=data.channels, n_components=data.dim if data.vector else 1,
                        dim=data.dim, width=width, layers=layers, element=data.element,
                        family=data.family, encode=data.encode, **kw)
    model.fit_normalization(data.X, data.Y)
    return model.bind(data)
