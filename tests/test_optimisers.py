"""Optimisers: the discrete process is optax's optimiser, the thresholds are the linearised
maps' flip points, the stable flows converge to the discrete runs as η → 0, and the
preconditioned sharpness is λ₁(P⁻¹H)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowode as fo

STEPS = 1000


@pytest.fixture(scope="module")
def mlp():
    return fo.problems.mlp_regression(width=8, n=64)


def _optax_run(tx, f, w0, data, steps, state=None):
    state = tx.init(w0) if state is None else state

    def step(c, _):
        w, s = c
        updates, s = tx.update(jax.grad(f)(w, data), s, w)
        return (optax.apply_updates(w, updates), s), None

    return jax.jit(lambda w, s: jax.lax.scan(step, (w, s), None, length=steps)[0][0])(w0, state)


def _ours(opt, f, w0, data, steps):
    return jax.jit(lambda w: fo.GradientDescent().run(f, w, opt, data, steps)[0][-1])(w0)


warmup_cosine = optax.warmup_cosine_decay_schedule(0.0, 0.2, 100, 1000, 0.02)


@pytest.mark.parametrize(
    "opt",
    [
        fo.GD(0.1),
        fo.GD(warmup_cosine),
        fo.HeavyBall(0.03, beta=0.9),
        fo.Nesterov(0.03, beta=0.8),
        fo.RMSProp(0.002, beta2=0.99, nu0="zero"),
        fo.RMSProp(0.002, beta2=0.9, eps=1e-6, nu0="zero", bias_correction=True),
        fo.Adam(0.003, beta1=0.9, beta2=0.999),
        fo.Adam(optax.linear_schedule(1e-4, 3e-3, 200), beta1=0.8, beta2=0.99),
    ],
    ids=[
        "gd",
        "gd-schedule",
        "heavy_ball",
        "nesterov",
        "rmsprop",
        "rmsprop-bias",
        "adam",
        "adam-sched",
    ],
)
def test_discrete_process_is_optax(mlp, opt):
    """float32 round-off after 100 steps; over 1000 steps in float64, because at the
    edge of stability round-off differences grow (by ~1e4 over 1000 steps here): two
    differently compiled programs agree to round-off, not bit for bit."""
    f, w0, d = mlp.flat_loss, mlp.flat_w0, mlp.data
    ours = _ours(opt, f, w0, d, 100)
    theirs = _optax_run(opt.to_optax(), f, w0, d, 100)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6 * (1 + jnp.max(jnp.abs(w0))))
    with jax.enable_x64(True):
        w0 = w0.astype(jnp.float64)
        opt = opt.astype(jnp.float64)
        ours = _ours(opt, f, w0, d, STEPS)
        theirs = _optax_run(opt.to_optax(), f, w0, d, STEPS)
        moved = float(jnp.linalg.norm(theirs - w0))
        assert moved > 0.5  # the run went somewhere
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9 * (1 + moved))


def test_rmsprop_starts_nu_at_the_first_gradient_squared(mlp, x64):
    f, w0, d = mlp.flat_loss, mlp.flat_w0.astype(jnp.float64), mlp.data
    opt = fo.RMSProp(0.002, beta2=0.99).astype(jnp.float64)  # nu0="grad", the default
    tx = fo.RMSProp(0.002, beta2=0.99, nu0="zero").astype(jnp.float64).to_optax()
    g0 = jax.grad(f)(w0, d)
    state = optax.tree_utils.tree_set(tx.init(w0), nu=g0**2)
    # Agreement to 1e-8 per coordinate from step 1, which the edge of stability (ηλ ≈ 2
    # from step ~200 here) then amplifies: compared over the first 100 steps.
    ours, theirs = _ours(opt, f, w0, d, 100), _optax_run(tx, f, w0, d, 100, state)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    # and it is not the start from 0
    zero = _ours(fo.RMSProp(0.002, beta2=0.99, nu0="zero").astype(jnp.float64), f, w0, d, 20)
    assert float(jnp.max(jnp.abs(zero - _ours(opt, f, w0, d, 20)))) > 1e-3


def test_scalar_rmsprop_is_the_textbook_rule(mlp):
    f, w0, d = mlp.flat_loss, mlp.flat_w0, mlp.data
    lr, b2, eps = 0.01, 0.95, 1e-8
    w, nu = np.asarray(w0, np.float64), None
    grad = jax.jit(jax.grad(f))
    for _ in range(50):
        g = np.asarray(grad(jnp.asarray(w, jnp.float32), d), np.float64)
        nu = np.mean(g**2) if nu is None else nu  # ν₀ = mean(g₀²)
        nu = b2 * nu + (1 - b2) * np.mean(g**2)
        w = w - lr * g / (np.sqrt(nu) + eps)
    ours = _ours(fo.RMSProp(lr, beta2=b2, eps=eps, scalar=True), f, w0, d, 50)
    np.testing.assert_allclose(ours, w, rtol=0, atol=1e-4)


def _flip_point(opt, lam, nu):
    """The smallest real eigenvalue of the step map's Jacobian in (w, m) on L = ½λw² at
    w = m = 0, with ν frozen at `nu` and the bias factors at 1 (step 10⁶)."""
    t = jnp.asarray(1e6)
    momentum = isinstance(opt, fo.HeavyBall | fo.Nesterov | fo.Adam)

    def state_of(m):
        if isinstance(opt, fo.Adam):
            return (m, jnp.full(1, nu))
        if isinstance(opt, fo.RMSProp):
            return jnp.full(1, nu)
        return m if momentum else ()

    def step(z):
        w, m = z[:1], z[1:]
        w1, s1 = opt.step(w, state_of(m), lam * w, t)
        m1 = s1[0] if isinstance(opt, fo.Adam) else s1
        return jnp.concatenate([w1, m1]) if momentum else w1

    z0 = jnp.zeros(2 if momentum else 1)
    J = np.asarray(jax.jacfwd(step)(z0), np.float64)
    # ν is frozen in the Jacobian, but the step used β₂ν: that is the P⁻¹ of the flip.
    p_inv = opt.inverse_preconditioner(state_of(jnp.zeros(1)), t)
    if isinstance(opt, fo.RMSProp | fo.Adam):
        p_inv = opt.inverse_preconditioner(state_of(jnp.zeros(1)), t) * 0 + float(opt.lr) / (
            np.sqrt(float(opt.beta2) * nu) + float(opt.eps)
        )
    return float(np.min(np.linalg.eigvals(J).real)), float(lam * np.asarray(p_inv).ravel()[0])


@pytest.mark.parametrize(
    "opt, expected",
    [
        (lambda: fo.GD(0.1), 2.0),
        (lambda: fo.HeavyBall(0.1, beta=0.7), 2 * 1.7),
        (lambda: fo.Nesterov(0.1, beta=0.7), 2 * 1.7 / 2.4),
        (lambda: fo.RMSProp(0.1, beta2=0.9), 2.0),
        (lambda: fo.Adam(0.1, beta1=0.9, beta2=0.99, bias_correction=False), 38.0),
    ],
    ids=["gd", "heavy_ball", "nesterov", "rmsprop", "adam"],
)
def test_threshold_is_where_the_linearised_map_flips(x64, opt, expected):
    opt = opt()  # made in float64
    assert float(opt.threshold) == pytest.approx(expected, rel=1e-12)
    nu = 0.25
    _, per_lam = _flip_point(opt, 1.0, nu)  # λ·P⁻¹ at λ = 1
    lam = expected / per_lam  # λ·P⁻¹ exactly at the threshold
    low, a = _flip_point(opt, lam, nu)
    assert a == pytest.approx(expected, rel=1e-9)
    assert low == pytest.approx(-1.0, abs=1e-9)  # an eigenvalue at −1: the flip
    below, _ = _flip_point(opt, lam * 0.99, nu)
    above, _ = _flip_point(opt, lam * 1.01, nu)
    assert below > -1 > above


@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda s: fo.HeavyBall(0.02 / s**2, beta=1 - 0.2 / s),  # m ~ g/(1 − β)
        lambda s: fo.Nesterov(0.02 / s**2, beta=1 - 0.2 / s),
        lambda s: fo.RMSProp(0.004 / s, beta2=1 - 0.1 / s),
        lambda s: fo.Adam(0.004 / s, beta1=1 - 0.1 / s, beta2=1 - 0.01 / s),
    ],
    ids=["heavy_ball", "nesterov", "rmsprop", "adam"],
)
def test_stable_flow_converges_to_the_discrete_run_at_first_order(x64, make):
    """Doubling the steps K while every rate per step halves (1 − β, and the step size
    η/(1 − β) for momentum or η for the normalised ones) keeps the continuous time fixed
    and halves the stable flow's distance to the discrete run: the flow is the
    optimiser's first-order ODE."""
    p = fo.problems.mlp_regression(width=8, n=64, dtype=jnp.float64)
    f, w0, d = p.flat_loss, p.flat_w0, p.data
    errors = []
    for scale in (1, 2):
        opt = make(scale)
        ref = fo.GradientDescent().run(f, w0, opt, d, 40 * scale)[0][-1]
        flow = fo.GradientFlow().run(f, w0, opt, d, 40 * scale)[0][-1]
        errors.append(float(jnp.linalg.norm(flow - ref)))
    assert 1.6 < errors[0] / errors[1] < 2.5, errors


