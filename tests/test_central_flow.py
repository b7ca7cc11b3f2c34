"""Central flow against closed forms, an independent conic solver, and GD."""

import os
import re

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure

import flowode as fo
from flowode import _runner
from flowode._spectral import initial_basis, refine_eigs, third_contraction
from flowode.flows.central_flow import _gradP

LR = 0.1  # test_sdcp's cvx_reference takes β = (0.1/2)·Gram
# The published scheme (Euler at 4 substeps per GD step, full width); the default is
# PinnedHeun at one step per GD step with the adaptive width.
EULER = dict(solver=diffrax.Euler(), dt0=0.25, adaptive_width=False)


def _symmetric_tensor(n, seed):
    T = np.random.default_rng(seed).standard_normal((n, n, n))
    perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    return sum(T.transpose(p) for p in perms) / 6


_T = _symmetric_tensor(6, 3)


def _coupled(w, data=None):
    """Hessian near diag(20.6, 20.3, 5, 3, 1, 0.5) at small w: two eigenvalues above 2/η,
    with generic third derivatives (a random symmetric tensor)."""
    lam = jnp.array([20.6, 20.3, 5.0, 3.0, 1.0, 0.5])
    cubic = jnp.einsum("abc,a,b,c->", jnp.asarray(_T, w.dtype), w, w, w) / 6
    return 0.5 * jnp.sum(lam * w**2) + cubic + 0.1 * jnp.sum(w**4)


def _dense_central(f, w, lr, kappa, k):
    """α, β, ∇P and g from dense derivatives: H (n,n), ∂H/∂w (n,n,n), eigh."""
    H = jax.hessian(f)(w)
    dH = jax.jacfwd(jax.hessian(f))(w)  # (n, n, n): ∂H_ab/∂w_c
    g = jax.grad(f)(w)
    evals, evecs = np.linalg.eigh(np.asarray(H))
    U = evecs[:, ::-1][:, :k]
    P = U.T @ np.asarray(H) @ U
    G = np.einsum("ai,bj,abc->ijc", U, U, np.asarray(dH))  # ∇P_ij
    alpha = kappa * (2 / lr * np.eye(k) - P) + lr * np.einsum("ijc,c->ij", G, g)
    return alpha, G, np.asarray(g), evals[::-1][:k]


def test_refine_eigs_converges_to_eigh_from_a_nearby_basis(x64):
    n, k = 120, 3
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    lam = np.concatenate([[9.0, 8.0, 7.5], rng.uniform(-2, 5, n - 3)])
    A = jnp.asarray((Q * lam) @ Q.T)
    f = lambda w, d: 0.5 * w @ A @ w
    U0 = jnp.asarray(Q[:, :k] + 0.05 * rng.standard_normal((n, k)))
    errors = []
    theta, U = None, U0
    for _ in range(12):  # as central flow calls it, once per evaluation
        theta, U, HU, n_hvp = refine_eigs(f, jnp.zeros(n), U, iters=3)
        errors.append(float(np.max(np.abs(theta - lam[:k]))))
    assert n_hvp == k * 4
    assert all(b < a for a, b in zip(errors[:4], errors[1:5], strict=True))  # contracts
    np.testing.assert_allclose(theta, lam[:k], rtol=1e-10)
    np.testing.assert_allclose(HU, A @ U, atol=1e-10)
    np.testing.assert_allclose(np.abs(np.sum(U * Q[:, :k], axis=0)), 1.0, atol=1e-6)


def test_gradP_matches_third_contractions(x64):
    n = 6
    w = jnp.linspace(-0.3, 0.4, n)
    U = jnp.linalg.qr(initial_basis(n, 3, jnp.float64))[0]
    G = _gradP(_coupled, w, U, None, jnp.int32(2))
    for a in range(3):
        for b in range(3):
            want = third_contraction(_coupled, w, U[:, a], U[:, b]) if max(a, b) < 2 else 0.0
            np.testing.assert_allclose(G[a, b], want, atol=1e-12)


