"""Rod flow's onset of EOS against GD's, and the modified-equation (O(η²)) terms; one run.

MLP regression (`fo.problems.mlp_regression(seed)`, 433 parameters), 1000 steps.

1. Onset: float32 and float64, the default solver and a tight one (Tsit5; rtol 1e-8 in
   float64, 1e-6 in float32, where 1e-8 is below the dtype's resolution), seeds 0-3,
   η = 0.1. GD's onset is the first step where half its second difference
   |w_{k+1} − 2w_k + w_{k−1}|/4 exceeds 1e-2; the rod's, the first step after 100 where
   |Y| does. Also the rod's centre at step 1000 against GD's midpoint, as a fraction of
   gradient flow's distance, and the "linear" amplitude rate for comparison (seeds 0, 2).
2. Modified equation, float64, seeds 0-3 × η ∈ {0.1, 0.15}: distance to GD's iterates
   before the onset (mean over steps 20-150, and at step 80) and the centre's distance
   to GD's midpoint after it (mean over the last 100 steps, and at the end).
3. Cost per GD step of each option (gradients, HVPs, wall time) from the same runs.
4. noise: GD's own spread, GD from w0 moved by one rounding against GD from w0, in units
   of gradient flow's distance (the resolution of the centre ratios above).

Parts: `python bench_onset.py [onset] [me] [noise]`, all by default.

Writes benchmarks/onset.json after each part and prints the tables.
"""

import json
import pathlib
import platform
import sys
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from _common import table

import flowode as fo

STEPS = 1000
SEEDS = (0, 1, 2, 3)
OUT = pathlib.Path(__file__).with_name("onset.json")
TIGHT = {
    "float64": diffrax.PIDController(rtol=1e-8, atol=1e-12),
    # atol is relative to the state's RMS: 1e-9 held Tsit5 at its step limit on seed 3.
    "float32": diffrax.PIDController(rtol=1e-6, atol=1e-6),
}


def gd_onset(ds):
    w = ds.params.sel(flow="gd").values
    half_second_difference = np.linalg.norm(w[2:] - 2 * w[1:-1] + w[:-2], axis=1) / 4
    above = half_second_difference > 1e-2
    return int(np.argmax(above)) + 1 if above.any() else None


def rod_onset(ds, label):
    length = ds.rod_length.sel(flow=label).values
    above = np.nonzero(length[100:] > 1e-2)[0]
    return int(above[0]) + 100 if above.size else None


def eos_step(ds, lr):
    sharp = lr * ds.sharpness.sel(flow="gd").values
    above = np.nonzero(sharp > 2)[0]
    return int(above[0]) if above.size else None


def per_step(ds, label):
    return {
        "grads": int(ds.n_grad.sel(flow=label)) / STEPS,
        "hvps": int(ds.n_hvp.sel(flow=label)) / STEPS,
        "wall_s": float(ds.wall_time.sel(flow=label)),
        "gd_wall_s": float(ds.wall_time.sel(flow="gd")),
    }


def onset_part(results):
    rows = []
    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            for solver in ("default", "tight", "linear"):
                for seed in SEEDS if solver != "linear" else SEEDS[::2]:
                    p = fo.problems.mlp_regression(seed=seed, dtype=getattr(jnp, dtype))
                    if solver == "tight":
                        rod = fo.RodFlow(solver=diffrax.Tsit5(), stepsize_controller=TIGHT[dtype])
                    else:
                        rod = fo.RodFlow(amplitude_rate="map" if solver == "default" else "linear")
                    t = time.time()
                    ds = fo.simulate(
                        p, lr=0.1, steps=STEPS, flows=("gradient", rod), eig_every=10,
                        save_params=True,
                    )  # fmt: skip
                    cd = ds.center_distance_to_gd.isel(step=-1)
                    row = {
                        "dtype": dtype,
                        "solver": solver,
                        "seed": seed,
                        "gd_onset": gd_onset(ds),
                        "rod_onset": rod_onset(ds, "rod"),
                        "eta_S_2_at": eos_step(ds, 0.1),
                        "min_rod_length": float(ds.rod_length.sel(flow="rod").min()),
                        "centre_ratio": float(cd.sel(flow="rod") / cd.sel(flow="gradient")),
                        "rod_centre_distance": float(cd.sel(flow="rod")),
                        "gradient_centre_distance": float(cd.sel(flow="gradient")),
                        "diverged_at": int(ds.diverged_at.sel(flow="rod")),
                        "cost": per_step(ds, "rod"),
                        "gradient_cost": per_step(ds, "gradient"),
                    }
                    results["onset"].append(row)
                    OUT.write_text(json.dumps(results, indent=1))
                    r = row
                    lag = (
                        r["rod_onset"] - r["gd_onset"] if r["rod_onset"] and r["gd_onset"] else None
                    )
                    rows.append(
                        (dtype, solver, seed, r["eta_S_2_at"], r["gd_onset"], str(r["rod_onset"]),
                         str(lag), f"{r['min_rod_length']:.1e}", f"{r['centre_ratio']:.3f}",
                         f"{r['cost']['grads']:.2f}", f"{time.time() - t:.0f}")
                    )  # fmt: skip
                    print(rows[-1], flush=True)
    print(
        table(
            rows,
            (
                "dtype",
                "solver",
                "seed",
                "ηS=2",
                "GD onset",
                "rod onset",
                "rod−GD",
                "min |Y|",
                "centre ratio",
                "grads/step",
                "s",
            ),
        )  # fmt: skip
    )


