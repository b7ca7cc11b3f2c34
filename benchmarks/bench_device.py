"""CPU against GPU: the MLP's central flow in float32, at each matmul precision.

MLP regression (433 parameters), η = 0.1, 1000 steps, float32. Central flow runs on the
CPU (the reference) and on the GPU at `precision="highest"` (flowode's default) and at
`"default"` (TF32 matmuls on NVIDIA GPUs since Ampere). Also float64 on the CPU, on the
same data, for float32's own error. Reports the largest relative difference in loss and
sharpness over the run, and each run's own wall time (compilation excluded). Writes
benchmarks/device_gpu.json; prints "no GPU" and writes nothing where JAX sees none.
"""

import json
import platform

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import results_path, table

import flowode as fo

KW = dict(lr=0.1, steps=1000, flows=("central",), eig_every=50)


def run(problem, device, precision="highest", dtype=jnp.float32):
    """One simulate call on `device`, the problem's arrays copied there in `dtype`."""
    with jax.default_device(device):
        put = lambda t: jax.tree_util.tree_map(  # noqa: E731
            lambda a: jnp.asarray(np.asarray(a), dtype) if eqx.is_inexact_array(a) else a, t
        )
        p = fo.Problem(problem.loss, put(problem.w0), name="mlp", data=put(problem.data))
        ds = fo.simulate(p, **KW, precision=precision).sel(flow="central")
        return ds, float(ds.wall_time)


def rel(a, b, name):
    a, b = a[name].values, b[name].values
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.abs(b[ok])))


def main():
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        print("no GPU")
        return
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        problem = fo.problems.mlp_regression()
    ref, ref_s = run(problem, cpu)
    out = {"machine": f"{gpu.device_kind}; jax {jax.__version__}; {platform.machine()}"}
    out["cpu float32 highest seconds"] = ref_s
    rows = []

    def record(key, ds, seconds):
        out[key] = {"loss": rel(ds, ref, "loss"), "sharpness": rel(ds, ref, "sharpness")}
        out[key]["seconds"] = seconds
        rows.append((key, *(f"{out[key][k]:.1e}" for k in ("loss", "sharpness")), f"{seconds:.2f}"))
        print(*rows[-1], sep="  ", flush=True)
        results_path("device").write_text(json.dumps(out, indent=1))

    for precision in ("highest", "default"):
        record(f"gpu float32 {precision}", *run(problem, gpu, precision))
    with jax.enable_x64(True):
        record("cpu float64 highest", *run(problem, cpu, dtype=jnp.float64))
    rows.insert(0, ("cpu float32 highest (reference)", "0", "0", f"{ref_s:.2f}"))
    print(table(rows, ("run", "max rel. loss diff", "max rel. sharpness diff", "run s")))


if __name__ == "__main__":
    main()