def test_vector_field_matches_dense_k1_closed_form(x64):
    # The quartic toy off its centre line: one critical direction.
    p = fo.problems.softening_quartic(dtype=jnp.float64)
    f, lr, kappa = p.flat_loss, 1.0, 4.0
    w = jnp.array([0.12, 0.03])
    flow = fo.CentralFlow(kappa=kappa, **EULER)
    c = flow.terms(f, w, jnp.eye(2), lr, p.data)
    fd = lambda x: f(x, p.data)
    alpha, G, g, evals = _dense_central(fd, w, lr, kappa, 2)
    assert lr * evals[0] > 1.95 > lr * evals[1]
    x = max(0.0, -alpha[0, 0] / (lr / 2 * G[0, 0] @ G[0, 0]))
    assert x > 0
    assert int(c.n_critical) == 1
    np.testing.assert_allclose(c.X[0, 0], x, rtol=1e-10)
    np.testing.assert_allclose(c.velocity, -lr * (g + 0.5 * x * G[0, 0]), rtol=1e-10)


def test_two_critical_directions_match_cvxpy(x64):
    from test_sdcp import cvx_reference  # (cvxpy, a test dependency, imported only here)

    w = jnp.array([0.01, -0.02, 0.03, 0.0, 0.01, 0.02])
    kappa = 4.0
    alpha, G, g, evals = _dense_central(_coupled, w, LR, kappa, 4)
    assert np.sum(LR * evals > 1.95) == 2
    X_ref = cvx_reference(alpha[:2, :2], G[:2, :2])
    assert np.linalg.matrix_rank(X_ref, tol=1e-6) == 2
    c = fo.CentralFlow(kappa=kappa, **EULER).terms(_coupled, w, jnp.eye(6)[:, :4], LR, None)
    assert int(c.n_critical) == 2
    # U is fixed only up to signs: compare the sign-free Σ = U X Uᵀ.
    U_ref = np.linalg.eigh(np.asarray(jax.hessian(_coupled)(w)))[1][:, ::-1][:, :2]
    sigma_ref = U_ref @ X_ref @ U_ref.T
    sigma = c.U @ c.X @ c.U.T
    assert np.linalg.norm(sigma - sigma_ref) <= 1e-4 * np.linalg.norm(sigma_ref)
    velocity = -LR * (g + 0.5 * np.einsum("ij,ijc->c", X_ref, G[:2, :2]))
    np.testing.assert_allclose(c.velocity, velocity, rtol=1e-4, atol=1e-10)


def test_corrector_terms_equal_the_full_terms_in_an_eigenbasis(x64):
    # PinnedHeun's corrector: in a basis of exact eigenvectors, the critical block's P,
    # HU and velocity from the third derivatives' linearisations equal those of `terms`,
    # with no HVP; in the basis of a nearby point the block is full, not diagonal.
    w = jnp.array([0.01, -0.02, 0.03, 0.0, 0.01, 0.02])
    flow = fo.CentralFlow()
    U = jnp.asarray(np.linalg.eigh(np.asarray(jax.hessian(_coupled)(w)))[1][:, ::-1][:, :4])
    stage = fo.PinnedHeun.second_stage(jnp.ones((), w.dtype))
    kappa = (stage.above, stage.below)
    full = flow.terms(_coupled, w, U, LR, None, refine=False, kappa=kappa)
    assert int(full.n_critical) == 2
    c = flow.corrector_terms(_coupled, w, U, jnp.int32(2), LR, None, kappa=kappa)
    assert int(c.n_hvp) == 0 and int(c.n_third) == 3
    np.testing.assert_allclose(c.grad, jax.grad(_coupled)(w), rtol=1e-12)  # their primal
    np.testing.assert_allclose(
        c.HU[:, :2], full.HU[:, :2] * np.sign(np.sum(full.U * U, 0))[:2], atol=1e-10
    )
    np.testing.assert_allclose(c.HU[:, 2:], 0)
    np.testing.assert_allclose(c.P[:2, :2], np.diag(full.theta[:2]), atol=1e-10)
    np.testing.assert_allclose(c.velocity, full.velocity, rtol=1e-9, atol=1e-12)
    w1 = w + 0.01
    c1 = flow.corrector_terms(_coupled, w1, U, jnp.int32(2), LR, None, kappa=kappa)
    H1 = np.asarray(jax.hessian(_coupled)(w1))
    np.testing.assert_allclose(c1.P[:2, :2], U[:, :2].T @ H1 @ U[:, :2], rtol=1e-9)
    assert abs(float(c1.P[0, 1])) > 1e-3


