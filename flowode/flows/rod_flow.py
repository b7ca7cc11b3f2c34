"""Rod flow: consecutive GD iterates as the two ends of a rod, w_k ≈ X + (−1)^k Y.

Substituting w_k = X(k) + (−1)^k Y(k) into GD and taking the even/odd relations to
first order gives, with L_sym(X, Y) = ½[L(X+Y) + L(X−Y)],

    dX/dt = −η ∇_X L_sym(X, Y),     dY/dt = η ∇_Y L_sym(X, Y) − 2Y.

Linearised, dY/dt = (ηH − 2)Y: the rod grows exactly when ηS > 2. Expanding L_sym
= L(X) + ½YᵀH(X)Y + O(|Y|⁴) shows the centre feels the sharpness penalty that central
flow imposes through Σ ≈ YYᵀ. Each evaluation is one vmapped pair of gradients; no
eigen-solve or third derivative is needed.
"""

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp

from ._base import AbstractFlow


def _pair_grads(f, X, Y, data):
    """∇L(X+Y) and ∇L(X−Y) as one vmapped batch: (2, n)."""
    ends = jnp.stack([X + Y, X - Y])
    return jax.vmap(jax.grad(f), in_axes=(0, None))(ends, data)


class RodFlow(AbstractFlow):
    """The rod ODE for the centre X and half-length Y, started from GD's first two iterates.

    X(0) = (w₀ + w₁)/2 and Y(0) = (w₀ − w₁)/2 with w₁ = w₀ − η∇L(w₀). Its prediction of
    GD's iterate is X + (−1)^k Y (the phase too), of GD's time-averaged loss L_sym(X, Y).
    """

    name: ClassVar[str] = "rod"
    grads_per_eval: ClassVar[int] = 2
    hvps_per_jvp: ClassVar[int] = 2
    # Chosen by benchmarks/bench_rod.py: the step is bound by stability (the rod's
    # Jacobian spans about [−2, 0] per GD step), so a cheap adaptive second-order pair
    # takes ~1 step per GD step at Tsit5's accuracy for ~60% of its gradients.
    solver: diffrax.AbstractSolver = diffrax.Heun()
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(
        rtol=1e-3, atol=1e-5
    )
    dt0: float | None = None
    max_steps_per_gd_step: int = 100
    blowup: float = 1e6

    def init(self, f, w0, lr, data):
        g0 = jax.grad(f)(w0, data)
        return (w0 - 0.5 * lr * g0, 0.5 * lr * g0)  # X(0), Y(0)

    def vector_field(self, f, t, y, lr, data):
        X, Y = y
        g_plus, g_minus = _pair_grads(f, X, Y, data)
        dX = -0.5 * lr * (g_plus + g_minus)
        dY = 0.5 * lr * (g_plus - g_minus) - 2.0 * Y
        return (dX, dY)

    def center(self, state):
        return state[0]

    def iterate(self, t, state):
        X, Y = state
        sign = 1.0 - 2.0 * jnp.mod(jnp.round(t), 2.0)  # (−1)^k
        return X + sign * Y

    def observables(self, f, t, state, U, lr, data, w_gd):
        X, Y = state
        l_sym = 0.5 * (f(X + Y, data) + f(X - Y, data))
        return {
            "predicted_loss": l_sym,
            "rod_length": jnp.linalg.norm(Y),
            "oscillation_u1": jnp.vdot(U[:, 0], Y) ** 2,
        }
