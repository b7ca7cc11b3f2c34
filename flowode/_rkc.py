"""Second-order Runge--Kutta--Chebyshev (RKC) solver for mildly to very stiff ODEs.

Reference: B. P. Sommeijer, L. F. Shampine, J. G. Verwer, "RKC: an explicit solver for
parabolic PDEs", J. Comput. Appl. Math. 88 (1998) 315--326.
"""

from collections.abc import Callable
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from diffrax import AbstractTerm, ThirdOrderHermitePolynomialInterpolation
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

_EPS = 2.0 / 13.0  # damping parameter of the stability polynomial
_DUE = 2**30  # an `age` past any `reestimate_every`: the next step estimates ρ


def _axpy(*pairs: tuple[ArrayLike, PyTree]) -> PyTree:
    """sum_i a_i * x_i over pytrees x_i (all with the structure of the first)."""
    coeffs, trees = zip(*pairs, strict=True)

    def _leaf(*xs):
        return sum(jnp.asarray(c, x.dtype) * x for c, x in zip(coeffs, xs, strict=True))

    return jtu.tree_map(_leaf, *trees)


def _norm(tree: PyTree[Array]) -> Array:
    return jnp.sqrt(sum(jnp.sum(jnp.abs(x) ** 2) for x in jtu.tree_leaves(tree)))


def _real_dtype(y: PyTree[Array]):
    return jnp.finfo(jnp.result_type(*jtu.tree_leaves(y))).dtype


def _random_unit(y: PyTree[Array]) -> PyTree[Array]:
    """A fixed pseudo-random unit vector shaped like `y`: the power iteration's start."""
    leaves, treedef = jtu.tree_flatten(y)
    keys = jr.split(jr.PRNGKey(0), len(leaves))
    v = [jr.normal(k, jnp.shape(x)).astype(x.dtype) for k, x in zip(keys, leaves, strict=True)]
    norm = _norm(v)
    return jtu.tree_unflatten(treedef, [x / norm for x in v])


_SERIES_TERMS = 8  # of T_j''(cosh θ)'s series; (j + 1)θ ≤ 0.83, so the 9th is below 1e-15


def _stage_coefficients(s: Int[Array, ""], max_stages: int, dtype) -> tuple[Array, Array]:
    """w1 = T_s'(w0)/T_s''(w0) and, per stage j = 0..max_stages (rows past s unused), the
    coefficients (1 − μ_j − ν_j, μ_j, ν_j, μ̃_j, γ̃_j, c_{j−1}) of RKC2 with s stages.

    With w0 = 1 + ε/s² = cosh θ: T_j = cosh jθ, T_j' = j sinh jθ / sinh θ and
    T_j'' = 2j²(j² − 1)(θ/sinh θ)³ Σ_{m≥1} h_m/(2m+1)!, h_m = Σ_{i<m} A^{2i} B^{2(m−1−i)},
    A = (j + 1)θ, B = (j − 1)θ: a series of positive terms, where the closed form
    j[j T_j − w0 T_j']/(w0² − 1) cancels to a few digits as θ → 0. Then b_j = T_j''/T_j'²
    (b_0 = b_1 = b_2), μ_j = 2w0 b_j/b_{j−1}, ν_j = −b_j/b_{j−2}, μ̃_j = μ_j w1/w0,
    γ̃_j = −(1 − T_{j−1} b_{j−1}) μ̃_j, and the stage times c_1 = w1 b_1,
    c_j = w1 T_j''/T_j' (Sommeijer, Shampine and Verwer 1998, §2). All stages at once, in
    closed form: the recursions that gave them stage by stage cost a dozen scalar kernels
    per stage, a quarter of a stage's wall time on a CPU beside a pair of gradients.
    """
    x = jnp.asarray(_EPS, dtype) / s.astype(dtype) ** 2
    w0 = 1 + x
    theta = jnp.log1p(x + jnp.sqrt(x * (2 + x)))  # arccosh(1 + x), not rounded through 1 + x
    index = jnp.arange(max_stages + 1)
    j = jnp.minimum(index, s).astype(dtype)
    sinh_theta = jnp.sinh(theta)
    T = jnp.cosh(j * theta)
    dT = j * jnp.sinh(j * theta) / sinh_theta
    A2, B2 = ((j + 1) * theta) ** 2, ((j - 1) * theta) ** 2
    h_m, B2m, total, factorial = jnp.ones_like(j), jnp.ones_like(j), jnp.zeros_like(j), 1.0
    for m in range(1, _SERIES_TERMS + 1):
        factorial *= (2 * m) * (2 * m + 1)
        total = total + h_m / factorial
        B2m = B2m * B2
        h_m = A2 * h_m + B2m
    d2T = 2 * j**2 * (j**2 - 1) * (theta / sinh_theta) ** 3 * total
    safe = lambda v: jnp.where(index >= 2, v, 1)  # noqa: E731
    b = jnp.where(index >= 2, d2T / safe(dT) ** 2, 1 / (2 * w0) ** 2)
    w1 = dT[s] / d2T[s]
    shift = lambda v, by: jnp.concatenate([v[:by], v[:-by]])  # noqa: E731  v_{j−by}
    b1, b2, T1 = shift(b, 1), shift(b, 2), shift(T, 1)
    mu = 2 * w0 * b / b1
    nu = -b / b2
    mus = mu * w1 / w0
    gamma = -(1 - T1 * b1) * mus
    c = jnp.where(index >= 2, w1 * d2T / safe(dT), jnp.where(index == 1, w1 * b[1], 0))
    mus = mus.at[1].set(w1 * b[1])  # Y_1 = y0 + μ̃_1 h F(y0)
    coef = jnp.stack([1 - mu - nu, mu, nu, mus, gamma, shift(c, 1)], axis=1)
    return w1, coef


