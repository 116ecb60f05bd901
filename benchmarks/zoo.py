"""A zoo of parametric PDE families for the data-generation benchmark (bench_zoo.py).

None of these families is a femno recipe and none was used to tune ``auto``: they are
written the way a user would write them, with scikit-fem. Each family assembles its
parameter-independent pieces once (an affine decomposition ``A(theta) = sum_k
theta_k A_k`` of a few coefficient modes; every ``A_k`` on the same pattern) and
returns ``N`` systems ``(A_i, b_i)`` (csr, float64, Dirichlet dofs condensed out).

``size`` is ``"small"`` (~1e4 dofs) or ``"large"`` (~2.5e5 dofs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import skfem as fem
from skfem.helpers import ddot, dot, grad, sym_grad, trace

#: (2-D P1 grid n, P2 grid n, 3-D P1 n, 2-D vector n, 3-D vector n) per size
GRID = {"small": (100, 50, 21, 70, 15), "large": (500, 250, 63, 353, 43)}


def _modes(K, seed, dim):
    """K smooth positive coefficient modes x -> 1 + 0.9 prod_d cos(pi k_d x_d + s_d)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(K):
        ks, ph = rng.integers(0, 4, dim), rng.uniform(0, 2 * np.pi, dim)

        def phi(x, ks=ks, ph=ph):
            f = 1.0
            for d in range(dim):
                f = f * np.cos(np.pi * ks[d] * x[d] + ph[d])
            return 1.0 + 0.9 * f

        out.append(phi)
    return out


def _condense(mats, b, D):
    """Condense the Dirichlet dofs D of every matrix (same pattern) and the rhs."""
    I = np.setdiff1d(np.arange(mats[0].shape[0]), D)
    out = []
    for M in mats:
        M = M.tocsr()[I][:, I].tocsr()
        M.sort_indices()
        out.append(M)
    return out, b[I]


def _combine(mats, theta):
    A = mats[0].copy()
    A.data = sum(t * M.data for t, M in zip(theta, mats, strict=True))
    return A


def _align(mats):
    """All matrices on the union of their patterns (so that every combination shares it)."""
    P = sum(abs(M) for M in mats).tocsr()
    P.sum_duplicates()
    P.sort_indices()
    return [sp.csr_matrix((_on_pattern(M, P), P.indices.copy(), P.indptr.copy()), shape=P.shape)
            for M in mats]


@fem.BilinearForm
def _mass(u, v, w):
    return u * v


def _square(n):
    return fem.MeshTri.init_tensor(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))


def _cube(n):
    t = np.linspace(0, 1, n + 1)
    return fem.MeshTet.init_tensor(t, t, t)


def _scalar_family(mesh, elem, N, seed, *, K=4, extra=None, coef=None, rhs=1.0):
    """Generic scalar family: A = sum_k theta_k K_k (+ extra terms), theta ~ U(0.5, 2)."""
    basis = fem.Basis(mesh, elem)
    mats = []
    for phi in _modes(K, seed, mesh.dim()):
        @fem.BilinearForm
        def a(u, v, w, phi=phi):
            return phi(w.x) * dot(grad(u), grad(v))

        mats.append(a.assemble(basis))
    if extra is not None:
        mats += extra(basis)

    @fem.LinearForm
    def f(v, w):
        return rhs * v

    b = f.assemble(basis)
    mats, b = _condense(mats, b, basis.get_dofs().all())
    mats = _align(mats)
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(N):
        theta = coef(rng, len(mats)) if coef else rng.uniform(0.5, 2.0, len(mats))
        out.append((_combine(mats, theta), b * rng.uniform(0.5, 1.5)))
    return out


# --------------------------------------------------------------------------- families
def _tensor_diffusion(basis):
    """The matrices of K_xx, K_yy, K_xy in -div(K grad u) (K symmetric), in that order."""
    mats = []
    for d1, d2 in ((0, 0), (1, 1), (0, 1)):
        @fem.BilinearForm
        def s(u, v, w, d1=d1, d2=d2):
            return grad(u)[d1] * grad(v)[d2] + (grad(u)[d2] * grad(v)[d1] if d1 != d2 else 0)
        mats.append(s.assemble(basis))
    return mats


