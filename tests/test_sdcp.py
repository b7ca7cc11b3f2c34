"""Tests of the SDCP solver: closed form, cvxpy reference, jit/vmap, float32, k = 8, properties."""

import cvxpy as cp
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowode._sdcp import sdcp_residual, solve_sdcp, solve_sdcp_with_info

ETA = 0.1


def central_flow_instance(k, seed, null=0):
    """α (k,k) with mixed signs, β = (η/2) Gram of ∇P_ij (k,k,d), G symmetric in ij.

    `null` > 0 removes that many traceless directions from the span of the G_p, so β is
    rank-deficient but the QP stays bounded (no PSD matrix is traceless).
    """
    rng = np.random.default_rng(seed)
    m = k * (k + 1) // 2
    G = rng.standard_normal((k, k, 3 * m))
    G = (G + G.transpose(1, 0, 2)) / 2  # (k, k, d)
    if null:
        N = rng.standard_normal((null, k, k))
        N = N + N.transpose(0, 2, 1)
        N -= np.einsum("aii->a", N)[:, None, None] * np.eye(k) / k
        Q = np.linalg.qr(N.reshape(null, -1).T)[0]  # (k², null)
        Gm = G.reshape(k * k, -1)
        G = (Gm - Q @ (Q.T @ Gm)).reshape(k, k, -1)
    beta = ETA / 2 * np.einsum("ijp,klp->ijkl", G, G)
    Q = np.linalg.qr(rng.standard_normal((k, k)))[0]
    lam = 2 * rng.standard_normal(k)
    lam[0] = -abs(lam[0]) - 0.5  # α ⋡ 0, so X ≠ 0
    if k > 1:
        lam[1] = abs(lam[1]) + 0.5
    return (Q * lam) @ Q.T, beta, G


def cvx_reference(alpha, G):
    """min_{X ⪰ 0} ½⟨X, β[X]⟩ + ⟨α, X⟩ with ⟨X, β[X]⟩ = (η/2) Σ_p ⟨G_p, X⟩²."""
    k = alpha.shape[0]
    X = cp.Variable((k, k), PSD=True)
    factor = np.sqrt(ETA / 2) * G.reshape(k * k, -1).T  # (d, k²)
    obj = 0.5 * cp.sum_squares(factor @ cp.vec(X, order="C")) + cp.trace(alpha @ X)
    problem = cp.Problem(cp.Minimize(obj))
    if "CLARABEL" in cp.installed_solvers():
        problem.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    else:
        problem.solve(solver="SCS", eps_abs=1e-10, eps_rel=1e-10, max_iters=200_000)
    assert problem.status in ("optimal", "optimal_inaccurate"), problem.status
    return X.value


def eigmin(M):
    return np.linalg.eigvalsh((np.asarray(M) + np.asarray(M).T) / 2)[0]


def test_k1_closed_form(x64):
    for a, b, expected in [(-3.0, 2.0, 1.5), (-0.5, 0.25, 2.0), (2.0, 1.0, 0.0), (0.0, 1.0, 0.0)]:
        X, info = solve_sdcp_with_info(jnp.full((1, 1), a), jnp.full((1, 1, 1, 1), b))
        assert X.shape == (1, 1) and X.dtype == jnp.float64
        assert float(X[0, 0]) == pytest.approx(expected, rel=1e-14, abs=0)
        assert bool(info.converged) and float(info.residual) < 1e-14
    # β = 0: X = 0 if α ≥ 0; otherwise there is no solution and X = +inf, not converged.
    assert float(solve_sdcp(jnp.ones((1, 1)), jnp.zeros((1, 1, 1, 1)))[0, 0]) == 0.0
    X, info = solve_sdcp_with_info(-jnp.ones((1, 1)), jnp.zeros((1, 1, 1, 1)))
    assert np.isposinf(float(X[0, 0])) and not bool(info.converged)


