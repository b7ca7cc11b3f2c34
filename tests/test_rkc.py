"""Tests for the Runge--Kutta--Chebyshev solver `flowode._rkc.RKC2`."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowode._rkc import RKC2


def _quadratic_flow(n=50, lam_max=50.0, seed=0):
    """w' = -eta H w with diagonal H; eta * eig(H) log-spaced in [0.01, lam_max]."""
    lam = jnp.asarray(np.logspace(-2, np.log10(lam_max), n))
    w0 = jnp.asarray(np.random.default_rng(seed).normal(size=n))
    term = dfx.ODETerm(lambda t, w, eta: -eta * lam * w)
    exact = lambda ts, eta: w0 * jnp.exp(-eta * lam * ts[:, None])
    return term, w0, exact


def _rel_err(ys, ref):
    return jnp.linalg.norm(ys - ref, axis=-1) / jnp.linalg.norm(ref, axis=-1)


def _solve(term, solver, y0, t1, args=None, rtol=1e-5, atol=1e-8, ts=None):
    return dfx.diffeqsolve(
        term,
        solver,
        0.0,
        t1,
        None,
        y0,
        args=args,
        saveat=dfx.SaveAt(ts=ts, t1=ts is None, solver_state=True),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        max_steps=100_000,
    )


def test_stiff_quadratic_gradient_flow(x64):
    term, w0, exact = _quadratic_flow()
    ts = jnp.arange(0.0, 201.0)
    sol = _solve(term, RKC2(), w0, 200.0, args=1.0, ts=ts)
    err = _rel_err(sol.ys, exact(ts, 1.0))
    st = sol.solver_state
    assert float(err.max()) <= 1e-3
    assert int(st.n_evals) <= 5000
    assert 50.0 <= float(st.spectral_radius) <= 1.2 * 50.0 * 1.001
    tsit = _solve(term, dfx.Tsit5(), w0, 200.0, args=1.0, ts=ts)
    print(
        f"\nRKC2: {int(st.n_evals)} vf evals + {int(st.n_jvps)} JVPs, "
        f"{int(sol.stats['num_steps'])} steps, max rel err {float(err.max()):.2e}; "
        f"Tsit5: ~{6 * int(tsit.stats['num_steps']) + 1} vf evals, "
        f"{int(tsit.stats['num_steps'])} steps"
    )


@pytest.mark.parametrize(
    "solver",
    [RKC2(), RKC2(spectral_radius=lambda t, y, args: 1e6, max_stages=10)],
    ids=["s=2", "s=10"],
)
def test_second_order_convergence(x64, solver):
    # Logistic equation, exact solution known; ConstantStepSize.
    y0 = jnp.array([0.1, 0.5, 2.0])
    exact = 1 / (1 + (1 / y0 - 1) * jnp.exp(-2.0))
    term = dfx.ODETerm(lambda t, y, args: y * (1 - y))
    errs = []
    for dt in [0.05, 0.025, 0.0125]:  # dt as an array: one compilation for all three
        sol = dfx.diffeqsolve(term, solver, 0.0, 2.0, jnp.asarray(dt), y0, max_steps=1000)
        errs.append(float(jnp.max(jnp.abs(sol.ys[-1] - exact))))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 3.6) & (ratios < 4.5)), ratios