def convdiff(size, N, seed, *, dominated=False):
    """-eps Lap u + w . grad u = 1, P1, random wind direction and speed per sample.

    ``dominated``: eps = 1e-3 with streamline diffusion tau h (w.grad u)(w.grad v)
    (Peclet_h ~ 2.5 at 1e4 dofs); mild: eps = 1, |w| <= 20."""
    n = GRID[size][0]
    mesh = _square(n)
    h = 1.0 / n
    eps = 1e-3 if dominated else 1.0

    def extra(basis):
        mats = []
        for d in range(2):
            @fem.BilinearForm
            def c(u, v, w, d=d):
                return grad(u)[d] * v
            mats.append(c.assemble(basis))
        if dominated:
            mats += _tensor_diffusion(basis)
        return mats

    def coef(rng, m):
        speed = rng.uniform(0.5, 1.0) if dominated else rng.uniform(5.0, 20.0)
        ang = rng.uniform(0, 2 * np.pi)
        wx, wy = speed * np.cos(ang), speed * np.sin(ang)
        th = list(eps * rng.uniform(0.5, 2.0, 4)) + [wx, wy]
        if dominated:
            tau = 0.5 * h / speed
            th += [tau * wx * wx, tau * wy * wy, tau * wx * wy]
        return np.array(th)

    return _scalar_family(mesh, fem.ElementTriP1(), N, seed, extra=extra, coef=coef)


def anisotropic(size, N, seed):
    """-div(K grad u) = 1 with K = R(a) diag(1, 1e-3) R(a)^T, random angle a per sample."""
    n = GRID[size][0]
    mesh = _square(n)

    def coef(rng, m):
        a = rng.uniform(0, np.pi)
        c, s = np.cos(a), np.sin(a)
        e = 1e-3
        Kxx, Kyy, Kxy = c * c + e * s * s, s * s + e * c * c, (1 - e) * c * s
        return np.array([1e-6] * 4 + [Kxx, Kyy, Kxy])

    return _scalar_family(mesh, fem.ElementTriP1(), N, seed, extra=_tensor_diffusion, coef=coef)


def high_contrast(size, N, seed):
    """Darcy with an 8x8 checkerboard of inclusions, conductivity 1 or 10^U(3,6) per cell."""
    n = GRID[size][0]
    mesh = _square(n)
    basis = fem.Basis(mesh, fem.ElementTriP1())
    mid = mesh.p[:, mesh.t].mean(axis=1)
    cell = (np.floor(mid[0] * 8) + 8 * np.floor(mid[1] * 8)).astype(int).clip(0, 63)
    mats = []
    for c in range(64):
        @fem.BilinearForm
        def a(u, v, w):
            return w["m"] * dot(grad(u), grad(v))
        m = (cell == c).astype(float)[:, None] * np.ones((1, basis.X.shape[1]))
        mats.append(a.assemble(basis, m=m))

    @fem.LinearForm
    def f(v, w):
        return v

    b = f.assemble(basis)
    aligned, b = _condense(mats, b, basis.get_dofs().all())
    aligned = _align(aligned)
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(N):
        theta = np.where(rng.random(64) < 0.5, 1.0, 10.0 ** rng.uniform(3, 6, 64))
        out.append((_combine(aligned, theta), b))
    return out


def _on_pattern(M, P):
    """Values of M on the (superset) csr pattern of P."""
    M = M.tocsr()
    M.sum_duplicates()
    key_p = np.repeat(np.arange(P.shape[0]), np.diff(P.indptr)) * P.shape[1] + P.indices
    key_m = np.repeat(np.arange(M.shape[0]), np.diff(M.indptr)) * M.shape[1] + M.indices
    pos = np.searchsorted(key_p, key_m)
    out = np.zeros(P.nnz)
    out[pos] = M.data
    return out


def darcy3d(size, N, seed):
    """-div(kappa grad u) = 1 on the unit cube, P1 tetrahedra, 4 coefficient modes."""
    return _scalar_family(_cube(GRID[size][2]), fem.ElementTetP1(), N, seed)


def p2_darcy(size, N, seed):
    """-div(kappa grad u) = 1, P2 triangles, 4 coefficient modes."""
    return _scalar_family(_square(GRID[size][1]), fem.ElementTriP2(), N, seed)


def helmholtz(size, N, seed):
    """-Lap u - k^2 u = 1, P1, k ~ U(10, 20) (symmetric indefinite)."""
    n = GRID[size][0]

    def extra(basis):
        return [fem.asm(_mass, basis)]

    def coef(rng, m):
        k = rng.uniform(10.0, 20.0)
        return np.array([0.25] * 4 + [-k * k])

    return _scalar_family(_square(n), fem.ElementTriP1(), N, seed, extra=extra, coef=coef)


