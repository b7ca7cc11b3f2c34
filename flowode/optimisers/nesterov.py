"""Nesterov momentum: m ← βm + g; w ← w − η(g + βm) (optax's `sgd(nesterov=True)`)."""

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import optax

from ._base import AbstractOptimiser, check_lr, check_range, hyper, relax


class Nesterov(AbstractOptimiser):
    """m_{k+1} = βm_k + g_k, w_{k+1} = w_k − η(g_k + βm_{k+1}), from m₀ = 0.

    Threshold on ηλ: 2(1 + β)/(1 + 2β). On a quadratic w_{k+1} = w_k − η((1 + β)g_k +
    β²m_k), and det(J + I) = (2 − (1 + β)ηλ)(1 + β) + β²ηλ vanishes there.
    Stable flow: dm/dt = (g − (1 − β)m)/β as for heavy-ball, dw/dt = −η(g + βm).
    """

    name: ClassVar[str] = "nesterov"
    lr: Any = eqx.field(converter=hyper)
    beta: Any = eqx.field(converter=hyper, default=0.9)

    def __check_init__(self):
        check_lr("Nesterov", self.lr)
        check_range("Nesterov", "beta", self.beta, 0.0, 1.0, lo_open=False)

    def init(self, w0, g0):
        return jnp.zeros_like(w0)

    def step(self, w, m, g, t):
        m = g + self.beta * m  # optax's order of operations
        return w + (g + self.beta * m) * -self.learning_rate(t, w.dtype), m

    def flow(self, t, w, m, g):
        m, dm = relax(self.beta, g / (1 - self.beta), m)
        return -self.learning_rate(t) * (g + self.beta * m), dm

    @property
    def threshold(self):
        return 2 * (1 + self.beta) / (1 + 2 * self.beta)

    def to_optax(self):
        return optax.sgd(self.lr, momentum=self.beta, nesterov=True)
