"""Per-step diagnostics of a point: its top Hessian eigenvalues, cheaply and honestly.

The observer keeps each process's eigenbasis from one step to the next. At every
observed step it takes a fixed number of block Rayleigh–Ritz steps from there (2k HVPs
for one step), which is as good as a full solve when the point has moved little. Where
the Ritz residual says it is not, it goes on to convergence (a full solve) and counts
that, so the cost of diagnostics is known and reported apart from the dynamics.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._spectral import FlatLoss, _dense_top, _ritz_start, _ritz_step, ritz_residual, use_dense


class EigObservation(eqx.Module):
    eigs: Float[Array, "m k"]  # descending; NaN where not observed
    basis: Float[Array, "m n k"]  # the warm starts for the next time
    n_hvp: Int[Array, " m"]
    fell_back: Bool[Array, " m"]


def observe_eigs(
    f: FlatLoss,
    points: Float[Array, "m n"],
    U: Float[Array, "m n k"],
    data: PyTree,
    due: Bool[Array, ""],
    *,
    ritz_iters: int,
    fallback_tol: float,
    max_iters: int = 200,
    scales: Float[Array, "m n"] | None = None,
) -> EigObservation:
    """Top-k eigenvalues at m points from their warm starts U, if `due`.

    Each point takes `ritz_iters` block Rayleigh–Ritz steps. Where a Ritz pair's residual
    ‖Hu − θu‖ is then above `fallback_tol`·|θ₁|, that point goes on stepping until it
    is below a tenth of that (a full solve, counted in `fell_back`). The points are
    observed together in one vmapped loop, so the solver is compiled once however many
    processes there are. Non-finite points give NaN and keep their warm start.

    `scales` s (one per point) gives the eigenvalues of diag(s) H diag(s) instead: the
    Hessian of z ↦ L(s ⊙ z) at z = w/s. With s = √P⁻¹ these are the preconditioned
    sharpnesses λ(P⁻¹H) of an adaptive optimiser.
    """
    m, n, k = U.shape
    dtype = points.dtype
    if scales is None:
        scales = jnp.ones_like(points)
        scaled = False
    else:
        scaled = True
    finite = jnp.all(jnp.isfinite(points), axis=1) & jnp.all(jnp.isfinite(scales), axis=1)
    points = jnp.where(finite[:, None], points, 0)  # no NaN enters a solve
    scales = jnp.where(finite[:, None], scales, 1)

    def one(w, U, s):
        if scaled:  # the Hessian of z ↦ L(s ⊙ z) at z = w/s
            f_s, w = (lambda z, d: f(s * z, d)), w / s
        else:
            f_s = f
        return _solve(f_s, w, U)

    def _solve(f, w, U):
        if use_dense(n, 2 * k):
            theta, V = _dense_top(f, w, k, data)
            return theta, V, jnp.asarray(n, jnp.int32), jnp.asarray(False)
        theta, V, HV = _ritz_start(f, w, U, data)

        def cond(c):
            i, theta, V, HV = c
            residual = ritz_residual(theta, V, HV)
            tol = jnp.where(i > ritz_iters, 0.1, 1.0) * fallback_tol
            unconverged = ~jnp.all(residual <= tol)  # NaN never converges
            return (i < ritz_iters) | ((i < max_iters) & unconverged)

        def body(c):
            i, theta, V, HV = c
            return (i + 1, *_ritz_step(f, w, theta, V, HV, data))

        i, theta, V, _ = lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), theta, V, HV))
        return theta, V, k * (1 + i), i > ritz_iters

    def solve(U):
        theta, V, n_hvp, fell_back = jax.vmap(one)(points, U, scales)
        ok = finite & jnp.all(jnp.isfinite(V), axis=(1, 2))
        eigs = jnp.where(ok[:, None], theta, jnp.nan)
        V = jnp.where(ok[:, None, None], V, U)
        return EigObservation(eigs, V, jnp.where(finite, n_hvp, 0), fell_back & finite)

    def skip(U):
        return EigObservation(
            jnp.full((m, k), jnp.nan, dtype),
            U,
            jnp.zeros((m,), jnp.int32),
            jnp.zeros((m,), bool),
        )

    return lax.cond(due, solve, skip, U)