def heat(size, N, seed):
    """Implicit Euler steps (M + dt K(t)) u_{n+1} = M u_n + dt f of a heat equation whose
    conductivity modes oscillate slowly in time; u_n from the previous step's exact solve
    would make the series sequential, so the right-hand side uses a prescribed smooth
    trajectory u_n(x) = sin(pi x) sin(pi y) (1 + 0.3 sin t_n)."""
    n = GRID[size][0]
    mesh = _square(n)
    basis = fem.Basis(mesh, fem.ElementTriP1())
    mats = []
    for phi in _modes(4, seed, 2):
        @fem.BilinearForm
        def a(u, v, w, phi=phi):
            return phi(w.x) * dot(grad(u), grad(v))
        mats.append(a.assemble(basis))
    Mm = fem.asm(_mass, basis)
    mats.append(Mm)
    x, y = mesh.p
    u0 = np.sin(np.pi * x) * np.sin(np.pi * y)
    D = basis.get_dofs().all()
    I = np.setdiff1d(np.arange(basis.N), D)
    mats, _ = _condense(mats, np.zeros(basis.N), D)
    mats = _align(mats)
    dt = 1e-3
    out = []
    for step in range(N):
        t = 0.05 * step
        theta = [dt * (1.0 + 0.5 * np.sin(t + k)) for k in range(4)] + [1.0]
        b = (Mm @ (u0 * (1 + 0.3 * np.sin(t))))[I] + dt * Mm.sum(axis=1).A1[I]
        out.append((_combine(mats, theta), b))
    return out


def elasticity(size, N, seed, *, dim=2):
    """Linear elasticity, P1 vector, clamped at x = 0, body force; E split into 4 modes,
    Poisson ratio nu ~ U(0.2, 0.4) per sample (lambda, mu terms assembled apart)."""
    mesh = _square(GRID[size][3]) if dim == 2 else _cube(GRID[size][4])
    elem = fem.ElementVector(fem.ElementTriP1() if dim == 2 else fem.ElementTetP1())
    basis = fem.Basis(mesh, elem)
    mats = []
    for phi in _modes(4 if dim == 2 else 2, seed, dim):
        @fem.BilinearForm
        def lam(u, v, w, phi=phi):
            return phi(w.x) * trace(sym_grad(u)) * trace(sym_grad(v))

        @fem.BilinearForm
        def mu(u, v, w, phi=phi):
            return 2.0 * phi(w.x) * ddot(sym_grad(u), sym_grad(v))

        mats += [lam.assemble(basis), mu.assemble(basis)]

    @fem.LinearForm
    def f(v, w):
        return -v[dim - 1]

    b = f.assemble(basis)
    D = basis.get_dofs(lambda x: np.isclose(x[0], 0.0)).all()
    mats, b = _condense(mats, b, D)
    mats = _align(mats)
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(N):
        nu = rng.uniform(0.2, 0.4)
        E = rng.uniform(0.5, 2.0, len(mats) // 2)
        l_ = nu / ((1 + nu) * (1 - 2 * nu))
        m_ = 1 / (2 * (1 + nu))
        theta = np.ravel([[e * l_, e * m_] for e in E])
        out.append((_combine(mats, theta), b))
    return out


def elasticity_modes(size, *, dim=2):
    """The rigid-body modes of :func:`elasticity`'s free dofs and their node block size,
    as a user who knows the physics passes them (``solve_sequence(near_nullspace=)``)."""
    from femno.fem.nullspace import node_block_size, rigid_body_modes

    mesh = _square(GRID[size][3]) if dim == 2 else _cube(GRID[size][4])
    elem = fem.ElementVector(fem.ElementTriP1() if dim == 2 else fem.ElementTetP1())
    basis = fem.Basis(mesh, elem)
    D = basis.get_dofs(lambda x: np.isclose(x[0], 0.0)).all()
    free = np.setdiff1d(np.arange(basis.N), D)
    return rigid_body_modes(basis, free), node_block_size(basis, free)


def user_file(size, N, seed):
    """A family loaded from a user's file (zoo_user_family.py) through femno's loader."""
    from femno.datagen.runner import load_family

    path = Path(__file__).with_name("zoo_user_family.py")
    fam = load_family(f"{path}:ReactionDiffusion", {"n": GRID[size][0]})
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N):
        s = fam.assemble(fam.sample(rng))
        out.append((s.A.tocsr(), s.b))
    return out


FAMILIES = {
    "convdiff-mild": lambda s, N, seed: convdiff(s, N, seed),
    "convdiff-dominated": lambda s, N, seed: convdiff(s, N, seed, dominated=True),
    "anisotropic": anisotropic,
    "high-contrast": high_contrast,
    "darcy3d": darcy3d,
    "p2-darcy": p2_darcy,
    "elasticity2d": lambda s, N, seed: elasticity(s, N, seed, dim=2),
    "elasticity3d": lambda s, N, seed: elasticity(s, N, seed, dim=3),
    "helmholtz": helmholtz,
    "heat": heat,
    "user-file": user_file,
}

#: near-nullspace modes (B, block_size) the user gives for a family, by size
NEAR_NULLSPACE = {
    "elasticity2d": lambda s: elasticity_modes(s, dim=2),
    "elasticity3d": lambda s: elasticity_modes(s, dim=3),
}
