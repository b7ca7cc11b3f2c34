"""Discrete gradient descent, the process every flow is judged against."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree, Scalar

from .._codes import RESULTS
from .._spectral import OracleCounts
from ..optimisers import AbstractOptimiser
from ._base import AbstractProcess


class GDCarry(eqx.Module):
    """The optimiser at step k: the last two iterates, the loss and gradient at the
    newest, and the optimiser's state (momentum, ν; () for GD)."""

    w_prev: Float[Array, " n"]  # w_{k−1} (w_0 at k = 0)
    w: Float[Array, " n"]  # w_k
    loss: Float[Array, ""]  # L(w_k)
    grad: Float[Array, " n"]  # ∇L(w_k)
    opt_state: PyTree[Array]


class GradientDescent(AbstractProcess):
    """The discrete optimiser itself: w_{k+1} = w_k − η∇L(w_k) for GD, and the optimiser's
    own update (`AbstractOptimiser.step`) for any other.

    The carry keeps ∇L(w_k), which is both the next step's direction and what observing
    w_k needs, and w_{k−1}, which with it gives the midpoint process
    w*_k = (w_{k−1} + 2w_k + w_{k+1})/4 without a step ahead (`midpoint`). `name` is the
    optimiser's (`gd`, `adam`, ...), set by `simulate`.
    """

    name: str = eqx.field(static=True, default="gd")

    def supports(self, opt):
        return True

    def start(self, f, w0, opt, data):
        loss, g = jax.value_and_grad(f)(w0, data)
        return GDCarry(w0, w0, loss, g, opt.init(w0, g)), OracleCounts()

    def advance(self, f, carry, opt, data, k):
        w, s = opt.step(carry.w, carry.opt_state, carry.grad, jnp.asarray(k, jnp.int32))
        loss, g = jax.value_and_grad(f)(w, data)
        ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(w))
        result = RESULTS.where(ok, RESULTS.successful, RESULTS.diverged)
        return GDCarry(carry.w, w, loss, g, s), OracleCounts(n_grad=1), result

    def optimiser_state(self, state):
        return state.opt_state

    def loss_and_grad(self, f, carry, data):
        return carry.loss, carry.grad

    def center(self, state):
        return state.w

    def observables(self, f, t, state, U, opt, data, w_gd):
        w_mid = midpoint(state, opt, t)
        return {
            "predicted_loss": state.loss,
            "oscillation_u1": jnp.vdot(U[:, 0], state.w - w_mid) ** 2,
        }


def midpoint(
    carry: GDCarry, opt: AbstractOptimiser, k: Int[Array, ""] | Scalar
) -> Float[Array, " n"]:
    """The midpoint process w*_k = (w_{k−1} + 2w_k + w_{k+1})/4, w_{k+1} the optimiser's
    next iterate (w_k − η∇L(w_k) for GD).

    At k = 0, where w_{−1} does not exist, w*_0 = (w_0 + w_1)/2: the centre of the first
    rod, which is also where rod flow starts.
    """
    w_next, _ = opt.step(carry.w, carry.opt_state, carry.grad, jnp.asarray(k).astype(jnp.int32))
    first = 0.5 * (carry.w + w_next)
    rest = 0.25 * (carry.w_prev + 2 * carry.w + w_next)
    return jnp.where(k == 0, first, rest)


def midpoints(ws: Float[Array, "k2 n"]) -> Float[Array, "k1 n"]:
    """The midpoint process at k = 0..K from K+2 iterates (see `midpoint`)."""
    first = 0.5 * (ws[0] + ws[1])
    rest = 0.25 * (ws[:-2] + 2 * ws[1:-1] + ws[2:])  # k = 1..K
    return jnp.concatenate([first[None], rest])
