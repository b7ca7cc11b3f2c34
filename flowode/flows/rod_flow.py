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
GD's own oscillation is seeded by its rounding: about ε|wᵢ| per coordinate and step,
ε‖w‖/√n along one direction. flowode therefore carries Y = e^a u, a log-amplitude and a
unit direction (`_rod_state`), so that neither underflow nor cancellation loses the
direction, and gives a a smooth floor at `floor`·‖w‖ (default ε/√n), the seed GD has.
With H̃u = (g₊ − g₋)/(2|Y|) the secant Hessian along u and v = ηH̃u − 2u = Ẏ/|Y|,

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
Measured by benchmarks/bench_onset.py (benchmarks/README.md), MLP-433, η = 0.1, seeds
0-3, floor ε/√n: with "map" the rod enters EOS 1-3 steps before GD in float64 and 2-5
in float32, with the default and a tight solver alike; with "linear" 12 and 6-7 steps
before (with the floor ε‖w‖ of earlier versions, "map" was 6-7 and 9-13 steps early).

**Second order (`modified_equation=True`).** Both relations are first order in time.
For the centre, X(t+1) − X(t) = F(X, Y) with F = −(η/2)(g₊ + g₋) is a map step, and
backward error analysis (Ẋ = F + c, match X(t+1) = X + Ẋ + ½Ẍ + O(F³) with Ẍ = dF/dt)
gives Ẋ = F − ½ dF/dt. With dF/dt = ∂_X F·Ẋ + ∂_Y F·Ẏ, ∂_X F = −(η/2)(H₊ + H₋) and
∂_Y F = −(η/2)(H₊ − H₋), to O(η²):

    Ẋ = −(η/2)(g₊ + g₋) − (η²/8)(H₊ + H₋)(g₊ + g₋) + (η/4)(H₊ − H₋)Ẏ,

with Ẏ = |Y|(ȧu + u̇) the rod's own half-length velocity. With Y = 0 this is GD's own
modified equation −η∇L − (η²/2)H∇L. The last term vanishes where |Y| is steady (at EOS)
or on its floor, but not at the onset or through a catapult, where |Y| changes by e per
step: dropping it (as a first version did) left the correction worse than the plain rod
after the onset on half the runs. Dropped: O(η³) terms, and a second-order correction of
Y's equation (its map Y(t+1) + Y(t) = G is not of the form a step of a flow; the
exact-map rate above is its correction where it matters, near the onset). The pair's
correction is (η/8)[H₊(ηs − 2Ẏ) + H₋(ηs + 2Ẏ)] with s = g₊ + g₋: one tangent per end, so
the ends' linearisation (`jax.linearize`) gives it as two HVPs in one batched JVP: two
gradients and two HVPs per evaluation (`_rod_state.corrected_centre_velocity`, shared
with edge flow).