def test_predictor_terms_equal_the_full_terms_in_an_eigenbasis(x64):
    # PinnedHeun's predictor in the carried basis: in exact eigenvectors its critical
    # block, gradient, loss and velocity equal those of `terms`; the critical columns'
    # HU come with their thirds (width − n_crit + width HVPs) and the Ritz step leaves
    # an exact basis where it is. Off it, P is the full block and `ritz` is refined at w.
    w = jnp.array([0.01, -0.02, 0.03, 0.0, 0.01, 0.02])
    flow = fo.CentralFlow()
    U = jnp.asarray(np.linalg.eigh(np.asarray(jax.hessian(_coupled)(w)))[1][:, ::-1][:, :3])
    stage = fo.PinnedHeun.first_stage(jnp.ones((), w.dtype))
    kappa = (stage.above, stage.below)
    full = flow.terms(_coupled, w, U, LR, None, refine=False, kappa=kappa)
    assert int(full.n_critical) == 2
    width = jnp.int32(3)
    c = flow.predictor_terms(_coupled, w, U, jnp.int32(2), width, LR, None, kappa=kappa)
    assert int(c.n_hvp) == 1 + 3 and int(c.n_third) == 3
    assert float(c.loss) == pytest.approx(float(_coupled(w)), rel=1e-12)
    np.testing.assert_allclose(c.grad, jax.grad(_coupled)(w), rtol=1e-12)
    np.testing.assert_allclose(c.P, np.diag([*full.theta[:2], 0]), atol=1e-10)
    np.testing.assert_allclose(c.velocity, full.velocity, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c.ritz.theta, full.theta, rtol=1e-10)
    assert int(c.ritz.n_critical) == 2
    np.testing.assert_allclose(np.abs(np.sum(c.ritz.U * U, 0)), 1, rtol=1e-10)
    # Before the edge of stability: HVPs only, whose primals are L and ∇L.
    c0 = flow.predictor_terms(_coupled, w, U, jnp.int32(0), width, LR, None, kappa=kappa)
    assert int(c0.n_hvp) == 6 and int(c0.n_third) == 0
    np.testing.assert_allclose(c0.grad, jax.grad(_coupled)(w), rtol=1e-12)
    w1 = w + 0.01
    c1 = flow.predictor_terms(_coupled, w1, U, jnp.int32(2), width, LR, None, kappa=kappa)
    H1 = np.asarray(jax.hessian(_coupled)(w1))
    np.testing.assert_allclose(c1.P[:2, :2], U[:, :2].T @ H1 @ U[:, :2], rtol=1e-9)
    want = np.linalg.eigvalsh(H1)[::-1][:3]
    np.testing.assert_allclose(c1.ritz.theta, want, rtol=1e-3)  # one Ritz step from U


