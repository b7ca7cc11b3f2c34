"""Gradient flow: the stable flow, dw/dt = −η∇L(w), and GD's O(η²) modified equation."""

import diffrax
import jax

from .._rkc import RKC2
from .._spectral import OracleCounts
from ..optimisers import GD
from ._base import AbstractFlow, relative_scale


class GradientFlow(AbstractFlow):
    """dw/dt = −η∇L(w) in GD-step time: the stable flow.

    With another optimiser it is that optimiser's stable flow, its state (momentum, ν)
    integrated beside w (`AbstractOptimiser.flow`).

    Past the edge of stability ηS keeps growing, so the ODE turns stiff (rate ηS ≫ 2).
    The default solver is flowode's stabilised explicit RKC2, whose number of stages
    grows like √(ηS·h) with one gradient each, so a stiff phase costs a few gradients
    per GD step rather than hundreds.

    `modified_equation=True`: dw/dt = −η∇L − (η²/2)H∇L, GD's backward-error flow to
    O(η²) ("implicit gradient regularisation"): for the map w ↦ w + F(w), F = −η∇L,
    matching w(t+1) = w + ẇ + ½ẅ + O(η³) with ẅ = J_F ẇ gives ẇ = F − ½J_F F. It tracks
    GD an order of η better while ηS < 2 and says nothing about the oscillation after it.
    One HVP more per evaluation, counted in n_hvp; named "gradient_me" in a Dataset. On the
    MLP-433 in float64 (4 seeds, η = 0.1 and 0.15) it was 27-43× closer to GD's iterates
    than gradient flow over steps 20-150 (benchmarks/bench_onset.py).
    """

    # ρ re-estimated every 10 accepted steps, as rod flow's (2.5× GD against 3.3× on
    # MLP-433 with an estimate every step, same path).
    solver: diffrax.AbstractSolver = RKC2(power_iterations=2, reestimate_every=10)
    # atol is relative to the RMS of w (and of each optimiser state), see `error_scale`.
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(
        rtol=1e-5, atol=1e-6
    )
    dt0: float | None = None
    max_steps_per_gd_step: int = 200
    blowup: float = 1e6
    modified_equation: bool = False

    def __check_init__(self):
        if not isinstance(self.modified_equation, bool):
            raise TypeError(
                "GradientFlow: modified_equation must be True or False, "
                f"got {self.modified_equation!r}."
            )

    @property
    def name(self) -> str:
        return "gradient_me" if self.modified_equation else "gradient"

    @property
    def hvps_per_jvp(self) -> int:
        # A JVP of −η∇L − (η²/2)H∇L along v: Hv, H(Hv) and ∇³L[∇L, v] (one third).
        return 2 if self.modified_equation else 1

    def counts(self, y1, n_evals, n_jvps):
        counts = super().counts(y1, n_evals, n_jvps)
        if not self.modified_equation:
            return counts
        # Each evaluation takes one HVP more; each JVP one third derivative more.
        return OracleCounts(counts.n_grad, counts.n_hvp + n_evals, n_jvps)

    def supports(self, opt):
        return not self.modified_equation or isinstance(opt, GD)

    def init(self, f, w0, opt, data):
        if not opt.has_state:
            return w0
        return (w0, opt.flow_init(w0, jax.grad(f)(w0, data)))

    def vector_field(self, f, t, y, opt, data):
        if opt.has_state:  # the optimiser's stable flow, its state carried along
            w, s = y
            return opt.flow(t, w, s, jax.grad(f)(w, data))
        lr = opt.learning_rate(t)
        if not self.modified_equation:
            return -lr * jax.grad(f)(y, data)
        g, hvp = jax.linearize(lambda x: jax.grad(f)(x, data), y)  # ∇L and v ↦ Hv
        return -lr * g - (0.5 * lr**2) * hvp(g)

    def error_scale(self, y):
        # Relative to each array's RMS: an absolute atol stops resolving w (or ν, whose
        # scale is g²) once it is smaller than atol.
        return relative_scale(y)

    def center(self, state):
        return state[0] if isinstance(state, tuple) else state

    def optimiser_state(self, state):
        return state[1] if isinstance(state, tuple) else ()

    def describe(self):
        out = super().describe()
        out["modified_equation"] = str(self.modified_equation)
        return out
