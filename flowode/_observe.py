"""Per-step diagnostics along a saved trajectory: loss, gradient norm, top eigenvalues.

One `lax.scan` walks the saved states and warm-starts each eigen-solve from the
previous step's eigenvectors, so tracking the sharpness costs a few HVPs per step.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree, Scalar

from ._spectral import FlatLoss, initial_basis, top_eigs
from .flows._base import AbstractProcess


def observe(
    process: AbstractProcess,
    f: FlatLoss,
    states: PyTree[Array],
    lr: Scalar,
    data: PyTree,
    w_gd: Float[Array, "steps n"] | None = None,
    *,
    eig_k: int,
    eig_every: int,
    U0: Float[Array, "n k"] | None = None,
    t0: Int[Array, ""] | int = 0,
    n: Int[Array, ""] | None = None,
) -> tuple[dict[str, Array], Float[Array, "n k"]]:
    """Diagnostics at every saved state (leading axis = step), and the last eigenbasis.

    The states are those at steps t0, t0+1, ...; only the first n+1 are observed (the
    rest are NaN). Eigenvalues are taken every `eig_every` steps, warm-started from `U0`
    (a fixed start if not given). `w_gd`: GD's iterates at the same steps, for processes
    that compare themselves with GD (central flow's oscillation variance).
    """
    n_steps = jax.tree_util.tree_leaves(states)[0].shape[0]
    n = n_steps - 1 if n is None else n
    w0 = process.center(jax.tree_util.tree_map(lambda x: x[0], states))
    dtype = w0.dtype
    U0 = initial_basis(w0.shape[0], eig_k, dtype) if U0 is None else U0
    grad = jax.value_and_grad(f)

    def observe_one(U, k, state, w_ref):
        w = process.center(state)
        loss, g = grad(w, data)
        ok = jnp.all(jnp.isfinite(w)) & jnp.isfinite(loss) & (k % eig_every == 0)

        def solve(U):
            return top_eigs(f, w, U, data)

        def skip(U):
            return jnp.full((eig_k,), jnp.nan, dtype), U, jnp.asarray(0, jnp.int32)

        eigs, U_new, hvps = jax.lax.cond(ok, solve, skip, U)
        t = k.astype(dtype)
        out = {
            "center": w,
            "iterate": process.iterate(t, state),
            "loss": loss,
            "grad_norm": jnp.linalg.norm(g),
            "eigs": eigs,
        }
        w_ref = w if w_ref is None else w_ref
        out.update(process.observables(f, t, state, U_new, lr, data, w_ref))
        return out, U_new, hvps

    shapes = jax.eval_shape(observe_one, U0, jnp.asarray(t0), *_first(states, w_gd))[0]

    def step(carry, inp):
        U, n_hvp = carry
        i, state, w_ref = inp

        def nothing(U):
            out = jax.tree_util.tree_map(_blank, shapes)
            return out, U, jnp.asarray(0, jnp.int32)

        out, U, hvps = jax.lax.cond(
            i <= n, lambda U: observe_one(U, t0 + i, state, w_ref), nothing, U
        )
        return (U, n_hvp + hvps), out

    (U_last, n_hvp), out = jax.lax.scan(
        step, (U0, jnp.asarray(0, jnp.int32)), (jnp.arange(n_steps), states, w_gd)
    )
    out["observe_hvps"] = n_hvp
    return out, U_last


def _first(states, w_gd):
    first = jax.tree_util.tree_map(lambda x: x[0], states)
    return first, None if w_gd is None else w_gd[0]


def _blank(s: jax.ShapeDtypeStruct) -> Array:
    fill = jnp.nan if jnp.issubdtype(s.dtype, jnp.inexact) else -1
    return jnp.full(s.shape, fill, s.dtype)
