"""flowode's step-by-step integrator (`_integrate`): what diffrax's loop would not do."""

import diffrax as dfx
import jax.numpy as jnp
import numpy as np

from flowode import _integrate
from flowode._codes import RESULTS


def test_an_overflowing_trial_step_is_rejected_not_propagated():
    # y' = exp(y), y(0) = 0: y(½) = ln 2. A first step of 100 overflows Heun's predictor
    # (exp(100) = inf in float32) and its error estimate is inf/inf = NaN; diffrax's PID
    # would take that NaN as the next step size, and every step after it would fail.
    term = dfx.ODETerm(lambda t, y, args: jnp.exp(y))
    solver, ctrl = dfx.Heun(), dfx.PIDController(rtol=1e-4, atol=1e-6)
    y0 = jnp.zeros((), jnp.float32)
    carry, _ = _integrate.start(solver, ctrl, term, y0, None, dt0=100.0)
    carry, y, stats, result = _integrate.integrate(
        solver, ctrl, term, carry, 0.5, None, max_steps=10_000
    )
    assert result == RESULTS.successful
    assert np.isfinite(float(carry.dt)) and float(carry.dt) > 0
    np.testing.assert_allclose(float(y), np.log(2.0), rtol=1e-3)
    assert int(stats.n_rejected) >= 3  # 100 → 25 → 6.25 → ~1.6: still overflowing or rejected
    assert int(stats.n_steps) < 1000
