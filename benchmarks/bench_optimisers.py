"""Optimisers × flows: cost and accuracy of each optimiser's stable flow, against the
discrete optimiser on the same problem, measured in one run.

MLP regression (433 parameters), 1000 steps, float32. For every optimiser: the discrete
run's and the stable flow's dynamics wall time (median of 3 compiled runs of
`process.run`), their ratio, the flow's oracle calls per step, its distance to the
discrete iterates at the end, and the discrete run's preconditioned sharpness λ₁(P⁻¹H)
over the last 300 steps against the optimiser's threshold (is it at the edge of
stability?). Prints a table and writes benchmarks/optimisers.json.
"""

import json
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
from _common import table

import flowode as fo

HERE = Path(__file__).parent
STEPS = 1000
OPTIMISERS = {
    "gd": fo.GD(0.1),
    "heavy_ball": fo.HeavyBall(0.02, beta=0.8),
    "nesterov": fo.Nesterov(0.02, beta=0.8),
    "rmsprop": fo.RMSProp(0.003, beta2=0.99),
    "adam": fo.Adam(0.003, beta1=0.9, beta2=0.99),
}


def seconds(process, problem, opt, repeats=3):
    f, w0, d = problem.flat_loss, problem.flat_w0, problem.data
    run = eqx.filter_jit(lambda w, o, d: process.run(f, w, o, d, STEPS))
    out = jax.block_until_ready(run(w0, opt, d))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(w0, opt, d))
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main():
    problem = fo.problems.mlp_regression()
    rows, out = [], {}
    for name, opt in OPTIMISERS.items():
        t_gd, (w_gd, _, _) = seconds(fo.GradientDescent(name=name), problem, opt)
        t_flow, (w_flow, counts, result) = seconds(fo.GradientFlow(), problem, opt)
        central = None
        if fo.CentralFlow().supports(opt):
            t_c, (w_c, c_counts, _) = seconds(fo.CentralFlow(), problem, opt, repeats=1)
            central = dict(
                ratio=t_c / t_gd,
                per_step=[int(x) / STEPS for x in c_counts],
                distance_end=float(np.linalg.norm(w_c[-1] - w_gd[-1])),
            )
        ds = fo.simulate(problem, optimizer=opt, steps=STEPS, flows=(name,), eig_every=10)
        s = ds.effective_sharpness.sel(flow=name).values[-300:]
        s = s[np.isfinite(s)]
        r = dict(
            ratio=t_flow / t_gd,
            discrete_seconds=t_gd,
            flow_seconds=t_flow,
            grads_per_step=int(counts.n_grad) / STEPS,
            hvps_per_step=int(counts.n_hvp) / STEPS,
            distance_end=float(np.linalg.norm(w_flow[-1] - w_gd[-1])),
            path=float(np.linalg.norm(w_gd[-1] - w_gd[0])),
            sharpness_last300=[float(s.min()), float(np.median(s)), float(s.max())],
            threshold=float(opt.threshold),
            result=int(result),
            central=central,
        )
        out[name] = r
        rows.append(
            (
                name,
                f"{r['ratio']:.1f}×",
                f"{r['grads_per_step']:.2f}",
                f"{r['hvps_per_step']:.2f}",
                f"{r['distance_end']:.3g}",
                f"{r['path']:.3g}",
                f"{r['sharpness_last300'][1]:.3g} [{s.min():.3g}, {s.max():.3g}]",
                f"{r['threshold']:.3g}",
                "-"
                if central is None
                else f"{central['ratio']:.0f}×, {central['per_step'][0]:.1f}/"
                f"{central['per_step'][1]:.1f}/{central['per_step'][2]:.2f}, "
                f"{central['distance_end']:.3g}",
            )
        )
    header = (
        "optimiser",
        "stable flow ×discrete",
        "grads/step",
        "HVPs/step",
        "distance at 1000",
        "path length",
        "λ₁(P⁻¹H) steps 700-1000: median [min, max]",
        "threshold",
        "central flow: ×discrete, grads/HVPs/thirds per step, distance at 1000",
    )
    print(table(rows, header))
    (HERE / "optimisers.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
