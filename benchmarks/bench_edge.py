"""Edge flow (`fo.EdgeFlow`): cost, onset, peak sharpness, options and k directions; one run.

Parts (`python bench_edge.py [cost] [onset] [peak] [kdir]`, all by default):

1. cost: MLP regression (`mlp_regression(seed=0)`, 433 parameters), η = 0.1, 1000 steps,
   float32. Wall time of each process's own dynamics (`process.run`, compiled; the
   fastest of 7 interleaved rounds) against GD's in the same run, beside rod and central
   flow; oracle calls per GD step; the centre's distance to GD's midpoint at step 1000
   over gradient flow's. Edge flow with its default solver and with others.
2. onset: seeds 0-3, float32 and float64: GD's onset (half its second difference
   |w_{k+1} − 2w_k + w_{k−1}|/4 > 1e-2) against each edge variant's (first step after 100
   with magnitude > 1e-2) and the rod's, the centre ratio at step 1000, and the alignment
   of u with the observer's top eigenvector after the onset. Variants: the default, the
   "centre" magnitude sharpness (the prototype), the "linear" rate, the first-order
   flow (no O(η²) term), no floor, and a tight solver.
3. peak: ηS at each process's point, every step, on the MLP (η = 0.1, 1000 steps) and the
   digits MLP (η = 0.6, 1000 steps): its peak at the onset (max over steps up to GD's onset
   + 100, GD's onset counted after step 100) and the step of that peak, for GD, rod and
   edge flow (central flow pins it at 2).
4. kdir: a three-output MLP (`mlp_regression(d_out=3)`, η = 0.1, 2000 steps), where
   three eigenvalues reach 2/η: the centre's distance to GD's midpoint over gradient
   flow's, at the end and averaged over the last 500 steps, for central, rod and edge
   flow with k = 1, 2, 3.

Writes benchmarks/edge.json after each part and prints the tables.
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
from _common import interleaved_times, labelled, table

import flowode as fo

OUT = pathlib.Path(__file__).with_name("edge.json")
ROUNDS = 7
TIGHT = {
    "float64": diffrax.PIDController(rtol=1e-8, atol=1e-12),
    "float32": diffrax.PIDController(rtol=1e-6, atol=1e-6),
}


def gd_onset(ds, after=0):
    """GD's onset: the first step past `after` where half its second difference is > 1e-2."""
    w = ds.params.sel(flow="gd").values
    half_second_difference = np.linalg.norm(w[2:] - 2 * w[1:-1] + w[:-2], axis=1) / 4
    above = np.nonzero(half_second_difference[after:] > 1e-2)[0]
    return int(above[0]) + after + 1 if above.size else None


def flow_onset(ds, label):
    var = "rod_length" if label.startswith("rod") else "oscillation_magnitude"
    m = ds[var].sel(flow=label).values
    above = np.nonzero(m[100:] > 1e-2)[0]
    return int(above[0]) + 100 if above.size else None


def centre_ratio(ds, label, last=1):
    cd = ds.center_distance_to_gd.isel(step=slice(-last, None))
    return float(cd.sel(flow=label).mean() / cd.sel(flow="gradient").mean())


def save(results):
    OUT.write_text(json.dumps(results, indent=1))


class AbsoluteAtolEdge(fo.EdgeFlow):
    """Edge flow before its tolerance followed the state: atol absolute, as diffrax's."""

    def error_scale(self, y):
        return None


# -- 1. cost ---------------------------------------------------------------------------


