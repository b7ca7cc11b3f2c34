"""RMSProp: ν ← β₂ν + (1 − β₂)g²; w ← w − ηg/(√ν̂ + ε)."""

from typing import Any, ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from ._base import AbstractOptimiser, check_lr, check_range, hyper


class RMSProp(AbstractOptimiser):
    """ν_{k+1} = β₂ν_k + (1 − β₂)g_k², w_{k+1} = w_k − η g_k/(√ν̂_{k+1} + ε).

    ν̂ = ν/(1 − β₂^{k+1}) with `bias_correction`, else ν. `scalar=True` keeps one ν for
    all parameters, fed by the mean of g². `nu0="grad"` (default) starts ν at ∇L(w₀)²
    (its mean for the scalar variant), so that no step divides by ε alone; `nu0="zero"`
    is optax's start. P⁻¹ = η/(√ν̂ + ε); threshold 2, as for GD, with ν frozen.
    Stable flow (Cohen, Damian et al. 2025): dw/dt = −P⁻¹g, dν/dt = ((1 − β₂)/β₂)(g² − ν),
    the rate at which the post-update ν relaxes (ν_k − ν_{k−1} = ((1 − β₂)/β₂)(g_k² − ν_k)).
    """

    name: ClassVar[str] = "rmsprop"
    lr: Any = eqx.field(converter=hyper)
    beta2: Any = eqx.field(converter=hyper, default=0.99)
    eps: Any = eqx.field(converter=hyper, default=1e-8)
    scalar: bool = eqx.field(static=True, default=False)
    bias_correction: bool = eqx.field(static=True, default=False)
    nu0: Literal["grad", "zero"] = eqx.field(static=True, default="grad")

    def __check_init__(self):
        check_lr("RMSProp", self.lr)
        check_range("RMSProp", "beta2", self.beta2, 0.0, 1.0, lo_open=True)
        check_range("RMSProp", "eps", self.eps, 0.0, None, lo_open=False)
        if self.nu0 not in ("grad", "zero"):
            raise ValueError(f'RMSProp: nu0 must be "grad" or "zero", got {self.nu0!r}.')

    def _square(self, g):
        return jnp.mean(g**2) if self.scalar else g**2

    def _nu_hat(self, nu, t):
        if not self.bias_correction:
            return nu
        return nu / (1 - self.beta2 ** (t + 1))

    def init(self, w0, g0):
        nu = self._square(g0)
        return nu if self.nu0 == "grad" else jnp.zeros_like(nu)

    def flow_init(self, w0, g0):
        # The flow's ν is the post-update one; from ν₀ = 0 it starts after step 0 (else
        # P⁻¹ = η/ε at t = 0). With ν₀ = g₀² the update leaves ν where it is.
        if self.nu0 == "grad":
            return self.init(w0, g0)
        return self.step(w0, self.init(w0, g0), g0, jnp.zeros((), jnp.int32))[1]

    def step(self, w, nu, g, t):
        # In optax's order of operations, so that the runs agree to the last bit.
        nu = (1 - self.beta2) * self._square(g) + self.beta2 * nu
        scaling = 1 / (jnp.sqrt(self._nu_hat(nu, t)) + self.eps)
        return w + (scaling * g) * -self.learning_rate(t, w.dtype), nu

    def oscillating(self, nu):
        return False  # ν averages g² over ~1/(1 − β₂) steps: a smooth variable

    def inverse_preconditioner(self, nu, t):
        return self.learning_rate(t) / (jnp.sqrt(self._nu_hat(nu, t)) + self.eps)

    def nu_flow(self, g2: Float[Array, " n"], nu) -> Float[Array, "..."]:
        """dν/dt = ((1 − β₂)/β₂)(E[g²] − ν), given the per-coordinate mean square E[g²]."""
        target = jnp.mean(g2) if self.scalar else g2
        return (1 - self.beta2) / self.beta2 * (target - nu)

    def flow(self, t, w, nu, g):
        return -self.inverse_preconditioner(nu, t) * g, self.nu_flow(g**2, nu)

    @property
    def threshold(self):
        return jnp.asarray(2.0)

    def to_optax(self):
        if self.scalar or self.nu0 != "zero":
            raise ValueError(
                "RMSProp: optax has no scalar RMSProp and starts ν at 0; use scalar=False "
                'and nu0="zero" for an optax equivalent.'
            )
        return optax.rmsprop(
            self.lr,
            decay=self.beta2,
            eps=self.eps,
            eps_in_sqrt=False,
            bias_correction=self.bias_correction,
        )
