"""Incremental run files and resume: a killed run keeps every chunk and resumes exactly."""

import signal
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import flowode as fo
from flowode.cli import main
from flowode.problems import PROBLEMS

MLP = fo.problems.mlp_regression()  # one object: its compiled programs are reused
TIMES = ("wall_time", "compile_time")  # the only variables allowed to differ
SETTINGS = dict(lr=0.5, steps=150, flows=("gd", "gradient", "rod", "central"), eig_k=2, chunk=60)


def assert_same_run(a: xr.Dataset, b: xr.Dataset):
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if name not in TIMES:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert list(a.flow.values) == list(b.flow.values)
    np.testing.assert_array_equal(a.step.values, b.step.values)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "whole.nc"
    ds = fo.simulate(MLP, **SETTINGS, save_params=True, out=path)
    return ds, path


def test_out_file_equals_the_in_memory_result(uninterrupted):
    ds, _ = uninterrupted
    memory = fo.simulate(MLP, **SETTINGS, save_params=True)
    assert_same_run(ds, memory)
    assert ds.sizes["step"] == 151 and ds.attrs["completed_steps"] == 150
    # The rod and central flow are at the edge of stability: this is a real run.
    assert abs(float(ds.sharpness.sel(flow="central")[-1]) * 0.5 - 2) < 0.01