def modified_equation_part(results):
    flows = (
        fo.GradientFlow(),
        fo.GradientFlow(modified_equation=True),
        fo.RodFlow(),
        fo.RodFlow(modified_equation=True),
    )
    labels = [f.name for f in flows]
    rows = []
    with jax.enable_x64(True):
        for lr in (0.1, 0.15):
            for seed in SEEDS:
                p = fo.problems.mlp_regression(seed=seed, dtype=jnp.float64)
                ds = fo.simulate(p, lr=lr, steps=STEPS, flows=flows, eig_every=10, save_params=True)
                onset = gd_onset(ds)
                row = {"lr": lr, "seed": seed, "gd_onset": onset, "eta_S_2_at": eos_step(ds, lr)}
                for label in labels:
                    d = ds.distance_to_gd.sel(flow=label).values
                    cd = ds.center_distance_to_gd.sel(flow=label).values
                    row[label] = {
                        "before_mean_20_150": float(d[20:151].mean()),
                        "before_step_80": float(d[80]),
                        "after_mean_last_100": float(cd[-100:].mean()),
                        "after_end": float(cd[-1]),
                        "cost": per_step(ds, label),
                    }
                results["modified_equation"].append(row)
                OUT.write_text(json.dumps(results, indent=1))

                def ratio(a, b, key, row=row):
                    return row[a][key] / row[b][key]

                rows.append(
                    (lr, seed, onset,
                     f"{ratio('gradient', 'gradient_me', 'before_mean_20_150'):.2f}",
                     f"{ratio('gradient', 'gradient_me', 'before_step_80'):.2f}",
                     f"{ratio('rod', 'rod_me', 'before_mean_20_150'):.2f}",
                     f"{ratio('rod', 'rod_me', 'before_step_80'):.2f}",
                     f"{ratio('rod_me', 'rod', 'after_mean_last_100'):.3f}",
                     f"{ratio('rod_me', 'rod', 'after_end'):.3f}")
                )  # fmt: skip
                print(rows[-1], flush=True)
    print(
        table(
            rows,
            (
                "η",
                "seed",
                "GD onset",
                "GF/GF_me 20-150",
                "GF/GF_me @80",
                "rod/rod_me 20-150",
                "rod/rod_me @80",
                "rod_me/rod after (last 100)",
                "rod_me/rod at end",
            ),
        )  # fmt: skip
    )


def perturbed(problem, key):
    """The problem with w0 moved by one rounding's worth: each float leaf l ↦ l(1 + εz)."""
    leaves, treedef = jax.tree.flatten(problem.w0)
    keys = jax.random.split(key, len(leaves))
    moved = []
    for leaf, k in zip(leaves, keys, strict=True):
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating):
            eps = jnp.finfo(leaf.dtype).eps
            leaf = leaf * (1 + eps * jax.random.normal(k, leaf.shape, leaf.dtype))
        moved.append(leaf)
    return fo.Problem(problem.loss, jax.tree.unflatten(treedef, moved), data=problem.data)


def gd_midpoints(ds):
    w = ds.params.sel(flow="gd").values.astype(np.float64)
    return 0.25 * (w[:-2] + 2 * w[1:-1] + w[2:])  # k = 1..K−1


def noise_part(results, copies=3):
    """GD's own spread: GD from w0 moved by one rounding (w0(1 + εz)), against GD from w0.

    Where GD's trajectory depends on its rounding (a catapult), no model of it can be
    closer to one GD run than GD runs are to each other; this is that resolution, in
    units of gradient flow's distance, as the onset and modified-equation tables use.
    """
    rows = []
    cases = [(d, 0.1, s) for d in ("float32", "float64") for s in SEEDS]
    cases += [("float64", 0.15, s) for s in SEEDS]
    for dtype, lr, seed in cases:
        with jax.enable_x64(dtype == "float64"):
            p = fo.problems.mlp_regression(seed=seed, dtype=getattr(jnp, dtype))
            kw = dict(lr=lr, steps=STEPS, eig_every=STEPS, save_params=True)
            ds = fo.simulate(p, flows=("gradient",), **kw)
            ref = gd_midpoints(ds)
            gf = ds.center_distance_to_gd.sel(flow="gradient").values
            spread_end, spread_last = [], []
            for c in range(copies):
                q = perturbed(p, jax.random.key(1000 * seed + c))
                other = gd_midpoints(fo.simulate(q, flows=(), **kw))
                d = np.linalg.norm(other - ref, axis=1)  # steps 1..K−1
                spread_end.append(float(d[-1] / gf[-2]))
                spread_last.append(float(d[-100:].mean() / gf[-101:-1].mean()))
        row = {
            "dtype": dtype, "lr": lr, "seed": seed,
            "spread_end": spread_end, "spread_last_100": spread_last,
        }  # fmt: skip
        results["noise"].append(row)
        OUT.write_text(json.dumps(results, indent=1))
        rows.append(
            (dtype, lr, seed, f"{np.median(spread_end):.3f}", f"{max(spread_end):.3f}",
             f"{np.median(spread_last):.3f}", f"{max(spread_last):.3f}")
        )  # fmt: skip
        print(rows[-1], flush=True)
    header = ("dtype", "η", "seed", "step 1000: median", "max", "last 100: median", "max")
    print(table(rows, header))


def main():
    parts = sys.argv[1:] or ["onset", "me", "noise"]
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["machine"] = (
        f"{platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"jax {jax.__version__}, flowode {fo.__version__}"
    )
    if "onset" in parts:
        results["onset"] = []
        onset_part(results)
    if "me" in parts:
        results["modified_equation"] = []
        modified_equation_part(results)
    if "noise" in parts:
        results["noise"] = []
        noise_part(results)
    OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