def cost_part(results):
    steps, lr = 1000, 0.1
    p = fo.problems.mlp_regression(seed=0)
    f, w0, data = p.flat_loss, p.flat_w0, p.data
    tsit5 = diffrax.Tsit5()
    solvers = {
        "edge (default)": fo.EdgeFlow(),
        "edge, first order": fo.EdgeFlow(modified_equation=False),
        "edge, Ralston h=1": fo.EdgeFlow(
            solver=diffrax.Ralston(), stepsize_controller=diffrax.ConstantStepSize(), dt0=1.0
        ),
        "edge, first order, Ralston h=1": fo.EdgeFlow(
            modified_equation=False,
            solver=diffrax.Ralston(),
            stepsize_controller=diffrax.ConstantStepSize(),
            dt0=1.0,
        ),
        "edge, RKC2 rtol 1e-2": fo.EdgeFlow(
            stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-3)
        ),
        "edge, Heun rtol 1e-3, absolute atol (before)": AbsoluteAtolEdge(
            solver=diffrax.Heun(), stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-5)
        ),
        "edge, first order, Heun (before)": AbsoluteAtolEdge(
            modified_equation=False,
            solver=diffrax.Heun(),
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-5),
        ),
        "edge, Tsit5 rtol 1e-4": fo.EdgeFlow(
            solver=tsit5, stepsize_controller=diffrax.PIDController(rtol=1e-4, atol=1e-6)
        ),
    }
    processes = {
        "gd": fo.GradientDescent(),
        "gradient": fo.GradientFlow(),
        "rod": fo.RodFlow(),
        "central": fo.CentralFlow(),
        **solvers,
    }
    lr_arr = jnp.asarray(lr, w0.dtype)
    gd_path, _, _ = jax.jit(lambda w: fo.GradientDescent().run(f, w, lr_arr, data, steps + 1))(w0)
    gd_path = np.asarray(gd_path)
    mid = (gd_path[-3] + 2 * gd_path[-2] + gd_path[-1]) / 4  # GD's midpoint at step 1000
    out, rows, runs = {}, [], {}
    for name, process in processes.items():
        runs[name] = jax.jit(lambda w, lr, d, pr=process: pr.run(f, w, lr, d, steps))
        centres, counts, result = jax.block_until_ready(runs[name](w0, lr_arr, data))
        out[name] = {
            "grads_per_step": int(counts.n_grad) / steps,
            "hvps_per_step": int(counts.n_hvp) / steps,
            "thirds_per_step": int(counts.n_third) / steps,
            "centre_distance": float(np.linalg.norm(np.asarray(centres)[-1] - mid)),
            "result": int(result),
        }
        print(name, out[name], flush=True)
    times = interleaved_times(runs, w0, lr_arr, data, rounds=ROUNDS)
    for name in processes:
        out[name]["wall_s"] = min(times[name])
        out[name]["wall_s_median"] = float(np.median(times[name]))
    gd_wall, gf = out["gd"]["wall_s"], out["gradient"]["centre_distance"]
    for name, r in out.items():
        r["x_gd"] = r["wall_s"] / gd_wall
        r["centre_ratio"] = r["centre_distance"] / gf
        rows.append(
            (name, f"{r['wall_s']:.3f}", f"{r['x_gd']:.2f}", f"{r['grads_per_step']:.2f}",
             f"{r['hvps_per_step']:.2f}", f"{r['centre_ratio']:.3f}")
        )  # fmt: skip
    results["cost"] = out
    save(results)
    print(table(rows, ("process", "s", "× GD", "grads/step", "HVPs/step", "centre/GF")))


# -- 2. onset and options --------------------------------------------------------------


def onset_flows(dtype):
    return (
        fo.GradientFlow(),
        fo.RodFlow(),
        fo.EdgeFlow(),
        fo.EdgeFlow(magnitude_sharpness="centre"),
        labelled(fo.EdgeFlow(amplitude_rate="linear"), "edge_linear"),
        fo.EdgeFlow(modified_equation=False),
        labelled(fo.EdgeFlow(floor=0), "edge_nofloor"),
        labelled(
            fo.EdgeFlow(solver=diffrax.Tsit5(), stepsize_controller=TIGHT[dtype]), "edge_tight"
        ),
    )


def onset_part(results, seeds=(0, 1, 2, 3)):
    results["onset"] = []
    rows = []
    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            flows = onset_flows(dtype)
            for seed in seeds:
                t = time.time()
                p = fo.problems.mlp_regression(seed=seed, dtype=getattr(jnp, dtype))
                ds = fo.simulate(p, lr=0.1, steps=1000, flows=flows, eig_every=10, save_params=True)
                g = gd_onset(ds)
                row = {"dtype": dtype, "seed": seed, "gd_onset": g}
                for flow in flows[1:]:
                    label = flow.name
                    on = flow_onset(ds, label)
                    entry = {
                        "onset": on,
                        "onset_minus_gd": None if on is None or g is None else on - g,
                        "centre_ratio": centre_ratio(ds, label),
                        "centre_ratio_last100": centre_ratio(ds, label, 100),
                        "distance_to_gd": float(ds.distance_to_gd.sel(flow=label)[-1]),
                        "diverged_at": int(ds.diverged_at.sel(flow=label)),
                        "grads_per_step": int(ds.n_grad.sel(flow=label)) / 1000,
                        "hvps_per_step": int(ds.n_hvp.sel(flow=label)) / 1000,
                    }
                    if "alignment" in ds and on is not None:
                        al = ds.alignment.sel(flow=label).sel(step=slice(on + 20, None))
                        al = al.dropna("step")
                        if al.size:
                            entry["min_alignment_after_onset"] = float(al.min())
                    row[label] = entry
                    rows.append(
                        (dtype, seed, g, label, str(on), str(entry["onset_minus_gd"]),
                         f"{entry['centre_ratio']:.3f}", f"{entry['centre_ratio_last100']:.3f}",
                         f"{entry.get('min_alignment_after_onset', float('nan')):.4f}",
                         f"{entry['grads_per_step']:.2f}")
                    )  # fmt: skip
                    print(rows[-1], flush=True)
                print(f"({time.time() - t:.0f} s)", flush=True)
                results["onset"].append(row)
                save(results)
    print(
        table(
            rows,
            (
                "dtype",
                "seed",
                "GD onset",
                "flow",
                "onset",
                "−GD",
                "centre/GF",
                "last 100",
                "min |cos|",
                "grads/step",
            ),
        )  # fmt: skip
    )


