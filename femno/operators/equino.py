r"""EquiNO: physics-informed POD operator for periodic RVE problems (SPEC §2).

From FE snapshots (:mod:`femno.multiscale.snapshots`) two POD bases are taken by a
plain SVD (no mean removal, :math:`r` modes each): :math:`\Phi_u` of the periodic
displacement fluctuation (``2 n_nodes`` values) and :math:`\Phi_\sigma` of the stress
at the integration points (``3 n_ip`` values).  Every snapshot is periodic and in
discrete equilibrium, so every combination of modes is too.  Two MLPs
(3 -> 4 x 64 SiLU -> r, input :math:`\bar e/0.04`) give the mode coefficients:

.. math::

    \tilde u = \Phi_u\, c_u(\bar e), \qquad \sigma^{POD} = \Phi_\sigma\, c_\sigma(\bar e),
    \qquad \varepsilon_{ip} = \bar e + (B\Phi_u)\, c_u(\bar e),

with :math:`B\Phi_u` precomputed (dense, ``(3 n_ip, r)``).  The loss has no stress
labels: the mean over integration points of
:math:`\|\sigma^{const}(\varepsilon_{ip}) - \sigma^{POD}_{ip}\|^2` (divided by the
mean square snapshot stress).  The homogenized stress is the area-weighted mean of
the POD stress, :math:`\langle\sigma\rangle = A_\sigma c_\sigma(\bar e)`, and the macro
tangent is its exact derivative, pushed forward through the MLP by hand (batched; numpy
on CPU for small batches, torch otherwise) or by ``torch.func`` ``vmap(jacfwd)``
(``method="ad"``).  The training strain box is stored (:meth:`EquiNO.training_range`).
Everything is float64.  Training: :func:`~femno.operators.equino_train.train_equino` (random or LM initialization,
:mod:`femno.operators.equino_fit`).

>>> import numpy as np, torch
>>> from femno.multiscale.rve_solver import RVESolver
>>> from femno.multiscale.rve_assembly import laminate_rve
>>> solver = RVESolver(laminate_rve([0.5, 0.5], nx=2, ny=4))
>>> snaps = [solver.solve(e, tangent=False) for e in ([0.01, 0, 0], [0, 0.01, 0], [0, 0, 0.01])]
>>> model = EquiNO.from_snapshots(solver, np.stack([s.fluctuation for s in snaps]),
...                               np.stack([s.stress_ip for s in snaps]), modes=3, seed=0)
>>> s, C = model.stress_and_tangent(np.zeros((2, 3)))
>>> s.shape, C.shape, s.dtype
((2, 3), (2, 3, 3), dtype('float64'))
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from femno.errors import InputError
from femno.multiscale.micro import register_micro_loader
from femno.operators.checkpoint import load_model, register_model

#: Largest batch that ``stress_and_tangent(method="auto")`` evaluates in numpy on CPU
#: (cheaper than torch below it; see benchmarks/results/equino.md).
_NUMPY_MAX_BATCH = 512

__all__ = ["EquiNO", "mlp", "material_spec", "laws_from_spec"]


def mlp(n_in: int, n_out: int, *, width: int = 64, depth: int = 4) -> nn.Sequential:
    """``n_in -> depth x width (SiLU) -> n_out`` multilayer perceptron (float64)."""
    from femno.operators.layers import mlp as _mlp

    return _mlp(n_in, n_out, width=width, hidden=depth, activation=nn.SiLU).double()


def material_spec(materials: dict) -> dict:
    """JSON-able description ``{id: [kind, params...]}`` of a material-law dict."""
    from femno.multiscale.materials import LinearElastic, NonlinearElasticMatrix

    spec = {}
    for mid, law in materials.items():
        if isinstance(law, LinearElastic):
            spec[str(int(mid))] = ["linear", law.K, law.G]
        elif isinstance(law, NonlinearElasticMatrix):
            spec[str(int(mid))] = ["matrix", law.K, law.alpha, law.beta]
        else:
            raise InputError(f"EquiNO cannot store material law {law!r}")
    return spec


def laws_from_spec(spec: dict) -> dict:
    """Inverse of :func:`material_spec`."""
    from femno.multiscale.materials import LinearElastic, NonlinearElasticMatrix

    kinds = {"linear": LinearElastic, "matrix": NonlinearElasticMatrix}
    return {int(k): kinds[v[0]](*v[1:]) for k, v in spec.items()}


def _pod(X: np.ndarray, r: int) -> np.ndarray:
    """First ``r`` left singular vectors of the snapshot matrix ``X`` (dofs, samples)."""
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    if r > U.shape[1]:
        raise InputError(f"{r} POD modes requested from {U.shape[1]} snapshots")
    return U[:, :r]


@register_model("equino")
class EquiNO(nn.Module):
    r"""Physics-informed POD operator of one RVE (see the module docstring).

    Build with :meth:`from_snapshots`; train with :func:`femno.operators.training.fit`
    and :meth:`loss`; save/load with :func:`femno.operators.checkpoint.save_model` /
    ``load_model``.

    Parameters
    ----------
    n_nodes, n_ip : int
        Mesh nodes and integration points of the RVE.
    materials : dict
        :func:`material_spec` of the laws, keyed by material id.
    modes, width, depth : int
        POD modes ``r`` and MLP width and hidden layers.
    strain_scale : float
        Network input is ``strain / strain_scale``.
    rve : str
        Name of the RVE (metadata).
    train_bounds : array_like (2, 3), optional
        Per-component lower and upper bounds of the training strains (set by
        :func:`~femno.operators.equino_train.train_equino`; ``None`` in checkpoints written before it existed).
    zero_origin : bool
        Networks output :math:`\mathrm{net}(x) - \mathrm{net}(0)`, so zero macro strain
        gives exactly zero fluctuation and stress (both laws are stress-free at zero
        strain) and small strains are linear in the strain to first order.  ``False``
        (the published design, and checkpoints written before it existed) leaves the
        networks' offset free.
    """

    def __init__(self, *, n_nodes: int, n_ip: int, materials: dict, modes: int = 16, width: int = 64,
                 depth: int = 4, strain_scale: float = 0.04, rve: str = "rve",
                 loss: str = "stress", train_bounds=None, zero_origin: bool = False):
        super().__init__()
        self.config = {"n_nodes": int(n_nodes), "n_ip": int(n_ip), "materials": dict(materials),
                       "modes": int(modes), "width": int(width), "depth": int(depth),
                       "strain_scale": float(strain_scale), "rve": str(rve),
                       "loss": str(loss), "zero_origin": bool(zero_origin),
                       "train_bounds": None if train_bounds is None else
                       np.asarray(train_bounds, dtype=np.float64).reshape(2, 3).tolist()}
        if loss not in ("stress", "compliance"):
            raise InputError(f"loss must be 'stress' or 'compliance', got {loss!r}")
        r, f64 = int(modes), torch.float64
        self.net_u = mlp(3, r, width=width, depth=depth)
        self.net_s = mlp(3, r, width=width, depth=depth)
        self.register_buffer("phi_u", torch.zeros(2 * n_nodes, r, dtype=f64))
        self.register_buffer("phi_s", torch.zeros(3 * n_ip, r, dtype=f64))
        self.register_buffer("b_phi_u", torch.zeros(3 * n_ip, r, dtype=f64))
        self.register_buffer("avg_s", torch.zeros(3, r, dtype=f64))
        self.register_buffer("scale_u", torch.ones(r, dtype=f64))
        self.register_buffer("scale_s", torch.ones(r, dtype=f64))
        self.register_buffer("stress_scale", torch.ones((), dtype=f64))
        self.register_buffer("material_ip", torch.zeros(n_ip, dtype=torch.int64))
        self.laws = laws_from_spec(materials)
        self._groups = None

    @classmethod
    def from_state(cls, config: dict, state_dict: dict) -> EquiNO:
        """Rebuild from a checkpoint's ``config`` and ``state_dict`` (POD bases are buffers)."""
        model = cls(**config)
        model.load_state_dict(state_dict)
        return model

    @classmethod
    def from_snapshots(cls, solver, fluctuation: np.ndarray, stress_ip: np.ndarray, *,
                       modes: int = 16, width: int = 64, depth: int = 4,
                       strain_scale: float = 0.04, seed: int = 0, loss: str = "stress",
                       train_bounds=None, zero_origin: bool = False) -> EquiNO:
        """POD of snapshots of ``solver``'s RVE and freshly initialized MLPs.

        Parameters
        ----------
        solver : femno.multiscale.rve_solver.RVESolver
        fluctuation : ndarray, shape (S, n_nodes, 2)
        stress_ip : ndarray, shape (S, n_ip, 3)
        modes : int
            POD modes per field (at most ``S``).
        seed : int
            Seed of the network initialization.
        train_bounds : array_like (2, 3), optional
            Training strain range (see the class parameters).
        zero_origin : bool
            See the class parameters.
        """
        fl, st = np.asarray(fluctuation, np.float64), np.asarray(stress_ip, np.float64)
        if fl.ndim != 3 or fl.shape[1:] != (solver.rve.n_nodes, 2):
            raise InputError(f"fluctuation must have shape (S, {solver.rve.n_nodes}, 2), got {fl.shape}")
        if st.shape != (fl.shape[0], solver.n_ip, 3):
            raise InputError(f"stress_ip must have shape ({fl.shape[0]}, {solver.n_ip}, 3), got {st.shape}")
        torch.manual_seed(int(seed))
        model = cls(n_nodes=solver.rve.n_nodes, n_ip=solver.n_ip,
                    materials=material_spec(solver.materials), modes=modes, width=width,
                    depth=depth, strain_scale=strain_scale, rve=solver.rve.name, loss=loss,
                    train_bounds=train_bounds, zero_origin=zero_origin)
        Xu, Xs = fl.reshape(fl.shape[0], -1).T, st.reshape(st.shape[0], -1).T
        phi_u, phi_s = _pod(Xu, modes), _pod(Xs, modes)
        b_phi = solver.strain_operator() @ phi_u
        w = solver.w.reshape(-1)
        avg = np.einsum("i,icr->cr", w, phi_s.reshape(-1, 3, modes)) / solver.area
        cu, cs = phi_u.T @ Xu, phi_s.T @ Xs  # (r, S)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
        model.phi_u.copy_(t(phi_u))
        model.phi_s.copy_(t(phi_s))
        model.b_phi_u.copy_(t(b_phi))
        model.avg_s.copy_(t(avg))
        model.scale_u.copy_(t(np.maximum(np.abs(cu).max(axis=1), 1e-30)))
        model.scale_s.copy_(t(np.maximum(np.abs(cs).max(axis=1), 1e-30)))
        model.stress_scale.fill_(float(np.sqrt(np.mean(st**2))) + 1e-30)
        model.material_ip.copy_(torch.as_tensor(solver.material_ip, dtype=torch.int64))
        return model

    def training_range(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(lo, hi)``, each (3,), of the training strains, or ``None`` when unknown."""
        b = self.config.get("train_bounds")
        return None if b is None else (np.asarray(b[0], float), np.asarray(b[1], float))

    # -- evaluation ----------------------------------------------------------------------
    def _input(self, strains) -> torch.Tensor:
        dev = self.phi_u.device
        if isinstance(strains, torch.Tensor):
            e = strains.to(device=dev, dtype=torch.float64)
        else:
            from femno.multiscale.materials import check_strains

            e = torch.as_tensor(check_strains(strains), device=dev)
        if e.ndim == 1:
            e = e[None]
        if e.ndim != 2 or e.shape[1] != 3:
            raise InputError(f"strains must have shape (n, 3), got {tuple(e.shape)}")
        if not bool(torch.isfinite(e).all()):
            raise InputError("strains contain NaN or inf")
        return e

    @property
    def zero_origin(self) -> bool:
        return bool(self.config.get("zero_origin", False))

    def _net(self, net, e: torch.Tensor) -> torch.Tensor:
        """``net(e / strain_scale)``, minus ``net(0)`` with :attr:`zero_origin`."""
        x = e / self.config["strain_scale"]
        if not self.zero_origin:
            return net(x)
        y = net(torch.cat([x, x.new_zeros(1, x.shape[1])]))
        return y[:-1] - y[-1:]

    def coefficients(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """POD coefficients ``(c_u, c_sigma)``, each (n, r), of strains ``e`` (n, 3)."""
        return self._net(self.net_u, e) * self.scale_u, self._net(self.net_s, e) * self.scale_s

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """Homogenized stress (n, 3) of strains ``e`` (n, 3) (differentiable)."""
        return (self._net(self.net_s, e) * self.scale_s) @ self.avg_s.T

    def _material_groups(self):
        if self._groups is None or self._groups[0][1].device != self.material_ip.device:
            ids = torch.unique(self.material_ip).tolist()
            self._groups = [(self.laws[int(m)], torch.nonzero(self.material_ip == m).ravel())
                            for m in ids]
        return self._groups

    def constitutive_stress(self, eps: torch.Tensor) -> torch.Tensor:
        """Material-law stress (..., n_ip, 3) of integration-point strains (..., n_ip, 3)."""
        out = torch.empty_like(eps)
        for law, idx in self._material_groups():
            out[..., idx, :] = law.stress_torch(eps[..., idx, :])
        return out

    def residual(self, e: torch.Tensor, coefficients=None) -> torch.Tensor:
        """Constitutive residual ``(sigma_const(eps) - sigma_POD) / stress_scale``, (n, n_ip, 3).

        ``coefficients``: optional ``(c_u, c_sigma)`` (n, r) used instead of the networks'
        (e.g. the POD projection of FE snapshots, to measure the loss of the FE solution).
        """
        cu, cs = self.coefficients(e) if coefficients is None else coefficients
        n = e.shape[0]
        eps = e[:, None, :] + (cu @ self.b_phi_u.T).reshape(n, -1, 3)
        sig = (cs @ self.phi_s.T).reshape(n, -1, 3)
        return (self.constitutive_stress(eps) - sig) / self.stress_scale

    def _compliance(self) -> torch.Tensor:
        """Per-ip weight ``S_m = C0_m^{-1} / max_m(1 / mean diag C0_m)`` (n_ip, 3, 3)."""
        if getattr(self, "_S", None) is None or self._S.device != self.material_ip.device:
            S = torch.zeros(self.material_ip.shape[0], 3, 3, dtype=torch.float64,
                            device=self.material_ip.device)
            invs = {}
            for law, idx in self._material_groups():
                C0 = law.stress_and_tangent(np.zeros((1, 3)))[1][0]
                invs[id(law)] = (np.linalg.inv(C0), idx)
            ref = max(np.trace(v[0]) / 3 for v in invs.values())
            for Sm, idx in invs.values():
                S[idx] = torch.as_tensor(Sm / ref, device=S.device)
            self._S = S
        return self._S

    def loss(self, e: torch.Tensor) -> torch.Tensor:
        r"""Physics-informed loss: mean over strains and ips of the squared residual norm.

        ``config["loss"] == "stress"`` (published): :math:`\|r\|^2`;
        ``"compliance"``: :math:`r^T C_0^{-1} r` with the zero-strain tangent of each
        ip's material (normalized), which weighs the soft matrix up.
        """
        r = self.residual(e)
        if self.config.get("loss", "stress") == "compliance":
            return torch.einsum("nic,icd,nid->ni", r, self._compliance(), r).mean()
        return (r ** 2).sum(-1).mean()

    def stress_and_tangent(self, strains, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        r"""Micro-model interface: homogenized stress (n, 3) and tangent (n, 3, 3), float64 numpy.

        ``strains`` (n, 3) ndarray or tensor.  ``method``: ``"auto"`` (default:
        ``"numpy"`` on CPU up to 512 points, else ``"forward"``), ``"numpy"`` (model on
        CPU only) / ``"forward"`` (hand-written
        forward-mode tangent, :meth:`stress_and_tangent_torch`, in numpy or torch on the
        model's device) or ``"ad"`` (``torch.func`` ``vmap(jacfwd)``).  All agree to
        rounding; the forward paths are 4-20x cheaper on CPU at small batches (see
        ``benchmarks/results/equino.md``).
        """
        on_cpu = self.phi_u.device.type == "cpu"
        if method == "auto":
            n = len(strains) if hasattr(strains, "__len__") else 1  # validated below
            method = "numpy" if on_cpu and n <= _NUMPY_MAX_BATCH else "forward"
        if method == "numpy":
            if not on_cpu:
                raise InputError("method='numpy' needs the model on the CPU; use 'forward'")
            if isinstance(strains, torch.Tensor):
                strains = strains.detach().cpu().numpy()
            from femno.multiscale.materials import check_strains

            return self._stress_and_tangent_numpy(check_strains(strains, what="strains"))
        s, C = self.stress_and_tangent_torch(self._input(strains), method=method)
        return s.detach().cpu().numpy(), C.detach().cpu().numpy()

    def stress_and_tangent_torch(self, e: torch.Tensor, *, method: str = "forward"
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Tensor version of :meth:`stress_and_tangent` (no host transfer).

        ``method="forward"`` (default): the tangent is pushed forward through the MLP
        with the activations, :math:`T_0 = W_1/s`, after each hidden layer
        :math:`z = W h + b`, :math:`h \leftarrow \mathrm{SiLU}(z)`,
        :math:`T \leftarrow \mathrm{SiLU}'(z) \odot (W T)` with
        :math:`\mathrm{SiLU}'(z) = \varsigma(z)(1 + z(1-\varsigma(z)))`; the output
        layer, coefficient scales and area average fold into one matrix
        :math:`G = W_L^T \operatorname{diag}(s_\sigma) A_\sigma^T` (width, 3), so that
        :math:`\bar\sigma = h G + \text{const}` and :math:`\mathbb{C} = T G`.
        ``method="ad"``: ``vmap(jacfwd(forward))``.
        """
        if method == "ad":
            from torch.func import jacfwd, vmap

            def one(x):
                s = self.forward(x[None])[0]
                return s, s

            with torch.no_grad():
                C, s = vmap(jacfwd(one, has_aux=True))(e)
            return s, C
        if method != "forward":
            raise InputError(f"method must be 'auto', 'numpy', 'forward' or 'ad', got {method!r}")
        with torch.no_grad():
            lins, G, c = self._folded_output()
            h, T = e / self.config["strain_scale"], None
            for lin in lins[:-1]:
                z = torch.addmm(lin.bias, h, lin.weight.T)
                sg = torch.sigmoid(z)
                h, d = z * sg, sg * (1 + z * (1 - sg))
                T = d[None] * (lin.weight.T / self.config["strain_scale"])[:, None, :] \
                    if T is None else d[None] * (T @ lin.weight.T)
            return h @ G + c, (T @ G).permute(1, 2, 0)

    def _folded_output(self):
        """Linear layers, ``G = W_L^T diag(scale_s) avg_s^T`` (width, 3) and the constant (3,)
        (minus the stress of ``net(0)`` with :attr:`zero_origin`)."""
        lins = [m for m in self.net_s if isinstance(m, nn.Linear)]
        if len(lins) + sum(isinstance(m, nn.SiLU) for m in self.net_s) != len(self.net_s):
            raise InputError("forward-mode tangent needs a Linear/SiLU network; use method='ad'")
        G = lins[-1].weight.T @ (self.scale_s[:, None] * self.avg_s.T)
        c = (lins[-1].bias * self.scale_s) @ self.avg_s.T
        if self.zero_origin:  # the constant is net(0)'s stress, so that zero strain gives zero
            c = c - (self.net_s(self.avg_s.new_zeros(1, 3)) * self.scale_s)[0] @ self.avg_s.T
        return lins, G, c

    def _stress_and_tangent_numpy(self, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``"forward"`` recursion of :meth:`stress_and_tangent_torch` in numpy (CPU).

        The numpy weights are cached, keyed by the parameters' in-place version counters
        (an optimizer step or ``load_state_dict`` invalidates them).
        """
        ts = (*self.net_s.parameters(), self.scale_s, self.avg_s)
        key = (self.zero_origin, *((t.data_ptr(), t._version) for t in ts))
        if getattr(self, "_np_cache", (None,))[0] != key:
            with torch.no_grad():
                lins, G, c = self._folded_output()
                Ws = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
                      for m in lins[:-1]]
                self._np_cache = (key, Ws, G.numpy().copy(), c.numpy().copy())
        _, Ws, G, c = self._np_cache
        scale = self.config["strain_scale"]
        h, T = e / scale, None
        with np.errstate(over="ignore"):
            for Wt, b in Ws:
                z = h @ Wt + b
                sg = 1.0 / (1.0 + np.exp(-z))
                h, d = z * sg, sg * (1 + z * (1 - sg))
                T = d[None] * (Wt / scale)[:, None, :] if T is None else d[None] * (T @ Wt)
        return h @ G + c, (T @ G).transpose(1, 2, 0)

    @torch.no_grad()
    def fields(self, strains) -> dict:
        """Predicted fields at strains (n, 3): numpy float64 arrays

        ``fluctuation`` (n, n_nodes, 2), ``stress_ip`` (n, n_ip, 3) (POD stress),
        ``stress_ip_const`` (n, n_ip, 3) (material law at the predicted strain),
        ``stress`` (n, 3) homogenized.
        """
        e = self._input(strains)
        cu, cs = self.coefficients(e)
        n = e.shape[0]
        eps = e[:, None, :] + (cu @ self.b_phi_u.T).reshape(n, -1, 3)
        out = {"fluctuation": (cu @ self.phi_u.T).reshape(n, -1, 2),
               "stress_ip": (cs @ self.phi_s.T).reshape(n, -1, 3),
               "stress_ip_const": self.constitutive_stress(eps), "stress": cs @ self.avg_s.T}
        return {k: v.cpu().numpy() for k, v in out.items()}


def _load_micro_file(path, device=None):
    """EquiNO checkpoint -> model, for :class:`femno.multiscale.micro.EquiNOMicro`."""
    return load_model(path, kind="equino", device=device)


# fills multiscale's micro-model registry (multiscale does not import operators)
register_micro_loader("equino", _load_micro_file)
