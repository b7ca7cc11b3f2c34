"""Sweeps: every member of one vmapped run equals its own `simulate`, failures stay per
member, and the member axis shards across devices with the same results."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo

FLOWS = ("gd", "gradient")


def _mlp(seed):
    return fo.problems.mlp_regression(width=8, n=64, seed=seed)


@pytest.mark.slow
def test_each_member_is_its_own_run():
    ds = fo.sweep(_mlp, seeds=[0, 1], lr=[0.05, 0.2], steps=40, flows=FLOWS)
    assert ds.loss.dims == ("seed", "lr", "flow", "step")
    assert list(ds.seed.values) == [0, 1] and list(ds.lr.values) == [0.05, 0.2]
    for seed in (0, 1):
        for lr in (0.05, 0.2):
            one = fo.simulate(_mlp(seed), lr=lr, steps=40, flows=FLOWS)
            member = ds.sel(seed=seed, lr=lr)
            np.testing.assert_allclose(member.loss, one.loss, rtol=1e-5)
            np.testing.assert_allclose(member.sharpness, one.sharpness, rtol=1e-3)
            # The adaptive gradient flow takes each member's own steps, not the smallest.
            assert (
                abs(int(member.n_grad.sel(flow="gradient")) - int(one.n_grad.sel(flow="gradient")))
                <= 4
            )
    grads = ds.n_grad.sel(flow="gradient").values
    assert grads.max() > 1.5 * grads.min()  # members really differ in their step counts
    # New seeds and values of the same shapes reuse the compiled program.
    again = fo.sweep(_mlp, seeds=[2, 3], lr=[0.1, 0.15], steps=40, flows=FLOWS)
    assert float(again.compile_time.max()) == 0.0


def test_a_diverging_member_does_not_stop_the_others(x64):
    make = lambda s: fo.problems.quadratic([10.0, 1.0], [1.0 + s, 1.0], dtype=jnp.float64)
    with pytest.warns(UserWarning, match="diverged"):
        ds = fo.sweep(make, seeds=[0, 1], lr=[0.1, 0.3], steps=800, flows=("gd",))
    at = ds.diverged_at.sel(flow="gd")
    assert (at.sel(lr=0.1) == -1).all() and (at.sel(lr=0.3) > 100).all()  # ηλ = 3: 2^k growth
    k = np.arange(801)
    exact = 0.5 * 10 * (1 + ds.seed.values[:, None]) ** 2 * (1 - 0.1 * 10) ** (2 * k) + 0.5 * (
        0.9 ** (2 * k)
    )
    np.testing.assert_allclose(ds.loss.sel(lr=0.1, flow="gd"), exact, rtol=1e-10, atol=1e-300)


def test_one_swept_field_of_an_optimiser():
    ds = fo.sweep(
        _mlp, seeds=[0], optimizer=fo.Adam(lr=[1e-3, 3e-3], beta2=0.99), steps=5, flows=("adam",)
    )
    assert ds.loss.dims[:2] == ("seed", "lr") and ds.attrs["swept"] == "lr"
    with pytest.raises(ValueError, match="exactly one hyper-parameter"):
        fo.sweep(_mlp, seeds=[0], optimizer=fo.Adam(lr=[1e-3, 3e-3], beta2=[0.9, 0.99]), steps=5)
    with pytest.raises(ValueError, match="same loss function, parameter structure and data shapes"):
        fo.sweep(
            lambda s: fo.problems.mlp_regression(width=8 + s, n=64), seeds=[0, 1], lr=[0.1], steps=5
        )


def test_simulate_refuses_a_sequence_of_values():
    with pytest.raises(ValueError, match="lr is a sequence of values; simulate runs one"):
        fo.simulate(_mlp(0), optimizer=fo.Adam(lr=[1e-3, 3e-3]), steps=5)


TIMES = ("wall_time", "compile_time")
# Totals over the run so far, and GD's moving-average variance (its window sees the end).
TOTALS = ("n_grad", "n_hvp", "n_third", "n_hvp_observe", "n_eig_fallback", "gd_variance")


def _same(a, b, skip=()):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if name not in TIMES + tuple(skip):
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@pytest.mark.slow
def test_sweep_streams_to_member_files_and_resumes_bit_identically(tmp_path):
    kw = dict(seeds=[0, 1], lr=[0.05, 0.2], flows=FLOWS, chunk=30, save_params=True)
    whole = fo.sweep(_mlp, **kw, steps=90)
    out = tmp_path / "sweep"
    streamed = fo.sweep(_mlp, **kw, steps=30, out=out)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["seed0_lr0.nc", "seed0_lr1.nc", "seed1_lr0.nc", "seed1_lr1.nc"]
    _same(streamed, whole.isel(step=slice(0, 31)), skip=TOTALS)
    # Each member file is a run file of its own.
    one = fo.load(out / "seed1_lr1.nc")
    np.testing.assert_array_equal(one.loss, whole.sel(seed=1, lr=0.2).loss[:, :31])
    # A sweep killed while it wrote a chunk leaves some members a chunk ahead: here one is
    # advanced to step 60 on its own; the sweep resumes every member from step 30.
    fo.simulate(_mlp(0), lr=0.2, steps=60, flows=FLOWS, chunk=30, save_params=True,
                out=out / "seed0_lr1.nc", resume=True)  # fmt: skip
    resumed = fo.sweep(_mlp, **kw, steps=90, out=out, resume=True)
    _same(resumed, whole)
    with pytest.raises(ValueError, match="it was written with lr"):
        fo.sweep(_mlp, **{**kw, "lr": [0.05, 0.3]}, steps=120, out=out, resume=True)
    with pytest.raises(ValueError, match="resume=True needs out="):
        fo.sweep(_mlp, **kw, steps=90, resume=True)


_SHARDED = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"  # 8 host devices, on a machine with a GPU too
import jax, numpy as np
jax.config.update("jax_enable_x64", True)  # (this subprocess's own setting)
import flowode as fo
assert len(jax.devices()) == 8
FULL = {full}

# The sweep's members sharded over 4 devices (shard_map), two per device: one after
# another on each (the CPU default) or vmapped. (8 devices: the padded case below.)
make = lambda s: fo.problems.mlp_regression(width=8, n=64, seed=s, dtype=np.float64)
kw = dict(seeds=[0, 1], lr=[0.05, 0.1, 0.15, 0.2], steps=30, flows=("gd", "gradient"))
single = fo.sweep(make, **kw, devices=jax.devices()[:1])
for devices, vmap in ((4, None), (4, True)) if FULL else ((4, None),):
    sharded = fo.sweep(make, **kw, devices=jax.devices()[:devices], vmap=vmap)
    assert sharded.attrs["devices"] == devices
    np.testing.assert_allclose(sharded.loss, single.loss, rtol=1e-10)
    np.testing.assert_allclose(sharded.eigs, single.eigs, rtol=1e-4)
if FULL:  # 6 members on 8 devices: padded to 8, the copies dropped
    kw.update(lr=[0.05, 0.1, 0.2], seeds=[1, 2])
    sharded = fo.sweep(make, **kw)
    assert sharded.attrs["padded_members"] == 2 and sharded.loss.shape[:2] == (2, 3)
    single = fo.sweep(make, **kw, devices=jax.devices()[:1])
    np.testing.assert_allclose(sharded.loss, single.loss, rtol=1e-10)

# One run with its data batch (64 points) split over the 8 devices.
p = make(0)
flows = ("gd", "gradient", "rod") if FULL else ("gd", "gradient")
kw = dict(lr=0.2, steps=60, flows=flows, eig_k=2)
split = fo.simulate(p, **kw, devices=jax.devices())
one = fo.simulate(p, **kw)
for flow in ("gd", "gradient"):
    a, b = split.loss.sel(flow=flow), one.loss.sel(flow=flow)
    np.testing.assert_allclose(a, b, rtol=1e-10)
if FULL:  # (the rod's floor and its onset are seeded by round-off, as GD's own oscillation)
    for name in ("loss", "distance_to_gd", "rod_length"):
        np.testing.assert_allclose(split[name], one[name], rtol=1e-6, atol=1e-12)
# (the observer's Ritz values are converged to its tolerance, not to round-off: the
# sharpness to about 1e-4, the second eigenvalue, with a small gap below it, to 1e-2)
np.testing.assert_allclose(split.eigs[..., 0], one.eigs[..., 0], rtol=1e-3)
np.testing.assert_allclose(split.eigs, one.eigs, rtol=1e-2)
try:
    fo.simulate(p, **kw, devices=jax.devices()[:3])
except ValueError as e:
    assert "multiple of the number of devices" in str(e)
else:
    raise AssertionError("64 points over 3 devices should be refused")
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_sharded_sweep_and_data_parallel_run_equal_one_device(full):
    # One subprocess with 8 forced CPU devices (the rest of the suite keeps one), float64.
    # The default suite shards a mapped sweep over 4 devices and splits a run's batch
    # over 8; the slow one adds the vmapped shard, padding and the rod.
    script = _SHARDED.format(full=full)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
