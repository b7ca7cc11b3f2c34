"""Rod flow: consecutive GD iterates as the two ends of a rod, w_k ≈ X + (−1)^k Y.

**The model.** Substituting w_k = X(k) + (−1)^k Y(k) into GD and separating even and odd
k gives two exact relations,

    X(t+1) − X(t) = −(η/2)[g₊ + g₋],      Y(t+1) + Y(t) = (η/2)[g₊ − g₋],

with g± = ∇L(X ± Y). Taken to first order (X(t+1) − X(t) ≈ Ẋ, Y(t+1) + Y(t) ≈ 2Y + Ẏ)
and with L_sym(X, Y) = ½[L(X+Y) + L(X−Y)]:

    dX/dt = −η ∇_X L_sym(X, Y),     dY/dt = η ∇_Y L_sym(X, Y) − 2Y.

Linearised, dY/dt = (ηH − 2)Y: the rod grows exactly when ηS > 2. L_sym = L(X) +
½YᵀH(X)Y + O(|Y|⁴), so the centre feels the sharpness penalty that central flow imposes
through Σ ≈ YYᵀ. One evaluation is one vmapped pair of gradients; no eigen-solve.

**Onset.** Y = 0 is invariant, and below the threshold Y decays like exp(−∫(2 − ηS)).
Stored as a vector, it falls under half an ulp of X long before the onset; then
X ± Y rounds to X, g₊ − g₋ is exactly 0 and the rod never grows again, so the onset
was set by the solver's atol, not by the model (and a tight solver never reached EOS).
GD's own oscillation is seeded by its rounding, at about ε‖w‖ per step. flowode
therefore carries Y = e^a u, a log-amplitude and a unit direction (`_rod_state`), so
that neither underflow nor cancellation loses the direction, and gives a a smooth floor
at `floor`·‖w‖ (default: the dtype's ε), the same seed GD has. With H̃u = (g₊ − g₋)/(2|Y|)
the secant Hessian along u and v = ηH̃u − 2u = Ẏ/|Y|,

    ȧ = ρ(uᵀv)  floored smoothly,       u̇ = v − (uᵀv)u = η[H̃u − (uᵀH̃u)u],

which is the rod ODE exactly when ρ(r) = r. u̇ is a continuous power iteration toward
the top eigenvector; u is normalised before use and pulled back to |u| = 1 at rate 1
(the bare u̇ lets |u| drift while the rod decays). Where |Y| is too small for a
difference of gradients to resolve, the pair is taken at the probe distance δ =
smoothmax(|Y|, √ε‖X‖) along u instead: then (g₊ − g₋)/(2δ) is the HVP H(X)u to relative
error about ε, at the cost of the pair it replaces and without a branch (a `where`
would pay for both, and `cond` becomes a `where` under `vmap`). The centre then sees
the pair at ±δu rather than ±Y, an error ½(δ² − |Y|²)∇³L[u, u] ≤ ½ε‖X‖²∇³L: rounding.

**Amplitude rate.** `amplitude_rate="map"` (default) uses ρ(r) = ln(1 + r), the exact
rate per step of GD's period-2 map along an eigenvector (multiplier |1 − ηλ| = 1 + r),
instead of the linear r. Both vanish at r = 0, so the threshold is unchanged and the
EOS equilibrium is the same; only growth and decay near the onset differ, by O(r²),
and integrated over the few hundred steps before the onset that is several steps.
Measured by benchmarks/bench_onset.py (benchmarks/README.md), MLP-433, η = 0.1: with
"map" the rod enters EOS 6-7 steps before GD in float64 and 9-13 in float32, with the
default and a tight solver alike; with "linear" 15-16 and 12 steps before.

**Second order (`modified_equation=True`).** Both relations are first order in time.
For the centre, X(t+1) − X(t) = F(X, Y) with F = −(η/2)(g₊ + g₋) is a map step, and
backward error analysis (Ẋ = F + c, match X(t+1) = X + Ẋ + ½Ẍ + O(F³) with Ẍ = dF/dt)
gives Ẋ = F − ½ dF/dt. With dF/dt = ∂_X F·Ẋ + ∂_Y F·Ẏ and ∂_X F = −(η/2)(H₊ + H₋),

    Ẋ = F − ½∂_X F·F = −(η/2)(g₊ + g₋) − (η²/8)(H₊ + H₋)(g₊ + g₋).

Dropped: ½∂_Y F·Ẏ = −(η/4)(H₊ − H₋)Ẏ, which is O(|Y|·∇³L·|Ẏ|): Y's slow derivative (Ẏ
is the envelope's drift, ~r|Y| with r near 0 where |Y| is large, and |Y| is at the
floor before the onset), so it is O(|Y|²) where the correction matters; and O(η³)
terms. With Y = 0 this is GD's own modified equation −η∇L − (η²/2)H∇L. The pair
(H₊ s, H₋ s) with s = g₊ + g₋ comes from linearising the pair of gradients (`jax.
linearize`): two gradients and two HVPs per evaluation. Y's equation is left first
order (its map Y(t+1) + Y(t) = G is not of the form a step of a flow; the exact-map
rate above is its correction where it matters, near the onset).

Measured (float64, 4 seeds × η ∈ {0.1, 0.15}): before the onset the correction brings
the rod 2.0-3.6× closer to GD's iterates; after it, its centre is 0.46-1.03× the plain
rod's distance to GD's midpoint, worse by up to 3% on half the runs. It is therefore
an option, not the default.
"""

