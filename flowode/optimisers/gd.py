"""Gradient descent: w ← w − ηg."""

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import optax

from ._base import AbstractOptimiser, check_lr, hyper


class GD(AbstractOptimiser):
    """w_{k+1} = w_k − η_k ∇L(w_k); P⁻¹ = η, threshold 2 (ηS = 2)."""

    name: ClassVar[str] = "gd"
    lr: Any = eqx.field(converter=hyper)

    def __check_init__(self):
        check_lr("GD", self.lr)

    @property
    def has_state(self) -> bool:
        return False

    def init(self, w0, g0):
        return ()

    def step(self, w, state, g, t):
        return w + g * -self.learning_rate(t, w.dtype), state

    def flow(self, t, w, state, g):
        return -self.learning_rate(t) * g, state

    @property
    def threshold(self):
        return jnp.asarray(2.0)

    def to_optax(self):
        return optax.sgd(self.lr)
