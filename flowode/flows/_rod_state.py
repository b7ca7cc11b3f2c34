"""A vector carried as a log-amplitude and a unit direction, with a floor at the dtype's resolution.

Rod flow's half-length Y (and Edge Flow's magnitudes along its eigen-directions)
decays like exp(−∫(2 − ηS) dt) below the edge of stability: far below any dtype's
resolution long before the onset. Stored as a vector it underflows, and once it is under
half an ulp of the centre X, X ± Y rounds to X and its direction is lost for good. Stored
as Y = e^a u with |u| = 1, neither happens: a is an ordinary number and u keeps its
direction at any size. These helpers hold what such flows share: the growth rate of a,
its smooth floor, the probe distance at which a difference of gradients still resolves
a Hessian-vector product, the start from a vector, and the pair of gradients at the rod's
two ends.
"""

import math
from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree, Scalar

AmplitudeRate = Literal["map", "linear"]


def unit(u: Float[Array, " n"]) -> tuple[Float[Array, " n"], Scalar]:
    """u/|u| and |u|. The field normalises u before use, so solver drift in |u| is harmless."""
    norm = jnp.linalg.norm(u)
    return u / norm, norm


def tolerance_scales(
    y, direction_factor: float = 1.0
) -> tuple[tuple[Scalar, Scalar, Scalar], tuple[bool, bool, bool]]:
    """Tolerance scales of a state (X, a, U) with Y = U e^a (`AbstractFlow.error_scale`).

    X at the iterate's RMS √(‖X‖² + |Y|²)/√n, where GD itself rounds (past the threshold
    |Y| ≫ |X| and the pair's sum holds X only to ε|Y|); U at its own RMS times
    `direction_factor` (its tolerance that many times X's); the log-amplitudes a held to
    atol + rtol whatever their size (their error is relative).
    """
    X, a, U = y
    tiny = jnp.sqrt(jnp.finfo(X.dtype).tiny)
    x_scale = jnp.sqrt(jnp.mean(X**2) + jnp.sum(jnp.exp(2 * a)) / X.size)
    u_scale = jnp.sqrt(jnp.mean(U**2))
    u_scale = direction_factor * jnp.maximum(u_scale, tiny)
    scales = (jnp.maximum(x_scale, tiny), jnp.ones((), X.dtype), u_scale)
    return scales, (True, False, True)


def pair_grads(
    f, X: Float[Array, " n"], d: Float[Array, " n"], data: PyTree
) -> Float[Array, "2 n"]:
    """∇L(X + d) and ∇L(X − d) as one vmapped batch: (2, n)."""
    return _ends_grads(f, data)(jnp.stack([X + d, X - d]))


def linearised_pair_grads(f, X: Float[Array, " n"], d: Float[Array, " n"], data: PyTree):
    """`pair_grads` and its linearisation in the two ends: T ↦ (H₊T₀, H₋T₁), T of shape (2, n).

    One tangent per end, so that a pair of HVPs costs one batched JVP (two HVPs).
    """
    return jax.linearize(_ends_grads(f, data), jnp.stack([X + d, X - d]))


def _ends_grads(f, data: PyTree):
    """E ↦ the gradients at the rows of E (2, n), as one vmapped batch."""
    return lambda E: jax.vmap(jax.grad(f), in_axes=(0, None))(E, data)


def corrected_centre_velocity(
    lr: Scalar, G: Float[Array, "2 n"], ends_jvp, Ydot: Float[Array, " n"]
) -> Float[Array, " n"]:
    """Ẋ = F − ½(∂_X F·F + ∂_Y F·Ẏ): the centre's map step F = −(η/2)(g₊ + g₋) with its
    O(η²) backward-error term (derived in `rod_flow.py`).

    With s = g₊ + g₋ this is −(η/2)s − (η²/8)(H₊ + H₋)s + (η/4)(H₊ − H₋)Ẏ
    = −(η/2)s − (η/8)[H₊(ηs − 2Ẏ) + H₋(ηs + 2Ẏ)]: one tangent per end, so two HVPs
    through `ends_jvp` (from `linearised_pair_grads`), not four.
    """
    s = G[0] + G[1]  # (n,)
    J = ends_jvp(jnp.stack([lr * s - 2 * Ydot, lr * s + 2 * Ydot]))  # (2 ends, n)
    return -0.5 * lr * s - (lr / 8) * (J[0] + J[1])


def growth_rate(r: Scalar, kind: AmplitudeRate) -> Scalar:
    """d(log-amplitude)/dt from the linear rate r = uᵀ(ηH̃ − 2)u of the rod's Y.

    "linear": r itself, the first-order rod (ẏ = ry).
    "map": ln(1 + r), the exact rate per step of GD's period-2 map along an eigenvector,
    whose multiplier is |1 − ηλ| = 1 + r. Both vanish at r = 0, so the threshold ηλ = 2 is
    the same. Below r₀ = −½ (ηλ < 1.5 along u: a multiplier under ½, and below r = −1 no
    oscillation at all) only the floor matters, and ln(1 + r) is continued C¹ by
    ln(1 + r₀) − c·tanh((r₀ − r)/(c(1 + r₀))), c = ½, which saturates at ln ½ − ½ ≈ −1.19.
    A continuation that kept falling (linearly, to −3.69 at r = −2, until 2026-12-01)
    made the amplitude's relaxation onto its floor, at rate |ȧ|, the rod's stiffest mode:
    RKC2's power iteration finds that single coordinate slowly, and the rod took twice the
    steps before the onset (benchmarks/README.md, "Rod flow: solver choice").
    """
    if kind == "linear":
        return r
    r0, c = -0.5, 0.5
    below = jnp.log1p(r0) - c * jnp.tanh((r0 - r) / (c * (1 + r0)))
    return jnp.where(r > r0, jnp.log1p(jnp.maximum(r, r0)), below)


