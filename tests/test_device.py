"""CPU and GPU agree: the MLP's central flow in float32, run on each backend.

Skipped where JAX sees no GPU (CI has none). Central flow in float32 and float64 on the
same data agree to 2e-6 in loss over these 1000 steps (measured on CPU), so a GPU that
computed its matmuls in TF32 (about 1e-3 relative) would fail here, and one in full
float32 passes with room to spare.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowode as fo


def _gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


@pytest.mark.skipif(_gpu() is None, reason="needs a GPU")
def test_central_flow_agrees_on_cpu_and_gpu():
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        problem = fo.problems.mlp_regression()
    runs = {}
    for device in (cpu, _gpu()):
        with jax.default_device(device):  # the same data, copied to each device
            put = lambda t: jax.tree_util.tree_map(  # noqa: E731
                lambda a: jnp.asarray(np.asarray(a)) if eqx.is_inexact_array(a) else a, t
            )
            p = fo.Problem(problem.loss, put(problem.w0), data=put(problem.data))
            ds = fo.simulate(p, lr=0.1, steps=1000, flows=("central",), eig_every=50)
            runs[device.platform] = ds.sel(flow="central")
    cpu, gpu = runs["cpu"], runs["gpu"]
    assert int(cpu.n_critical.max()) >= 1  # the run reaches the edge of stability
    for name in ("loss", "predicted_loss"):
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-4)
    sharpness = lambda ds: ds.sharpness.dropna("step")  # noqa: E731
    np.testing.assert_allclose(sharpness(gpu), sharpness(cpu), rtol=1e-4)