@pytest.mark.slow  # (60 s; the default suite resumes in test_resume_can_extend_... and sweeps)
def test_killed_run_keeps_its_chunks_and_resumes_bit_identically(uninterrupted, tmp_path):
    whole, _ = uninterrupted
    path = tmp_path / "killed.nc"
    script = textwrap.dedent(
        f"""
        import os, signal
        import flowode as fo

        def kill_after_two_chunks(done, steps):
            if done >= 120:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind

        fo.simulate(fo.problems.mlp_regression(), **{SETTINGS!r}, save_params=True,
                    out={str(path)!r}, progress=kill_after_two_chunks)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    # Every completed chunk is in the file, readable by plain xarray, and correct.
    part = fo.load(path)
    assert part.attrs["completed_steps"] == 120
    np.testing.assert_array_equal(part.step.values, np.arange(121))
    # (central flow's moving-average variance is taken when the run finishes)
    # (costs are totals so far, and central flow's moving-average variance is taken
    # when the run finishes)
    costs = ["n_grad", "n_hvp", "n_third", "n_hvp_observe", "n_eig_fallback", "gd_variance"]
    assert_same_run(part.drop_vars(costs[:5]), whole.isel(step=slice(0, 121)).drop_vars(costs))
    with xr.open_dataset(path, engine="h5netcdf") as plain:
        assert plain.sizes["step"] == 121

    resumed = fo.simulate(MLP, **SETTINGS, save_params=True, out=path, resume=True)
    assert_same_run(resumed, whole)
    assert float(resumed.compile_time.sum()) >= 0
    resumed.close()


@pytest.mark.slow
def test_resume_can_extend_a_finished_run_in_other_chunks(tmp_path):
    p = fo.problems.softening_quartic()
    path = tmp_path / "q.nc"
    kw = dict(lr=1.0, flows=("gd", "rod"))
    fo.simulate(p, steps=40, out=path, chunk=20, **kw)
    longer = fo.simulate(p, steps=90, out=path, resume=True, chunk=13, **kw)
    direct = fo.simulate(p, steps=90, **kw)  # one chunk: results do not depend on chunking
    assert_same_run(longer, direct)


def test_resume_checks_it_is_the_same_run(tmp_path):
    p = fo.problems.softening_quartic()
    path = tmp_path / "q.nc"
    fo.simulate(p, lr=1.0, steps=20, chunk=10, out=path)
    with pytest.raises(ValueError, match="lr = 1.0.*lr = 0.5"):
        fo.simulate(p, lr=0.5, steps=20, chunk=10, out=path, resume=True)
    other = fo.problems.softening_quartic(w0=(0.1, 0.2))
    with pytest.raises(ValueError, match="fingerprint"):
        fo.simulate(other, lr=1.0, steps=20, chunk=10, out=path, resume=True)
    with pytest.raises(ValueError, match="flow_settings"):
        fo.simulate(p, lr=1.0, steps=20, chunk=10, out=path, resume=True, flows=("rod",))
    with pytest.raises(ValueError, match="already has 20"):
        fo.simulate(p, lr=1.0, steps=10, chunk=10, out=path, resume=True)


def test_resume_errors_name_the_problem(tmp_path):
    p = fo.problems.quadratic()
    with pytest.raises(ValueError, match="resume=True needs out="):
        fo.simulate(p, lr=0.1, steps=5, resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fo.simulate(p, lr=0.1, steps=5, out=tmp_path / "missing.nc", resume=True)
    with pytest.raises(FileNotFoundError, match="folder of .* does not exist"):
        fo.simulate(p, lr=0.1, steps=5, out=tmp_path / "no" / "such.nc")
    plain = tmp_path / "plain.nc"
    fo.save(fo.simulate(p, lr=0.1, steps=5), plain)  # a Dataset saved whole: no checkpoint
    with pytest.raises(ValueError, match="no checkpoint"):
        fo.simulate(p, lr=0.1, steps=5, out=plain, resume=True)
    junk = tmp_path / "junk.nc"
    junk.write_text("not a netCDF file")
    with pytest.raises(ValueError, match="not a readable run file"):
        fo.simulate(p, lr=0.1, steps=5, out=junk, resume=True)
    with pytest.raises(TypeError, match="progress must be"):
        fo.simulate(p, lr=0.1, steps=5, progress="yes")
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        fo.simulate(p, lr=0.1, steps=5, chunk=0)


def test_cli_resume_continues_from_the_file(tmp_path, capsys):
    path = tmp_path / "q.nc"
    args = ["run", "--problem", "quartic", "--flows", "gd,gradient", "--chunk", "10"]
    assert main([*args, "--steps", "30", "-o", str(path)]) == 0
    assert main(["run", "--resume", str(path), "--steps", "50"]) == 0
    assert "resuming" in capsys.readouterr().out
    direct = fo.simulate(
        fo.problems.softening_quartic(), lr=1.0, steps=50, flows=("gd", "gradient"), chunk=10
    )
    assert_same_run(fo.load(path), direct)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--resume", "{missing}"], "nothing to resume"),
        (["--resume", "{file}", "--lr", "0.3"], "cannot change"),
        (["--resume", "{file}", "-o", "{other}"], "leave out -o"),
        ([], "needs --problem"),
        (["--problem", "quartic", "--steps", "10", "--chunk", "0"], "must be positive"),
        (["--problem", "quartic", "--lr", "fast"], "expected a float"),
        (["--problem", "nope", "--steps", "5"], "unknown problem 'nope'"),
    ],
)
def test_cli_user_errors_have_no_traceback(tmp_path, capsys, argv, words):
    file = tmp_path / "q.nc"
    fo.simulate(fo.problems.softening_quartic(), lr=1.0, steps=10, chunk=5, out=file)
    paths = dict(missing=tmp_path / "no.nc", file=file, other=tmp_path / "other.nc")
    argv = [a.format(**paths) for a in argv]
    try:
        rc = main(["run", *argv])
    except SystemExit as e:  # argparse's own errors: usage and a message, exit 2
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert words is None or words in err, err


def test_resume_after_a_process_diverged(x64, tmp_path):
    # η·λ = 10: GD diverges in the first chunk, gradient flow does not.
    p = fo.problems.quadratic([100.0], dtype=jnp.float64)
    kw = dict(lr=0.1, steps=600, flows=("gd", "gradient"), chunk=200)
    direct = fo.simulate(p, **kw)
    assert 0 < int(direct.diverged_at.sel(flow="gd")) < 200

    class Stop(Exception):
        pass

    def stop_after_two_chunks(done, steps):
        if done >= 400:
            raise Stop

    path = tmp_path / "div.nc"
    with pytest.raises(Stop):
        fo.simulate(p, **kw, out=path, progress=stop_after_two_chunks)
    assert_same_run(fo.simulate(p, **kw, out=path, resume=True), direct)


def test_a_kill_inside_an_append_leaves_the_totals_of_the_completed_step(tmp_path):
    # An append overwrites the per-flow totals in place before it marks its step complete;
    # a kill between the two leaves them a chunk ahead. The checkpoint slot of the
    # completed step keeps its own copy, and readers take that one.
    import h5netcdf

    path = tmp_path / "run.nc"
    p = fo.problems.quadratic([1.0, 5.0])
    ds = fo.simulate(p, lr=0.1, steps=20, flows=("gd", "gradient"), chunk=5, out=path)
    want = {name: ds[name].values.copy() for name in ("n_grad", "n_hvp", "n_hvp_observe")}
    ds.close()
    with h5netcdf.File(path, "a") as f:  # what an interrupted next append would leave
        for name in want:
            f.variables[name][...] = 10**6
    loaded = fo.load(path)
    for name, values in want.items():
        np.testing.assert_array_equal(loaded[name].values, values, err_msg=name)
    assert int(loaded.n_grad.sel(flow="gd")) == 20


def test_a_checkpoint_of_another_layout_is_refused_in_one_sentence():
    # A run file from another version of flowode: one leaf more, or a leaf of another size
    # (central flow's counters went from 4 to 5 entries), both say to start a new file.
    from flowode._simulate import _restore

    like = (jnp.zeros(4), jnp.zeros(()))
    ok = {"leaf_0000": np.arange(4.0), "leaf_0001": np.asarray(2.0)}
    assert float(_restore(like, ok)[1]) == 2.0
    for arrays in (
        {**ok, "leaf_0002": np.zeros(3)},
        {"leaf_0000": np.arange(5.0), "leaf_0001": np.asarray(2.0)},
        {"leaf_0000": np.arange(4.0), "leaf_0009": np.asarray(2.0)},
    ):
        with pytest.raises(ValueError, match="does not fit this run's state.*Start a new file"):
            _restore(like, arrays)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(k, marks=pytest.mark.slow) if k in ("sort-transformer", "digits-cnn") else k
        for k in sorted(PROBLEMS)
    ],
)  # (the two marked slow compile for 15-30 s)
def test_cli_resumes_its_own_file_for_every_built_in_problem(tmp_path, capsys, key):
    # The file records the CLI's key and the constructor's arguments, not only the
    # problem's own name (mlp-8-16-16-1), so `--resume` can rebuild the problem.
    path = tmp_path / f"{key}.nc"
    assert main(["run", "--problem", key, "--steps", "3", "--chunk", "2", "--flows", "gd",
                 "-o", str(path)]) == 0  # fmt: skip
    assert xr.open_dataset(path, engine="h5netcdf").attrs["cli_problem"] == key
    assert main(["run", "--resume", str(path), "--steps", "5"]) == 0
    assert "resuming" in capsys.readouterr().out
    ds = fo.load(path)
    assert ds.attrs["completed_steps"] == 5 and ds.attrs["steps"] == 5
    np.testing.assert_array_equal(ds.step.values, np.arange(6))
    assert np.all(np.isfinite(ds.loss.sel(flow="gd").values))
    if key == "mlp":  # and it is the uninterrupted run
        direct = fo.simulate(MLP, lr=0.1, steps=5, flows=("gd",), chunk=2)
        assert_same_run(ds, direct)


def test_cli_resumes_a_run_killed_by_sigkill(tmp_path):
    import os
    import time

    path = tmp_path / "killed.nc"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "flowode.cli", "run", "--problem", "mlp", "--steps", "4000",
            "--chunk", "10", "--flows", "gd", "-o", str(path)]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Reading the file while it is written would take HDF5's lock from the writer: wait
    # for the file, then let the run go on for a while (each append takes ~0.2 s).
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(fo.load(path).attrs["completed_steps"])
    assert proc.returncode == -signal.SIGKILL
    assert 10 <= killed_at < 4000, killed_at
    steps = killed_at + 25  # on to a step that is not a chunk's end
    assert main(["run", "--resume", str(path), "--steps", str(steps)]) == 0
    direct = fo.simulate(MLP, lr=0.1, steps=steps, flows=("gd",), chunk=10)
    assert_same_run(fo.load(path), direct)
