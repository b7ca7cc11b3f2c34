"""Property-based tests (hypothesis) and determinism."""

import subprocess
import sys

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flowode as fo

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
N, STEPS = 3, 20


def _quadratic(w, data):
    lam, c = data
    return 0.5 * jnp.sum(lam * (w - c) ** 2)


_gd = jax.jit(lambda w0, lr, data: fo.GradientDescent().run(_quadratic, w0, lr, data, STEPS)[0])
_gf = jax.jit(lambda w0, lr, data: fo.GradientFlow().run(_quadratic, w0, lr, data, STEPS)[0])

eigenvalues = hnp.arrays(np.float64, N, elements=st.floats(0.05, 15.0))
points = hnp.arrays(np.float64, N, elements=st.floats(-3.0, 3.0))


@SETTINGS
@given(lam=eigenvalues, c=points, w0=points, lr_frac=st.floats(0.01, 0.95))
def test_gd_on_random_quadratics_matches_closed_form(lam, c, w0, lr_frac):
    with jax.enable_x64(True):
        lr = lr_frac * 2 / lam.max()  # stable: every |1 − ηλ| < 1
        ws = _gd(jnp.asarray(w0), jnp.asarray(lr), (jnp.asarray(lam), jnp.asarray(c)))
        k = np.arange(STEPS + 1)[:, None]
        want = c + (1 - lr * lam) ** k * (w0 - c)  # (steps+1, n)
        np.testing.assert_allclose(ws, want, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(lam=eigenvalues, c=points, w0=points, lr=st.floats(0.01, 1.0))
def test_gradient_flow_on_random_quadratics_matches_closed_form(lam, c, w0, lr):
    with jax.enable_x64(True):
        ws = _gf(jnp.asarray(w0), jnp.asarray(lr), (jnp.asarray(lam), jnp.asarray(c)))
        t = np.arange(STEPS + 1)[:, None]
        want = c + np.exp(-lr * lam * t) * (w0 - c)
        # rtol 1e-5 bounds the local error; the global error over 20 steps is a few times it.
        np.testing.assert_allclose(ws, want, rtol=1e-3, atol=1e-4 * (1 + np.abs(w0 - c).max()))


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
leaves = st.tuples(shapes, st.sampled_from(["float32", "float64"]))
trees = st.recursive(
    leaves,
    lambda kids: (
        st.lists(kids, min_size=1, max_size=3)
        | st.dictionaries(st.text("abcdef", min_size=1, max_size=3), kids, min_size=1, max_size=3)
    ),
    max_leaves=6,
)


def _build(spec, rng):
    if isinstance(spec, tuple):
        shape, dtype = spec
        return np.asarray(rng.standard_normal(shape), dtype=dtype)
    if isinstance(spec, list):
        return [_build(s, rng) for s in spec]
    return {k: _build(v, rng) for k, v in spec.items()}


@SETTINGS
@given(spec=trees, seed=st.integers(0, 1000))
def test_problem_flatten_round_trip_on_random_pytrees(spec, seed):
    with jax.enable_x64(True):
        w0 = _build(spec, np.random.default_rng(seed))
        loss = lambda p: sum(jnp.sum(jnp.asarray(x, jnp.float64) ** 2) for x in jax.tree.leaves(p))
        p = fo.Problem(loss, w0)
        flat_leaves = jax.tree.leaves(w0)
        assert p.n_params == sum(x.size for x in flat_leaves)
        assert p.dtype == jnp.result_type(*flat_leaves)
        back = p.unravel(p.flat_w0)
        assert jax.tree.structure(back) == jax.tree.structure(w0)
        for a, b in zip(jax.tree.leaves(back), flat_leaves, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        assert float(p.flat_loss(p.flat_w0, None)) == pytest.approx(float(loss(w0)), rel=1e-6)


_BIT_IDENTICAL_RUN = """
import sys
import flowode as fo
ds = fo.simulate(fo.problems.softening_quartic(), lr=1.0, steps=60,
                 flows=("gd", "gradient", "central", "rod"), eig_k=2)
fo.save(ds, sys.argv[1])
"""


@pytest.mark.slow
def test_simulate_is_bit_identical_across_runs_and_recompiles(tmp_path):
    # Each run compiles everything in a fresh process, so nothing cached in this one (a
    # compiled program, a trace) can make the second run agree with the first.
    runs = []
    for i in range(2):
        path = tmp_path / f"run{i}.nc"
        subprocess.run([sys.executable, "-c", _BIT_IDENTICAL_RUN, str(path)], check=True)
        runs.append(fo.load(path))
    first, second = runs
    assert "central" in list(first.flow.values)
    for name, var in first.data_vars.items():
        if name in ("wall_time", "compile_time"):
            continue
        np.testing.assert_array_equal(var.values, second[name].values, err_msg=name)


@pytest.mark.parametrize("flow", [fo.GradientFlow, fo.RodFlow, fo.CentralFlow])
@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"blowup": 0.0}, ValueError, "blowup"),
        ({"max_steps_per_gd_step": 0}, ValueError, "max_steps_per_gd_step"),
        ({"dt0": -1.0}, ValueError, "dt0"),
        ({"solver": "euler"}, TypeError, "solver"),
        ({"stepsize_controller": 1e-3}, TypeError, "stepsize_controller"),
        ({"stepsize_controller": "pid"}, TypeError, "stepsize_controller"),
    ],
)
def test_flow_constructors_name_bad_settings(flow, kwargs, error, word):
    with pytest.raises(error, match=word):
        flow(**kwargs)


def test_constant_step_needs_dt0():
    import diffrax

    with pytest.raises(ValueError, match="needs dt0"):
        fo.RodFlow(stepsize_controller=diffrax.ConstantStepSize(), dt0=None)


def test_simulate_save_params_must_be_bool():
    with pytest.raises(TypeError, match="save_params"):
        fo.simulate(fo.problems.quadratic(), lr=0.1, steps=3, save_params="yes")