def test_pytree_state(x64):
    # z' = -M z for symmetric positive definite M (eigenvalues in [0.1, 30]), with the
    # state z = (X, Y) split into a (4, 3) matrix and a (3,) vector, coupled through M.
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(15, 15)))
    lam = np.geomspace(0.1, 30.0, 15)
    m = (q * lam) @ q.T
    split = lambda z: (z[..., :12].reshape(z.shape[:-1] + (4, 3)), z[..., 12:])
    flat = lambda s: jnp.concatenate([s[0].reshape(-1), s[1]])
    term = dfx.ODETerm(lambda t, s, args: split(-jnp.asarray(m) @ flat(s)))
    z0 = rng.normal(size=15)
    ts = np.linspace(0.0, 5.0, 11)
    exact = split((np.exp(-np.outer(ts, lam)) * (q.T @ z0)) @ q.T)
    sol = _solve(term, RKC2(), split(jnp.asarray(z0)), 5.0, rtol=1e-7, atol=1e-10, ts=ts)
    assert isinstance(sol.ys, tuple) and sol.ys[0].shape == (11, 4, 3)
    for y, e in zip(sol.ys, exact, strict=True):
        assert float(jnp.max(jnp.abs(y - e))) <= 1e-5
    assert jax.tree_util.tree_structure(sol.solver_state.direction) == (
        jax.tree_util.tree_structure(sol.ys)
    )


def test_nonlinear_stiff_gradient_flow(x64):
    # L(w) = sum_i lam_i (w_i^2/2 + w_i^4/4); Jacobian -eta lam_i (1 + 3 w_i^2).
    lam = jnp.asarray(np.logspace(-1, 2, 20))
    w0 = jnp.asarray(np.random.default_rng(1).normal(size=20))
    grad = jax.grad(lambda w: jnp.sum(lam * (w**2 / 2 + w**4 / 4)))
    term = dfx.ODETerm(lambda t, w, eta: -eta * grad(w))
    ts = jnp.linspace(0.0, 20.0, 21)
    sol = _solve(term, RKC2(), w0, 20.0, args=1.0, rtol=1e-7, atol=1e-10, ts=ts)
    ref = _solve(term, dfx.Tsit5(), w0, 20.0, args=1.0, rtol=1e-11, atol=1e-13, ts=ts)
    assert float(_rel_err(sol.ys, ref.ys).max()) <= 1e-4
    assert int(sol.solver_state.n_evals) < 6 * int(ref.stats["num_steps"])


def test_float32():
    term, w0, exact = _quadratic_flow(n=20)
    w0 = w0.astype(jnp.float32)
    ts = jnp.linspace(0.0, 50.0, 11)
    sol = _solve(term, RKC2(), w0, 50.0, args=1.0, rtol=1e-4, atol=1e-6, ts=ts)
    assert sol.ys.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(sol.ys)))
    assert float(_rel_err(sol.ys, exact(ts, 1.0)).max()) <= 1e-2


def test_jit_traced_eta_and_fixed_radius(x64):
    term, w0, exact = _quadratic_flow(n=20, lam_max=10.0)
    ts = jnp.linspace(0.0, 20.0, 5)
    traces = []

    @jax.jit
    def solve(eta):
        traces.append(None)
        sol = _solve(term, RKC2(), w0, 20.0, args=eta, ts=ts)
        return sol.ys, sol.solver_state

    for eta in [1.0, 3.0]:
        ys, st = solve(eta)
        assert float(_rel_err(ys, exact(ts, eta)).max()) <= 1e-3
        assert 10.0 * eta <= float(st.spectral_radius) <= 12.0 * eta * 1.001
    assert len(traces) == 1

    # A user-supplied spectral radius replaces the power iteration.
    solver = RKC2(spectral_radius=lambda t, y, eta: 10.0 * eta)
    sol = _solve(term, solver, w0, 20.0, args=2.0, ts=ts)
    assert int(sol.solver_state.n_jvps) == 0 and sol.solver_state.direction is None
    assert float(_rel_err(sol.ys, exact(ts, 2.0)).max()) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("every", [10, 25])