# -- 3. peak sharpness at the onset ----------------------------------------------------


def peak_part(results, only=None):
    results.setdefault("peak", [])
    rows = []
    cases = (
        ("mlp", lambda: fo.problems.mlp_regression(seed=0), 0.1, 1000),
        ("digits-mlp", lambda: fo.problems.digits_mlp(), 0.6, 1000),
    )
    for name, make, lr, steps in cases:
        if only is not None and name != only:
            continue
        ds = fo.simulate(
            make(), lr=lr, steps=steps, flows=("rod", "edge"), eig_every=1, save_params=True
        )
        fo.save(ds, OUT.with_name(f"edge_peak_{name}.nc"))  # for a second look (not committed)
        g = gd_onset(ds, after=100)  # (the digits MLP's first steps are large: skip them)
        cross = int(np.argmax(lr * ds.sharpness.sel(flow="gd").values > 2))
        row = {"problem": name, "lr": lr, "gd_onset": g}
        for label in ("gd", "rod", "edge"):
            s = lr * ds.sharpness.sel(flow=label).values
            window = s[: max(g, cross) + 101]
            i = int(np.nanargmax(window))
            first = int(np.argmax(s > 2))
            row[label] = {"peak": float(window[i]), "peak_step": i, "first_above_2": first,
                          "mean_last_100": float(np.nanmean(s[-100:])),
                          "onset": g if label == "gd" else flow_onset(ds, label)}  # fmt: skip
            if label == "edge":
                e = lr * ds.edge_sharpness.sel(flow=label).values[: g + 101]
                row[label]["peak_uHu"] = float(np.nanmax(e))
            rows.append((name, label, g, first, f"{window[i]:.3f}", i,
                         f"{row[label]['mean_last_100']:.3f}"))  # fmt: skip
            print(rows[-1], flush=True)
        results["peak"] = [r for r in results["peak"] if r["problem"] != name] + [row]
        save(results)
    print(table(rows, ("problem", "process", "GD onset", "ηS > 2 at", "peak ηS", "at step",
                       "mean ηS, last 100")))  # fmt: skip


# -- 4. several directions -------------------------------------------------------------


def kdir_part(results):
    p = fo.problems.mlp_regression(d_out=3)
    lr, steps = 0.1, 2000
    flows = ("gradient", "central", "rod", fo.EdgeFlow(), fo.EdgeFlow(k=2), fo.EdgeFlow(k=3))
    t = time.time()
    ds = fo.simulate(p, lr=lr, steps=steps, flows=flows, eig_k=3, eig_every=10)
    print(f"({time.time() - t:.0f} s)", flush=True)
    fo.save(ds, OUT.with_name("edge_kdir.nc"))  # for a second look (not committed)
    eigs = lr * ds.eigs.sel(flow="gd").isel(eig=slice(0, 3)).dropna("step", how="any")
    at = []
    for i in range(3):
        above = np.nonzero(eigs.isel(eig=i).values > 1.95)[0]
        at.append(int(eigs.step[above[0]]) if above.size else None)
    out = {"lr": lr, "steps": steps, "gd_eig_reaches_1.95_at": at}
    rows = []
    for label in ("gradient", "central", "rod", "edge", "edge_k2", "edge_k3"):
        out[label] = {
            "centre_ratio_end": centre_ratio(ds, label),
            "centre_ratio_last500": centre_ratio(ds, label, 500),
            "distance_to_gd_end": float(ds.distance_to_gd.sel(flow=label)[-1]),
            "grads_per_step": int(ds.n_grad.sel(flow=label)) / steps,
            "hvps_per_step": int(ds.n_hvp.sel(flow=label)) / steps,
            "diverged_at": int(ds.diverged_at.sel(flow=label)),
        }
        r = out[label]
        rows.append((label, f"{r['centre_ratio_end']:.3f}", f"{r['centre_ratio_last500']:.3f}",
                     f"{r['distance_to_gd_end']:.3f}", f"{r['grads_per_step']:.2f}",
                     f"{r['hvps_per_step']:.2f}"))  # fmt: skip
    results["kdir"] = out
    save(results)
    print("GD's top eigenvalues reach ηλ = 1.95 at steps", at)
    print(table(rows, ("flow", "centre/GF end", "centre/GF last 500", "iterate dist", "grads/step",
                       "HVPs/step")))  # fmt: skip


def main():
    parts = sys.argv[1:] or ["cost", "onset", "peak", "kdir"]  # "peak:digits-mlp": one problem
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["machine"] = (
        f"{platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"jax {jax.__version__}, flowode {fo.__version__}"
    )
    for part in parts:
        part, _, only = part.partition(":")
        run = {"cost": cost_part, "onset": onset_part, "peak": peak_part, "kdir": kdir_part}[part]
        run(results, only) if only else run(results)
    save(results)


if __name__ == "__main__":
    sys.exit(main())
