"""Semidefinite complementarity problem (SDCP) of central flow.

Find X (k×k) with  X ⪰ 0,  S = α + β[X] ⪰ 0,  ⟨X, S⟩ = 0,  where β[X]_ij = Σ_kl β_ijkl X_kl
is a PSD operator on symmetric matrices. Equivalently X = argmin_{X ⪰ 0} ½⟨X, β[X]⟩ + ⟨α, X⟩.

Method (k ≥ 2). Work in orthonormal svec coordinates z ∈ R^m, m = k(k+1)/2, scaled so that
max|α_ij| = 1 and λ_max(β) = 1. A short accelerated projected gradient (FISTA, adaptive restart)
finds the active set; a semismooth Newton (`optimistix.Newton`) on the natural residual
F(z) = z − Π(z − (a + Bz)) then converges quadratically, to machine precision in 3–10 steps
on the cases measured (k ≤ 8, cond(β) up to 1e12, rank-deficient β). Π is the PSD projection;
its custom JVP is the Löwner (divided-difference) formula, an element of the Clarke Jacobian,
so Newton and Optimistix's implicit differentiation are exact where Π is differentiable.
FISTA alone needed ~1400 iterations for 1e-11 at k = 8, cond(β) ≈ 1e6; Newton from X = 0
failed (singular Jacobian) on 1 of 134 exactly sparse β, which the warm start fixed.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax import lax
from jaxtyping import Array, Bool, Float, Int

WARM_STEPS = 50  # FISTA iterations before Newton (stops earlier at relative residual 1e-3)


class SDCPInfo(eqx.Module):
    """Diagnostics of an SDCP solve (scalars; batched under `vmap`)."""

    residual: Float[Array, ""]  # natural residual ‖X − Π(X − S)‖_F, S = α + β[X]
    complementarity: Float[Array, ""]  # ⟨X, S⟩
    rel_residual: Float[Array, ""]  # ‖X − Π(X − S/λ)‖ / (‖X‖ + ‖α‖/λ), λ = λ_max(β); scale-free
    num_steps: Int[Array, ""]  # Newton iterations
    num_warm_steps: Int[Array, ""]  # FISTA iterations
    converged: Bool[Array, ""]  # rel_residual ≤ tol


@jax.custom_jvp
def _psd_project(Y: Float[Array, "k k"]) -> Float[Array, "k k"]:
    """Π_PSD(Y): clip the eigenvalues of the symmetric Y at zero."""
    w, Q = jnp.linalg.eigh(Y)
    return (Q * jnp.maximum(w, 0)) @ Q.T


@_psd_project.defjvp
def _psd_project_jvp(primals, tangents):
    # Löwner formula dΠ = Q (Ω ∘ Qᵀ dY Q) Qᵀ, Ω_ij = (λ_i⁺ − λ_j⁺)/(λ_i − λ_j); 0 or 1 if same sign.
    (Y,), (dY,) = primals, tangents
    w, Q = jnp.linalg.eigh(Y)  # (k,), (k, k)
    wp, pos = jnp.maximum(w, 0), w > 0
    mixed = pos[:, None] != pos[None, :]  # (k, k)
    den = jnp.where(mixed, w[:, None] - w[None, :], 1)
    omega = jnp.where(mixed, (wp[:, None] - wp[None, :]) / den, pos[:, None] & pos[None, :])
    dY = (dY + dY.T) / 2
    return (Q * wp) @ Q.T, Q @ (omega * (Q.T @ dY @ Q)) @ Q.T


def _svec_basis(k: int, dtype) -> np.ndarray:
    """Orthonormal basis E (m, k, k) of symmetric matrices: svec(X)_a = ⟨E_a, X⟩."""
    i, j = np.triu_indices(k)
    E = np.zeros((i.size, k, k), dtype)
    E[np.arange(i.size), i, j] = E[np.arange(i.size), j, i] = np.where(i == j, 1, np.sqrt(0.5))
    return E


def _prepare(alpha, beta):
    """svec(α) (m,), PSD-clipped β as an (m, m) matrix (straight-through gradient), λ_max(β)."""
    E = _svec_basis(alpha.shape[0], alpha.dtype)  # (m, k, k)
    a = jnp.einsum("aij,ij->a", E, alpha)  # symmetric part of α
    B = jnp.einsum("aij,ijkl,bkl->ab", E, beta, E)  # β restricted to symmetric matrices
    B = (B + B.T) / 2
    w, V = jnp.linalg.eigh(lax.stop_gradient(B))
    B = B + lax.stop_gradient((V * jnp.maximum(w, 0)) @ V.T - B)
    return E, a, B, jnp.maximum(w[-1], 0)


def _residual(z, a, B, E, tau=1.0):
    """z − svec Π(smat(z − τ(a + Bz))): zero exactly at the solution."""
    y = z - tau * (a + B @ z)
    return z - jnp.einsum("aij,ij->a", E, _psd_project(jnp.einsum("a,aij->ij", y, E)))


def _rel(z, a, B, E):
    return jnp.linalg.norm(_residual(z, a, B, E)) / (1 + jnp.linalg.norm(z))


def _fista(a, B, E, steps):
    """Accelerated projected gradient with adaptive restart; step 1 = 1/λ_max(B)."""

    def body(c):
        z, y, t, n, _ = c
        z1 = y - _residual(y, a, B, E)  # projected gradient step from y
        t1 = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        restart = jnp.dot(y - z1, z1 - z) > 0  # O'Donoghue & Candès
        y1 = jnp.where(restart, z1, z1 + (t - 1) / t1 * (z1 - z))
        r = jnp.linalg.norm(y - z1) / (1 + jnp.linalg.norm(z1))
        return z1, y1, jnp.where(restart, 1.0, t1).astype(t.dtype), n + 1, r

    z0 = jnp.zeros_like(a)
    one, inf = jnp.ones((), a.dtype), jnp.full((), jnp.inf, a.dtype)
    c = lax.while_loop(lambda c: (c[3] < steps) & (c[4] > 1e-3), body, (z0, z0, one, 0, inf))
    return c[0], c[3]


class _Newton(optx.Newton):
    """Newton that stops once the residual is small: ‖F(z)‖ ≤ atol (1 + ‖z‖)."""

    def terminate(self, fn, y, args, options, state, tags):
        small = jnp.linalg.norm(fn(y, args)[0]) <= self.atol * (1 + jnp.linalg.norm(y))
        return small | (state.result != optx.RESULTS.successful), state.result


def _solve_scaled(a, B, E, tol, max_steps):
    """Solve with max|a| = 1, λ_max(B) = 1. Returns z (m,), Newton and FISTA step counts."""
    z0, n_warm = _fista(lax.stop_gradient(a), lax.stop_gradient(B), E, WARM_STEPS)
    solver = _Newton(rtol=tol, atol=tol)
    fn = lambda z, args: _residual(z, *args, E)
    sol = optx.root_find(fn, solver, z0, (a, B), max_steps=max_steps, throw=False)
    better = _rel(sol.value, a, B, E) <= _rel(z0, a, B, E)  # False if Newton went non-finite
    steps = jnp.asarray(sol.stats["num_steps"], jnp.int32), jnp.asarray(n_warm, jnp.int32)
    return jnp.where(better, sol.value, z0), *steps


def _check(alpha, beta):
    alpha, beta = jnp.asarray(alpha), jnp.asarray(beta)
    if alpha.ndim != 2 or alpha.shape[0] != alpha.shape[1] or alpha.shape[0] == 0:
        raise ValueError(f"SDCP: alpha must be a square (k, k) matrix, got shape {alpha.shape}")
    k = alpha.shape[0]
    if beta.shape != (k,) * 4:
        raise ValueError(
            f"SDCP: beta must have shape (k, k, k, k) = {(k,) * 4} to match alpha of shape "
            f"{alpha.shape}, got {beta.shape}"
        )
    dtype = jnp.result_type(alpha, beta)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    alpha, beta = alpha.astype(dtype), beta.astype(dtype)
    alpha = eqx.error_if(alpha, ~jnp.isfinite(alpha).all(), "SDCP: alpha has non-finite entries")
    beta = eqx.error_if(beta, ~jnp.isfinite(beta).all(), "SDCP: beta has non-finite entries")
    # Symmetry and PSD-ness up to roundoff (relative √eps); `_solve` then removes the roundoff.
    rtol = float(np.sqrt(jnp.finfo(dtype).eps))
    skew = jnp.max(jnp.abs(alpha - alpha.T)) > rtol * jnp.max(jnp.abs(alpha))
    alpha = eqx.error_if(alpha, skew, "SDCP: alpha must be symmetric")
    E = _svec_basis(k, dtype)
    B = jnp.einsum("aij,ijkl,bkl->ab", E, beta, E)  # β on symmetric matrices, (m, m)
    scale = jnp.max(jnp.abs(B))
    beta = eqx.error_if(
        beta,
        jnp.max(jnp.abs(B - B.T)) > rtol * scale,
        "SDCP: beta must be self-adjoint on symmetric matrices (beta_ijkl = beta_klij)",
    )
    lowest = jnp.linalg.eigvalsh((B + B.T) / 2)[0]
    beta = eqx.error_if(beta, lowest < -rtol * scale, "SDCP: beta must be positive semidefinite")
    return alpha, beta


@eqx.filter_jit
def _solve(alpha, beta, tol, max_steps):
    k, alpha = alpha.shape[0], (alpha + alpha.T) / 2
    E, a, B, lmax = _prepare(alpha, beta)
    sa, sb = jnp.max(jnp.abs(a)), lmax  # max-norm: ‖a‖² would underflow for tiny α
    psd = jnp.linalg.eigvalsh(alpha)[0] >= 0  # α ⪰ 0  ⇔  X = 0
    if tol is None:
        tol = max(1e-12, 100 * float(jnp.finfo(alpha.dtype).eps))
    if k == 1:  # X = max(0, −α)/β
        z = jnp.where(psd, 0.0, -a / jnp.where(sb > 0, B[0], 1))  # B[0] = β ≥ 0 (clipped)
        n_newton = n_warm = jnp.int32(0)
    else:
        # X(α, β) = (sa/sb) X(α/sa, β/sb) for any sa, sb > 0: scaling carries no gradient.
        sa_, sb_ = (lax.stop_gradient(jnp.where(s > 0, s, 1)) for s in (sa, sb))
        zero = lambda: (jnp.zeros_like(a), jnp.int32(0), jnp.int32(0))
        iterate = lambda: _solve_scaled(a / sa_, B / sb_, E, tol, max_steps)
        z, n_newton, n_warm = lax.cond(psd, zero, iterate)
        z = z * sa_ / sb_
    z = jnp.where(psd | (sb > 0), z, jnp.inf)  # β = 0 and α ⋡ 0: no solution, X = +inf
    X = jnp.where(jnp.isinf(z).any(), jnp.inf, jnp.einsum("a,aij->ij", z, E))
    # The scale-free residual, evaluated in the scaled units max|α_ij| = 1, λ_max(β) = 1, where no
    # norm under- or overflows (inputs may be as small as 1e-186 or as large as 1e150).
    sa1, sb1 = (lax.stop_gradient(jnp.where(s > 0, s, 1)) for s in (sa, sb))
    zs = z * sb1 / sa1
    num = jnp.linalg.norm(_residual(zs, a / sa1, B / sb1, E))
    rel = num / (jnp.linalg.norm(zs) + jnp.linalg.norm(a / sa1))
    rel = jnp.where(psd, 0.0, rel)
    residual, comp = sdcp_residual(X, alpha, beta)
    info = SDCPInfo(residual, comp, rel, n_newton, n_warm, rel <= tol)
    return X, info


def solve_sdcp_with_info(
    alpha: Float[Array, "k k"],
    beta: Float[Array, "k k k k"],
    *,
    tol: float | None = None,
    max_steps: int = 50,
) -> tuple[Float[Array, "k k"], SDCPInfo]:
    """Solve SDCP(α, β) and return (X, SDCPInfo).

    α must be symmetric and β a self-adjoint PSD operator on symmetric matrices, up to
    roundoff (relative √eps), which is removed before solving. `tol` bounds the scale-free
    `info.rel_residual` (default 1e-12 in float64, 1.2e-5 in float32); `max_steps` caps Newton.
    Follows the input dtype; jit-, vmap- and grad-compatible (implicit differentiation). If
    β = 0 and α ⋡ 0 there is no solution and X = +inf; other unbounded problems (β singular
    along a PSD descent direction) end with `info.converged` False.
    """
    alpha, beta = _check(alpha, beta)
    return _solve(alpha, beta, tol, max_steps)


def solve_sdcp(
    alpha: Float[Array, "k k"],
    beta: Float[Array, "k k k k"],
    *,
    tol: float | None = None,
    max_steps: int = 50,
) -> Float[Array, "k k"]:
    """X solving SDCP(α, β) (see `solve_sdcp_with_info`)."""
    return solve_sdcp_with_info(alpha, beta, tol=tol, max_steps=max_steps)[0]


def sdcp_residual(
    X: Float[Array, "k k"], alpha: Float[Array, "k k"], beta: Float[Array, "k k k k"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(‖X − Π_PSD(X − S)‖_F, ⟨X, S⟩) with S = α + β[X], symmetrised; both 0 at a solution."""
    X = (X + X.T) / 2
    S = alpha + jnp.einsum("ijkl,kl->ij", beta, X)
    S = (S + S.T) / 2
    return jnp.linalg.norm(X - _psd_project(X - S)), jnp.vdot(X, S)
