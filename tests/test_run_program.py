"""The run program: chunk invariance, no recompiles for new values, result codes, interrupts."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo

TIMES = ("wall_time", "compile_time")
FLOWS = ("gd", "gradient", "rod", "central")


@pytest.mark.slow
def test_results_do_not_depend_on_chunk(x64):
    p = fo.problems.mlp_regression(dtype=jnp.float64)
    kw = dict(lr=0.5, steps=120, flows=("gd", "rod", "central"), eig_k=2)
    short = fo.simulate(p, chunk=37, **kw)
    whole = fo.simulate(p, chunk=1000, **kw)
    # The run reaches the edge of stability, so this is a real test of the carried state.
    assert abs(0.5 * float(whole.sharpness.sel(flow="central")[-1]) - 2) < 0.01
    for name, var in whole.data_vars.items():
        if name in TIMES:
            continue
        np.testing.assert_allclose(
            short[name].values, var.values, rtol=1e-10, atol=1e-12, err_msg=name
        )


def test_new_seed_data_lr_and_w0_reuse_the_compiled_program():
    # The first run is one chunk; the second, three. So a carry whose type changed after
    # a chunk (a Python leaf become an array) would compile the chunk program again.
    kw = dict(flows=("gd", "rod"), chunk=10)
    first = fo.simulate(fo.problems.mlp_regression(seed=10), lr=0.1, steps=10, **kw)
    second = fo.simulate(fo.problems.mlp_regression(seed=11), lr=0.07, steps=30, **kw)
    assert float(first.compile_time[0]) > 0
    assert float(second.compile_time.max()) == 0.0
    # ... and it computed something different: the seed is really a new problem.
    assert float(first.loss.sel(flow="gd")[-1]) != float(second.loss.sel(flow="gd")[-1])


def test_observed_sharpness_matches_a_dense_eigensolve():
    p = fo.problems.mlp_regression(seed=3)
    ds = fo.simulate(p, lr=0.1, steps=600, flows=("gd",), eig_k=2, eigs_at="both", save_params=True)
    H = jax.jit(jax.hessian(p.flat_loss))
    for step in (0, 150, 400, 599, 600):
        for label in ("gd", "midpoint"):
            w = jnp.asarray(ds.params.sel(flow=label, step=step).values)
            want = np.linalg.eigvalsh(np.asarray(H(w, p.data), np.float64))[::-1][:2]
            got = ds.eigs.sel(flow=label, step=step).values
            np.testing.assert_allclose(got, want, rtol=5e-4, err_msg=f"{label} step {step}")
    # The observer is costed apart from the dynamics: at least the check of its 2 pairs
    # per step, at most about 3k HVPs per step, and it rarely needs a full solve.
    for label in ("gd", "midpoint"):
        obs = ds.sel(flow=label)
        assert int(obs.n_hvp) == 0 and 2 * 601 <= int(obs.n_hvp_observe) <= 3.5 * 2 * 601
        assert int(obs.n_eig_fallback) <= 0.02 * 601


def test_eig_every_thins_the_observation():
    p = fo.problems.mlp_regression()
    ds = fo.simulate(p, lr=0.1, steps=100, flows=("gd",), eig_every=20, eigs_at="iterate")
    sharp = ds.sharpness.sel(flow="gd").values
    assert np.isfinite(sharp[::20]).all() and np.isnan(sharp[1::20]).all()


def test_sdcp_without_solution_is_a_named_result():
    # A quadratic above 2/η: central flow's SDCP has no solution (∇S = 0).
    p = fo.problems.quadratic([25.0, 1.0])
    with pytest.warns(UserWarning, match="SDCP has no solution"):
        ds = fo.simulate(p, lr=0.1, steps=20, flows=("central",))
    assert ds.attrs["central_status"] == "sdcp_no_solution"
    assert int(ds.diverged_at.sel(flow="central")) >= 0
    with pytest.raises(RuntimeError, match="SDCP has no solution"):
        fo.simulate(p, lr=0.1, steps=20, flows=("central",), throw=True)


def test_ctrl_c_returns_the_completed_chunks():
    p = fo.problems.softening_quartic()

    def interrupt(done, steps):
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted after step 20 of 100"):
        ds = fo.simulate(p, lr=1.0, steps=100, chunk=20, progress=interrupt)
    assert ds.sizes["step"] == 21 and ds.attrs["completed_steps"] == 20
    direct = fo.simulate(p, lr=1.0, steps=20)
    np.testing.assert_array_equal(ds.loss.values, direct.loss.values)


def test_bad_inputs_get_one_clear_sentence():
    with pytest.raises(ValueError, match="eig_k = 5 is more eigenvalues than the problem has"):
        fo.simulate(fo.problems.quadratic([1.0, 2.0]), lr=0.1, steps=5, eig_k=5)
    with pytest.raises(ValueError, match="bfloat16; flowode runs in float32 or float64"):
        fo.Problem(lambda w: jnp.sum(w**2), jnp.ones(3, jnp.bfloat16))


@pytest.mark.slow
def test_programs_are_traced_at_the_requested_matmul_precision(monkeypatch):
    # GPUs compute float32 matmuls in TF32 unless told otherwise: simulate traces its
    # programs under a scoped jax.default_matmul_precision, "highest" by default, and
    # leaves the caller's own setting as it was.
    from flowode import _runner

    seen = []
    for name in ("start_run", "run_chunk"):
        real = getattr(_runner, name)

        def spy(*args, real=real, name=name):
            seen.append((name, jax.config.jax_default_matmul_precision))
            return real(*args)

        monkeypatch.setattr(_runner, name, spy)
    p = fo.problems.softening_quartic()
    with jax.default_matmul_precision("default"):  # the caller's own setting: TF32 on GPUs
        fo.simulate(p, lr=1.0, steps=5, chunk=2)
        assert jax.config.jax_default_matmul_precision == "default"
    assert seen == [("start_run", "highest")] + [("run_chunk", "highest")] * 3
    seen.clear()
    before = jax.config.jax_default_matmul_precision
    fo.simulate(p, lr=1.0, steps=2, precision="default")
    assert {s for _, s in seen} == {"default"}
    assert jax.config.jax_default_matmul_precision == before
    # (what the setting does to a traced matmul)
    with jax.default_matmul_precision("highest"):
        text = jax.jit(lambda a: a @ a).lower(jnp.ones((2, 2))).as_text()
    assert "precision = [HIGHEST, HIGHEST]" in text
    with pytest.raises(ValueError, match="precision must be one of 'highest', 'high'"):
        fo.simulate(p, lr=1.0, steps=2, precision="tf32")


@pytest.mark.slow
def test_a_successful_run_warns_of_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = fo.simulate(fo.problems.softening_quartic(), lr=1.0, steps=60, flows=FLOWS)
    for label in ("gd", "gradient", "rod", "central"):
        assert ds.attrs[f"{label}_status"] == "successful"


def test_every_variable_is_declared_once_in_the_schema():
    # (the same run as above: its program is compiled already)
    from flowode import _results

    ds = fo.simulate(fo.problems.softening_quartic(), lr=1.0, steps=60, flows=FLOWS)
    assert {"loss", "eigs", "sigma", "rod_length", "n_grad"} <= set(ds.data_vars)
    for name, var in ds.data_vars.items():
        spec = _results.SCHEMA[name]
        assert var.dims == ("flow", *spec.dims), name
        assert var.attrs["description"] == spec.description
        assert var.dtype == (np.int64 if spec.kind == "int" else np.float64), name
    with pytest.raises(KeyError, match="'new_thing', which _results.SCHEMA does not declare"):
        _results.build_dataset({"gd": {"loss": np.zeros(3), "new_thing": np.zeros(3)}}, {})