@pytest.mark.parametrize(
    "scheme, per_step, settle",
    [(EULER, 4, 10), ({}, 2, 20)],
    ids=["euler", "pinned_heun"],
)
def test_quartic_sharpness_pinned_and_sigma_formula(x64, scheme, per_step, settle):
    # (Euler ¼ reaches 2/η within 2 steps of the onset; PinnedHeun halves the gap below
    # it at each step, 1e-3 to 1e-6 over 10 steps, so σ² settles 10 steps later.)
    p = fo.problems.softening_quartic(dtype=jnp.float64)
    flows = (fo.CentralFlow(**scheme),)
    ds = fo.simulate(p, lr=1.0, steps=200, flows=flows, save_params=True)
    c = ds.sel(flow="central")
    onset = int(np.argmax(c.n_critical.values > 0))
    assert 0 < onset < 100
    after = slice(onset + settle, None)
    assert np.abs(c.sharpness.values[after] - 2.0).max() <= 1e-3
    # σ² = 2⟨−∇L, ∇S⟩/‖∇S‖², with ∇S from a dense eigen-decomposition.
    f = lambda w: p.flat_loss(w, p.data)
    sharp = lambda w: jnp.linalg.eigvalsh(jax.hessian(f)(w))[-1]
    for w, sigma in zip(c.params.values[after][::20], c.sigma.values[after][::20], strict=True):
        gS, gL = jax.grad(sharp)(jnp.asarray(w)), jax.grad(f)(jnp.asarray(w))
        want = 2 * jnp.vdot(-gL, gS) / jnp.vdot(gS, gS)
        assert sigma[0] == pytest.approx(float(want), rel=1e-3)
        assert sigma[0] == pytest.approx(2 * 0.01 / 1.0, rel=1e-3)  # = 2c/a on this toy
    # GD's oscillation variance around the central flow matches σ².
    assert float(c.gd_variance[-50:, 0].mean()) == pytest.approx(0.02, rel=0.05)
    ax = Figure().subplots()
    fo.plot.sigma(ds, ax)
    assert len(ax.lines) == 2  # one mode: σ² and GD's variance
    # Oracle counts: 4 Euler steps or one PinnedHeun step (2 evaluations) per GD step,
    # third derivatives only past onset.
    # The evaluation at each integer time is taken at the end of the step before (the
    # start, for step 0) and kept: one more in all, the one at step 200 that is observed.
    assert int(c.n_grad) == per_step * 200 + 1
    assert abs(int(c.n_third) - per_step * (200 - onset)) <= 2 * per_step + 1


class _Uncached(fo.CentralFlow):
    """Central flow that evaluates its observables afresh instead of keeping the evaluation
    at each integer time (what every scheme but Euler with a constant step does)."""

    @property
    def caches(self):
        return False