Measured (benchmarks/bench_onset.py, float64, 4 seeds × η ∈ {0.1, 0.15}): before the
onset the correction brings the rod 2.1-3.3× closer to GD's iterates (steps 20-150);
after it, its centre is 0.35-1.04× the plain rod's distance to GD's midpoint, 4% worse
on one run of 8. So it is an option, not the default (the issue's rule: no worse
anywhere), and it costs 1.4× the gradients plus about 4 HVPs per GD step (14-18× GD's
wall time on MLP-433 against the plain rod's 6-7×). In float32
(η = 0.1) it was closer on all 4 seeds, 0.050 against 0.218 of gradient flow's
distance on seed 0.

**Other optimisers.** For an update map z ↦ Φ_t(z) on z = (w, s), s the optimiser's
state, the same split z_k = Z + (−1)^k V gives, to first order,

    dZ/dt = ½[Φ(Z+V) + Φ(Z−V)] − Z,      dV/dt = ½[Φ(Z−V) − Φ(Z+V)] − V,

which for GD is the rod above. Linearised, dV/dt = (−J_Φ − I)V: V grows exactly where
J_Φ has a real eigenvalue μ < −1, the flip at each optimiser's threshold on λ₁(P⁻¹H),
and with the "map" rate ln(1 + r) its log-amplitude grows at ln|μ| per step, the
discrete period-2 rate (tested on quadratics for heavy-ball and Nesterov). A momentum
oscillates with w and is split; a second moment ν averages g² over ~1/(1 − β₂) steps and
is carried as a centre only, fed by the mean of the pair (`AbstractOptimiser.
oscillating`). The state is (X, a, u, M, D, κ): V = e^a (u, D) with the direction
normalised in the norm |u|² + κ²|D|², κ a constant from the first step (w's step per
unit of state), because with a momentum the w-part of V alone may vanish as V turns. Φ's
w-part is taken as an increment (`AbstractOptimiser.increment`), with no cancellation.

Measured (benchmarks/bench_optimiser_rod.py: MLP-433, float32, 1000 steps, seeds 0-2;
the stable flow's mean distance to the discrete iterates after the onset over the rod's,
GD's own rod 5.9-25×): RMSProp (η = 1e-3, β₂ = 0.99) 4.2-13×; Nesterov (η = 0.05,
β = 0.5) 4.3-8.4×; heavy-ball (η = 0.07, β = 0.5) 3.3-4.6×; heavy-ball (η = 0.03,
β = 0.9) 1.1-1.2×. First order in time is coarse for a momentum whose multipliers sit
near 1 and −1, and a momentum's complex multipliers hold RKC2 to short steps (20-67
gradients per GD step). With Adam (η = 3e-3, β₂ = 0.999) the rod entered EOS at steps
264-445 on all three seeds while Adam's own iterates never oscillated (λ₁(P⁻¹H) ≈ 35.5
against 38), so the rod refuses Adam.
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from .._rkc import RKC2
from .._spectral import OracleCounts
from ..optimisers import GD, Adam
from ._base import AbstractFlow, plain_number, relative_scale
from ._rod_state import (
    AmplitudeRate,
    check_options,
    corrected_centre_velocity,
    floored_rate,
    from_vector,
    growth_rate,
    linearised_pair_grads,
    option_floor,
    pair_grads as _pair_grads,
    probe_distance,
    tolerance_scales,
    unit,
)


def _tree(fn, *trees):
    return jax.tree_util.tree_map(fn, *trees)


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def _sum_squares(tree):
    return sum(jnp.sum(x**2) for x in _leaves(tree))


def _joint_norm(u, D, kappa):
    """√(|u|² + κ²|D|²): the norm of the half-length's direction (w and state parts)."""
    return jnp.sqrt(jnp.sum(u**2) + kappa**2 * _sum_squares(D))


