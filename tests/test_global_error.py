import diffrax
import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo


def _stiff_quadratic():
    lam = jnp.array([0.05, 0.5, 2.0, 7.0, 20.0, 60.0, 150.0, 300.0, 500.0])
    w0 = jnp.linspace(1.0, -1.0, lam.size)
    return fo.problems.quadratic(lam, w0, dtype=jnp.float64), np.asarray(lam), np.asarray(w0)


# GD itself diverges here (ηλ up to 50): only the flows are checked.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:gd. the state diverged")
@pytest.mark.parametrize("rtol", [1e-5, 1e-4])
def test_estimate_equals_the_true_global_error_of_gradient_flow(x64, rtol):
    # Against the closed form: the estimate is the flow's own error, not a bound on it.
    lr, steps = 0.1, 200
    p, lam, w0 = _stiff_quadratic()
    flow = fo.GradientFlow(stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol / 10))
    ds = fo.simulate(
        p, lr=lr, steps=steps, flows=(fo.GlobalErrorEstimate(flow),), eig_every=steps,
        save_params=True,
    )  # fmt: skip
    exact = w0 * np.exp(-lr * lam * np.arange(steps + 1)[:, None])
    got = ds.params.sel(flow="gradient").values
    true = np.linalg.norm(got - exact, axis=1) / np.linalg.norm(exact, axis=1)
    estimate = ds.global_error.sel(flow="gradient").values
    assert estimate[0] == 0 and true[20:].min() > 0.05 * rtol  # a measurable error ...
    np.testing.assert_allclose(estimate[20:], true[20:], rtol=0.15)  # ... and is measured
    # The flow's own trajectory is the plain flow's, bit for bit; the twin's calls count.
    plain = fo.simulate(p, lr=lr, steps=steps, flows=(flow,), eig_every=steps, save_params=True)
    np.testing.assert_array_equal(got, plain.params.sel(flow="gradient").values)
    twin_share = int(ds.n_grad.sel(flow="gradient")) / int(plain.n_grad.sel(flow="gradient"))
    assert 2 < twin_share < 5


@pytest.mark.slow
def test_rod_estimate_against_a_tight_independent_solve(x64):
    # The rod past its threshold on the softening quartic (it settles on GD's orbit), its
    # error measured against Tsit5 at rtol 1e-11: the estimate within a third of it.
    p, steps = fo.problems.softening_quartic(dtype=jnp.float64), 150
    kw = dict(lr=1.0, steps=steps, eig_every=steps, save_params=True)
    ds = fo.simulate(p, flows=(fo.GlobalErrorEstimate(fo.RodFlow()),), **kw)
    tight = fo.RodFlow(
        solver=diffrax.Tsit5(),
        stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-13),
    )
    ref = fo.simulate(p, flows=(tight,), **kw).params.sel(flow="rod").values
    got = ds.params.sel(flow="rod").values
    true = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    estimate = ds.global_error.sel(flow="rod").values
    assert true[-1] > 1e-7  # a measurable error
    # Pointwise the error's components change sign; compare the largest error so far.
    ratio = np.maximum.accumulate(estimate)[10:] / np.maximum.accumulate(true)[10:]
    assert 0.75 < ratio.min() and ratio.max() < 1.33, (ratio.min(), ratio.max())
    assert float(ds.rod_length.sel(flow="rod")[-1]) > 0.1  # at the edge of stability


@pytest.mark.filterwarnings("ignore:gd. the state diverged")
def test_tol_exceeded_is_one_warning_that_names_the_flow(x64):
    p, _, _ = _stiff_quadratic()
    flow = fo.GlobalErrorEstimate(fo.GradientFlow(), tol=1e-5)
    with pytest.warns(UserWarning, match=r"gradient: its estimated global error exceeds tol"):
        fo.simulate(p, lr=0.1, steps=100, flows=(flow,), eig_every=100)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(flow="rod"), "flow must be a flowode flow"),
        (dict(flow=fo.CentralFlow()), "needs one"),
        (dict(flow=fo.RodFlow(), factor=1.0), "factor must be a finite number > 1"),
        (dict(flow=fo.RodFlow(), tol=0.0), "tol must be a finite number > 0"),
    ],
)
def test_bad_input_is_one_sentence(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        fo.GlobalErrorEstimate(**kwargs)


def test_a_twin_below_the_dtypes_resolution_says_so():
    # float32: gradient flow's rtol + atol (1.1e-5) ÷ 100 is below 4 ulp.
    p = fo.problems.quadratic(jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0]))
    flow = fo.GlobalErrorEstimate(fo.GradientFlow(), factor=100)
    with pytest.raises(ValueError, match=r"factor=100.*float32.*smaller factor"):
        fo.simulate(p, lr=0.1, steps=5, flows=(flow,))