PLAIN_PINNED = dict(solver=fo.PinnedHeun(exponential=False), dt0=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("scheme, per_step", [(EULER, 4), (PLAIN_PINNED, 2)])
def test_kept_evaluation_changes_only_the_cost(x64, scheme, per_step):
    # Euler ¼ and PinnedHeun through diffrax (its predictor) take the evaluation at step
    # k + 1 at the end of step k and keep it: it is step k + 1's first stage and row k + 1's
    # observables.
    # Against evaluating afresh: the same run, one evaluation more in all (the last
    # row's), none per observed row.
    p = fo.problems.softening_quartic(dtype=jnp.float64)
    kept, fresh = (
        fo.simulate(p, lr=1.0, steps=150, flows=(flow,)).sel(flow="central")
        for flow in (fo.CentralFlow(**scheme), _Uncached(**scheme))
    )
    assert int(kept.n_critical.max()) == 1  # past the onset: the SDCP is active
    for name in ("loss", "sharpness", "sigma", "predicted_loss", "gd_deviation", "grad_norm"):
        np.testing.assert_allclose(kept[name], fresh[name], rtol=1e-9, atol=1e-14, err_msg=name)
    assert int(fresh.n_grad) == per_step * 150 and int(kept.n_grad) == per_step * 150 + 1
    # Its refined eigenpairs are the observed ones too: the observer spends nothing on it.
    assert int(kept.n_hvp_observe) == 0 < int(fresh.n_hvp_observe)
    assert fo.CentralFlow().caches and not fo.CentralFlow(**{**EULER, "dt0": 0.3}).caches


@pytest.fixture(scope="module")
def mlp_ds():
    p = fo.problems.mlp_regression(seed=2)
    flows = ("gradient", "central")
    return p, fo.simulate(
        p, lr=0.1, steps=1000, flows=flows, eig_k=2, eigs_at="iterate", save_params=True
    )


def test_central_flow_on_mlp_past_eos(mlp_ds):
    p, ds = mlp_ds
    c = ds.sel(flow="central")
    # Its eigenvalues come from its own refined basis (no observer HVPs), and match a
    # dense eigen-decomposition of the Hessian at its last point.
    assert int(c.n_hvp_observe) == 0
    H = jax.hessian(p.flat_loss)(jnp.asarray(c.params[-1].values), p.data)
    dense = np.linalg.eigvalsh(np.asarray(H, np.float64))[::-1][:2]
    np.testing.assert_allclose(c.eigs[-1][:2], dense, rtol=1e-3)
    assert c.sharpness.dtype == np.float64 and ds.attrs["dtype"] == "float32"
    onset = int(np.argmax(c.n_critical.values > 0))
    assert 0 < onset < 900
    assert float(np.abs(0.1 * c.sharpness[onset + 5 :] - 2).max()) <= 0.01
    gd_sharp = 0.1 * ds.sharpness.sel(flow="gd").values
    assert gd_sharp[onset:].max() > 2.0  # GD is at the edge of stability too
    ratio = float(c.center_distance_to_gd[-1] / ds.center_distance_to_gd.sel(flow="gradient")[-1])
    assert ratio <= 0.3
    gd_mean = float(ds.loss.sel(flow="gd")[-50:].mean())
    assert abs(float(c.predicted_loss[-1]) - gd_mean) <= 0.2 * gd_mean
    # GD's gradient norm is dominated by the oscillation, which the prediction includes.
    gd_rms = np.sqrt(np.mean(ds.grad_norm.sel(flow="gd")[-50:].values ** 2))
    assert abs(float(c.predicted_grad_norm[-1]) - gd_rms) <= 0.2 * gd_rms
    assert float(c.grad_norm[-1]) < 0.2 * gd_rms
    # (2 evaluations per GD step, and the one at step 1000 that is observed)
    assert int(c.n_third) > 0 and int(c.n_hvp) > 0 and int(c.n_grad) == 2001
    assert float(c.sdcp_residual.max()) <= 1e-4


def _callbacks(fn, *args):
    """Host callbacks in the lowered program, as (count, their source locations)."""
    text = jax.jit(fn).lower(*args).as_text(debug_info=True)
    calls = re.findall(r"custom_call @\w*callback\w*\(.*loc\((#loc\d+)\)", text)
    names = [re.search(rf"^{loc} = loc\(\"([^\"]*)\"", text, re.M) for loc in calls]
    return len(calls), {m.group(1) if m else "?" for m in names}


@pytest.mark.slow
@pytest.mark.parametrize("adaptive", [False, True])
def test_basis_is_refined_once_per_gd_step(x64, adaptive):
    # Euler at dt = 1/4: the evaluation at an integer time takes a Ritz step (2k HVPs),
    # the three between take the Ritz pairs within the carried basis (k HVPs). With the
    # adaptive width only the first 2 columns are refined here (no eigenvalue tracked yet).
    p = fo.problems.mlp_regression(width=8, n=64, dtype=jnp.float64)
    f, w0, d, opt = p.flat_loss, p.flat_w0, p.data, fo.GD(0.1)
    flow = fo.CentralFlow(max_k=3, **{**EULER, "adaptive_width": adaptive})
    k = 2 if adaptive else 3
    y = flow.init(f, w0, opt, d)
    field = eqx.filter_jit(lambda fl, t, y, *stage: fl.vector_field(f, t, y, opt, d, *stage))
    for t, want in ((0.0, 2 * k), (0.25, k), (0.5, k), (0.75, k), (7.0, 2 * k)):
        dy = field(flow, jnp.asarray(t), y)
        assert int(dy[2][0]) == want, t
        # (between, the basis moves within its own span)
        if want == k:
            U, dU = y[1], dy[1]
            np.testing.assert_allclose(dU - U @ (U.T @ dU), 0, atol=1e-10)
    # PinnedHeun at dt0 = 1: its predictor, at k, refines; its corrector, at k + 1, not.
    flow = fo.CentralFlow(max_k=3, adaptive_width=adaptive)
    one = jnp.ones((), w0.dtype)
    first, corrector = fo.PinnedHeun.first_stage(one), fo.PinnedHeun.second_stage(one)
    assert int(field(flow, jnp.asarray(7.0), y, first)[2][0]) == 2 * k
    assert int(field(flow, jnp.asarray(8.0), y, corrector)[2][0]) == k


@pytest.mark.slow
def test_refined_width_follows_the_tracked_eigenvalues(x64):
    # ½Σλw² with ηλ = 1.9, 1.7, 1.6, 0.5-1.0 (100 parameters, past the dense path): more
    # than one tracked (ηλ ≥ 1.5), so the width is max_k = 4; with ηλ₂ below 1.5 it is 2.
    # The refined columns' eigenvalues are exact, and the path is the full-width flow's.
    rest = list(np.linspace(0.5, 1.0, 97))
    for top, width in (([1.9, 1.7, 1.6], 4), ([1.9, 1.2, 1.1], 2)):
        lam = np.array(top + rest) / 0.1
        p = fo.problems.quadratic(lam, np.ones(100), dtype=jnp.float64)
        f, w0, d, opt = p.flat_loss, p.flat_w0, p.data, fo.GD(0.1)
        flow = fo.CentralFlow(max_k=4, adaptive_width=True)
        y = flow.init(f, w0, opt, d)
        assert float(y[2][4]) == width
        dy = flow.vector_field(f, jnp.asarray(3.0), y, opt, d)
        assert int(dy[2][0]) == 2 * width
        # (Euler: PinnedHeun's exponential block is the refined columns, so there the
        # widths' paths differ, by 1.7% in loss here)
        scheme = {**EULER, "max_k": 4}
        del scheme["adaptive_width"]
        runs = [
            fo.simulate(p, lr=0.1, steps=20, flows=(fo.CentralFlow(**scheme, adaptive_width=a),))
            for a in (True, False)
        ]
        np.testing.assert_allclose(runs[0].eigs.sel(flow="central")[:, 0], lam[0], rtol=1e-8)
        np.testing.assert_allclose(
            runs[0].loss.sel(flow="central"), runs[1].loss.sel(flow="central"), rtol=1e-10
        )


def test_central_flow_lowers_without_host_callbacks():
    p = fo.problems.mlp_regression(width=8)
    f, w0, lr = p.flat_loss, p.flat_w0, jnp.float32(0.1)
    flow = fo.CentralFlow(max_k=2)
    U = initial_basis(p.n_params, 2, jnp.float32)
    # The vector field (eigen-refinement, third derivatives, SDCP) has none at all.
    assert _callbacks(lambda w, U, d: flow.terms(f, w, U, lr, d), w0, U, p.data)[0] == 0
    # Nor has the whole run: the flow stepped by flowode's integrator and observed.
    run = lambda w, lr, d: flow.run(f, w, lr, d, 3)
    assert _callbacks(run, w0, lr, p.data)[0] == 0
    settings = _runner.Settings((fo.GradientDescent(), flow), 2, False)
    opt = fo.GD(lr)
    state = jax.eval_shape(lambda: _runner.start(settings, f, w0, opt, p.data))  # traced only
    chunk = lambda s, o, d: _runner.run_chunk.__wrapped__(settings, f, s, o, d, 1, 3, 3)
    assert _callbacks(chunk, state, opt, p.data)[0] == 0
    centres, counts, _ = jax.eval_shape(run, w0, lr, p.data)
    assert centres.dtype == jnp.float32 and centres.shape == (4, p.n_params)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"kappa": 0.0}, "kappa"),
        ({"max_k": 0}, "max_k"),
        ({"track_threshold": 1.99, "sdcp_threshold": 1.95}, "track_threshold"),
        ({"ritz_iters": 0}, "ritz_iters"),
        ({"solver": fo.PinnedHeun(), "kappa": 2.0}, "PinnedHeun .the default solver. sets κ"),
        (
            {**PLAIN_PINNED, "stepsize_controller": diffrax.PIDController(1e-3, 1e-6)},
            "constant step",
        ),
        ({"solver": diffrax.Heun(), "dt0": None, "basis_rate": 1.0}, "give kappa"),
        ({"solver": fo.PinnedHeun(), "dt0": 0.3}, "1/m"),
    ],
)
def test_bad_settings_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        fo.CentralFlow(**kwargs)


