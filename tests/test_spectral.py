import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo
from flowode._spectral import _ritz_start, _ritz_step, initial_basis, top_eigs


@pytest.fixture
def mlp64(x64):
    return fo.problems.mlp_regression(dtype=jnp.float64)


def test_hvp_matches_dense_hessian(mlp64):
    p = mlp64
    w, v = p.flat_w0, jax.random.normal(jax.random.key(1), p.flat_w0.shape, jnp.float64)
    H = jax.jit(jax.hessian(p.flat_loss))(w, p.data)
    np.testing.assert_allclose(fo.hvp(p.flat_loss, w, v, p.data), H @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 3])
def test_top_eigs_match_dense_eigh_on_433_parameter_mlp(mlp64, k):
    p = mlp64
    assert p.n_params == 433
    # Somewhere sharper than the start: 300 GD steps in.
    w = p.flat_w0
    g = jax.jit(jax.grad(p.flat_loss))
    for _ in range(300):
        w = w - 0.1 * g(w, p.data)
    dense = np.linalg.eigvalsh(np.asarray(jax.hessian(p.flat_loss)(w, p.data)))[::-1][:k]
    evals, U, n_hvp = top_eigs(p.flat_loss, w, initial_basis(p.n_params, k, w.dtype), p.data)
    np.testing.assert_allclose(evals, dense, rtol=1e-4)
    # Warm start from the converged basis converges at once.
    evals2, _, n_hvp2 = top_eigs(p.flat_loss, w, U, p.data)
    np.testing.assert_allclose(evals2, dense, rtol=1e-4)
    assert int(n_hvp2) < int(n_hvp)


def test_top_eigs_dense_path_on_small_problem(x64):
    lam = jnp.array([3.0, -7.0, 1.0, 2.0])
    f = lambda w, d: 0.5 * jnp.sum(lam * w**2)
    evals, U, _ = top_eigs(f, jnp.ones(4), initial_basis(4, 2, jnp.float64))
    np.testing.assert_allclose(evals, [3.0, 2.0])
    assert abs(float(U[0, 0])) == pytest.approx(1.0)


def test_third_contraction_matches_finite_differences(x64):
    f = lambda w, d: jnp.sum(jnp.sin(w) * w[::-1]) + jnp.sum(w**4)
    w = jnp.linspace(-1.0, 1.0, 5)
    u, v = jnp.arange(5.0) / 5, jnp.ones(5)
    got = fo.third_contraction(f, w, u, v)
    eps = 1e-5
    fd = jnp.stack(
        [
            (jnp.vdot(u, fo.hvp(f, w + eps * e, v)) - jnp.vdot(u, fo.hvp(f, w - eps * e, v)))
            / (2 * eps)
            for e in jnp.eye(5)
        ]
    )
    np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("k", [1, 2])
def test_ritz_step_from_an_exact_eigenbasis_stays_exact(k):
    # A diagonal quadratic (n = 600, past the dense path) warm-started on its exact top
    # eigenvectors: the residual is exactly 0, and the step must neither make NaN (a
    # one-column basis is normalised, not QR'd) nor corrupt the Ritz values.
    n = 600
    lam = jnp.linspace(0.1, 3.0, n)
    f = lambda w, d: 0.5 * jnp.sum(lam * w**2)  # noqa: E731
    U = jnp.eye(n)[:, ::-1][:, :k]  # e_n, e_{n−1}: eigenvalues 3.0, then the next
    theta, V, HV = _ritz_start(f, jnp.ones(n), U, None)
    theta, V, _ = _ritz_step(f, jnp.ones(n), theta, V, HV, None)
    np.testing.assert_allclose(theta, lam[::-1][:k], rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(V)))


