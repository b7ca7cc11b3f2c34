"""Low-dimensional problems with known behaviour at the edge of stability."""

import jax.numpy as jnp
from jaxtyping import ArrayLike

from .._problem import Problem


# One module-level loss per family, with its constants passed as data: problems of the
# same family and shapes share compiled programs whatever their values.
def _quadratic_loss(w, lam):
    return 0.5 * jnp.sum(lam * w**2)


def _quartic_loss(w, p):
    c, s0, a, b = p
    u, v = w[0], w[1]
    return -c * u + 0.5 * (s0 + a * u) * v**2 + 0.25 * b * v**4


def _factorisation_loss(w):
    return 0.5 * (w[0] * w[1] - 1.0) ** 2


def quadratic(
    eigenvalues: ArrayLike = (1.0, 5.0, 10.0), w0: ArrayLike | None = None, *, dtype=jnp.float32
) -> Problem:
    """L(w) = ½ Σ λ_i w_i²: GD and gradient flow have closed forms along each axis."""
    lam = jnp.asarray(eigenvalues, dtype=dtype)
    w0 = jnp.ones_like(lam) if w0 is None else jnp.asarray(w0, dtype=dtype)
    if w0.shape != lam.shape:
        raise ValueError(f"quadratic: w0 has shape {w0.shape}, eigenvalues {lam.shape}.")
    return Problem(_quadratic_loss, w0, name="quadratic", data=lam)


def softening_quartic(
    c: float = 0.01,
    s0: float = 1.9,
    a: float = 1.0,
    b: float = -3.0,
    w0: ArrayLike = (0.0, 0.1),
    *,
    dtype=jnp.float32,
) -> Problem:
    """Self-stabilisation toy L(u, v) = −c·u + ½(s₀ + a·u)v² + ¼·b·v⁴ (b < 0: softening).

    The sharpness along v is s₀ + a·u; the drift −c·u raises it until GD reaches 2/η.
    There GD oscillates in v, and the ½·a·v² term pushes u (and the sharpness) back:
    GD settles near ηS = 2 + 2η|b|c/a with v² ≈ 2c/a, while gradient flow sharpens on.
    With b > 0 (hardening) GD diverges instead once ηS > 2.
    """
    params = jnp.asarray([c, s0, a, b], dtype=dtype)
    return Problem(_quartic_loss, jnp.asarray(w0, dtype=dtype), name="quartic", data=params)


def factorisation(w0: ArrayLike = (3.0, 0.1), *, dtype=jnp.float32) -> Problem:
    """Scalar factorisation L(a, b) = ½(ab − 1)²; on the minima ab = 1 the sharpness is a² + b²."""
    return Problem(_factorisation_loss, jnp.asarray(w0, dtype=dtype), name="factorisation")