@pytest.mark.slow  # (31 s; k = 2 is tested in the default suite against cvxpy on a toy)
def test_several_outputs_give_sigma_of_rank_two_with_both_eigenvalues_pinned():
    p = fo.problems.mlp_regression(d_out=3)
    ds = fo.simulate(p, lr=0.1, steps=500, flows=("central",), eig_k=2)
    c = ds.sel(flow="central")
    two = int(np.argmax(c.n_critical.values >= 2))
    assert 0 < two < 450
    sigma = c.sigma.values[two + 10 :]  # (steps, max_k)
    assert (sigma[:, 1] > 1e-3).all()  # rank 2: both variances are positive
    pinned = 0.1 * c.eigs.values[two + 10 :, :2]
    assert np.abs(pinned - 2).max() <= 0.01
    assert float(c.sdcp_residual.max()) <= 1e-4


def test_warns_when_every_tracked_slot_is_above_the_tracking_threshold():
    p = fo.problems.quadratic([19.0, 18.0, 17.0, 1.0])
    with pytest.warns(UserWarning, match="max_k"):
        ds = fo.simulate(p, lr=0.1, steps=5, flows=(fo.CentralFlow(max_k=2, **EULER),))
    assert (ds.n_tracked.sel(flow="central") == 2).all()
    # Below 1.95/η nothing is critical: central flow is gradient flow, here by Euler at
    # dt = 1/4, whose iterates on a quadratic are (1 − ηλ/4)^(4t).
    lam = np.array([19.0, 18.0, 17.0, 1.0])
    w = (1 - 0.1 * lam / 4) ** (4 * np.arange(6)[:, None])  # (steps+1, n)
    np.testing.assert_allclose(ds.loss.sel(flow="central"), 0.5 * (lam * w**2).sum(1), rtol=1e-5)


