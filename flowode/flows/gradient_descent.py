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

    def run(self, f, w0, lr, data, steps):
        grad = jax.grad(f)

        def step(w, _):
            return w - lr * grad(w, data), w

        w_last, ws = jax.lax.scan(step, w0, None, length=steps + 1)
        ws = jnp.concatenate([ws, w_last[None]])  # (steps + 2, n)
        return (ws[:-1], midpoints(ws)), OracleCounts(n_grad=steps), None

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

    def run(self, f, w0, lr, data, steps):
        return GradientDescent().run(f, w0, lr, data, steps)

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