class RodFlow(AbstractFlow):
    """The rod ODE for the centre X and half-length Y = e^a u, started from GD's first two iterates.

    X(0) = (w₀ + w₁)/2 and Y(0) = (w₀ − w₁)/2 with w₁ = w₀ − η∇L(w₀). Its prediction of
    GD's iterate is X + (−1)^k Y (the phase too), of GD's time-averaged loss L_sym(X, Y).
    The state is (X, a, u).

    - `floor`: the smallest |Y|, relative to the iterate's norm ‖X ± Y‖; None (default)
      is ε/√n (the dtype's ε, n parameters), GD's own rounding along one direction; 0
      is exact arithmetic (Y may decay for ever, and Y = 0 is invariant).
    - `amplitude_rate`: "map" (ln(1 + r), the exact period-2 map rate) or "linear" (r,
      the first-order rod). See the module docstring.
    - With another optimiser (heavy-ball, Nesterov, RMSProp, Adam) the rod is that of its
      whole update map; see the module docstring for what it models and how well.
    - `modified_equation`: add the O(η²) backward-error term −(η²/8)(H₊ + H₋)(g₊ + g₋) +
      (η/4)(H₊ − H₋)Ẏ to the centre (two HVPs more per evaluation). Named "rod_me" in a
      Dataset.
    - `solver`, `stepsize_controller`: flowode's RKC2, whose power iteration for the
      Jacobian's spectral radius takes two JVPs of the field (two HVPs each) every 10
      accepted steps and after a rejected one, under a PID controller. The controller's
      atol is relative (`error_scale`): to the iterate's RMS √(‖X‖² + |Y|²)/√n for X, to
      u's RMS for u, and absolute for the log-amplitude a. An absolute atol stops
      resolving a state smaller than itself, and one fixed for X cannot follow X past
      the threshold, where the pair's sum holds X only to ε|Y|.
    - `direction_tolerance`: u's tolerances as a multiple of X's (default 10). u's error
      enters the amplitude's rate uᵀ(ηH̃ − 2)u at second order where u is near an
      eigenvector (a Rayleigh quotient is stationary there), and the pair through
      Y = e^a u, at e^a|δu| against the iterate's |X|; held as tightly as X, u set the step
      size before the onset (benchmarks/README.md, "Rod flow: solver choice").
    """

    solver: diffrax.AbstractSolver = RKC2(power_iterations=2, reestimate_every=10)
    # Chosen by benchmarks/bench_rod.py: the rod's Jacobian spans about [−3, 0] per GD step
    # (the floor before the onset, X and u along ηλ₁ ≈ 2 after it) while its solution
    # is smooth over many GD steps, so a stabilised method takes steps of several GD
    # steps (1.6-1.8 gradients and 0.16 HVPs per GD step at η = 0.1, 2.1× GD's wall time,
    # against Heun's 3.8-4.5 gradients, at the same distance to GD).
    # The spectral radius by a JVP, not by difference quotients of the field: those cost
    # 14% less wall time at η = 0.1 but, in float32 below the threshold (η = 0.02, seeds 0
    # and 3 of MLP-433), overestimated it tenfold (12 gradients per GD step, not 1.3).
    # One estimate (two power iterations) per 10 accepted steps and after a rejection:
    # 13-22% less wall time at η = 0.1-0.15 than one iteration every step (11.0× GD
    # against 15.8× at n = 1377), same distances. One iteration per 10 steps left the
    # direction unconverged on a 3-parameter quadratic (45% more steps); one per 25
    # steps cost rejections (benchmarks/README.md, "Rod flow: solver choice").
    # atol is relative to the RMS of X and of u (`error_scale`), absolute for a.
    # Safety 0.8, as RKC's own controller (diffrax's default is 0.9): fewer rejected steps
    # (0.09-0.12 rejected evaluations per GD step against 0.12-0.26).
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(
        rtol=1e-3, atol=1e-4, safety=0.8
    )
    dt0: float | None = None
    max_steps_per_gd_step: int = 100
    blowup: float = 1e6
    floor: float | None = eqx.field(default=None, converter=plain_number)
    amplitude_rate: AmplitudeRate = "map"
    modified_equation: bool = False
    direction_tolerance: float = 10.0

    def __check_init__(self):
        check_options("RodFlow", self.floor, self.amplitude_rate, self.modified_equation)
        tol = self.direction_tolerance
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 < tol < math.inf:
            raise ValueError(
                "RodFlow: direction_tolerance (u's tolerance as a multiple of X's) must be a "
                f"positive finite number, got {tol!r}."
            )

    @property
    def name(self) -> str:
        return "rod_me" if self.modified_equation else "rod"

    @property
    def grads_per_eval(self) -> int:
        return 2

    @property
    def hvps_per_jvp(self) -> int:
        # A JVP of the field: the HVP pair, plus with the correction ∂(H₊T₊) and ∂(H₋T₋),
        # each ∇³L±[·, T±] + H±(∂T±) (two HVPs and two third-derivative contractions more).
        return 4 if self.modified_equation else 2

    def counts(self, y1, n_evals, n_jvps):
        counts = super().counts(y1, n_evals, n_jvps)
        if not self.modified_equation:
            return counts
        # Each evaluation applies the ends' linearisation to one tangent per end: two HVPs;
        # each JVP two thirds more.
        return OracleCounts(counts.n_grad, counts.n_hvp + 2 * n_evals, 2 * n_jvps)

    def _log_floor(self, X, amplitude):
        return option_floor(self.floor, X, amplitude)

    def supports(self, opt):
        # Optimisers through their update map (module docstring, "Other optimisers"); the
        # O(η²) centre term is derived for GD only. Not Adam: there the first-order split
        # entered EOS on MLP-433 where Adam itself did not (bench_optimiser_rod.py).
        if self.modified_equation:
            return isinstance(opt, GD)
        return not isinstance(opt, Adam)

    @property
    def models(self):
        if self.modified_equation:
            return "plain GD (with any lr schedule)"
        return (
            "GD, heavy-ball, Nesterov and RMSProp (with Adam its first-order split entered "
            "EOS where Adam did not, benchmarks/bench_optimiser_rod.py)"
        )

    def init(self, f, w0, opt, data):
        g0 = jax.grad(f)(w0, data)
        if opt.has_state:  # z₀ = (w₀, s₀), z₁ = Φ(z₀): Z = (z₀ + z₁)/2, V = (z₀ − z₁)/2
            s0 = opt.init(w0, g0)
            dw, s1 = opt.increment(s0, g0, jnp.zeros((), jnp.int32))
        else:
            dw = -opt.learning_rate(jnp.zeros((), w0.dtype)) * g0
        X0, Y0 = w0 + 0.5 * dw, -0.5 * dw
        fallback = jax.random.normal(jax.random.key(0), w0.shape, w0.dtype)
        a_floor = self._log_floor(X0, jnp.zeros((), w0.dtype))
        log_min = jnp.log(jnp.finfo(w0.dtype).tiny) if a_floor is None else a_floor
        a0, u0 = from_vector(Y0, fallback, log_min)
        if not opt.has_state:
            return (X0, a0, u0)
        osc = opt.oscillating(s0)
        M0 = _tree(lambda p, q: 0.5 * (p + q), s0, s1)
        half = _tree(lambda o, p, q: 0.5 * (p - q) * o, osc, s0, s1)  # 0 on smooth leaves
        # A schedule that starts at lr 0 takes a first step that leaves w where it is: no
        # oscillation of w to split, so the rod starts at its floor as plain GD's does,
        # with no half-length in the state either (its jump is the state's start, not a
        # period-2 oscillation).
        moved = jnp.any(Y0 != 0)
        half = _tree(lambda h: jnp.where(moved, h, 0), half)
        # κ weighs the state's half-length against w's in the direction's norm: the w-step
        # per unit of state at the first step, so that both parts count alike (1 where the
        # state has no half-length, as after a first step at lr 0).
        s_norm = jnp.sqrt(_sum_squares(half))
        kappa = jnp.where(s_norm > 0, jnp.linalg.norm(Y0) / jnp.where(s_norm > 0, s_norm, 1), 1)
        D = _tree(lambda h: h * jnp.exp(-a0), half)
        c = jnp.sqrt(1 + kappa**2 * _sum_squares(D))  # the joint norm of (u₀, D)
        return (X0, a0 + jnp.log(c), u0 / c, M0, _tree(lambda d: d / c, D), kappa)

    def vector_field(self, f, t, y, opt, data):
        if opt.has_state:
            return self._optimiser_field(f, t, y, opt, data)
        lr = opt.learning_rate(t)
        X, a, u = y
        u_hat, u_norm = unit(u)
        amplitude = jnp.exp(a)
        delta = probe_distance(amplitude, X)
        if self.modified_equation:
            G, ends_jvp = linearised_pair_grads(f, X, delta * u_hat, data)
        else:
            G = _pair_grads(f, X, delta * u_hat, data)  # (2, n)
        Hu = (G[0] - G[1]) / (2 * delta)  # secant H̃u, or H(X)u where |Y| < √ε‖X‖
        v = lr * Hu - 2 * u_hat  # Ẏ/|Y|
        r = jnp.vdot(u_hat, v)
        da = floored_rate(growth_rate(r, self.amplitude_rate), a, self._log_floor(X, amplitude))
        du = v - r * u_hat + (1 - u_norm) * u_hat
        if self.modified_equation:  # Ẏ = |Y|(ȧu + u̇), the rod's own half-length velocity
            Ydot = amplitude * (da * u_hat + v - r * u_hat)
            dX = corrected_centre_velocity(lr, G, ends_jvp, Ydot)
        else:
            dX = -0.5 * lr * (G[0] + G[1])
        return (dX, da, du)

    def _optimiser_field(self, f, t, y, opt, data):
        """The rod of the whole update map z ↦ Φ(z), z = (w, s) (module docstring)."""
        X, a, u, M, D, kappa = y
        osc = opt.oscillating(M)
        norm = _joint_norm(u, D, kappa)
        u_hat, D_hat = u / norm, _tree(lambda d: d / norm, D)
        delta = probe_distance(jnp.exp(a), X)
        G = _pair_grads(f, X, delta * u_hat, data)  # (2, n): ∇L(X ± δu)
        dw_p, s_p = opt.increment(_tree(lambda m, d: m + delta * d, M, D_hat), G[0], t)
        dw_m, s_m = opt.increment(_tree(lambda m, d: m - delta * d, M, D_hat), G[1], t)
        dX = 0.5 * (dw_p + dw_m)
        dM = _tree(lambda p, q, m: 0.5 * (p + q) - m, s_p, s_m, M)
        # The half-length's next value over |V|: q = (−u − Δw₋₊/2δ, −Δs₋₊/2δ); v = q − (u, D).
        v_w = (dw_m - dw_p) / (2 * delta) - 2 * u_hat
        v_s = _tree(lambda o, p, q, d: ((q - p) / (2 * delta) - d) * o, osc, s_p, s_m, D_hat)
        r = jnp.vdot(u_hat, v_w) + kappa**2 * sum(
            jnp.vdot(d, v) for d, v in zip(_leaves(D_hat), _leaves(v_s), strict=True)
        )
        da = floored_rate(growth_rate(r, self.amplitude_rate), a, self._log_floor(X, jnp.exp(a)))
        du = v_w - r * u_hat + (1 - norm) * u_hat
        dD = _tree(lambda v, d: v - r * d + (1 - norm) * d, v_s, D_hat)
        return (dX, da, du, dM, dD, jnp.zeros_like(kappa))

    def error_scale(self, y):
        scales, relative = tolerance_scales(y[:3], self.direction_tolerance)
        if len(y) == 3:
            return scales, relative
        # The optimiser state's centre M at the scale of its ends M ± |V|D, as X is: the
        # pair's sum holds M only to ε|V||D|. D (relative to |V|) at its own RMS; κ is a
        # constant.
        X, a, _, M, D, kappa = y
        tiny = jnp.sqrt(jnp.finfo(X.dtype).tiny)
        m_scales = _tree(
            lambda m, d: jnp.maximum(jnp.sqrt(jnp.mean(m**2 + jnp.exp(2 * a) * d**2)), tiny), M, D
        )
        d_scales, _ = relative_scale(D)  # D: the direction's state part, held as u is
        d_scales = _tree(lambda d: self.direction_tolerance * d, d_scales)
        true = lambda tree: _tree(lambda _: True, tree)
        return (*scales, m_scales, d_scales, jnp.ones_like(kappa)), (
            *relative,
            true(M),
            true(D),
            False,
        )

    def optimiser_state(self, state):
        return state[3] if len(state) > 3 else ()

    def size(self, y):
        X, a = y[:2]
        return jnp.sqrt(jnp.sum(X**2) + jnp.exp(2 * a))

    def half_length(self, state):
        """Y = e^a u/|u|."""
        a, u = state[1:3]
        norm = unit(u)[1] if len(state) == 3 else _joint_norm(u, state[4], state[5])
        return jnp.exp(a) * u / norm

    def center(self, state):
        return state[0]

    def iterate(self, t, state):
        sign = 1.0 - 2.0 * jnp.mod(jnp.round(t), 2.0)  # (−1)^k
        return state[0] + sign * self.half_length(state)

    def observables(self, f, t, state, U, opt, data, w_gd):
        X, a = state[:2]
        Y = self.half_length(state)
        l_sym = 0.5 * (f(X + Y, data) + f(X - Y, data))
        return {
            "predicted_loss": l_sym,
            "rod_length": jnp.exp(a),
            "oscillation_u1": jnp.vdot(U[:, 0], Y) ** 2,
        }

    def describe(self):
        out = super().describe()
        out["floor"] = "eps/sqrt(n)" if self.floor is None else str(self.floor)
        out["amplitude_rate"] = self.amplitude_rate
        out["modified_equation"] = str(self.modified_equation)
        return out