REFERENCE = os.path.join(os.path.dirname(__file__), "data", "rmsprop_central_reference.npz")


@pytest.mark.slow
@pytest.mark.parametrize("steps", [300, 800])
def test_rmsprop_central_flow_matches_the_published_code(x64, steps):
    """Against the published JAX central flow (tests/data/, made by the script there) on
    mlp_regression(width=8, n=64), RMSProp η = 3e-3, β₂ = 0.99, ε = 0, ν₀ = ∇L(w₀)², k = 5,
    Euler at 4 substeps. The published code feeds ν with g² + diag(Σ) where the paper has
    E[g²] = g² + diag(HΣH) (it contracts along U, not HU; see the .md): flowode follows the
    paper, and is checked against the published code with that one line fixed ("_hu")."""
    ref = np.load(REFERENCE)
    p = fo.problems.mlp_regression(width=8, n=64, dtype=jnp.float64)
    opt = fo.RMSProp(float(ref["lr"]), beta2=float(ref["beta2"]), eps=float(ref["eps"]))
    flow = fo.CentralFlow(max_k=int(ref["k"]), **EULER)
    ds = fo.simulate(p, optimizer=opt, steps=steps, flows=(flow,), save_params=True)
    loss = ds.loss.sel(flow="central").values
    expected = ref["loss_central_hu"][: steps + 1]
    np.testing.assert_allclose(loss, expected, rtol=1e-3)
    snaps = ref["snapshot_steps"] <= steps
    params = ds.params.sel(flow="central").values[ref["snapshot_steps"][snaps]]
    assert np.max(np.linalg.norm(params - ref["params_central_hu"][snaps], axis=1)) < 0.01
    # λ₁(P⁻¹H) pinned at RMSProp's threshold after the onset (step 74)
    s = ds.effective_sharpness.sel(flow="central").values[100:]
    assert np.max(np.abs(s - 2.0)) < 1e-3
    assert int(ref["onset_step_hu"]) == 74
    # The discrete RMSProp is the published one, to round-off until EOS amplifies it.
    rms = ds.loss.sel(flow="rmsprop").values[:101]
    np.testing.assert_allclose(rms, ref["loss_rmsprop"][:101], rtol=1e-10)

    # The default, PinnedHeun at dt0 = 1, against a fine scheme (Euler at 16 substeps):
    # at full width 6× closer than the published scheme over 300 steps (0.011 against
    # 0.065), 8× over 800 (0.026 against 0.21), at half its evaluations, and pinned.
    def run(**scheme):
        flow = fo.CentralFlow(max_k=int(ref["k"]), **scheme)
        out = fo.simulate(p, optimizer=opt, steps=steps, flows=(flow,), save_params=True)
        return out.sel(flow="central")

    pinned = run()
    fine = run(**{**EULER, "dt0": 1 / 16})
    err = lambda c: np.linalg.norm(c.params.values - fine.params.values, axis=1).max()
    assert err(pinned) <= 0.2 * err(ds.sel(flow="central"))
    assert np.max(np.abs(pinned.effective_sharpness.values[100:] - 2.0)) < 1e-3


