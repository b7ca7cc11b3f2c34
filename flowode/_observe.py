"""Per-step diagnostics along a saved trajectory: loss, gradient norm, top eigenvalues.

One `lax.scan` walks the saved states and warm-starts each eigen-solve from the
previous step's eigenvectors, so tracking the sharpness costs a few HVPs per step.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree, Scalar

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
) -> dict[str, Array]:
    """Diagnostics at every saved state (leading axis = step). Eigenvalues every `eig_every`.

    `w_gd`: GD's iterates at the same steps, for processes that compare themselves with
    GD (central flow's oscillation variance); the process's own centre if not given.
    """
    n_steps = jax.tree_util.tree_leaves(states)[0].shape[0]
    w0 = process.center(jax.tree_util.tree_map(lambda x: x[0], states))
    dtype = w0.dtype
    U0 = initial_basis(w0.shape[0], eig_k, dtype)
    grad = jax.value_and_grad(f)

    def step(carry, inp):
        U, n_hvp = carry
        k, state, w_ref = inp
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
        return (U_new, n_hvp + hvps), out

    (_, n_hvp), out = jax.lax.scan(
        step, (U0, jnp.asarray(0, jnp.int32)), (jnp.arange(n_steps), states, w_gd)
    )
    out["observe_hvps"] = n_hvp
    return out
