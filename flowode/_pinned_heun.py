"""Heun's method for a field held on a constraint by a relaxation term κ(target − c(y)).

Central flow keeps each critical eigenvalue at 2/η through the SDCP's relaxation rate
κ: at complementarity dc/dt = −κe for the constraint error e. Euler at dt = 1/κ removes
e in one step (deadbeat), but is first order in the path. Heun's method is second order
in the path, and with one κ at both stages its factor on e is 1 − κdt + (κdt)²/2 ≥ ½, so
the error that each step's curvature leaves is never fully removed.

`PinnedHeun` asks the field for a different κ at each stage. The first (predictor)
holds what exceeds the constraint where it is (κ = 0) and lets what is below approach it
as Euler at κ = 1/dt does. The second (corrector), at the predicted point whose error is
e₀ + c (c: what the step's curvature adds), pulls back at κ = 2/dt. The step's own
curvature adds about c again, so from above

    e₁ = e₀ + ½(0 − 2(e₀ + c)) + c + O(dt³) = O(dt³):

the predictor's error is measured where it happens and removed, curvature included.
(From below the gap halves per step.) Measured (benchmarks/README.md, "Central flow:
integration scheme"): at dt = 1/2, four evaluations per GD step as Euler at 1/4, the path
is 20-30× closer to a converged one; at dt = 1 it is half the evaluations and still
4-20× closer with one critical direction, but Heun's real stability interval is [−2, 0],
so a Hessian mode at ηλ ≈ 2 barely decays (a component off the valley floor lingers),
and with several critical directions it pins ηλ only to 5e-2.

The field is called with `args + (Stage(kappa, first),)`: a field that takes no stage
cannot be solved by it.
"""

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
from diffrax import AbstractTerm, LocalLinearInterpolation
from jaxtyping import Array, Bool, Float


class Stage(NamedTuple):
    """What `PinnedHeun` asks of the field at one stage: relaxation rates onto the
    constraint from either side, and whether this is a step's first stage (at y0)."""

    above: Float[Array, ""]  # κ where the constraint is exceeded (ηλ > 2)
    below: Float[Array, ""]  # κ where it is not reached yet (ηλ < 2)
    first: Bool[Array, ""] | bool


def _axpy(y, a, x):  # y + a x, leaf by leaf
    return jax.tree_util.tree_map(lambda u, v: u + a * v, y, x)


class PinnedHeun(diffrax.AbstractSolver):
    """Heun's method with κ = 0 at the predictor and κ = 2/dt at the corrector.

    Second order in the path and deadbeat on a relaxed constraint (module docstring).
    Two evaluations per step; its error estimate is Heun's embedded Euler one, but it is
    meant for a constant step (the constraint's κ follows dt).
    """

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar[Callable[..., LocalLinearInterpolation]] = LocalLinearInterpolation
    evaluations_per_step: ClassVar[int] = 2

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    @staticmethod
    def first_stage(dt) -> Stage:
        """The predictor's: hold what exceeds the constraint, approach it as Euler does."""
        return Stage(jnp.zeros_like(dt), 1 / dt, True)

    @staticmethod
    def second_stage(dt) -> Stage:
        return Stage(2 / dt, 2 / dt, False)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        dt = t1 - t0
        f0 = terms.vf(t0, y0, (*args, self.first_stage(dt)))
        y_pred = _axpy(y0, dt, f0)
        f1 = terms.vf(t1, y_pred, (*args, self.second_stage(dt)))
        y1 = jax.tree_util.tree_map(lambda y, a, b: y + 0.5 * dt * (a + b), y0, f0, f1)
        y_err = jax.tree_util.tree_map(lambda a, b: 0.5 * dt * (b - a), f0, f1)
        return y1, y_err, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        raise NotImplementedError("PinnedHeun's stages depend on its step: it has no func.")
