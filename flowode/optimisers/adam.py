"""Adam: m ← β₁m + (1 − β₁)g; ν ← β₂ν + (1 − β₂)g²; w ← w − ηm̂/(√ν̂ + ε)."""

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import optax

from ._base import AbstractOptimiser, check_lr, check_range, hyper, relax


class Adam(AbstractOptimiser):
    """Adam from m₀ = ν₀ = 0, with m̂ = m/(1 − β₁^{k+1}) and ν̂ likewise (`bias_correction`).

    P⁻¹ = η/(√ν̂ + ε). Threshold on λ₁(P⁻¹H), with ν frozen: (2 + 2β₁)/(1 − β₁), 38 at
    β₁ = 0.9. On a quadratic the map of (w, m) has det(J + I) = (2 − (1 − β₁)a)(1 + β₁) +
    aβ₁(1 − β₁) with a = λP⁻¹ (the bias factor taken as 1), zero there.
    Stable flow: dm/dt = ((1 − β₁)/β₁)(g − m), dν/dt = ((1 − β₂)/β₂)(g² − ν) (the
    post-update moments relax at these rates), dw/dt = −P⁻¹m̂.
    """

    name: ClassVar[str] = "adam"
    lr: Any = eqx.field(converter=hyper)
    beta1: Any = eqx.field(converter=hyper, default=0.9)
    beta2: Any = eqx.field(converter=hyper, default=0.999)
    eps: Any = eqx.field(converter=hyper, default=1e-8)
    bias_correction: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        check_lr("Adam", self.lr)
        check_range("Adam", "beta1", self.beta1, 0.0, 1.0, lo_open=False)
        check_range("Adam", "beta2", self.beta2, 0.0, 1.0, lo_open=True)
        check_range("Adam", "eps", self.eps, 0.0, None, lo_open=False)

    def _hat(self, x, beta, t):
        return x / (1 - beta ** (t + 1)) if self.bias_correction else x

    def init(self, w0, g0):
        return jnp.zeros_like(w0), jnp.zeros_like(w0)

    def flow_init(self, w0, g0):
        # The flow's moments are the post-update ones: those after step 0, m̂ = g₀ and
        # ν̂ = g₀² (from m₀ = ν₀ = 0 the flow would start at rest with P⁻¹ = η/ε).
        return self.step(w0, self.init(w0, g0), g0, jnp.zeros((), jnp.int32))[1]

    def step(self, w, state, g, t):
        m, nu = state
        # In optax's order of operations, so that the runs agree to the last bit.
        m = (1 - self.beta1) * g + self.beta1 * m
        nu = (1 - self.beta2) * g**2 + self.beta2 * nu
        u = self._hat(m, self.beta1, t) / (jnp.sqrt(self._hat(nu, self.beta2, t)) + self.eps)
        return w + u * -self.learning_rate(t, w.dtype), (m, nu)

    def oscillating(self, state):
        return (True, False)  # m oscillates with w; ν averages g²: smooth

    def inverse_preconditioner(self, state, t):
        _, nu = state
        return self.learning_rate(t) / (jnp.sqrt(self._hat(nu, self.beta2, t)) + self.eps)

    def flow(self, t, w, state, g):
        m, nu = state
        m, dm = relax(self.beta1, g, m)
        dnu = (1 - self.beta2) / self.beta2 * (g**2 - nu)
        dw = -self.inverse_preconditioner(state, t) * self._hat(m, self.beta1, t)
        return dw, (dm, dnu)

    @property
    def threshold(self):
        return (2 + 2 * self.beta1) / (1 - self.beta1)

    def to_optax(self):
        if not self.bias_correction:
            raise ValueError(
                "Adam: optax's adam always corrects the bias; use bias_correction=True."
            )
        return optax.adam(self.lr, b1=self.beta1, b2=self.beta2, eps=self.eps)
