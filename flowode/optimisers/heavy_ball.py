"""Heavy-ball momentum: m ← βm + g; w ← w − ηm (optax's `sgd(momentum=β)`)."""

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import optax

from ._base import AbstractOptimiser, check_lr, check_range, hyper, relax


class HeavyBall(AbstractOptimiser):
    """m_{k+1} = βm_k + g_k, w_{k+1} = w_k − η m_{k+1}, from m₀ = 0.

    Threshold on ηλ: 2(1 + β). On a quadratic the map of (w, m) has det(J + I) =
    (2 − ηλ)(1 + β) + ηλβ, zero at ηλ = 2(1 + β), where an eigenvalue crosses −1.
    Stable flow: m is the post-update momentum, m_k − m_{k−1} = (g_k − (1 − β)m_k)/β, so
    dm/dt = (g − (1 − β)m)/β and dw/dt = −ηm (at rest m = g/(1 − β)).
    """

    name: ClassVar[str] = "heavy_ball"
    lr: Any = eqx.field(converter=hyper)
    beta: Any = eqx.field(converter=hyper, default=0.9)

    def __check_init__(self):
        check_lr("HeavyBall", self.lr)
        check_range("HeavyBall", "beta", self.beta, 0.0, 1.0, lo_open=False)

    def init(self, w0, g0):
        return jnp.zeros_like(w0)

    def step(self, w, m, g, t):
        m = g + self.beta * m  # optax's order of operations
        return w + m * -self.learning_rate(t, w.dtype), m

    def flow(self, t, w, m, g):
        m, dm = relax(self.beta, g / (1 - self.beta), m)
        return -self.learning_rate(t) * m, dm

    @property
    def threshold(self):
        return 2 * (1 + self.beta)

    def to_optax(self):
        return optax.sgd(self.lr, momentum=self.beta)