def _quartic_copies(k, bulk=200, dtype=jnp.float32):
    """k softening quartics (u_i, v_i) of slightly different sharpness, and a bulk."""
    s0 = jnp.linspace(1.85, 1.95, k)
    lam = jnp.linspace(0.01, 1.0, bulk)

    def loss(w, data=None):
        u, v, z = w[:k], w[k : 2 * k], w[2 * k :]
        quartic = -0.01 * u + 0.5 * (s0 + u) * v**2 - 0.75 * v**4
        return jnp.sum(quartic) + 0.5 * jnp.sum(lam * z**2)

    w0 = jnp.concatenate([jnp.zeros(k), jnp.full(k, 0.1), jnp.full(bulk, 0.1)]).astype(dtype)
    return fo.Problem(loss, w0, name=f"quartic-x{k}")


@pytest.mark.slow
def test_float32_divergence_with_many_critical_directions_says_use_float64():
    # Eight quartics turn critical together (all eight by step 20); in float32 central flow
    # holds ηS at 2 for a while, then diverges, and the result says to run in float64.
    # When is a matter of rounding: 52 here, 257 before the state's counter vector gained
    # an entry (nothing else changed), 97 in a version of `adaptive_width=True`, 31 when
    # the basis was refined at every evaluation (benchmarks/README.md, "Central flow").
    p = _quartic_copies(8)
    with pytest.warns(UserWarning, match="Run it in float64"):
        ds = fo.simulate(p, lr=1.0, steps=400, flows=(fo.CentralFlow(max_k=10),), eig_every=400)
    assert ds.attrs["central_status"] == "diverged_low_precision"
    assert 20 < int(ds.diverged_at.sel(flow="central")) < 400