@pytest.mark.parametrize("k", [1, 3])
def test_value_grad_hvp_block_returns_the_primals_of_its_hvps(mlp64, k):
    """The Ritz start's loss and gradient (central flow's, at no oracle cost of their own)
    are L(w) and ∇L(w), and its block is H(w)V."""
    from flowode._spectral import hvp_block, value_grad_hvp_block

    f, w, d = mlp64.flat_loss, mlp64.flat_w0, mlp64.data
    V = jax.random.normal(jax.random.key(1), (w.shape[0], k), w.dtype)
    loss, g, HV = value_grad_hvp_block(f, w, V, d)
    loss_ref, g_ref = jax.value_and_grad(f)(w, d)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(HV, hvp_block(f, w, V, d), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("b", [1, 3])
def test_lobpcg_step_from_an_exact_eigenbasis_stays_exact(b):
    # As for the Ritz step, with a zero previous direction (the first step's).
    from flowode._spectral import lobpcg_step, ritz_pairs

    n = 600
    lam = jnp.linspace(0.1, 3.0, n)
    f = lambda w, d: 0.5 * jnp.sum(lam * w**2)  # noqa: E731
    U = jnp.eye(n)[:, ::-1][:, :b]
    theta, X, HX = ritz_pairs(U, U * lam[::-1][:b])
    theta, X, HX, P = lobpcg_step(f, jnp.ones(n), theta, X, HX, jnp.zeros_like(U), None)
    np.testing.assert_allclose(theta, lam[::-1][:b], rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(X))) and bool(jnp.all(jnp.isfinite(P)))


def _clustered(n=400, seed=0):
    """A quadratic with a cluster at the top of its spectrum (n past the dense path):
    eigenvalues 10, 9.9, 9.8, 9.7, then 0..5, in a random basis."""
    lam = jnp.concatenate([jnp.array([10.0, 9.9, 9.8, 9.7]), jnp.linspace(0.0, 5.0, n - 4)])
    Q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(seed), (n, n), jnp.float64))
    A = (Q * lam) @ Q.T
    return (lambda w, d: 0.5 * w @ A @ w), lam, Q


def test_observer_converges_on_a_cluster_and_costs_what_it_says(x64):
    from flowode._observe import observe_eigs

    f, lam, Q = _clustered()
    n, k, b = 400, 3, 5
    U = jax.random.normal(jax.random.key(1), (1, n, b), jnp.float64)
    w = jnp.zeros((1, n))
    kw = dict(k=k, tol=1e-6, fallback_tol=1e-4)
    obs = observe_eigs(f, w, U, jnp.zeros_like(U), None, jnp.asarray(True), **kw)
    np.testing.assert_allclose(obs.eigs[0], lam[:k], rtol=1e-9)
    # From a random start it needed a full solve: k HVPs to check, the guards' b − k,
    # then 2b for each step.
    assert bool(obs.fell_back[0]) and int(obs.n_hvp[0]) > 3 * b
    assert (int(obs.n_hvp[0]) - b) % (2 * b) == 0
    # From its own converged basis it needs only the check of its k reported pairs.
    again = observe_eigs(f, w, obs.basis, obs.direction, None, jnp.asarray(True), **kw)
    np.testing.assert_allclose(again.eigs[0], lam[:k], rtol=1e-9)
    assert int(again.n_hvp[0]) == k and not bool(again.fell_back[0])


def test_points_do_not_pay_for_each_others_fallbacks(x64):
    from flowode._observe import observe_eigs

    f, lam, Q = _clustered()
    n, k, b = 400, 1, 2
    kw = dict(k=k, tol=1e-6, fallback_tol=1e-4)
    # Point 0 starts on its exact eigenvectors, point 1 from a random basis.
    U = jnp.stack([Q[:, :b], jax.random.normal(jax.random.key(2), (n, b), jnp.float64)])
    w = jnp.zeros((2, n))
    obs = observe_eigs(f, w, U, jnp.zeros_like(U), None, jnp.asarray(True), **kw)
    np.testing.assert_allclose(obs.eigs[:, 0], [10.0, 10.0], rtol=1e-9)
    assert obs.fell_back.tolist() == [False, True]
    assert int(obs.n_hvp[0]) == k < int(obs.n_hvp[1])
