"""Curvature oracles on a flat loss `f(w, data)`: HVPs, top eigenpairs, third derivatives.

Nothing here forms the Hessian of a large model: eigenpairs come from LOBPCG on
Hessian-vector products, warm-started from the previous basis. Small problems
(a few dozen parameters) use a dense `eigh`, which is both cheaper and exact.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.sparse.linalg import lobpcg_standard
from jaxtyping import Array, Float, Int, PyTree

FlatLoss = Callable[[Array, PyTree], Array]

# Below this many parameters a dense Hessian is cheaper and more robust than LOBPCG.
DENSE_MAX = 64


class OracleCounts(NamedTuple):
    """Oracle calls made by a process: gradients, HVPs and third-derivative contractions."""

    n_grad: Int[Array, ""] | int = 0
    n_hvp: Int[Array, ""] | int = 0
    n_third: Int[Array, ""] | int = 0


def hvp(f: FlatLoss, w: Float[Array, " n"], v: Float[Array, " n"], data: PyTree = None):
    """H(w) v by forward-over-reverse differentiation (one HVP)."""
    return jax.jvp(lambda x: jax.grad(f)(x, data), (w,), (v,))[1]


def hvp_block(f: FlatLoss, w: Float[Array, " n"], V: Float[Array, "n k"], data: PyTree = None):
    """H(w) V for a block of k vectors (k HVPs, batched)."""
    return jax.vmap(lambda v: hvp(f, w, v, data), in_axes=1, out_axes=1)(V)


def third_contraction(
    f: FlatLoss,
    w: Float[Array, " n"],
    u: Float[Array, " n"],
    v: Float[Array, " n"],
    data: PyTree = None,
) -> Float[Array, " n"]:
    """∇_w (uᵀ H(w) v) with u, v held fixed: the third derivative ∇³L[u, v, ·]."""
    return jax.grad(lambda x: jnp.vdot(u, hvp(f, x, v, data)))(w)


def use_dense(n: int, k: int) -> bool:
    """Whether `top_eigs` takes the dense path for n parameters and k eigenpairs."""
    return n <= DENSE_MAX or 5 * k >= n


def initial_basis(n: int, k: int, dtype, key=None) -> Float[Array, "n k"]:
    """A deterministic, generic (n, k) starting basis for the eigensolver."""
    key = jax.random.key(0) if key is None else key
    return jax.random.normal(key, (n, k), dtype=dtype)


def top_eigs(
    f: FlatLoss,
    w: Float[Array, " n"],
    U0: Float[Array, "n k"],
    data: PyTree = None,
    *,
    maxiter: int = 100,
    tol: float | None = None,
) -> tuple[Float[Array, " k"], Float[Array, "n k"], Int[Array, ""]]:
    """Top-k (largest algebraic) Hessian eigenpairs at w, warm-started from `U0`.

    Returns eigenvalues in descending order, the eigenvectors (n, k) and the
    number of HVPs spent. Pass the previous call's eigenvectors as `U0`.
    """
    n, k = U0.shape
    if use_dense(n, k):
        H = jax.hessian(f)(w, data)  # (n, n)
        H = 0.5 * (H + H.T)
        evals, evecs = jnp.linalg.eigh(H)
        return evals[::-1][:k], evecs[:, ::-1][:, :k], jnp.asarray(n, jnp.int32)
    evals, evecs, iters = lobpcg_standard(
        lambda V: hvp_block(f, w, V, data), U0, m=maxiter, tol=tol
    )
    order = jnp.argsort(-evals)
    # LOBPCG applies H to the k-block once at the start, then to its 3k-column search
    # basis and to the new k-block in every iteration.
    n_hvp = k * (1 + 4 * iters.astype(jnp.int32))
    return evals[order], evecs[:, order], n_hvp
