"""PinnedHeun's exponential step against closed forms, and against its plain diffrax step."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo
from flowode._pinned_heun import StiffBlock, exponential_step


def _block(n=6, k=2, scale=None):
    U, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, k)))
    return StiffBlock(jnp.asarray(U), jnp.asarray([1.96, 0.3]), scale)


@pytest.mark.parametrize("scaled", [False, True])
def test_a_linear_field_in_the_block_is_stepped_exactly(x64, scaled):
    # dw/dt = A w with A = −S U diag(r) Uᵀ S⁻¹: one step is e^{A dt} w₀, for any dt. Heun's
    # factor on the mode at r dt = 1.96 would be 0.96, against e^−1.96 = 0.14.
    n = 6
    scale = jnp.linspace(0.5, 2.0, n) if scaled else None
    block = _block(n, scale=scale)
    S = np.diag(np.asarray(scale)) if scaled else np.eye(n)
    A = -S @ block.U @ np.diag(block.rates) @ block.U.T @ np.linalg.inv(S)
    w0 = jnp.asarray(np.random.default_rng(1).standard_normal(n))
    field = lambda y, stage: (jnp.asarray(A) @ y[0], jnp.zeros(1))
    for dt in (1.0, 0.5):
        y0 = (w0, jnp.zeros(1))
        y1, _, _ = exponential_step(field, y0, field(y0, None), block, jnp.asarray(dt))
        want = jax.scipy.linalg.expm(jnp.asarray(A) * dt) @ w0
        np.testing.assert_allclose(y1[0], want, rtol=1e-12, atol=1e-12)


def test_without_a_block_it_is_the_plain_step(x64):
    # Rates 0: the step is PinnedHeun.step (Heun, κ 0 / 1/dt then 2/dt), here through
    # diffrax, on a nonlinear field that reads the stage's κ.
    def vf(t, y, args):
        (stage,) = args
        return -(y**3) + stage.above - 0.5 * stage.below

    y0, dt = jnp.asarray([0.3, -1.2, 2.0]), 0.7
    term = diffrax.ODETerm(vf)
    want = fo.PinnedHeun().step(term, 0.0, dt, y0, (), None, False)[0]
    block = StiffBlock(jnp.eye(3)[:, :1], jnp.zeros(1), None)
    field = lambda y, stage: (vf(0.0, y[0], (stage,)),)
    f0 = field((y0,), fo.PinnedHeun.first_stage(jnp.asarray(dt)))
    got = exponential_step(field, (y0,), f0, block, jnp.asarray(dt))[0][0]
    np.testing.assert_allclose(got, want, rtol=1e-14)
