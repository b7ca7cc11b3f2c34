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
From below the gap halves per step (a two-stage step cannot meet a constraint that turns
on within it), so a newly critical eigenvalue settles at 2/η over ~10 steps.

Heun's real stability interval is [−2, 0] per unit step: at dt = 1 a Hessian mode at
ηλ ≈ 2, which central flow relaxes by e^(−ηλ) per GD step, would hardly decay (factor
0.96 at 1.96). `exponential_step` therefore integrates the linear part along the top
Ritz vectors exactly (ETD2RK, Cox and Matthews 2002), with the same κ per stage; central
flow takes those steps itself (`CentralFlow(solver=PinnedHeun())`), as the block comes
from its evaluation. It carries the predictor's refined basis rather than Heun's average
of two. Both stages work in the basis refined one step before, on the critical block,
whose HVPs come with the third derivatives; the predictor's Ritz step refines it for the
next step. Without these (`exponential=False`, a plain diffrax solver) several critical
directions were pinned only to 5e-3-5e-2 at dt = 1. Figures: benchmarks/README.md,
"Central flow: integration scheme".

The field is called with `args + (Stage(above, below, first),)`: a field that takes no
stage cannot be solved by it.
"""

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import diffrax
import jax.numpy as jnp
from diffrax import AbstractTerm, LocalLinearInterpolation
from jaxtyping import Array, Bool, Float

from ._rkc import _axpy


class Stage(NamedTuple):
    """What `PinnedHeun` asks of the field at one stage: relaxation rates onto the
    constraint from either side, and whether this is a step's first stage (at y0)."""

    above: Float[Array, ""]  # κ where the constraint is exceeded (ηλ > 2)
    below: Float[Array, ""]  # κ where it is not reached yet (ηλ < 2)
    first: Bool[Array, ""] | bool


class PinnedHeun(diffrax.AbstractSolver):
    """Heun's method with κ = 0 at the predictor and κ = 2/dt at the corrector.

    Second order in the path and deadbeat on a relaxed constraint (module docstring).
    Two evaluations per step; its error estimate is Heun's embedded Euler one, but it is
    meant for a constant step (the constraint's κ follows dt). With `exponential=True`
    (default) a field that knows its stiff block (central flow: its top Ritz pairs)
    integrates that block exactly (`exponential_step`); central flow then takes its
    steps itself, as a diffrax solver cannot see the block, and `step` is the plain one.
    """

    exponential: bool = True

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
        y_pred = _axpy((1, y0), (dt, f0))
        f1 = terms.vf(t1, y_pred, (*args, self.second_stage(dt)))
        y1 = _axpy((1, y0), (0.5 * dt, f0), (0.5 * dt, f1))
        y_err = _axpy((-0.5 * dt, f0), (0.5 * dt, f1))
        return y1, y_err, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        raise NotImplementedError("PinnedHeun's stages depend on its step: it has no func.")


class StiffBlock(NamedTuple):
    """The stiff linear part of a field's first leaf, A = −S U diag(rates) Uᵀ S⁻¹: U (n, k)
    orthonormal (columns with rate 0 are inert), S = diag(scale) (None: the identity).
    For central flow U holds the top Ritz vectors and rates ηθ (RMSProp: in z = w/s)."""

    U: Float[Array, "n k"]
    rates: Float[Array, " k"]
    scale: Float[Array, " n"] | Float[Array, ""] | None


def _phi(z, j):
    """φ₁(−z) = (1 − e^−z)/z and φ₂(−z) = (e^−z − 1 + z)/z², by series near 0."""
    small = jnp.abs(z) < 1e-2
    zs = jnp.where(small, 1.0, z)
    if j == 1:
        return jnp.where(small, 1 - z / 2 + z**2 / 6, -jnp.expm1(-zs) / zs)
    return jnp.where(small, 0.5 - z / 6 + z**2 / 24, (jnp.expm1(-zs) + zs) / zs**2)


def _in_block(block: StiffBlock, v, coefficients, rest):
    """rest·v + S U ((coefficients − rest) ⊙ Uᵀ S⁻¹ v): a function of A applied to v."""
    x = v if block.scale is None else v / block.scale
    x = rest * x + block.U @ ((coefficients - rest) * (block.U.T @ x))
    return x if block.scale is None else block.scale * x


def exponential_step(field, y0, f0, block: StiffBlock, dt):
    """One PinnedHeun step, exponential in the stiff block: ETD2RK (Cox and Matthews
    2002) on y's first leaf with A = `block`, Heun on the others, κ per stage as
    `PinnedHeun`. Without the block (rates 0) it is `PinnedHeun.step`.

    Heun's factor on a mode of rate r is 1 − rdt + (rdt)²/2, 0.96 at rdt = 1.96 where
    the flow's is 0.14: at dt = 1 central flow's top Hessian modes, at ηλ ≈ 2, would
    hardly decay. Here they decay as e^(−rdt). `field(y, stage)` -> dy; f0 = field at y0.
    Returns (y1, y_pred, f1): the step, the predicted point, the corrector's evaluation.
    """
    z = block.rates * dt
    w0, g0 = y0[0], f0[0]
    a_w = w0 + dt * _in_block(block, g0, _phi(z, 1), 1.0)  # e^{Adt}w₀ + dt φ₁ N₀
    a = (a_w, *(y + dt * g for y, g in zip(y0[1:], f0[1:], strict=True)))
    f1 = field(a, PinnedHeun.second_stage(dt))
    # N(a) − N(w₀) = f₁ − f₀ − A(a − w₀)
    A_dw = _in_block(block, a_w - w0, -block.rates, 0.0)
    w1 = a_w + dt * _in_block(block, f1[0] - g0 - A_dw, _phi(z, 2), 0.5)
    rest = (y + 0.5 * dt * (g + h) for y, g, h in zip(y0[1:], f0[1:], f1[1:], strict=True))
    return (w1, *rest), a, f1