class RKCState(eqx.Module):
    """Solver state of [`RKC2`][], at the start of the next step.

    - `f0`: vector field at the current point (first-same-as-last).
    - `direction`: unit-norm dominant direction of the Jacobian from the power iteration
        (`None` when a fixed `spectral_radius` is given).
    - `spectral_radius`: spectral radius of the Jacobian used by the last accepted step,
        per unit time (power-iteration estimate times `safety`, or the user's value).
    - `num_stages`: number of stages used by the last accepted step.
    - `age`: accepted steps since `spectral_radius` was last estimated (int32); see
        `after_rejection`.
    - `n_evals`: vector-field evaluations made so far (int32).
    - `n_jvps`: Jacobian-vector products made so far (int32).

    diffrax rolls the solver state back on rejected steps, so the counters count the
    work of accepted steps (and of `init`) only.
    """

    f0: PyTree[Array]
    direction: PyTree[Array] | None
    spectral_radius: Float[Array, ""]
    num_stages: Int[Array, ""]
    age: Int[Array, ""]
    n_evals: Int[Array, ""]
    n_jvps: Int[Array, ""]

    def after_rejection(self) -> "RKCState":
        """The state to retry a rejected step from: `spectral_radius` is due for a new
        estimate (a stale one may be what made the step unstable). diffrax's own loop
        rolls the state back unchanged; flowode's `integrate` uses this."""
        return eqx.tree_at(lambda s: s.age, self, jnp.asarray(_DUE, jnp.int32))