def test_reused_spectral_radius_stays_accurate_as_stiffness_grows(x64, every):
    # w' = −(1 + t)λw: the Jacobian's spectral radius grows 21× over the run, so an
    # estimate reused for `every` steps is stale; rejections must absorb that.
    lam = jnp.asarray(np.logspace(-2, np.log10(20.0), 30))
    w0 = jnp.asarray(np.random.default_rng(2).normal(size=30))
    term = dfx.ODETerm(lambda t, w, args: -(1 + t) * lam * w)
    ts = jnp.linspace(0.0, 20.0, 11)
    exact = w0 * jnp.exp(-lam * (ts + ts**2 / 2)[:, None])
    fresh = _solve(term, RKC2(), w0, 20.0, ts=ts)
    reused = _solve(term, RKC2(reestimate_every=every), w0, 20.0, ts=ts)
    scale = jnp.linalg.norm(w0)
    for sol in (fresh, reused):
        assert float(jnp.max(jnp.linalg.norm(sol.ys - exact, axis=-1)) / scale) <= 1e-4
    steps = int(reused.stats["num_accepted_steps"])
    # One estimate every `every` accepted steps (3 iterations each), plus init's 20.
    assert int(reused.solver_state.n_jvps) <= 20 + 3 * (steps // every + 1)
    assert int(reused.solver_state.n_jvps) < int(fresh.solver_state.n_jvps) / 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reestimate_every=0), "reestimate_every must be an integer >= 1"),
        (dict(power_iterations=1.5), "power_iterations must be an integer >= 1"),
        (dict(max_stages=1), "max_stages must be an integer >= 2"),
        (dict(safety=0.0), "safety must be positive"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RKC2(**kwargs)


def _recursion_coefficients(s):
    """RKC2's stage coefficients by the Chebyshev recursions, stage by stage (float64)."""
    w0 = 1 + (2 / 13) / s**2
    T, dT, d2T = [1.0, w0], [0.0, 1.0], [0.0, 0.0]
    for _ in range(2, s + 1):
        T.append(2 * w0 * T[-1] - T[-2])
        dT.append(2 * w0 * dT[-1] - dT[-2] + 2 * T[-2])
        d2T.append(2 * w0 * d2T[-1] - d2T[-2] + 4 * dT[-2])
    w1 = dT[s] / d2T[s]
    b = [1 / (2 * w0) ** 2] * 2 + [d2T[j] / dT[j] ** 2 for j in range(2, s + 1)]
    rows, th = {}, [0.0, w1 * b[1]]
    for j in range(2, s + 1):
        mu, nu = 2 * w0 * b[j] / b[j - 1], -b[j] / b[j - 2]
        mus = mu * w1 / w0
        a = 1 - T[j - 1] * b[j - 1]
        rows[j] = (1 - mu - nu, mu, nu, mus, -a * mus, th[j - 1])
        th.append(mu * th[j - 1] + nu * th[j - 2] + mus * (1 - a))
    return w1, rows, th[s], w1 * b[1]


@pytest.mark.parametrize("s", [2, 3, 7, 40, 200])
def test_stage_coefficients_match_the_chebyshev_recursions(x64, s):
    # The closed form (series for T_j'') against the recursions RKC is defined by, to
    # float64 rounding; and the last stage lands at the step's end (c_s = 1).
    from flowode._rkc import _stage_coefficients

    w1, coef = _stage_coefficients(jnp.asarray(s), 200, jnp.float64)
    w1_ref, rows, c_s, mus_1 = _recursion_coefficients(s)
    np.testing.assert_allclose(float(w1), w1_ref, rtol=1e-12)
    np.testing.assert_allclose(float(coef[1, 3]), mus_1, rtol=1e-12)
    for j, row in rows.items():
        np.testing.assert_allclose(np.asarray(coef[j]), row, rtol=1e-10, atol=1e-12)
    assert abs(c_s - 1) < 1e-12
    # float32: the same to float32 rounding (1 − μ − ν is a difference of terms near 2).
    _, coef_32 = _stage_coefficients(jnp.asarray(s), 200, jnp.float32)
    np.testing.assert_allclose(
        np.asarray(coef_32[2 : s + 1]), np.asarray(coef[2 : s + 1]), rtol=2e-5, atol=1e-5
    )
