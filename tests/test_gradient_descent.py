import jax.numpy as jnp
import numpy as np

import flowode as fo


def test_gd_loss_on_quadratic_equals_closed_form(x64):
    lam = jnp.array([0.5, 3.0, 12.0, 19.0])
    w0 = jnp.array([1.0, -2.0, 0.5, 0.25])
    lr, steps = 0.1, 60
    ds = fo.simulate(
        fo.problems.quadratic(lam, w0, dtype=jnp.float64),
        lr=lr,
        steps=steps,
        flows=("gd",),
        eigs_at="both",
    )
    k = np.arange(steps + 1)[:, None]
    w = np.asarray(w0) * (1 - lr * np.asarray(lam)) ** k
    exact = 0.5 * np.sum(np.asarray(lam) * w**2, axis=1)
    np.testing.assert_allclose(ds.loss.sel(flow="gd"), exact, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ds.sharpness.sel(flow="gd"), 19.0, rtol=1e-10)
    # midpoint: (w_{k-1} + 2 w_k + w_{k+1}) / 4 has loss following the same closed form.
    m = 0.25 * (w[:-2] + 2 * w[1:-1] + w[2:])
    np.testing.assert_allclose(
        ds.loss.sel(flow="midpoint")[1:-1], 0.5 * np.sum(np.asarray(lam) * m**2, axis=1), rtol=1e-10
    )
    assert int(ds.n_grad.sel(flow="gd")) == steps


def test_gd_divergence_is_reported_not_raised(x64):
    # η·λ = 2.5: GD blows up geometrically (factor 1.5 per step) and overflows.
    ds = fo.simulate(
        fo.problems.quadratic([25.0], [1.0], dtype=jnp.float64), lr=0.1, steps=2000, flows=("gd",)
    )
    at = int(ds.diverged_at.sel(flow="gd"))
    assert 860 < at < 880  # where ½λw² first overflows float64
    loss = ds.loss.sel(flow="gd").values
    assert np.all(np.isfinite(loss[:at])) and not np.isfinite(loss[at])
    np.testing.assert_allclose(loss[:50], 12.5 * 2.25 ** np.arange(50), rtol=1e-10)
