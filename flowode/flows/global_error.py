"""A flow beside a twin at tighter tolerances: an a-posteriori estimate of its global error.

A solver's tolerances bound the error it makes in one step, relative to the state. What
a user wants to know is the error over the run, and that depends on how the flow carries
each step's error forward: errors decay along directions the flow contracts and grow
along those it expands (at the edge of stability, along the top eigenvector). Measured
for gradient flow on a stiff quadratic (RKC2, PID, rtol = atol, float64), the global
relative error was 1-1.5× rtol after 20 GD-step units of time at rtol 1e-3, and 60×
after 200; it grows with the run's length, so no local tolerance can promise a global
one in advance without knowing that length and the flow's expansion.

`GlobalErrorEstimate` measures it instead. It runs the flow and, beside it, the same flow
with rtol and atol divided by `factor`, and records per step

    global_error = ‖c − c_twin‖ / ‖c_twin‖ / (1 − factor^−p)

with c the flow's centre (the point its loss and sharpness are taken at). A method of
order q under error-per-step control has a global error that scales like rtol^p, p =
q/(q + 1) (2/3 for RKC2, the flows' default; measured so above), so the twin's own error
is factor^−p of the flow's; where both errors point the same way, as they do when one
error mode dominates, ‖c − c_twin‖ is (1 − factor^−p) times the flow's error, and the
division undoes that (Richardson's extrapolation). The flow's own trajectory is
returned unchanged; the twin's oracle calls are added to its counts, since they are
spent on the estimate.
`tol`, if given, is the global accuracy the user needs: `simulate` warns (or raises,
with `throw=True`) where the estimate exceeds it, and says what to do.
"""

import math

import diffrax
import equinox as eqx
import jax.numpy as jnp

from .._codes import RESULTS
from ._base import AbstractFlow, AbstractProcess, plain_number


class GlobalErrorEstimate(AbstractProcess):
    """`flow`, with its global error estimated by a twin at rtol and atol ÷ `factor`.

    - `flow`: an adaptive flow (gradient, rod or edge flow, any options) under a
      `diffrax.PIDController`. Its label in a Dataset is the flow's own.
    - `factor`: how much tighter the twin's tolerances are (> 1). The twin's own error,
      about factor^−p of the flow's, is corrected for; the twin costs about factor^{1/3}
      times the flow (2.4-2.7× its gradients at the default 10, on MLP-433).
    - `tol`: optional; the global relative error the run should stay within.

    Records `global_error` (see the module docstring) at every step.
    """

    flow: AbstractFlow
    factor: float = eqx.field(default=10.0, converter=plain_number)
    tol: float | None = eqx.field(default=None, converter=plain_number)

    def __check_init__(self):
        if not isinstance(self.flow, AbstractFlow):
            raise TypeError(
                "GlobalErrorEstimate: flow must be a flowode flow (GradientFlow, RodFlow, "
                f"EdgeFlow, ...), got {self.flow!r}."
            )
        if not isinstance(self.flow.stepsize_controller, diffrax.PIDController):
            raise ValueError(
                f"GlobalErrorEstimate: {type(self.flow).__name__} uses "
                f"{type(self.flow.stepsize_controller).__name__}; the estimate tightens a "
                "diffrax.PIDController's rtol and atol, so the flow needs one."
            )
        for name, value, low in (("factor", self.factor, 1.0), ("tol", self.tol, 0.0)):
            if name == "tol" and value is None:
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value <= low:
                raise ValueError(
                    f"GlobalErrorEstimate: {name} must be a finite number > {low:g}, got {value!r}."
                )

    @property
    def twin(self) -> AbstractFlow:
        """The same flow at rtol and atol divided by `factor`."""
        ctrl = self.flow.stepsize_controller
        return eqx.tree_at(
            lambda f: (f.stepsize_controller.rtol, f.stepsize_controller.atol),
            self.flow,
            (ctrl.rtol / self.factor, ctrl.atol / self.factor),
        )

    @property
    def name(self) -> str:
        return self.flow.name

    def start(self, f, w0, opt, data):
        carry, counts = self.flow.start(f, w0, opt, data)
        try:
            twin, twin_counts = self.twin.start(f, w0, opt, data)
        except ValueError as e:  # the twin's tolerances are below the dtype's resolution
            raise ValueError(
                f"GlobalErrorEstimate(factor={self.factor:g}): its twin runs at rtol and atol "
                f"÷ {self.factor:g}, and {e} Or use a smaller factor."
            ) from None
        return (carry, twin), counts.plus(twin_counts)

    def advance(self, f, carry, opt, data, k):
        own, counts, result = self.flow.advance(f, carry[0], opt, data, k)
        twin, twin_counts, twin_result = self.twin.advance(f, carry[1], opt, data, k)
        result = RESULTS.where(result == RESULTS.successful, twin_result, result)
        return (own, twin), counts.plus(twin_counts), result

    def state(self, carry):
        return (self.flow.state(carry[0]), self.flow.state(carry[1]))

    def center(self, state):
        return self.flow.center(state[0])

    def iterate(self, t, state):
        return self.flow.iterate(t, state[0])

    def eigs(self, state, k):
        return self.flow.eigs(state[0], k)

    def observables(self, f, t, state, U, opt, data, w_gd):
        out = self.flow.observables(f, t, state[0], U, opt, data, w_gd)
        c, c_twin = self.flow.center(state[0]), self.flow.center(state[1])
        tiny = jnp.finfo(c.dtype).tiny
        gap = jnp.linalg.norm(c - c_twin) / (jnp.linalg.norm(c_twin) + tiny)
        out["global_error"] = gap / (1 - self.factor**-self.exponent)
        return out

    @property
    def exponent(self) -> float:
        """p in global error ∝ rtol^p: q/(q + 1) for a solver of order q under error-per-step
        control (2/3 for RKC2 and Heun, 5/6 for Tsit5)."""
        try:
            q = float(self.flow.solver.order(None))
        except Exception:  # a solver whose order depends on its terms: take RKC2's
            q = 2.0
        return q / (q + 1)

    def optimiser_state(self, state):
        return self.flow.optimiser_state(state[0])

    def supports(self, opt):
        return self.flow.supports(opt)

    @property
    def models(self) -> str:
        return self.flow.models

    def describe(self):
        out = dict(self.flow.describe())
        out["global_error_factor"] = str(self.factor)
        if self.tol is not None:
            out["global_error_tol"] = str(self.tol)
        return out
