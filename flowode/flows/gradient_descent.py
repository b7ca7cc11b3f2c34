"""Discrete gradient descent, the process every flow is judged against."""

from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._spectral import OracleCounts
from ._base import AbstractProcess


class GradientDescent(AbstractProcess):
    """w_{k+1} = w_k − η∇L(w_k), run as one `lax.scan`.

    Its states are pairs (w_k, w*_k) of the iterate and the midpoint process
    w*_k = (w_{k−1} + 2w_k + w_{k+1})/4 (see `midpoints`), which needs one step past the
    last. The centre is the iterate; `oscillation_u1` is (u₁ᵀ(w_k − w*_k))².
    """

    name: ClassVar[str] = "gd"

    def start(self, f, w0, lr, data):
        return w0, w0  # (w_{k-1}, w_k); at k = 0 there is no w_{-1}, see `midpoints`

    def advance(self, f, carry, lr, data, t0, n, length):
        w_prev, w = carry
        grad = jax.grad(f)

        def step(w, i):  # steps past t0 + n + 1 are skipped: w stays where it was
            w_next = jax.lax.cond(i <= n, lambda w: w - lr * grad(w, data), lambda w: w, w)
            return w_next, w

        w_last, ws = jax.lax.scan(step, w, jnp.arange(length + 1))
        ws = jnp.concatenate([w_prev[None], ws, w_last[None]])  # k = t0-1 .. t0+length+1
        mids = midpoints(ws[1:])
        mids = jnp.where(t0 == 0, mids, 0.25 * (ws[:-2] + 2 * ws[1:-1] + ws[2:]))
        n_clip = jnp.minimum(n, length)
        carry = (ws[n_clip], ws[n_clip + 1])  # (w_{t0+n-1}, w_{t0+n})
        states = (ws[1:-1], mids)
        # Past t0 + n the iterates repeat the last: make the saved states do the same.
        keep = (jnp.arange(length + 1) <= n)[:, None]
        states = tuple(jnp.where(keep, s, s[n_clip]) for s in states)
        return states, carry, OracleCounts(n_grad=n), None

    def center(self, state):
        return state[0]

    def observables(self, f, t, state, U, lr, data, w_gd):
        w, w_mid = state
        return {
            "predicted_loss": f(w, data),
            "oscillation_u1": jnp.vdot(U[:, 0], w - w_mid) ** 2,
        }


class Midpoint(AbstractProcess):
    """GD's midpoint process, observed on the same (iterate, midpoint) states as GD."""

    name: ClassVar[str] = "midpoint"

    def start(self, f, w0, lr, data):
        return GradientDescent().start(f, w0, lr, data)

    def advance(self, f, carry, lr, data, t0, n, length):
        return GradientDescent().advance(f, carry, lr, data, t0, n, length)

    def center(self, state):
        return state[1]


def midpoints(ws: Float[Array, "k2 n"]) -> Float[Array, "k1 n"]:
    """GD's midpoint process w*_k = (w_{k−1} + 2w_k + w_{k+1})/4, k = 0..K, from K+2 iterates.

    At k = 0, where w_{−1} does not exist, w*_0 = (w_0 + w_1)/2: the centre of the
    first rod, which is also where rod flow starts.
    """
    first = 0.5 * (ws[0] + ws[1])
    rest = 0.25 * (ws[:-2] + 2 * ws[1:-1] + ws[2:])  # k = 1..K
    return jnp.concatenate([first[None], rest])
