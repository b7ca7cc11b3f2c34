"""A run file killed at random moments, appends included, keeps a consistent prefix and
resumes to the uninterrupted run.

Each append opens the file, writes and closes it; HDF5 writes its metadata at close, so a
writer killed inside an append leaves the file as the last append closed it, except for
data written in place (the checkpoint), which is why the checkpoint has two slots.
"""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import flowode as fo

SETTINGS = dict(lr=1.0, steps=400, flows=("gd", "rod"), chunk=2, save_params=True)


@pytest.mark.slow
def test_writer_killed_at_random_moments_leaves_a_consistent_prefix(tmp_path):
    whole = fo.simulate(fo.problems.softening_quartic(), **SETTINGS)
    cache = tmp_path / "jax-cache"
    rng = np.random.default_rng(0)
    completed = []
    for i in range(20):
        path = tmp_path / f"run{i}.nc"
        script = textwrap.dedent(
            f"""
            import sys
            import jax
            jax.config.update("jax_compilation_cache_dir", {str(cache)!r})
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            import flowode as fo

            def ready(done, steps):
                if done == 2:
                    print("writing", flush=True)

            fo.simulate(fo.problems.softening_quartic(), **{SETTINGS!r}, out={str(path)!r},
                        progress=ready)
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"writing"
        time.sleep(rng.uniform(0.0, 3.0))  # every 2 steps is an append: kill anywhere
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        part = fo.load(path)  # opens, with a prefix of whole chunks
        done = int(part.attrs["completed_steps"])
        completed.append(done)
        np.testing.assert_array_equal(part.step.values, np.arange(done + 1))
        for name in ("loss", "params", "iterates", "rod_length"):
            np.testing.assert_array_equal(
                part[name].values, whole[name].isel(step=slice(0, done + 1)).values, name
            )
        if i < 5:  # resuming a killed file gives the uninterrupted run
            resumed = fo.simulate(
                fo.problems.softening_quartic(), **SETTINGS, out=path, resume=True
            )
            for name in ("loss", "params", "iterates", "rod_length"):
                np.testing.assert_array_equal(resumed[name].values, whole[name].values, name)
            resumed.close()
    assert len(set(completed)) > 5, completed  # the kills did land at many moments