import diffrax
import jax
import jax.numpy as jnp

from .._rkc import RKC2
from .._spectral import OracleCounts
from ._base import AbstractFlow
from ._rod_state import (
    AmplitudeRate,
    check_options,
    floored_rate,
    from_vector,
    growth_rate,
    option_floor,
    pair_grads as _pair_grads,
    probe_distance,
    tolerance_scales,
    unit,
)


class RodFlow(AbstractFlow):
    """The rod ODE for the centre X and half-length Y = e^a u, started from GD's first two iterates.

    X(0) = (w₀ + w₁)/2 and Y(0) = (w₀ − w₁)/2 with w₁ = w₀ − η∇L(w₀). Its prediction of
    GD's iterate is X + (−1)^k Y (the phase too), of GD's time-averaged loss L_sym(X, Y).
    The state is (X, a, u).

    - `floor`: the smallest |Y|, relative to the iterate's norm ‖X ± Y‖; None (default)
      is the dtype's machine ε, GD's own rounding; 0 is exact arithmetic (Y may decay
      for ever, and Y = 0 is invariant).
    - `amplitude_rate`: "map" (ln(1 + r), the exact period-2 map rate) or "linear" (r,
      the first-order rod). See the module docstring.
    - `modified_equation`: add the O(η²) backward-error term −(η²/8)(H₊ + H₋)(g₊ + g₋)
      to the centre (two HVPs more per evaluation). Named "rod_me" in a Dataset.
    - `solver`, `stepsize_controller`: flowode's RKC2, whose power iteration for the
      Jacobian's spectral radius takes difference quotients of the field (one pair of
      gradients each, not a linearisation), under a PID controller. The controller's
      atol is relative (`error_scale`): to the iterate's RMS √(‖X‖² + |Y|²)/√n for X, to
      u's RMS for u, and absolute for the log-amplitude a. An absolute atol stops
      resolving a state smaller than itself, and one fixed for X cannot follow X past
      the threshold, where the pair's sum holds X only to ε|Y|.
    """

    solver: diffrax.AbstractSolver = RKC2(power_iterations=1, difference=True)
    # Chosen by benchmarks/bench_rod.py: the rod's Jacobian spans about [−3, 0] per GD step
    # (the floor before the onset, X and u along ηλ₁ ≈ 2 after it) while its solution
    # is smooth over many GD steps, so a stabilised method takes steps of several GD
    # steps (2.1 gradients per GD step against Heun's 5.2, at the same distance to GD).
    # atol is relative to the RMS of X and of u (`error_scale`), absolute for a.
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(
        rtol=1e-3, atol=1e-4
    )
    dt0: float | None = None
    max_steps_per_gd_step: int = 100
    blowup: float = 1e6
    floor: float | None = None
    amplitude_rate: AmplitudeRate = "map"
    modified_equation: bool = False

    def __check_init__(self):
        check_options("RodFlow", self.floor, self.amplitude_rate, self.modified_equation)

    @property
    def name(self) -> str:
        return "rod_me" if self.modified_equation else "rod"

    @property
    def grads_per_eval(self) -> int:
        return 2

    @property
    def hvps_per_jvp(self) -> int:
        # A JVP of the field: the HVP pair, plus with the correction ∂(H±s) = ∇³L±[s, ·] +
        # H±H±· (two HVPs and two third-derivative contractions more).
        return 4 if self.modified_equation else 2

    def counts(self, y1, n_evals, n_jvps):
        counts = super().counts(y1, n_evals, n_jvps)
        if not self.modified_equation:
            return counts
        # Each evaluation linearises the pair: two HVPs; each JVP two thirds more.
        return OracleCounts(counts.n_grad, counts.n_hvp + 2 * n_evals, 2 * n_jvps)

    def _log_floor(self, X, amplitude):
        return option_floor(self.floor, X, amplitude)

    def init(self, f, w0, opt, data):
        lr = opt.learning_rate(jnp.zeros((), w0.dtype))
        g0 = jax.grad(f)(w0, data)
        X0, Y0 = w0 - 0.5 * lr * g0, 0.5 * lr * g0
        fallback = jax.random.normal(jax.random.key(0), w0.shape, w0.dtype)
        a_floor = self._log_floor(X0, jnp.zeros((), w0.dtype))
        log_min = jnp.log(jnp.finfo(w0.dtype).tiny) if a_floor is None else a_floor
        a0, u0 = from_vector(Y0, fallback, log_min)
        return (X0, a0, u0)

    def vector_field(self, f, t, y, opt, data):
        lr = opt.learning_rate(t)
        X, a, u = y
        u_hat, u_norm = unit(u)
        amplitude = jnp.exp(a)
        delta = probe_distance(amplitude, X)
        if self.modified_equation:
            G, pair_jvp = jax.linearize(lambda x: _pair_grads(f, x, delta * u_hat, data), X)
            s = G[0] + G[1]
            dX = -0.5 * lr * s - (lr**2 / 8) * jnp.sum(pair_jvp(s), axis=0)
        else:
            G = _pair_grads(f, X, delta * u_hat, data)
            dX = -0.5 * lr * (G[0] + G[1])
        Hu = (G[0] - G[1]) / (2 * delta)  # secant H̃u, or H(X)u where |Y| < √ε‖X‖
        v = lr * Hu - 2 * u_hat  # Ẏ/|Y|
        r = jnp.vdot(u_hat, v)
        da = floored_rate(growth_rate(r, self.amplitude_rate), a, self._log_floor(X, amplitude))
        du = v - r * u_hat + (1 - u_norm) * u_hat
        return (dX, da, du)

    def error_scale(self, y):
        return tolerance_scales(y)

    def size(self, y):
        X, a, _ = y
        return jnp.sqrt(jnp.sum(X**2) + jnp.exp(2 * a))

    def half_length(self, state):
        """Y = e^a u/|u|."""
        _, a, u = state
        return jnp.exp(a) * unit(u)[0]

    def center(self, state):
        return state[0]

    def iterate(self, t, state):
        sign = 1.0 - 2.0 * jnp.mod(jnp.round(t), 2.0)  # (−1)^k
        return state[0] + sign * self.half_length(state)

    def observables(self, f, t, state, U, opt, data, w_gd):
        X, a, u = state
        Y = self.half_length(state)
        l_sym = 0.5 * (f(X + Y, data) + f(X - Y, data))
        return {
            "predicted_loss": l_sym,
            "rod_length": jnp.exp(a),
            "oscillation_u1": jnp.vdot(U[:, 0], Y) ** 2,
        }

    def describe(self):
        out = super().describe()
        out["floor"] = "eps" if self.floor is None else str(self.floor)
        out["amplitude_rate"] = self.amplitude_rate
        out["modified_equation"] = str(self.modified_equation)
        return out