@pytest.mark.slow
def test_simulate_with_adam_reports_the_preconditioned_sharpness(mlp):
    opt = fo.Adam(0.01, beta2=0.99)
    ds = fo.simulate(
        mlp,
        optimizer=opt,
        steps=30,
        flows=("adam", "gradient"),
        eigs_at="iterate",
        save_params=True,
    )
    assert list(ds.flow.values) == ["adam", "midpoint", "gradient"]
    assert ds.attrs["reference"] == "adam" and ds.attrs["optimizer"] == "Adam"
    assert ds.attrs["threshold"] == pytest.approx(38.0, rel=1e-6)
    assert ds.attrs["optimizer_beta2"] == pytest.approx(0.99)
    # λ₁(P⁻¹H) at Adam's last iterate, from a dense eigensolve, with P from Adam's state.
    f, d = mlp.flat_loss, mlp.data
    ws = fo.GradientDescent().run(f, mlp.flat_w0, opt, d, 30)[0]
    np.testing.assert_allclose(ds.params.sel(flow="adam")[-1], ws[-1], atol=1e-6)

    @jax.jit
    def last(w0, opt, d):
        carry, _ = fo.GradientDescent().start(f, w0, opt, d)
        body = lambda k, c: fo.GradientDescent().advance(f, c, opt, d, k)[0]
        return jax.lax.fori_loop(0, 30, body, carry)

    carry = last(mlp.flat_w0, opt, d)
    # P of the update taken from the last iterate: Adam's state after absorbing its gradient.
    post = opt.step(carry.w, carry.opt_state, carry.grad, jnp.asarray(30))[1]
    p = opt.inverse_preconditioner(post, jnp.asarray(30.0))
    s = jnp.sqrt(p)
    H = jax.jit(jax.hessian(f))(carry.w, d)
    exact = float(jnp.linalg.eigvalsh(s[:, None] * H * s[None, :])[-1])
    got = float(ds.effective_sharpness.sel(flow="adam")[-1])
    assert got == pytest.approx(exact, rel=2e-3)
    # The stable flow follows Adam before any EOS, to a few % of the path.
    moved = float(jnp.linalg.norm(ws[-1] - ws[0]))
    assert float(ds.distance_to_gd.sel(flow="gradient")[-1]) < 0.05 * moved, moved


