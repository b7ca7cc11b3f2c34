import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo
from flowode._spectral import hvp, third_contraction


def _f(w, data=None):
    return jnp.sum(jnp.sin(w)) + 0.5 * jnp.sum(w**2) * jnp.sum(w[:2] ** 2) + 0.1 * jnp.sum(w**4)


def test_y_zero_is_invariant_and_rod_is_gradient_flow(x64):
    rod, lr = fo.RodFlow(), 0.3
    X = jnp.linspace(-1.0, 1.0, 5)
    dX, dY = rod.vector_field(_f, 0.0, (X, jnp.zeros(5)), lr, None)
    np.testing.assert_array_equal(dY, 0.0)
    np.testing.assert_allclose(dX, -lr * jax.grad(_f)(X), rtol=1e-14)
    # Integrated: rod flow from Y = 0 equals gradient flow.
    term = diffrax.ODETerm(lambda t, y, a: rod.vector_field(_f, t, y, lr, None))
    ctrl = diffrax.PIDController(rtol=1e-10, atol=1e-12)
    rod_sol = diffrax.diffeqsolve(
        term, diffrax.Tsit5(), 0.0, 20.0, None, (X, jnp.zeros(5)), stepsize_controller=ctrl
    )
    gf = fo.GradientFlow()
    gterm = diffrax.ODETerm(lambda t, y, a: gf.vector_field(_f, t, y, lr, None))
    gf_sol = diffrax.diffeqsolve(
        gterm, diffrax.Tsit5(), 0.0, 20.0, None, X, stepsize_controller=ctrl
    )
    np.testing.assert_array_equal(rod_sol.ys[1], 0.0)
    np.testing.assert_allclose(rod_sol.ys[0], gf_sol.ys, rtol=1e-8)


@pytest.mark.parametrize("offset", [0.06, -0.06])
def test_rod_growth_rate_is_lr_lambda_minus_two(x64, offset):
    lr = 0.1
    lam1 = (2.0 + offset) / lr
    p = fo.problems.quadratic([lam1, 3.0], [1.0, 1.0], dtype=jnp.float64)
    ds = fo.simulate(p, lr=lr, steps=60, flows=("rod",), eig_every=60)
    length = ds.rod_length.sel(flow="rod").values
    # After the fast mode (rate 0.3 - 2) has died out, ‖Y‖ = c·exp((ηλ₁ − 2)t).
    steps = np.arange(20, 61)
    rate = np.polyfit(steps, np.log(length[20:]), 1)[0]
    assert rate == pytest.approx(offset, abs=1e-3)
    assert (length[-1] > length[20]) == (offset > 0)
    # GD itself grows/decays along u1 at |1 − ηλ₁| per step, ≈ exp(ηλ₁ − 2).
    osc = ds.oscillation_u1.sel(flow="gd").values
    gd_rate = 0.5 * np.polyfit(steps, np.log(osc[20:]), 1)[0]
    assert gd_rate == pytest.approx(np.log(1 + offset), abs=1e-6)


def test_centre_velocity_small_y_expansion(x64):
    rod, lr = fo.RodFlow(), 0.2
    X = jnp.array([0.3, -0.2, 0.5, 0.1])
    direction = jnp.array([1.0, 0.5, -0.3, 0.2])

    def error(scale):
        Y = scale * direction
        dX, _ = rod.vector_field(_f, 0.0, (X, Y), lr, None)
        # −η[∇L(X) + ½∇(YᵀH(X)Y)]
        model = -lr * (jax.grad(_f)(X) + 0.5 * third_contraction(_f, X, Y, Y))
        return float(jnp.linalg.norm(dX - model))

    e1, e2 = error(1e-1), error(5e-2)
    assert e1 < 1e-3
    assert e1 / e2 == pytest.approx(16.0, rel=0.05)  # O(|Y|⁴)
    # And the Y velocity is (ηH − 2)Y to O(|Y|³).
    Y = 1e-3 * direction
    _, dY = rod.vector_field(_f, 0.0, (X, Y), lr, None)
    np.testing.assert_allclose(dY, lr * hvp(_f, X, Y) - 2 * Y, atol=1e-8)


def test_rod_tracks_gd_on_self_stabilising_quartic(x64):
    p = fo.problems.softening_quartic(dtype=jnp.float64)
    ds = fo.simulate(p, lr=1.0, steps=300, flows=("gradient", "rod"))
    gd_sharp = ds.sharpness.sel(flow="gd").values
    assert gd_sharp.max() > 2.0 and abs(gd_sharp[-50:].mean() - 2.0) < 0.15  # GD self-stabilises
    assert float(ds.distance_to_gd.sel(flow="rod").max()) < 0.1  # phase included
    assert float(ds.distance_to_gd.sel(flow="gradient")[-1]) > 1.0
    # The rod's predicted loss is GD's two-step average loss.
    gd_loss = ds.loss.sel(flow="gd").values
    avg = 0.5 * (gd_loss[-21:-1] + gd_loss[-20:])
    np.testing.assert_allclose(ds.predicted_loss.sel(flow="rod")[-20:], avg, atol=2e-3)


def test_rod_on_mlp_past_eos():
    p = fo.problems.mlp_regression(seed=2)
    ds = fo.simulate(p, lr=0.1, steps=1000, flows=("gradient", "rod"), eig_every=20)
    gd_sharp = 0.1 * ds.sharpness.sel(flow="gd").sel(step=slice(900, 1000)).dropna("step")
    assert abs(float(gd_sharp.mean()) - 2.0) < 0.25
    d = ds.distance_to_gd.isel(step=-1)
    assert float(d.sel(flow="rod")) <= 0.1 * float(d.sel(flow="gradient"))
    gd_mean = float(ds.loss.sel(flow="gd")[-20:].mean())
    assert float(ds.predicted_loss.sel(flow="rod")[-1]) == pytest.approx(gd_mean, rel=0.1)


def test_diverging_rod_is_reported(x64):
    # Hardening quartic (b > 0) started past the threshold: GD and the rod blow up.
    p = fo.problems.softening_quartic(c=0.0, s0=2.3, b=1.0, w0=(0.0, 0.5), dtype=jnp.float64)
    ds = fo.simulate(p, lr=1.0, steps=200, flows=("rod",))
    at = int(ds.diverged_at.sel(flow="rod"))
    assert 0 < at < 200
    assert np.all(np.isfinite(ds.rod_length.sel(flow="rod")[:at]))
    assert int(ds.diverged_at.sel(flow="gd")) > 0