class RKC2(diffrax.AbstractAdaptiveSolver[RKCState]):
    """Second-order Runge--Kutta--Chebyshev method with damping 2/13.

    Explicit and stabilised: with `s` stages (one vector-field evaluation each) the
    real stability interval is about `[-0.65 s^2, 0]`, so stiff problems whose Jacobian
    has a (near-)real spectrum cost like `sqrt(h * rho)` per step rather than
    `h * rho`. The number of stages is chosen per step from an estimate `rho` of the
    Jacobian's spectral radius, obtained by a power iteration on Jacobian-vector products
    warm-started from the previous step (or from a user-supplied `spectral_radius`).
    Has an embedded error estimate of local order 3, FSAL, and third-order Hermite
    interpolation for dense/ts output. Intended for ODEs (`diffrax.ODETerm`). The stage
    loop has a dynamic length, so `RecursiveCheckpointAdjoint` (reverse mode through the
    steps) is unsupported; `diffrax.ForwardMode` and `diffrax.BacksolveAdjoint` work.

    Work counters are in the solver state, see [`RKCState`][]; read them with
    `diffrax.SaveAt(..., solver_state=True)` and `sol.solver_state.n_evals` etc.

    **Arguments:**

    - `max_stages`: upper bound on the stages per step. A step that would need more is
        unstable; an adaptive controller then rejects it through the error estimate.
    - `power_iterations`: Jacobian-vector products per step for the estimate of `rho`.
    - `init_power_iterations`: the same, once in `init`, from a random start.
    - `difference`: take each product of the power iteration as a difference quotient
        (F(y + δv) − F(y))/δ, one vector-field evaluation (counted in `n_evals`), instead
        of a JVP (`jax.linearize`, counted in `n_jvps`). For fields that are a batch of
        gradients, an evaluation costs much less than its linearisation, and ρ is only
        needed to about 10% (Sommeijer, Shampine and Verwer's RKC does the same).
    - `reestimate_every`: estimate `rho` at every this many accepted steps and reuse it
        in between (Sommeijer, Shampine and Verwer's RKC re-estimates every 25 steps).
        Under `vmap` the skipped estimate becomes a select and is computed anyway. A step
        retried after a rejection re-estimates when its state comes from
        `RKCState.after_rejection` (flowode's flows; diffrax's loop reuses the estimate).
    - `safety`: factor applied to the power-iteration estimate of `rho`.
    - `spectral_radius`: optional `(t, y, args) -> rho` (per unit time), used instead of
        the power iteration.
    """

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar[Callable[..., ThirdOrderHermitePolynomialInterpolation]] = (
        ThirdOrderHermitePolynomialInterpolation
    )

    max_stages: int = 200
    power_iterations: int = 3
    init_power_iterations: int = 20
    reestimate_every: int = 1
    safety: float = 1.2
    spectral_radius: Callable[..., ArrayLike] | None = None
    difference: bool = False

    def __check_init__(self):
        for name in ("max_stages", "power_iterations", "init_power_iterations", "reestimate_every"):
            value = getattr(self, name)
            lowest = 2 if name == "max_stages" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"RKC2: {name} must be an integer >= {lowest}, got {value!r}.")
        if not self.safety > 0:
            raise ValueError(f"RKC2: safety must be positive, got {self.safety!r}.")

    def order(self, terms):
        return 2

    def error_order(self, terms):
        return 3

    def func(self, terms: AbstractTerm, t0, y0, args):
        return terms.vf(t0, y0, args)

    def _power_iteration(self, terms, t0, t1, y0, args, v, n, f0=None):
        """`n` power iterations on the Jacobian of `y -> h F(t0, y)`; returns (v, |h|rho).

        With `difference`, `f0` = F(t0, y0) and each product is a difference quotient."""
        control = terms.contr(t0, t1)
        if self.difference:
            dtype = _real_dtype(y0)
            delta = jnp.sqrt(jnp.finfo(dtype).eps) * (1 + _norm(y0))
            k0 = terms.prod(f0, control)

            def jvp(v):
                k = terms.vf_prod(t0, _axpy((1, y0), (delta, v)), args, control)
                return _axpy((1 / delta, k), (-1 / delta, k0))

        else:
            _, jvp = jax.linearize(lambda y: terms.vf_prod(t0, y, args, control), y0)

        def body(_, carry):
            v, _ = carry
            w = jvp(v)
            nw = _norm(w)
            ok = jnp.isfinite(nw) & (nw > 0)
            v = jtu.tree_map(lambda a, b: jnp.where(ok, a / jnp.where(ok, nw, 1), b), w, v)
            return v, jnp.where(jnp.isfinite(nw), nw, 0).astype(_real_dtype(y0))

        return lax.fori_loop(0, n, body, (v, jnp.zeros((), _real_dtype(y0))))

    def init(self, terms: AbstractTerm, t0, t1, y0, args) -> RKCState:
        dtype = _real_dtype(y0)
        f0 = terms.vf(t0, y0, args)
        n_evals, n_jvps = 1, 0
        if self.spectral_radius is None:
            v = _random_unit(y0)
            n = self.init_power_iterations
            v, _ = self._power_iteration(terms, t0, t1, y0, args, v, n, f0)
            n_evals, n_jvps = (n_evals + n, 0) if self.difference else (n_evals, n)
        else:
            v = None
        zero = jnp.zeros((), jnp.int32)
        return RKCState(f0, v, jnp.zeros((), dtype), zero, zero, zero + n_evals, zero + n_jvps)

    def step(self, terms: AbstractTerm, t0, t1, y0, args, solver_state: RKCState, made_jump):
        st = solver_state
        dtype = _real_dtype(y0)
        made_jump = jnp.asarray(made_jump)
        f0 = lax.cond(made_jump, lambda: terms.vf(t0, y0, args), lambda: st.f0)
        n_evals = st.n_evals + made_jump.astype(jnp.int32)
        h = jnp.asarray(t1 - t0)
        abs_h = jnp.abs(h).astype(dtype)

        # Spectral radius of the Jacobian, times |h|, and from it the number of stages.
        v, n_jvps, age = st.direction, st.n_jvps, st.age + 1
        if self.spectral_radius is None:
            n = self.power_iterations

            def estimate():
                v_new, h_rho = self._power_iteration(terms, t0, t1, y0, args, v, n, f0)
                return v_new, self.safety * h_rho, jnp.ones((), jnp.int32)

            def reuse():
                return v, abs_h * st.spectral_radius, jnp.zeros((), jnp.int32)

            if self.reestimate_every == 1:
                v, h_rho, fresh = estimate()
            else:  # the first step (ρ = 0 from `init`) always estimates
                due = (st.age >= self.reestimate_every - 1) | (st.spectral_radius == 0)
                v, h_rho, fresh = lax.cond(due, estimate, reuse)
            age = jnp.where(fresh > 0, 0, age)
            if self.difference:
                n_evals = n_evals + n * fresh
            else:
                n_jvps = n_jvps + n * fresh
        else:
            h_rho = abs_h * jnp.abs(jnp.asarray(self.spectral_radius(t0, y0, args), dtype))
        s = 1 + jnp.floor(jnp.sqrt(1 + 1.54 * h_rho)).astype(jnp.int32)
        s = jnp.clip(s, 2, self.max_stages)

        # Stage recursion: Y_j = (1-mu-nu) y0 + mu Y_{j-1} + nu Y_{j-2}
        #                        + mus h F(Y_{j-1}) + gamma h F(y0), at times c_j h.
        w1, coef = _stage_coefficients(s, self.max_stages, dtype)  # coef: (max_stages + 1, 6)
        control = terms.contr(t0, t1)
        k0 = terms.prod(f0, control)
        ystage1 = _axpy((1, y0), (coef[1, 3], k0))  # Y_1 = y0 + w1 b_1 h F(y0)

        def stage(j, c):
            yjm1, yjm2 = c
            one_minus, mu, nu, mus, gamma, c_prev = lax.dynamic_index_in_dim(coef, j, 0, False)
            k = terms.vf_prod(t0 + c_prev.astype(h.dtype) * h, yjm1, args, control)
            yj = _axpy((one_minus, y0), (mu, yjm1), (nu, yjm2), (mus, k), (gamma, k0))
            return yj, yjm1

        y1 = lax.fori_loop(2, s + 1, stage, (ystage1, y0))[0]

        f1 = terms.vf(t1, y1, args)
        k1 = terms.prod(f1, control)
        y_error = _axpy((12 / 15, y0), (-12 / 15, y1), (6 / 15, k0), (6 / 15, k1))
        dense_info = dict(y0=y0, y1=y1, k0=k0, k1=k1)
        rho = h_rho / jnp.where(abs_h > 0, abs_h, 1)
        state = RKCState(f1, v, rho, s, age, n_evals + s, n_jvps)
        return y1, y_error, dense_info, state, diffrax.RESULTS.successful
