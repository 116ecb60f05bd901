"""Surrogates in place of a solve and as Krylov initial guesses (neural warm start)."""

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

from femno.datagen.generate import generate_dataset
from femno.datagen.runner import sample_params
from femno.datagen.sequence import solve_sequence
from femno.errors import InputError
from femno.fem import get_family
from femno.operators.baselines import build_baseline
from femno.operators.checkpoint import save_model
from femno.operators.fe_data import FEData
from femno.operators.surrogate import NeuralInitialGuess, Surrogate, data_meta
from femno.solvers import krylov

torch.set_num_threads(1)


class Oracle(torch.nn.Module):
    """Poisson 'network' that solves exactly from its encoded input (rhs = M^-1 F), then
    perturbs the answer by a relative ``noise`` (seeded): a known-quality predictor."""

    def __init__(self, family, noise=1e-3):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        s = family.assemble(family.sample(np.random.default_rng(0)))
        from femno.operators.fe_data import mass_matrix

        self.M, self.free, self.A = mass_matrix(family.basis), s.free, s.A
        self.noise, self.rng = noise, np.random.default_rng(1)
        self.meta = {"data": {"family": family.name, "element": family.element,
                              "n_dofs": family.basis.N, "mesh": None, "channels": ["rhs"],
                              "encode": "l2"}}
        self.mesh_independent = True

    def forward(self, X, lift):
        out = []
        for x in X[:, 0].numpy():
            u = np.zeros(self.M.shape[0])
            u[self.free] = spla.spsolve(self.A.tocsc(), (self.M @ x)[self.free])
            out.append(u * (1 + self.noise * self.rng.standard_normal(u.shape)))
        return torch.as_tensor(np.array(out))


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sur") / "darcy.femno")
    generate_dataset("darcy", samples=6, out=path, method="direct", block=6,
                     family_options={"n": 6, "length": 0.3}, progress=False)
    data = FEData.from_dataset(path)
    model = build_baseline("deeponet", data, width=8, depth=1, p=4)
    model.meta = {"data": data_meta(data)}
    return path, data, model


def test_predict_equals_the_dataset_encoding_path(darcy):
    path, data, model = darcy
    sur = Surrogate.load(save_model(model, path + ".pt"))          # family from the record
    params = [sample_params(sur.family, 0, int(i)) for i in data.sample_index[:3]]
    u = sur.predict_many(params)
    with torch.no_grad():
        ref = model(data.X[:3]).numpy()
    assert u.shape == (3, data.n_dofs) and u.dtype == np.float64
    assert np.allclose(u, ref, rtol=1e-12, atol=1e-14)
    assert np.allclose(sur.predict(params[1]), u[1], rtol=1e-5)   # float32 network


def test_dirichlet_values_exact(darcy):
    _, data, model = darcy
    fam = get_family("darcy", n=6, length=0.3)
    p = fam.sample(np.random.default_rng(5))
    raw = Surrogate(model, fam).predict(p)
    assert np.abs(raw[data.dirichlet]).max() > 0            # DeepONet does not lift
    u = Surrogate(model, fam, enforce_dirichlet=True).predict(p)
    assert np.all(u[data.dirichlet] == 0.0) and np.array_equal(u[data.free], raw[data.free])
    spon = pytest.importorskip("femno.operators.spon")
    net = spon.make_spon("spon", data, width=8, layers=2, seed=3)   # random weights
    v = Surrogate(net, fam).predict(p)                      # lifting model: exact by itself
    assert np.all(v[data.dirichlet] == 0.0) and np.abs(v[data.free]).max() > 0
    from femno.fem.mesh import unstructured_square

    other = get_family("darcy", mesh=unstructured_square(5, seed=1), length=0.3)
    sur = Surrogate(net, other)                             # SPON binds to another mesh
    w = sur.predict(other.sample(np.random.default_rng(0)))
    assert w.shape == (other.basis.N,) and np.all(w[sur.dirichlet] == 0.0)


def test_bad_input(darcy):
    _, data, model = darcy
    with pytest.raises(InputError, match="family 'darcy' vs 'poisson'"):
        Surrogate(model, get_family("poisson", n=6))
    with pytest.raises(InputError, match="dofs"):
        Surrogate(model, get_family("darcy", n=7))
    from femno.fem.mesh import unstructured_square

    with pytest.raises(InputError, match="different mesh"):
        Surrogate(model, get_family("darcy", mesh=unstructured_square(6, seed=2)))
    bare = build_baseline("deeponet", data, width=8, depth=1, p=4)
    with pytest.raises(InputError, match="meta"):
        Surrogate(bare, get_family("darcy", n=6))
    sur = Surrogate(model, get_family("darcy", n=6, length=0.3))
    with pytest.raises(InputError, match="dict"):
        sur.predict([1, 2])
    with pytest.raises(InputError, match="lack"):
        sur.predict({"b": 1.0})
    with pytest.raises(InputError, match="shape"):
        sur.predict({"a": np.ones(3)})
    with pytest.raises(InputError, match="LinearSystem"):
        NeuralInitialGuess(sur).guess((None, None))


def _poisson(n=12, count=4):
    fam = get_family("poisson", n=n)
    systems = [fam.assemble(fam.sample(np.random.default_rng(s))) for s in range(count)]
    return fam, systems


