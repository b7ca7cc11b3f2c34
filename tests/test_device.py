"""CPU and GPU agree: the MLP's central flow in float32, run on each backend.

Skipped where JAX sees no GPU (CI has none). Measured on an H200 (jax 0.11.2, 1000 steps
through the onset of EOS), largest relative difference in loss against the CPU: 8e-7 in
one run and 1.3e-4 in another (at 4 of 1001 steps, all after step 840); TF32 matmuls
(`precision="default"`) gave 1.2e-3. On the CPU, float32 against float64 on the same
data differ by up to 6e-6, and a 2e-7 relative nudge to w0 moves the loss by 3e-6.
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
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=5e-4)
    sharpness = lambda ds: ds.sharpness.dropna("step")  # noqa: E731
    np.testing.assert_allclose(sharpness(gpu), sharpness(cpu), rtol=5e-4)
