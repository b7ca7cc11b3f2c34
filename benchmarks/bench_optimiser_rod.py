"""Rod flow for other optimisers: does it track the discrete optimiser past the edge of
stability better than the optimiser's stable flow?

MLP regression (433 parameters), 1000 steps, float32, seeds 0-2. For each optimiser, at
a learning rate that reaches its threshold on λ₁(P⁻¹H): the discrete run's onset (first
step after 50 where half its second difference |w_{k+1} − 2w_k + w_{k−1}|/4 exceeds
1e-2), and after it (from onset + 50 to the end) the mean distance of the stable flow's
and of the rod's predicted iterate X + (−1)^k Y to the discrete iterates, their ratio
(the issue asks ≥ 5), the rod's onset (first step after 50 with |Y| > 1e-2), and each
flow's gradients per step. Prints a table and writes benchmarks/optimiser_rod.json.

`python bench_optimiser_rod.py phase [seeds]` runs only the discrete optimisers and asks
whether their oscillation is the period-2 one a rod can represent: after step 500, the
second differences o_k = (w_{k+1} − 2w_k + w_{k−1})/4 at their median and 90% quantile,
and where o_k is large (above half that quantile) the angle between consecutive ones
(180° for w_k = X + (−1)^k Y; a rotation by θ per step gives θ). Writes
benchmarks/optimiser_phase.json.
"""

import json
import sys
from pathlib import Path

import numpy as np
from _common import table

import flowode as fo

HERE = Path(__file__).parent
STEPS = 1000
SETTINGS = {
    "gd η=0.1": fo.GD(0.1),
    "heavy_ball η=0.07 β=0.5": fo.HeavyBall(0.07, beta=0.5),
    "heavy_ball η=0.03 β=0.9": fo.HeavyBall(0.03, beta=0.9),
    "nesterov η=0.05 β=0.5": fo.Nesterov(0.05, beta=0.5),
    "rmsprop η=1e-3 β₂=0.99": fo.RMSProp(1e-3, beta2=0.99),
    "adam η=3e-3 β₂=0.999": fo.Adam(3e-3, beta1=0.9, beta2=0.999),
}


def second_differences(w):
    """o_k = (w_{k+1} − 2w_k + w_{k−1})/4 of the iterates w (steps + 1, n): (steps − 1, n),
    o[i] at step i + 1; for w_k = X + (−1)^k Y it is ±Y."""
    return (w[2:] - 2 * w[1:-1] + w[:-2]) / 4


def first(mask, start=50):
    idx = np.nonzero(mask[start:])[0]
    return int(idx[0]) + start if len(idx) else None


def main(seeds=(0, 1, 2)):
    rows, out = [], {}
    for label, opt in SETTINGS.items():
        for seed in seeds:
            p = fo.problems.mlp_regression(seed=seed)
            ds = fo.simulate(
                p,
                optimizer=opt,
                steps=STEPS,
                flows=(opt.name, "gradient", "rod"),
                eig_every=10,
                save_params=True,
            )
            w = ds.iterates.sel(flow=opt.name).values  # (steps + 1, n)
            osc = np.linalg.norm(second_differences(w), axis=1)
            onset = first(np.concatenate([[0.0], osc, [0.0]]) > 1e-2)
            rod_onset = first(ds.rod_length.sel(flow="rod").values > 1e-2)
            eff = ds.effective_sharpness.sel(flow=opt.name).values[-300:]
            r = dict(onset=onset, rod_onset=rod_onset, threshold=float(ds.attrs["threshold"]))
            r["sharpness_last300"] = float(np.nanmedian(eff))
            for flow in ("gradient", "rod"):
                r[f"{flow}_grads_per_step"] = float(ds.n_grad.sel(flow=flow)) / STEPS
            if onset is not None and onset + 50 < STEPS:
                d = ds.distance_to_gd.sel(step=slice(onset + 50, STEPS)).mean("step")
                r["gradient"], r["rod"] = float(d.sel(flow="gradient")), float(d.sel(flow="rod"))
                r["ratio"] = r["gradient"] / r["rod"]
            out[f"{label} seed {seed}"] = r
            fmt = lambda x, f="{:.3g}": "-" if x is None else f.format(x)  # noqa: E731
            rows.append(
                (
                    label,
                    seed,
                    f"{r['sharpness_last300']:.3g} / {r['threshold']:.3g}",
                    fmt(onset, "{}"),
                    fmt(rod_onset, "{}"),
                    fmt(r.get("gradient")),
                    fmt(r.get("rod")),
                    fmt(r.get("ratio"), "{:.2f}"),
                    f"{r['gradient_grads_per_step']:.1f}",
                    f"{r['rod_grads_per_step']:.1f}",
                )
            )
            print(rows[-1], flush=True)
    header = (
        "optimiser",
        "seed",
        "λ₁(P⁻¹H), last 300 / threshold",
        "onset",
        "rod onset",
        "stable flow dist",
        "rod dist",
        "stable / rod",
        "stable grads/step",
        "rod grads/step",
    )
    print(table(rows, header))
    (HERE / "optimiser_rod.json").write_text(json.dumps(out, indent=1))


def phase(seeds=(0, 1, 2)):
    rows, out = [], {}
    for label, opt in SETTINGS.items():
        for seed in seeds:
            p = fo.problems.mlp_regression(seed=seed)
            ds = fo.simulate(
                p, optimizer=opt, steps=STEPS, flows=(opt.name,), eig_every=STEPS, save_params=True
            )
            w = ds.iterates.sel(flow=opt.name).values  # (steps + 1, n)
            o = second_differences(w)
            size = np.linalg.norm(o, axis=1)
            late = size[500:]
            q50, q90 = np.quantile(late, 0.5), np.quantile(late, 0.9)
            cos = np.sum(o[:-1] * o[1:], axis=1) / (size[:-1] * size[1:] + 1e-30)
            large = (size[:-1] > 0.5 * q90) & (np.arange(len(cos)) >= 500)
            angle = float(np.degrees(np.arccos(np.median(cos[large]))))
            out[f"{label} seed {seed}"] = dict(median=float(q50), q90=float(q90), angle=angle)
            rows.append((label, seed, f"{q50:.2g}", f"{q90:.2g}", f"{angle:.0f}"))
            print(rows[-1], flush=True)
    header = ("optimiser", "seed", "|o| median", "|o| 90%", "angle o_k, o_k+1 (°), where large")
    print(table(rows, header))
    (HERE / "optimiser_phase.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["phase"]:
        sys.exit(phase(tuple(int(a) for a in sys.argv[2:]) or (0, 1, 2)))
    sys.exit(main(tuple(int(a) for a in sys.argv[1:]) or (0, 1, 2)))