def floored_rate(rate: Scalar, a: Scalar, a_floor: Scalar | None) -> Scalar:
    """ȧ with a smooth floor at a_floor: ȧ = ρ + max(−ρ, 0)·φ(a_floor − a).

    φ(z) = e^z for z ≤ 0 and 1 + z above (C¹). Where the amplitude decays (ρ < 0), ȧ =
    ρ(1 − e^{−(a − a_floor)}) above the floor: it settles on the floor instead of
    vanishing, and is pushed back up at a rate |ρ|·(a_floor − a) if it falls below. Where it
    grows (ρ > 0) the floor does nothing: growth starts from the floor at exactly the
    model's rate. In terms of |Y| = e^a, d|Y|/dt = ρ|Y| + max(−ρ, 0)·|Y_floor| near the
    floor: a source that mirrors GD's rounding. No switch, so adaptive solvers do not chatter.
    """
    if a_floor is None:
        return rate
    z = a_floor - a
    phi = jnp.where(z <= 0, jnp.exp(jnp.minimum(z, 0)), 1 + z)
    return rate + jnp.maximum(-rate, 0) * phi


def log_floor(rel_floor: Scalar, X: Float[Array, " n"], amplitude: Scalar) -> Scalar:
    """log of the floor rel_floor·‖w‖, w = X ± Y the iterate (GD rounds at the iterate's scale)."""
    tiny = jnp.finfo(X.dtype).tiny
    scale = jnp.sqrt(jnp.sum(X**2) + amplitude**2 + tiny)
    return jnp.log(rel_floor) + jnp.log(scale)


def probe_distance(amplitude: Scalar, X: Float[Array, " n"]) -> Scalar:
    """Where to take the pair of gradients along u: smoothmax(|Y|, √ε·‖X‖).

    (∇L(X + δu) − ∇L(X − δu))/(2δ) is H(X)u with truncation error O(δ²) and rounding
    error O(ε/δ) relative, both about ε at δ = √ε·‖X‖ (√ε: 1.5e-8 in float64, 3.5e-4 in
    float32). Above it the pair is the rod's own (δ ≈ |Y|); below it the pair is a
    central difference that resolves the HVP at the same cost, with no branch.
    """
    eps = jnp.finfo(X.dtype).eps
    tiny = jnp.finfo(X.dtype).tiny
    d_min = jnp.sqrt(eps) * (jnp.linalg.norm(X) + jnp.sqrt(tiny))
    return jnp.sqrt(amplitude**2 + d_min**2)


def from_vector(
    Y: Float[Array, " n"], fallback: Float[Array, " n"], log_min: Scalar
) -> tuple[Scalar, Float[Array, " n"]]:
    """(a, u) with Y = e^a u; where |Y| = 0, u = fallback/|fallback| and a = log_min."""
    norm = jnp.linalg.norm(Y)
    safe = norm > 0
    u = jnp.where(safe, Y / jnp.where(safe, norm, 1), fallback / jnp.linalg.norm(fallback))
    a = jnp.where(safe, jnp.log(jnp.where(safe, norm, 1)), log_min)
    return a, u


def check_options(owner: str, floor, amplitude_rate, modified_equation):
    """One sentence for each bad option that rod and edge flow share."""
    if floor is not None:
        ok = isinstance(floor, int | float) and not isinstance(floor, bool)
        if not ok or not math.isfinite(floor) or floor < 0:
            raise ValueError(
                f"{owner}: floor must be a finite number >= 0 (relative to the iterate's "
                f"norm; None for the dtype's resolution, 0 for none), got {floor!r}."
            )
    if amplitude_rate not in ("map", "linear"):
        raise ValueError(
            f"{owner}: amplitude_rate must be 'map' or 'linear', got {amplitude_rate!r}."
        )
    if not isinstance(modified_equation, bool):
        raise TypeError(
            f"{owner}: modified_equation must be True or False, got {modified_equation!r}."
        )


def default_floor(X: Float[Array, " n"]) -> Scalar:
    """ε/√n: GD's rounding along one direction, relative to ‖w‖.

    Each GD step rounds every coordinate of w at about ε|wᵢ|, with signs that do not
    line up; projected on a unit direction u that spreads over the n coordinates, those
    errors add to about ε‖w‖/√n, the kick GD's oscillation starts from. The whole
    rounding, ε‖w‖, put the rod's onset 6-13 steps before GD's on MLP-433 (seeds 0-3);
    ε‖w‖/√n puts it 2-5 steps before in float32 and 1-3 in float64, with the centre at
    step 1000 unchanged to ±2% (benchmarks/README.md, "Rod flow's onset").
    """
    return jnp.finfo(X.dtype).eps / jnp.sqrt(jnp.asarray(X.size, X.dtype))


def option_floor(floor, X: Float[Array, " n"], amplitude: Scalar) -> Scalar | None:
    """The log-floor of a flow's `floor` option: None (0: no floor), else ε/√n or its value."""
    if floor == 0:
        return None
    rel = default_floor(X) if floor is None else jnp.asarray(floor, X.dtype)
    return log_floor(rel, X, amplitude)