def test_trivial_cases(x64):
    _, beta, _ = central_flow_instance(3, 0)
    for alpha in (np.eye(3), np.diag([1.0, 0.0, 2.0]), np.zeros((3, 3))):  # α ⪰ 0: X = 0
        X, info = solve_sdcp_with_info(jnp.asarray(alpha), jnp.asarray(beta))
        assert np.all(np.asarray(X) == 0) and int(info.num_steps) == 0 and bool(info.converged)
    # β = 0 and α ⋡ 0: no solution; X = +inf and not converged
    X, info = solve_sdcp_with_info(jnp.diag(jnp.array([1.0, -1.0, 0.0])), jnp.zeros((3,) * 4))
    assert np.all(np.isposinf(np.asarray(X))) and not bool(info.converged)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_matches_cvxpy(x64, k):
    nulls = [0] + [n for n in (1, 2) if n < k * (k + 1) // 2 - 1]
    ranks = []
    for seed in range(3):
        for null in nulls:
            alpha, beta, G = central_flow_instance(k, 10 * k + seed, null)
            X, info = solve_sdcp_with_info(jnp.asarray(alpha), jnp.asarray(beta))
            X = np.asarray(X)
            X_cvx = cvx_reference(alpha, G)
            err = np.linalg.norm(X - X_cvx) / max(np.linalg.norm(X_cvx), 1e-12)
            assert err <= 1e-4, (seed, null, err)
            assert bool(info.converged) and float(info.rel_residual) <= 1e-12
            assert float(info.residual) <= 1e-6 and abs(float(info.complementarity)) <= 1e-6
            S = alpha + np.einsum("ijkl,kl->ij", beta, X)
            assert eigmin(X) >= -1e-8 and eigmin(S) >= -1e-8
            w = np.linalg.eigvalsh(X)
            ranks.append(int((w > 1e-6 * w[-1]).sum()))
    if k >= 3:  # the instances include solutions of intermediate rank
        assert any(0 < r < k for r in ranks), ranks


def test_jit_and_vmap_match_loop(x64):
    insts = [central_flow_instance(3, 100 + s, null=s % 2) for s in range(16)]
    A = jnp.asarray(np.stack([i[0] for i in insts]))  # (16, 3, 3)
    B = jnp.asarray(np.stack([i[1] for i in insts]))  # (16, 3, 3, 3, 3)
    Xb, info = jax.jit(jax.vmap(solve_sdcp_with_info))(A, B)
    assert Xb.shape == (16, 3, 3) and info.converged.shape == (16,)
    assert bool(info.converged.all())
    Xloop = np.stack([np.asarray(solve_sdcp(a, b)) for a, b in zip(A, B, strict=True)])
    np.testing.assert_allclose(np.asarray(Xb), Xloop, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 6])  # each k compiles anew; k = 2..8 were checked offline
def test_float32(k):
    for seed in range(3):
        alpha, beta, _ = central_flow_instance(k, 200 + seed, null=seed % 2 if k > 1 else 0)
        X, info = solve_sdcp_with_info(jnp.asarray(alpha, jnp.float32), jnp.asarray(beta))
        assert X.dtype == jnp.float32 and info.residual.dtype == jnp.float32
        assert bool(info.converged) and float(info.rel_residual) <= 1e-4
        with jax.enable_x64(True):
            X64 = np.asarray(solve_sdcp(jnp.asarray(alpha), jnp.asarray(beta)))
        assert np.linalg.norm(np.asarray(X) - X64) <= 1e-3 * np.linalg.norm(X64)


@pytest.mark.parametrize("null", [0, 3])
def test_k8_converges(x64, null):
    alpha, beta, _ = central_flow_instance(8, 8, null)
    X, info = solve_sdcp_with_info(jnp.asarray(alpha), jnp.asarray(beta))
    assert bool(info.converged) and float(info.rel_residual) <= 1e-12
    assert int(info.num_steps) <= 20
    S = alpha + np.einsum("ijkl,kl->ij", beta, np.asarray(X))
    assert eigmin(X) >= -1e-8 and eigmin(S) >= -1e-8
    assert abs(float(info.complementarity)) <= 1e-8


def test_parts_invisible_on_symmetric_matrices_are_ignored(x64):
    alpha, beta, _ = central_flow_instance(3, 7)
    X = solve_sdcp(jnp.asarray(alpha), jnp.asarray(beta))
    rng = np.random.default_rng(0)
    skew = rng.standard_normal((3, 3))
    skew -= skew.T
    # β_ijkl + skew_ij M_kl + M_ij skew_kl: the same operator on symmetric matrices.
    M = rng.standard_normal((3, 3))
    beta2 = beta + np.einsum("ij,kl->ijkl", skew, M) + np.einsum("ij,kl->ijkl", M, skew)
    X2 = solve_sdcp(jnp.asarray(alpha), jnp.asarray(beta2))
    np.testing.assert_allclose(np.asarray(X2), np.asarray(X), rtol=1e-9, atol=1e-12)
    # Roundoff-sized asymmetry is accepted too.
    X3 = solve_sdcp(jnp.asarray(alpha + 1e-14 * skew * np.abs(alpha).max()), jnp.asarray(beta))
    np.testing.assert_allclose(np.asarray(X3), np.asarray(X), rtol=1e-9, atol=1e-12)


