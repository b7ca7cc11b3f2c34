"""Edge Flow: a centre, top Hessian eigen-directions and a log-magnitude along each.

**Where the model comes from.** Edge Flow (Marion, arXiv 2606.18080, 2026) is published
without code, and its equations could not be read in the stored copies of the paper.
flowode derives it from the structure its abstract states: three coupled ODEs, (i) a
centre following a modified gradient flow on a symmetrised loss, (ii) a direction
tracking a top Hessian eigenvector by Rayleigh-quotient dynamics, (iii) a magnitude
growing or decaying exponentially as the sharpness is above or below 2/η, at a cost of
two gradients and one Hessian-vector product per step. The derivation reuses rod flow's
(DESIGN §2.4, `rod_flow.py`): GD's iterates are w_k = X + (−1)^k Y, and restricting the
half-length to Y = e^a u along a unit eigen-direction u gives, with g± = ∇L(X ± Y),

    dX/dt = −(η/2)(g₊ + g₋) − (η²/8)(H₊ + H₋)(g₊ + g₋) + (η/4)(H₊ − H₋)Ẏ     (i)
    du/dt = ηH(X)u − (uᵀηH(X)u)u                           (ii)
    da/dt = ρ(ηq − 2),  floored smoothly                   (iii)

(i) is −η∇_X L_sym(X, Y), L_sym = ½[L(X+Y) + L(X−Y)], plus the map's O(η²) backward-
error term (the "modified" gradient flow; derived in `rod_flow.py`); (ii) is Rayleigh-
quotient ascent, a continuous power iteration with the exact HVP at the centre, so it
finds the top eigenvector at any |Y|; (iii) grows exactly when ηq > 2, with q the
sharpness along the oscillation. In (i) Ẏ = d(e^a u)/dt from (ii) and (iii): the term in
Ẏ matters where the magnitude changes fast, at the onset and through a catapult. One
evaluation costs the vmapped pair of gradients and one HVP (two HVPs more for the O(η²)
term). Prediction of GD's iterate: X + (−1)^k Y,
the phase included.

**Which sharpness drives the magnitude** (`magnitude_sharpness`). "centre", q = uᵀH(X)u,
is the prototype the issue describes. On the softening quartic it has no damping: centre
and magnitude form a Lotka–Volterra pair (ȧ linear in the centre, the centre's drift
linear in e^{2a}) and cycle for ever around GD's fixed point, 0.15 away from GD's
iterates (tests/test_edge_flow.py). "secant" (default) is the sharpness GD's period-2 map
sees along Y: q = uᵀ(g₊ − g₋)/(2|Y|), from the pair already taken. It equals uᵀH(X)u to
O(|Y|²) and adds the O(|Y|²)∇⁴L softening, which damps the cycle: the flow settles on
GD's orbit (distance 1e-6). It is blended into uᵀH(X)u where |Y| is under √ε‖X‖ (the
probe distance of `_rod_state`), where the difference of gradients is rounding noise.
The threshold ηq = 2 at the onset is the same. On the MLP both agree to 0.009 in the
centre ratio. For k > 1 each magnitude takes its direction's projection of the pair's
odd remainder (g₊ − g₋)/2 − H(X)Y per unit magnitude.

**Onset.** As for the rod (`_rod_state`), a is a log-magnitude with a smooth floor at
`floor`·‖w‖ (default ε/√n, GD's own rounding along one direction), so the magnitude neither
underflows nor loses its direction before the onset, and growth starts from the seed
GD has. Without it (`floor=0`) the flow entered EOS 390-530 steps after GD or never.

**Defaults, measured** by benchmarks/bench_edge.py (MLP-433, η = 0.1, seeds 0-3, float32
and float64, 1000 steps; benchmarks/README.md): the O(η²) term brought the centre closer
to GD's midpoint on all 8 runs (float32: 0.054, 0.008, 0.012, 0.014 of gradient flow's
distance against 0.218, 0.027, 0.025, 0.019 without; float64: 0.196, 0.219, 0.134, 0.022
against 0.213, 0.238, 0.138, 0.060) and the onset closer to GD's on all 8 (within 3
steps of GD against 1-5 early), so `modified_equation=True` is the default, at about
twice the wall time (the term also makes the centre stiffer: ηλ + (ηλ)²/2 = 4 at the
edge). Its part in Ẏ alone brought the centre closer on all 8 runs too. "map" rate
(ln(1 + r), GD's exact period-2 rate) entered EOS 2 steps before to 3 after GD, "linear"
3-11 before (RKC2; a tight Tsit5 gave the default's steps). With the floor ε‖w‖ of
earlier versions the default was 2-10 steps early.
Cost (same MLP, float32): on flowode's RKC2 (steps of several GD steps, as the rod) the
default takes 26× GD's wall time and the first-order flow 10×, half of what they took
on Heun (48× and 22× in the same run) at the same distance to GD. The rod took 5×,
central flow 149×.

**Several directions (k > 1).** U is an n×k block with one log-magnitude per column and
Y = Σᵢ e^{aᵢ}uᵢ (all columns flip together, as GD's period-2 components do). Its
dynamics are the continuous QR (Sanger / Oja) power iteration

    dU/dt = ηH(X)U − U·triu(Uᵀ ηH(X) U),

whose column i is column i's Rayleigh-quotient ascent made orthogonal to columns < i,
so the columns converge to the top k eigenvectors in order, with the Rayleigh–Ritz
values diag(UᵀηHU) as their sharpnesses; k = 1 is (ii). U is orthonormalised before
use and pulled back to its orthonormalisation at rate 1 (as the rod's u).
"""

