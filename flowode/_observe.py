"""Per-step diagnostics of a point: its top Hessian eigenvalues, cheaply and honestly.

The observer keeps, for each point it follows, a basis of b = k + g vectors (k reported,
g guards) and the previous LOBPCG search direction. At every observed step it checks
the k reported Ritz pairs of that basis at the new point (k HVPs); where their residual
is too large it takes one LOBPCG step on [X, R, P] (3b HVPs in all), which keeps a
warm-started basis converged while the point moves. Where even that leaves the residual
large, that point alone goes on stepping (a fallback, counted), so the cost of
diagnostics is known and reported apart from the dynamics.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._spectral import (
    FlatLoss,
    _dense_top,
    hvp_block,
    lobpcg_step,
    orthonormal,
    ritz_pairs,
    ritz_residual,
    use_dense,
)


class EigObservation(eqx.Module):
    eigs: Float[Array, "m k"]  # descending; NaN where not observed
    basis: Float[Array, "m n b"]  # the warm starts for the next time (k + guards)
    direction: Float[Array, "m n b"]  # LOBPCG's last search direction
    n_hvp: Int[Array, " m"]
    fell_back: Bool[Array, " m"]


def observe_eigs(
    f: FlatLoss,
    points: Float[Array, "m n"],
    U: Float[Array, "m n b"],
    P: Float[Array, "m n b"],
    data: PyTree,
    due: Bool[Array, ""],
    *,
    k: int,
    tol: float,
    fallback_tol: float,
    max_iters: int = 200,
    scales: Float[Array, "m n"] | None = None,
) -> EigObservation:
    """Top-k eigenvalues at m points from their warm starts (U, P), if `due`.

    Each point starts from the Ritz pairs within the first k columns of its basis U (k
    HVPs). Where a pair's residual ‖Hu − θu‖ is above `tol`·|θ₁|, it takes one LOBPCG
    step on all b ≥ k columns (the guards' HVPs, then 2b) with its direction P; where
    that leaves a residual above `fallback_tol`·|θ₁|, it goes on stepping until all k are
    below `tol`/10 (a full solve, counted in `fell_back`). The starts are one vmapped
    program for all points; steps run one point at a time, so no point pays for
    another's. Non-finite points give NaN and keep their warm start.

    `scales` s (one per point) gives the eigenvalues of diag(s) H diag(s) instead: the
    Hessian of z ↦ L(s ⊙ z) at z = w/s. With s = √P⁻¹ these are the preconditioned
    sharpnesses λ(P⁻¹H) of an adaptive optimiser.
    """
    m, n, b = U.shape
    dtype = points.dtype
    scaled = scales is not None
    if not scaled:
        scales = jnp.ones_like(points)
    finite = jnp.all(jnp.isfinite(points), axis=1) & jnp.all(jnp.isfinite(scales), axis=1)
    points = jnp.where(finite[:, None], points, 0)  # no NaN enters a solve
    scales = jnp.where(finite[:, None], scales, 1)

    def at(w, s):  # the loss whose Hessian is observed, and the point to observe it at
        if scaled:  # the Hessian of z ↦ L(s ⊙ z) at z = w/s
            return (lambda z, d: f(s * z, d)), w / s
        return f, w

    def unconverged(theta, X, HX, tol):
        residual = ritz_residual(theta[:k], X[:, :k], HX[:, :k])
        return ~jnp.all(residual <= tol)  # NaN never converges

    def start(w, s, U):  # the Ritz pairs within the basis's first k columns: k HVPs
        g, w = at(w, s)
        X = orthonormal(U)  # (n, b)
        theta, Xk, HXk = ritz_pairs(X[:, :k], hvp_block(g, w, X[:, :k], data))
        theta = jnp.concatenate([theta, jnp.zeros((b - k,), theta.dtype)])  # (b,)
        HX = jnp.concatenate([HXk, jnp.zeros_like(X[:, k:])], 1)  # guards' HX not yet known
        return theta, X.at[:, :k].set(Xk), HX

    def dense(w, s):
        g, w = at(w, s)
        theta, V = _dense_top(g, w, b, data)
        return theta, V

    def solve(U, P):
        if use_dense(n, 2 * b):
            theta, X = jax.vmap(dense)(points, scales)
            n_hvp, fell_back, P = jnp.full((m,), n, jnp.int32), jnp.zeros((m,), bool), 0 * U
        else:
            theta, X, HX = jax.vmap(start)(points, scales, U)
            todo = jax.vmap(lambda *c: unconverged(*c, tol))(theta, X, HX)

            def cond(c):
                todo, iters = c[0], c[1]
                return jnp.any(todo & (iters < max_iters))

            def body(c):  # one LOBPCG step for the first point that needs one
                todo, iters, fell, theta, X, HX, P = c
                i = jnp.argmax(todo & (iters < max_iters))
                g, w = at(points[i], scales[i])
                first = iters[i] == 0

                def with_guards(x):  # the Ritz pairs within all b columns: g more HVPs
                    hx = jnp.concatenate([HX[i, :, :k], hvp_block(g, w, x[:, k:], data)], 1)
                    return ritz_pairs(x, hx)

                t, x, hx = theta[i], X[i], HX[i]
                if b > k:  # the guards are paid for only where a step is taken
                    t, x, hx = lax.cond(first, with_guards, lambda x: (t, x, hx), x)
                t, x, hx, p = lobpcg_step(g, w, t, x, hx, P[i], data)
                # After its one step a point is done below `fallback_tol`; beyond that
                # (a fallback) it goes on to a tenth of `tol`: a full solve, which also
                # makes its next start good.
                fell = fell.at[i].set(fell[i] | (first & unconverged(t, x, hx, fallback_tol)))
                todo = todo.at[i].set(unconverged(t, x, hx, 0.1 * tol) & (fell[i] | ~first))
                return (
                    todo,
                    iters.at[i].add(1),
                    fell,
                    theta.at[i].set(t),
                    X.at[i].set(x),
                    HX.at[i].set(hx),
                    P.at[i].set(p),
                )

            iters, fell_back = jnp.zeros((m,), jnp.int32), jnp.zeros((m,), bool)
            c = (todo, iters, fell_back, theta, X, HX, P)
            _, iters, fell_back, theta, X, _, P = lax.while_loop(cond, body, c)
            n_hvp = k + jnp.where(iters > 0, b - k + 2 * b * iters, 0)
        ok = finite & jnp.all(jnp.isfinite(X), axis=(1, 2))
        eigs = jnp.where(ok[:, None], theta[:, :k], jnp.nan)
        X = jnp.where(ok[:, None, None], X, U)
        P = jnp.where(ok[:, None, None], P, 0)
        return EigObservation(eigs, X, P, jnp.where(finite, n_hvp, 0), fell_back & finite)

    def skip(U, P):
        return EigObservation(
            jnp.full((m, k), jnp.nan, dtype),
            U,
            P,
            jnp.zeros((m,), jnp.int32),
            jnp.zeros((m,), bool),
        )

    return lax.cond(due, solve, skip, U, P)
