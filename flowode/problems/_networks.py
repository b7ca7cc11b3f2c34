"""Small networks on seeded synthetic data."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._problem import Problem


def gaussian_regression(
    n: int = 128,
    d_in: int = 8,
    d_out: int = 1,
    *,
    target_scale: float = 2.0,
    seed: int = 0,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """Inputs x ~ N(0, I) and independent targets y ~ N(0, target_scale²), seeded.

    Fitting random targets needs large weights, which is what makes the sharpness rise
    (progressive sharpening) until GD reaches the edge of stability.
    """
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, d_in), dtype=dtype)
    y = target_scale * jax.random.normal(ky, (n, d_out), dtype=dtype)
    return x, y


def mlp_regression(
    width: int = 16,
    depth: int = 2,
    n: int = 128,
    d_in: int = 8,
    d_out: int = 1,
    *,
    seed: int = 0,
    dtype=jnp.float32,
) -> Problem:
    """A swish MLP d_in-width-…-width-d_out fit by MSE to `gaussian_regression` data.

    The default (8-16-16-1, 433 parameters, 128 points) reaches the edge of stability
    at η = 0.1 within 1000 steps.
    """
    km = jax.random.fold_in(jax.random.key(seed), 1)
    x, y = gaussian_regression(n, d_in, d_out, seed=seed, dtype=dtype)
    model = eqx.nn.MLP(d_in, d_out, width, depth, activation=jax.nn.swish, key=km)
    model = jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model
    )

    def loss(model, data):
        x, y = data
        pred = jax.vmap(model)(x)
        return 0.5 * jnp.mean(jnp.sum((pred - y) ** 2, axis=-1))

    name = f"mlp-{d_in}-{'-'.join([str(width)] * depth)}-{d_out}"
    return Problem(loss, model, name=name, data=(x, y))