def test_gd_effective_sharpness_is_lr_times_sharpness(mlp):
    ds = fo.simulate(mlp, lr=0.1, steps=5, flows=("gd",))
    np.testing.assert_allclose(ds.effective_sharpness, 0.1 * ds.sharpness, rtol=1e-6)
    assert ds.attrs["threshold"] == 2.0 and ds.attrs["reference"] == "gd"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: fo.HeavyBall(0.1, beta=1.0), r"HeavyBall: beta must be in \[0, 1\)"),
        (lambda: fo.Adam(0.1, beta1=-0.1), r"Adam: beta1 must be in \[0, 1\)"),
        (lambda: fo.RMSProp(0.1, eps=-1e-8), r"RMSProp: eps must be in \[0, ∞\)"),
        (lambda: fo.GD(-0.1), r"GD: lr must be in \(0, ∞\)"),
        (lambda: fo.RMSProp(0.1, nu0="ones"), "nu0 must be"),
    ],
)
def test_bad_hyperparameters_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_runs_are_refused_before_they_start(mlp):
    # 0 at step 50 is a step that does not move; −0.002 at step 51 is refused.
    with pytest.raises(ValueError, match="schedule gives .* at step 51.*at least 0"):
        fo.simulate(mlp, lr=optax.linear_schedule(0.1, -0.1, 100), steps=60, flows=("gd",))
    with pytest.raises(ValueError, match="schedule gives nan at step 0"):
        fo.simulate(mlp, lr=lambda k: jnp.nan * k, steps=5, flows=("gd",))
    with pytest.raises(ValueError, match="'central' models GD .* and RMSProp only, not Adam"):
        fo.simulate(mlp, optimizer=fo.Adam(0.01), steps=5, flows=("central",))
    with pytest.raises(ValueError, match="'rod' models GD, heavy-ball, .* only, not Adam"):
        fo.simulate(mlp, optimizer=fo.Adam(0.01), steps=5, flows=("rod",))
    with pytest.raises(ValueError, match="'rod_me' models plain GD .* only, not HeavyBall"):
        fo.simulate(mlp, optimizer=fo.HeavyBall(0.01), steps=5, flows=("rod_me",))
    with pytest.raises(ValueError, match="not both"):
        fo.simulate(mlp, lr=0.1, optimizer=fo.GD(0.1), steps=5)
    with pytest.raises(TypeError, match="flowode optimiser"):
        fo.simulate(mlp, optimizer=optax.adam(0.1), steps=5)


