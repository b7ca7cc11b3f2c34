"""`fo.GlobalErrorEstimate` on a network: the estimate against the true global error, and its cost.

MLP regression (`mlp_regression(seed=0)`, 433 parameters), η = 0.1, float64, 600 steps
(GD enters EOS at step 419 and overshoots to ηS ≈ 3.4). Gradient flow and rod flow with
their default tolerances, each wrapped in the estimate (twin at rtol, atol ÷ 10); the
truth is the same flow solved by Tsit5 at rtol 1e-10, atol 1e-12. Reported: the largest
error so far (estimate and truth) at a few steps, and gradients per GD step of the flow
alone and with its twin. Writes benchmarks/global_error.json.
"""

import json
import pathlib
import platform
import sys

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from _common import table

import flowode as fo

STEPS, LR = 600, 0.1
OUT = pathlib.Path(__file__).with_name("global_error.json")
TIGHT = diffrax.PIDController(rtol=1e-10, atol=1e-12)


def main():
    rows, results = [], {}
    with jax.enable_x64(True):
        p = fo.problems.mlp_regression(seed=0, dtype=jnp.float64)
        kw = dict(lr=LR, steps=STEPS, eig_every=50, save_params=True)
        flows = (fo.GradientFlow(), fo.RodFlow())
        est = fo.simulate(p, flows=tuple(fo.GlobalErrorEstimate(f) for f in flows), **kw)
        plain = fo.simulate(p, flows=flows, **kw)
        refs = (
            fo.GradientFlow(solver=diffrax.Tsit5(), stepsize_controller=TIGHT),
            fo.RodFlow(solver=diffrax.Tsit5(), stepsize_controller=TIGHT),
        )
        ref = fo.simulate(p, flows=refs, **kw)
    for f in flows:
        got = est.params.sel(flow=f.name).values
        truth = ref.params.sel(flow=f.name).values
        true = np.maximum.accumulate(
            np.linalg.norm(got - truth, axis=1) / np.linalg.norm(truth, axis=1)
        )
        estimate = np.maximum.accumulate(est.global_error.sel(flow=f.name).values)
        cost = int(est.n_grad.sel(flow=f.name)) / STEPS
        alone = int(plain.n_grad.sel(flow=f.name)) / STEPS
        results[f.name] = {
            "steps": [100, 300, 400, 450, 500, 600],
            "true_max_so_far": [float(true[k]) for k in (100, 300, 400, 450, 500, 600)],
            "estimate_max_so_far": [float(estimate[k]) for k in (100, 300, 400, 450, 500, 600)],
            "grads_per_step_alone": alone,
            "grads_per_step_with_twin": cost,
        }
        for k in (100, 300, 400, 450, 500, 600):
            rows.append(
                (f.name, k, f"{true[k]:.2e}", f"{estimate[k]:.2e}", f"{estimate[k] / true[k]:.2f}",
                 f"{alone:.2f}", f"{cost:.2f}")
            )  # fmt: skip
    results["machine"] = (
        f"{platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"jax {jax.__version__}, flowode {fo.__version__}"
    )
    OUT.write_text(json.dumps(results, indent=1))
    print(
        table(
            rows,
            ("flow", "step", "true (max so far)", "estimate", "ratio", "grads/step", "with twin"),
        )
    )


if __name__ == "__main__":
    sys.exit(main())
