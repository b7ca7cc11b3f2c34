"""Rod flow's cost and accuracy against GD for several diffrax solvers, measured in one run.

MLP regression (433 parameters), η = 0.1, 1000 steps, float32. Ratios are to GD's
compiled wall time in the same run; oracle counts do not depend on machine noise.
"""

import platform
import sys

import diffrax
import jax
from _common import median_run, table

import flowode as fo

STEPS = 1000


def main():
    problem = fo.problems.mlp_regression()
    pid = diffrax.PIDController
    solvers = {
        "Heun rtol=1e-3 (default)": fo.RodFlow(),
        "Heun rtol=1e-2": fo.RodFlow(stepsize_controller=pid(rtol=1e-2, atol=1e-4)),
        "Tsit5 rtol=1e-4": fo.RodFlow(solver=diffrax.Tsit5(), stepsize_controller=pid(1e-4, 1e-6)),
        "Bosh3 rtol=1e-3": fo.RodFlow(solver=diffrax.Bosh3()),
        "Ralston fixed h=1": fo.RodFlow(
            solver=diffrax.Ralston(), stepsize_controller=diffrax.ConstantStepSize(), dt0=1.0
        ),
        "RKC2 rtol=1e-3": fo.RodFlow(solver=fo.RKC2(power_iterations=1)),
    }
    rows = []
    for label, rod in solvers.items():
        ds = median_run(problem, ("gd", "gradient", rod), lr=0.1, steps=STEPS, eig_every=STEPS)
        gd, r = ds.sel(flow="gd"), ds.sel(flow="rod")
        rows.append(
            (
                label,
                f"{float(r.wall_time):.3f}",
                f"{float(gd.wall_time):.3f}",
                f"{float(r.wall_time / gd.wall_time):.2f}",
                f"{int(r.n_grad) / STEPS:.2f}",
                f"{int(r.n_hvp) / STEPS:.2f}",
                f"{float(r.distance_to_gd[-1]):.3f}",
                f"{float(ds.distance_to_gd.sel(flow='gradient')[-1]):.3f}",
            )
        )
    print(
        f"rod flow on {problem.name}, η = 0.1, {STEPS} steps, float32; "
        f"{platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}"
    )
    print(
        table(
            rows,
            (
                "solver",
                "rod s",
                "GD s",
                "rod/GD",
                "grads/step",
                "HVPs/step",
                "dist GD",
                "midpoint dist",
            ),
        )
    )


if __name__ == "__main__":
    sys.exit(main())