from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._rkc import RKC2
from .._spectral import OracleCounts, hvp_block, orthonormal
from ._base import AbstractFlow, plain_number
from ._rod_state import (
    AmplitudeRate,
    check_options,
    corrected_centre_velocity,
    floored_rate,
    from_vector,
    growth_rate,
    linearised_pair_grads,
    option_floor,
    pair_grads,
    probe_distance,
    tolerance_scales,
)

MagnitudeSharpness = Literal["secant", "centre"]


class EdgeFlow(AbstractFlow):
    """Edge Flow's centre X, k orthonormal directions U and log-magnitudes a, from GD's start.

    X(0) = (w₀ + w₁)/2 and Y(0) = (w₀ − w₁)/2 = e^{a₀}u₀ with w₁ = w₀ − η∇L(w₀), as for
    the rod; further directions start random, orthonormalised, at the floor. Predicts
    GD's iterate X + (−1)^k Y and its time-averaged loss L_sym(X, Y). State (X, a, U):
    shapes (n,), (k,), (n, k).

    - `k`: the number of directions (1 as in the paper; 1 ≤ k ≤ number of parameters).
    - `floor`: the smallest magnitude, relative to the iterate's norm; None (default) is
      ε/√n (the dtype's ε, n parameters), GD's rounding along one direction; 0 is exact
      arithmetic.
    - `amplitude_rate`: "map" (ln(1 + r)) or "linear" (r).
    - `modified_equation`: the centre's O(η²) term (default; two HVPs more per
      evaluation). False: the first-order flow, 2 gradients and 1 HVP per evaluation.
    - `magnitude_sharpness`: "secant" (default) or "centre" (see the module docstring).

    Named "edge"; a non-default setting adds to the name ("edge_fo" first order,
    "edge_centre", "edge_k2" for k = 2, ...), so variants can run side by side.
    """

    # As rod flow's (benchmarks/bench_edge.py): RKC2 in steps of several GD steps, about
    # 2.2× fewer oracle calls than Heun at the same onset and distance to GD, its spectral
    # radius by two JVPs per 10 accepted steps (difference quotients overestimated it
    # tenfold in float32 below the threshold); atol is relative to the iterate's RMS for
    # X, to U's for U, absolute for a (`error_scale`).
    solver: diffrax.AbstractSolver = RKC2(power_iterations=2, reestimate_every=10)
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(
        rtol=1e-3, atol=1e-4
    )
    dt0: float | None = None
    max_steps_per_gd_step: int = 100
    blowup: float = 1e6
    k: int = 1
    floor: float | None = eqx.field(default=None, converter=plain_number)
    amplitude_rate: AmplitudeRate = "map"
    modified_equation: bool = True
    magnitude_sharpness: MagnitudeSharpness = "secant"

    def __check_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(
                f"EdgeFlow: k (the number of directions) must be an integer >= 1, got {self.k!r}."
            )
        check_options("EdgeFlow", self.floor, self.amplitude_rate, self.modified_equation)
        if self.magnitude_sharpness not in ("secant", "centre"):
            raise ValueError(
                "EdgeFlow: magnitude_sharpness must be 'secant' or 'centre', "
                f"got {self.magnitude_sharpness!r}."
            )

    @property
    def name(self) -> str:
        me = "" if self.modified_equation else "_fo"
        centre = "_centre" if self.magnitude_sharpness == "centre" else ""
        return "edge" + me + centre + (f"_k{self.k}" if self.k > 1 else "")

    @property
    def grads_per_eval(self) -> int:
        return 2

    def counts(self, y1, n_evals, n_jvps):
        # Per evaluation: the pair of gradients, k HVPs (two more with the correction: the
        # ends' linearisation, one tangent per end). Per JVP of the field: the pair's two
        # HVPs and k third-derivative contractions (with the correction, two of each more).
        me = 2 if self.modified_equation else 0
        return OracleCounts(
            n_grad=2 * n_evals,
            n_hvp=(self.k + me) * n_evals + (2 + me) * n_jvps,
            n_third=(self.k + me) * n_jvps,
        )

    def _log_floor(self, X, amplitude):
        return option_floor(self.floor, X, amplitude)

    def init(self, f, w0, opt, data):
        lr = opt.learning_rate(jnp.zeros((), w0.dtype))
        n = w0.shape[0]
        if self.k > n:
            raise ValueError(
                f"EdgeFlow: k = {self.k} directions is more than the problem's {n} parameters; "
                f"use k <= {n}."
            )
        g0 = jax.grad(f)(w0, data)
        X0, Y0 = w0 - 0.5 * lr * g0, 0.5 * lr * g0
        key = jax.random.key(0)
        rest = jax.random.normal(key, (n, self.k), w0.dtype)  # (n, k)
        a_floor = self._log_floor(X0, jnp.zeros((), w0.dtype))
        log_min = jnp.log(jnp.finfo(w0.dtype).tiny) if a_floor is None else a_floor
        a0, u0 = from_vector(Y0, rest[:, 0], log_min)
        U0 = orthonormal(rest.at[:, 0].set(u0))  # (n, k), column 0 = u0
        a = jnp.full((self.k,), log_min, w0.dtype).at[0].set(a0)  # (k,)
        return (X0, a, U0)

    def vector_field(self, f, t, y, opt, data):
        lr = opt.learning_rate(t)
        X, a, U = y  # (n,), (k,), (n, k)
        Q = orthonormal(U)  # (n, k)
        m = jnp.exp(a)  # the magnitudes: (k,)
        Y = Q @ m  # (n,)
        if self.modified_equation:
            G, ends_jvp = linearised_pair_grads(f, X, Y, data)  # (2, n)
        else:
            G = pair_grads(f, X, Y, data)  # (2, n)
        HQ_raw = hvp_block(f, X, Q, data)  # H(X)Q: (n, k)
        HQ = lr * HQ_raw  # ηH(X)Q
        M = Q.T @ HQ  # Rayleigh–Ritz matrix QᵀηHQ: (k, k)
        dQ = HQ - Q @ jnp.triu(M)  # the tangent part of dU: (n, k)
        dU = dQ + (Q - U)
        r = jnp.diagonal(M) - 2  # (k,)
        amplitude = jnp.sqrt(jnp.sum(m**2))
        if self.magnitude_sharpness == "secant":
            # The pair's odd remainder (g₊ − g₋)/2 − H(X)Y = O(|Y|³), projected on each
            # direction per unit magnitude, where that magnitude resolves it (e^{aᵢ} above
            # the probe distance d = √ε‖X‖); below it, the weight e^{aᵢ}/(e^{2aᵢ} + d²)
            # fades the rounding noise of the difference out. k = 1: uᵀ(g₊ − g₋)/(2|Y|).
            c = 0.5 * (G[0] - G[1]) - HQ_raw @ m  # (n,); H(X)Y from the HVPs taken
            d = probe_distance(jnp.zeros((), X.dtype), X)
            r = r + lr * (Q.T @ c) * m / (m**2 + d**2)
        da = floored_rate(growth_rate(r, self.amplitude_rate), a, self._log_floor(X, amplitude))
        if self.modified_equation:  # Ẏ = Q̇e^a + Q(e^a ⊙ ȧ)
            Ydot = dQ @ m + Q @ (m * da)
            dX = corrected_centre_velocity(lr, G, ends_jvp, Ydot)
        else:
            dX = -0.5 * lr * (G[0] + G[1])
        return (dX, da, dU)

    def error_scale(self, y):
        return tolerance_scales(y)

    def size(self, y):
        X, a, _ = y
        return jnp.sqrt(jnp.sum(X**2) + jnp.sum(jnp.exp(2 * a)))

    def half_length(self, state) -> Float[Array, " n"]:
        """Y = Σᵢ e^{aᵢ}uᵢ, U orthonormalised."""
        _, a, U = state
        return orthonormal(U) @ jnp.exp(a)

    def center(self, state):
        return state[0]

    def iterate(self, t, state):
        sign = 1.0 - 2.0 * jnp.mod(jnp.round(t), 2.0)  # (−1)^k
        return state[0] + sign * self.half_length(state)

    def observables(self, f, t, state, U, opt, data, w_gd):
        X, a, _ = state
        Q = orthonormal(state[2])  # (n, k)
        Y = Q @ jnp.exp(a)
        l_sym = 0.5 * (f(X + Y, data) + f(X - Y, data))
        rayleigh = jnp.sum(Q * hvp_block(f, X, Q, data), axis=0)  # uᵢᵀH(X)uᵢ: (k,)
        out = {
            "predicted_loss": l_sym,
            "oscillation_magnitude": jnp.sqrt(jnp.sum(jnp.exp(2 * a))),
            "edge_sharpness": jnp.max(rayleigh),
            "alignment": jnp.linalg.norm(Q.T @ U[:, 0]),  # |uᵀu₁|; k > 1: of span(U)
            "oscillation_u1": jnp.vdot(U[:, 0], Y) ** 2,
        }
        if self.k > 1:
            out["edge_magnitudes"] = jnp.exp(a)
        return out

    def describe(self):
        out = super().describe()
        out["k"] = str(self.k)
        out["floor"] = "eps/sqrt(n)" if self.floor is None else str(self.floor)
        out["amplitude_rate"] = self.amplitude_rate
        out["modified_equation"] = str(self.modified_equation)
        out["magnitude_sharpness"] = self.magnitude_sharpness
        return out