def test_good_initial_guess_cuts_cg_iterations_and_meets_tolerance():
    fam, systems = _poisson()
    s = systems[0]
    exact = spla.spsolve(s.A.tocsc(), s.b)
    x0 = exact * (1 + 1e-3 * np.random.default_rng(0).standard_normal(exact.shape))
    its = []
    for guess in (None, x0):
        solver = krylov("cg", pc="none", rtol=1e-8)
        x = solver(s.A, s.b, x0=guess)
        assert np.linalg.norm(s.b - s.A @ x) <= 1e-8 * np.linalg.norm(s.b)
        its.append(solver.stats.iterations)
    assert its[1] < its[0]
    # the neural path: the oracle's prediction restricted to the free dofs
    guess = NeuralInitialGuess(Surrogate(Oracle(fam), fam))
    g = guess.guess(s)
    assert g.shape == (s.dofs,) and np.linalg.norm(g - exact) < 1e-2 * np.linalg.norm(exact)
    assert guess.calls == 1 and guess.seconds > 0


def test_rescaled_guess_has_smaller_energy_error():
    fam, systems = _poisson(count=1)
    s = systems[0]
    exact = spla.spsolve(s.A.tocsc(), s.b)
    sur = Surrogate(Oracle(fam, noise=0.0), fam)
    g_plain = NeuralInitialGuess(sur).guess(s) * 1.3           # a mis-scaled prediction
    alpha = float(g_plain @ s.b) / float(g_plain @ (s.A @ g_plain))
    g_res = alpha * g_plain
    e = lambda g: float((g - exact) @ (s.A @ (g - exact)))  # noqa: E731
    assert e(g_res) <= e(g_plain)
    g = NeuralInitialGuess(sur, rescale=True).guess(s)       # exact prediction: alpha = 1
    assert np.allclose(g, exact, rtol=1e-8)


@pytest.mark.parametrize("method", ["cg", "recycle", "auto"])
def test_solve_sequence_with_x0_provider(method):
    fam, systems = _poisson(count=5)
    guess = NeuralInitialGuess(Surrogate(Oracle(fam, noise=1e-5), fam))
    sort = [4, 2, 0, 3, 1]
    ref = solve_sequence(systems, method="cg" if method == "auto" else method, pc="none",
                         rtol=1e-8, sort=sort)
    res = solve_sequence(systems, method=method, pc="none", rtol=1e-8, sort=sort, x0=guess)
    assert res.order.tolist() == sort
    for s, x in zip(systems, res.solutions, strict=True):
        assert np.linalg.norm(s.b - s.A @ x) <= 1e-8 * np.linalg.norm(s.b)
    if method != "auto":   # auto may pick a direct solver, which ignores x0
        assert res.iterations.sum() < ref.iterations.sum()
        assert "initial guesses" in res.explanation
        assert guess.calls == 5


def test_solve_sequence_x0_arrays_and_errors():
    fam, systems = _poisson(count=3)
    exact = [spla.spsolve(s.A.tocsc(), s.b) for s in systems]
    res = solve_sequence(systems, method="cg", pc="none", x0=[exact[0], None, exact[2]])
    assert res.iterations[0] <= 1 and res.iterations[2] <= 1 and res.iterations[1] > 5
    with pytest.raises(InputError, match="3 systems"):
        solve_sequence(systems, method="cg", x0=exact[:2])
    with pytest.raises(InputError, match=r"x0\[1\] has shape"):
        solve_sequence(systems, method="cg", x0=[exact[0], exact[1][:-1], exact[2]])
    with pytest.raises(InputError, match="NaN"):
        solve_sequence(systems, method="cg", x0=[exact[0], exact[1] * np.nan, exact[2]])
    with pytest.raises(InputError, match=r"x0\[0\] has shape"):
        solve_sequence(systems, method="cg", x0=lambda i, s: np.zeros(2))
    with pytest.raises(InputError, match="callable"):
        solve_sequence(systems, method="cg", x0=5)


def test_generate_with_neural_warm_start(darcy, tmp_path):
    _, data, model = darcy
    mpath = save_model(model, tmp_path / "don.pt")
    opts = {"n": 6, "length": 0.3}
    kw = dict(samples=6, method="cg", block=3, family_options=opts, progress=False)
    plain = generate_dataset("darcy", out=str(tmp_path / "plain.femno"), **kw)
    warm = generate_dataset("darcy", out=str(tmp_path / "warm.femno"), warm_start=mpath, **kw)
    assert warm["failures"] == 0 and plain["failures"] == 0
    a, b = (FEData.from_dataset(tmp_path / f"{k}.femno") for k in ("plain", "warm"))
    assert bool((a.rel_l2(b.Y, a.Y) < 1e-6).all())
    from femno.datagen.store import read_manifest

    assert read_manifest(tmp_path / "warm.femno")["settings"]["warm_start"] == str(mpath)
    with pytest.raises(InputError, match="poisson"):
        generate_dataset("poisson", out=str(tmp_path / "p.femno"), warm_start=mpath,
                         **{**kw, "family_options": {"n": 6}})
    with pytest.raises(InputError, match="different settings"):   # resume needs the same model
        generate_dataset("darcy", out=str(tmp_path / "warm.femno"), **kw)


def test_surrogate_warns_when_it_extrapolates(darcy, tmp_path):
    """In-distribution use is silent; coefficients far outside the training range warn
    once (issue 22 item 4)."""
    import warnings

    path, data, model = darcy
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sur = Surrogate.load(save_model(model, tmp_path / "m.pt"))
        params = [sample_params(sur.family, 0, int(i)) for i in data.sample_index[:2]]
        sur.predict_many(params)
    assert sur.warnings == []
    hot = [{**p, "a": 50.0 * np.asarray(p["a"])} for p in params]  # 50x the coefficient
    with pytest.warns(RuntimeWarning, match="coefficients outside the training range"):
        sur.predict_many(hot)
    assert len(sur.warnings) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        sur.predict_many(hot)  # said once
