"""Gradient flow: the stable flow, dw/dt = −η∇L(w)."""

from typing import ClassVar

import diffrax
import jax

from .._rkc import RKC2
from ._base import AbstractFlow


class GradientFlow(AbstractFlow):
    """dw/dt = −η∇L(w) in GD-step time.

    Past the edge of stability ηS keeps growing, so the ODE turns stiff (rate ηS ≫ 2).
    The default solver is flowode's stabilised explicit RKC2, whose number of stages
    grows like √(ηS·h) with one gradient each, so a stiff phase costs a few gradients
    per GD step rather than hundreds.
    """

    name: ClassVar[str] = "gradient"
    solver: diffrax.AbstractSolver = RKC2(power_iterations=1)
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(
        rtol=1e-5, atol=1e-7
    )
    dt0: float | None = None
    max_steps_per_gd_step: int = 200
    blowup: float = 1e6

    def init(self, f, w0, lr, data):
        return w0

    def vector_field(self, f, t, w, lr, data):
        return -lr * jax.grad(f)(w, data)

    def center(self, state):
        return state
