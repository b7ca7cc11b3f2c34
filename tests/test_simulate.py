import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import flowode as fo


@pytest.fixture(scope="module")
def toy_ds():
    return fo.simulate(
        fo.problems.softening_quartic(),
        lr=1.0,
        steps=40,
        flows=("gd", "gradient"),
        eig_k=2,
        save_params=True,
    )


def test_dataset_layout(toy_ds):
    ds = toy_ds
    assert list(ds.flow.values) == ["gd", "midpoint", "gradient"]
    assert ds.sizes["step"] == 41 and ds.sizes["eig"] == 2 and ds.sizes["param"] == 2
    for name in (
        "loss",
        "predicted_loss",
        "sharpness",
        "grad_norm",
        "distance_to_gd",
        "center_distance_to_gd",
    ):
        assert ds[name].dims == ("flow", "step"), name
    for name in ("n_grad", "n_hvp", "n_third", "wall_time", "compile_time", "diverged_at"):
        assert ds[name].dims == ("flow",), name
    assert ds.eigs.dims == ("flow", "step", "eig")
    assert ds.params.dims == ("flow", "step", "param")
    for key in (
        "lr",
        "steps",
        "problem",
        "dtype",
        "flowode_version",
        "gradient_solver",
        "gradient_rtol",
    ):
        assert key in ds.attrs, key
    # Distances are consistent with the saved parameters.
    gd = ds.params.sel(flow="gd")
    d = np.linalg.norm(ds.params.sel(flow="gradient") - gd, axis=-1)
    np.testing.assert_allclose(ds.distance_to_gd.sel(flow="gradient"), d, rtol=1e-5)
    assert float(ds.distance_to_gd.sel(flow="gd").max()) == 0.0
    np.testing.assert_array_equal(ds.sharpness, ds.eigs.isel(eig=0))


def test_netcdf_roundtrip(toy_ds, tmp_path):
    path = tmp_path / "run.nc"
    fo.save(toy_ds, path)
    xr.testing.assert_identical(fo.load(path), toy_ds)
    toy_ds.to_netcdf(tmp_path / "plain.nc", engine="h5netcdf")
    xr.testing.assert_identical(xr.load_dataset(tmp_path / "plain.nc", engine="h5netcdf"), toy_ds)


def test_second_simulate_does_not_recompile():
    p = fo.problems.quadratic([1.0, 4.0])
    first = fo.simulate(p, lr=0.1, steps=30)
    second = fo.simulate(p, lr=0.2, steps=30)  # a new lr is a traced argument
    assert float(first.compile_time.sel(flow="gradient")) > 0
    assert float(second.compile_time.max()) == 0.0


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), "fast"])
def test_bad_lr(lr):
    with pytest.raises(ValueError, match="lr must be a positive"):
        fo.simulate(fo.problems.quadratic(), lr=lr, steps=10)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        fo.simulate(fo.problems.quadratic(), lr=0.1, steps=steps)


def test_unknown_flow_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown flow 'sgd'.*gd.*gradient"):
        fo.simulate(fo.problems.quadratic(), lr=0.1, steps=10, flows=("gd", "sgd"))


def test_diverging_flow_is_reported(x64):
    # η·λ = 2.5 on a quadratic: GD diverges, gradient flow converges.
    ds = fo.simulate(fo.problems.quadratic([25.0], dtype=jnp.float64), lr=0.1, steps=900)
    assert int(ds.diverged_at.sel(flow="gd")) > 0
    assert int(ds.diverged_at.sel(flow="gradient")) == -1


def test_gradient_flow_blowup_stops_early_and_keeps_prefix(x64):
    # L = -w^4/4 - w: gradient flow reaches infinity in finite time.
    p = fo.Problem(lambda w: -0.25 * jnp.sum(w**4) - jnp.sum(w), jnp.array([1.0]))
    ds = fo.simulate(p, lr=0.1, steps=50, flows=("gradient",))
    at = int(ds.diverged_at.sel(flow="gradient"))
    assert 0 < at < 50
    assert np.all(np.isfinite(ds.loss.sel(flow="gradient")[:at]))
    assert ds.attrs["gradient_status"] == "diverged"


def test_solver_failure_is_explained_and_keeps_the_prefix(x64):
    p = fo.problems.quadratic([1.0, 300.0], dtype=jnp.float64)
    stiff = fo.GradientFlow(
        solver=__import__("diffrax").Tsit5(),
        stepsize_controller=__import__("diffrax").PIDController(rtol=1e-10, atol=1e-12),
        max_steps_per_gd_step=1,
    )
    with pytest.warns(UserWarning, match="step limit.*Raise max_steps_per_gd_step"):
        ds = fo.simulate(p, lr=0.1, steps=2000, flows=(stiff,), eig_every=100)
    assert ds.attrs["gradient_status"] == "max_steps_reached"
    g = ds.sel(flow="gradient")
    stop = int(g.diverged_at)
    assert 0 < stop < 2000
    assert np.isfinite(g.loss[:stop]).all()
    # What was computed is right: gradient flow on a quadratic has a closed form.
    t = np.arange(stop)
    want = 0.5 * (np.exp(-0.2 * t) + 300 * np.exp(-0.1 * 300 * 2 * t))
    np.testing.assert_allclose(g.loss[:stop], want, rtol=1e-6, atol=1e-12)


def test_unconverged_sdcp_is_reported():
    from flowode._simulate import _report

    ds = fo.simulate(fo.problems.softening_quartic(), lr=1.0, steps=30, flows=("central",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converged run warns of nothing
        _report([fo.CentralFlow()], ds)
    ds["sdcp_residual"].loc[dict(flow="central", step=[10, 11])] = 0.2
    with pytest.warns(UserWarning, match="did not converge at 2 steps.*2.0e-01"):
        _report([fo.CentralFlow()], ds)
    with pytest.raises(RuntimeError, match="did not converge at 2 steps"):
        _report([fo.CentralFlow()], ds, throw=True)


def test_eigs_at_picks_where_gd_is_observed_and_bad_settings_are_named():
    p = fo.problems.mlp_regression(width=8, n=32)
    runs = {}
    for where, seen in (("midpoint", [False, True]), ("iterate", [True, False]), ("both", [1, 1])):
        ds = fo.simulate(p, lr=0.1, steps=6, flows=("gd",), eigs_at=where, progress=False)
        got = [bool(np.isfinite(ds.sharpness.sel(flow=f)).all()) for f in ("gd", "midpoint")]
        assert got == [bool(s) for s in seen], where
        assert [int(ds.n_hvp_observe.sel(flow=f)) > 0 for f in ("gd", "midpoint")] == got
        assert ds.attrs["eigs_at"] == where and ds.attrs["eig_tol"] == 1e-2
        runs[where] = ds
    # Each point is observed on its own: observing both changes neither.
    for f in ("gd", "midpoint"):
        alone = runs["iterate" if f == "gd" else "midpoint"]
        np.testing.assert_allclose(runs["both"].eigs.sel(flow=f), alone.eigs.sel(flow=f), 1e-6)
    with pytest.raises(ValueError, match="eigs_at must be one of 'midpoint'"):
        fo.simulate(p, lr=0.1, steps=2, eigs_at="centre")
    with pytest.raises(ValueError, match="eig_tol must be a number"):
        fo.simulate(p, lr=0.1, steps=2, eig_tol=0.0)