def test_asymmetric_or_indefinite_inputs_are_rejected(x64):
    alpha, beta, _ = central_flow_instance(3, 7)
    rng = np.random.default_rng(1)
    skew = rng.standard_normal((3, 3))
    skew -= skew.T
    with pytest.raises(Exception, match="alpha must be symmetric"):
        solve_sdcp(jnp.asarray(alpha + 0.1 * skew), jnp.asarray(beta))
    D = rng.standard_normal((3, 3, 3, 3))
    D = D + D.transpose(1, 0, 2, 3) + D.transpose(0, 1, 3, 2) + D.transpose(1, 0, 3, 2)
    with pytest.raises(Exception, match="beta must be self-adjoint"):
        solve_sdcp(jnp.asarray(alpha), jnp.asarray(beta + D - D.transpose(2, 3, 0, 1)))
    with pytest.raises(Exception, match="beta must be positive semidefinite"):
        solve_sdcp(jnp.asarray(alpha), jnp.asarray(-beta))
    with pytest.raises(Exception, match="alpha must be symmetric"):  # also under jit
        jax.jit(solve_sdcp)(jnp.asarray(alpha + 0.1 * skew), jnp.asarray(beta))


def test_implicit_gradient(x64):
    alpha, beta, _ = central_flow_instance(3, 3)
    alpha, beta = jnp.asarray(alpha), jnp.asarray(beta)
    W = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3)))
    f = lambda a, b: jnp.sum(W * solve_sdcp(a, b))
    da = jnp.asarray(np.random.default_rng(2).standard_normal((3, 3)))
    da = da + da.T
    ga = jax.grad(f)(alpha, beta)
    fd = (f(alpha + 1e-6 * da, beta) - f(alpha - 1e-6 * da, beta)) / 2e-6
    assert float(jnp.sum(ga * da)) == pytest.approx(float(fd), rel=1e-6)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(2, 3),
    data=st.data(),
    ridge=st.sampled_from([1e-3, 0.1, 1.0]),
)
def test_property_complementarity(k, data, ridge):
    floats = st.floats(-3, 3, allow_nan=False, allow_infinity=False)
    a = data.draw(hnp.arrays(np.float64, (k, k), elements=floats))
    G = data.draw(hnp.arrays(np.float64, (k * k, k * k), elements=floats))
    alpha = a + a.T
    # random PSD β on k×k matrices; the ridge keeps it definite, so the QP is bounded
    beta = (G @ G.T + ridge * np.eye(k * k)).reshape(k, k, k, k)
    with jax.enable_x64(True):
        X, info = solve_sdcp_with_info(jnp.asarray(alpha), jnp.asarray(beta))
        X = np.asarray(X)
        res, comp = sdcp_residual(X, alpha, beta)
    scale = 1 + np.linalg.norm(X)
    assert bool(info.converged) and float(info.rel_residual) <= 1e-10
    S = alpha + np.einsum("ijkl,kl->ij", beta, X)
    assert eigmin(X) >= -1e-8 * scale
    assert eigmin(S) >= -1e-8 * scale * (1 + np.linalg.norm(beta))
    assert abs(float(comp)) <= 1e-8 * scale**2 * (1 + np.linalg.norm(beta))
    assert float(res) <= 1e-8 * scale * (1 + np.linalg.norm(beta))


def test_bad_shapes():
    with pytest.raises(ValueError, match="alpha must be a square"):
        solve_sdcp(jnp.zeros((2, 3)), jnp.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="alpha must be a square"):
        solve_sdcp(jnp.zeros(3), jnp.zeros((3, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"beta must have shape \(k, k, k, k\) = \(2, 2, 2, 2\)"):
        solve_sdcp(jnp.zeros((2, 2)), jnp.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"got \(3, 3, 3, 3\)"):
        solve_sdcp_with_info(jnp.zeros((2, 2)), jnp.zeros((3, 3, 3, 3)))


def test_non_finite_input():
    with pytest.raises(Exception, match="alpha has non-finite entries"):
        solve_sdcp(jnp.full((1, 1), jnp.nan), jnp.ones((1, 1, 1, 1)))
    with pytest.raises(Exception, match="beta has non-finite entries"):
        jax.jit(solve_sdcp)(jnp.ones((1, 1)), jnp.full((1, 1, 1, 1), jnp.inf))