def test_schedules_that_start_and_end_at_zero_run_every_flow(mlp):
    # Warm-up from 0 and cosine decay to 0, the commonest schedules: a step at lr 0 does
    # not move, the flows' vector fields vanish there, and λ₁(P⁻¹H) = 0 exactly (P⁻¹ ∝ η).
    # (central flow's SDCP and edge flow's secant divide by η where nothing is critical;
    # gradient flow and the rod run through the sweep below)
    sched = optax.warmup_cosine_decay_schedule(0.0, 0.3, warmup_steps=20, decay_steps=80)
    flows = ("gd", "central", "edge")
    ds = fo.simulate(
        mlp, lr=sched, steps=80, flows=flows, eigs_at="both", save_params=True, progress=False
    )
    for flow in flows:
        assert ds.attrs[f"{flow}_status"] == "successful", flow
    assert np.all(ds.diverged_at.values == -1)
    assert np.all(np.isfinite(ds.loss.values)) and np.all(np.isfinite(ds.params.values))
    gd = ds.sel(flow="gd")
    np.testing.assert_array_equal(gd.params.isel(step=1), gd.params.isel(step=0))
    assert float(gd.loss.isel(step=40)) < 0.9 * float(gd.loss.isel(step=0))  # it trained
    for step in (0, 80):  # lr 0 there
        np.testing.assert_array_equal(ds.effective_sharpness.sel(step=step).values, 0.0)
    assert ds.attrs["threshold"] == 2.0
    # No jump at the start: over step 0 → 1 GD stays at w0 and the flows move only as far
    # as η(t) on (0, 1) takes them (the flows evaluate the schedule at real times).
    assert float(ds.distance_to_gd.sel(step=1).max()) < 0.01


def test_sweeps_take_schedules_that_reach_zero():
    make = lambda seed: fo.problems.mlp_regression(width=8, n=64, seed=seed)
    sched = optax.warmup_cosine_decay_schedule(0.0, 0.2, warmup_steps=10, decay_steps=40)
    opt = fo.HeavyBall(lr=sched, beta=[0.3, 0.5])  # (at β = 0 the rod is stiff at any lr)
    flows = ("heavy_ball", "gradient", "rod")
    ds = fo.sweep(make, seeds=[0], optimizer=opt, steps=40, flows=flows, eigs_at="both")
    assert np.all(ds.diverged_at.values == -1)
    assert np.all(np.isfinite(ds.loss.values))
    np.testing.assert_array_equal(ds.effective_sharpness.sel(step=[0, 40]).values, 0.0)
    assert float(ds.loss.isel(step=-1).max()) < float(ds.loss.isel(step=0).min())
