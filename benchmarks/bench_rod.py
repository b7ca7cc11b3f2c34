"""Rod flow's cost and accuracy against GD for several solvers, measured in one run.

Parts (`python bench_rod.py [cost] [accuracy]`, both by default):

1. cost: MLP regression (`mlp_regression(seed=0)`, 433 parameters), η = 0.1, 1000 steps,
   float32. Wall time of each process's own dynamics (`process.run`, compiled; the
   fastest of 7 interleaved rounds) against GD's in the same rounds, oracle calls per GD
   step, and the iterate's distance to GD's at step 1000.
2. accuracy: seeds 0-3, float32 and float64: the rod's iterate X + (−1)^k Y against GD's
   w_k, at step 1000 and at its largest after the rod's onset (first step after 100
   with |Y| > 1e-2), for the default solver and the one it replaced (Heun, PID rtol 1e-3,
   absolute atol 1e-5).

Writes benchmarks/rod.json after each part and prints the tables.
"""

import json
import pathlib
import platform
import sys

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from _common import interleaved_times, labelled, table

import flowode as fo

OUT = pathlib.Path(__file__).with_name("rod.json")
ROUNDS = 7
STEPS = 1000
pid = diffrax.PIDController


class AbsoluteAtolRod(fo.RodFlow):
    """The rod before its tolerance followed the state: atol absolute, as diffrax's."""

    def error_scale(self, y):
        return None


def solvers():
    return {
        "RKC2, 2 JVPs per 10 steps (default)": fo.RodFlow(),
        "RKC2, u held as X, safety 0.9 (before)": fo.RodFlow(
            direction_tolerance=1.0, stepsize_controller=pid(rtol=1e-3, atol=1e-4)
        ),
        "RKC2, 1 JVP every step (before)": fo.RodFlow(solver=fo.RKC2(power_iterations=1)),
        "RKC2, difference power iteration": fo.RodFlow(
            solver=fo.RKC2(power_iterations=1, difference=True)
        ),
        "RKC2, rtol 1e-2": fo.RodFlow(stepsize_controller=pid(rtol=1e-2, atol=1e-3)),
        "Heun rtol 1e-3, atol 1e-5 absolute (before)": AbsoluteAtolRod(
            solver=diffrax.Heun(), stepsize_controller=pid(rtol=1e-3, atol=1e-5)
        ),
        "Heun rtol 1e-2": fo.RodFlow(solver=diffrax.Heun(), stepsize_controller=pid(1e-2, 1e-3)),
        "Tsit5 rtol 1e-4": fo.RodFlow(solver=diffrax.Tsit5(), stepsize_controller=pid(1e-4, 1e-5)),
        "Ralston, fixed h = 1": fo.RodFlow(
            solver=diffrax.Ralston(), stepsize_controller=diffrax.ConstantStepSize(), dt0=1.0
        ),
    }


def save(results):
    OUT.write_text(json.dumps(results, indent=1))


def cost_part(results):
    p = fo.problems.mlp_regression(seed=0)
    f, w0, data = p.flat_loss, p.flat_w0, p.data
    lr = jnp.asarray(0.1, w0.dtype)
    processes = {"gd": fo.GradientDescent(), **solvers()}
    out, runs = {}, {}
    for name, process in processes.items():
        runs[name] = jax.jit(lambda w, lr, d, pr=process: pr.run(f, w, lr, d, STEPS))
        jax.block_until_ready(runs[name](w0, lr, data))
        out[name] = {}
        if name != "gd":
            ds = fo.simulate(p, lr=0.1, steps=STEPS, flows=(process,), eig_every=STEPS)
            r = ds.sel(flow="rod")
            out[name] = {
                "grads_per_step": int(r.n_grad) / STEPS,
                "hvps_per_step": int(r.n_hvp) / STEPS,
                "iterate_distance": float(r.distance_to_gd[-1]),
            }
        print(name, out[name], flush=True)
    times = interleaved_times(runs, w0, lr, data, rounds=ROUNDS)
    gd_wall = min(times["gd"])
    rows = []
    for name in processes:
        r = out[name]
        r["wall_s"], r["x_gd"] = min(times[name]), min(times[name]) / gd_wall
        if name == "gd":
            continue
        rows.append(
            (name, f"{r['wall_s']:.3f}", f"{r['x_gd']:.2f}", f"{r['grads_per_step']:.2f}",
             f"{r['hvps_per_step']:.2f}", f"{r['iterate_distance']:.3f}")
        )  # fmt: skip
    results["cost"] = {"gd_wall_s": gd_wall, **out}
    save(results)
    print(f"GD: {gd_wall:.4f} s")
    print(table(rows, ("solver", "rod s", "× GD", "grads/step", "HVPs/step", "dist GD")))


def accuracy_part(results, seeds=(0, 1, 2, 3)):
    chosen = solvers()
    flows = (
        "gradient",
        labelled(chosen["RKC2, 2 JVPs per 10 steps (default)"], "rod"),
        labelled(chosen["Heun rtol 1e-3, atol 1e-5 absolute (before)"], "rod_heun"),
    )
    out, rows = {}, []
    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            for seed in seeds:
                p = fo.problems.mlp_regression(seed=seed, dtype=getattr(jnp, dtype))
                ds = fo.simulate(p, lr=0.1, steps=STEPS, flows=flows, eig_every=STEPS)
                row = {}
                for label in ("rod", "rod_heun"):
                    length = ds.rod_length.sel(flow=label).values
                    onset = 100 + int(np.argmax(length[100:] > 1e-2))
                    d = ds.distance_to_gd.sel(flow=label).values
                    row[label] = {
                        "onset": onset,
                        "end": float(d[-1]),
                        "max_after_onset": float(d[onset:].max()),
                        "grads_per_step": int(ds.n_grad.sel(flow=label)) / STEPS,
                    }
                row["gradient_end"] = float(ds.distance_to_gd.sel(flow="gradient")[-1])
                out[f"{dtype}/{seed}"] = row
                a, b = row["rod"], row["rod_heun"]
                rows.append(
                    (dtype, seed, f"{a['end']:.4f}", f"{b['end']:.4f}",
                     f"{a['max_after_onset']:.4f}", f"{b['max_after_onset']:.4f}",
                     f"{a['grads_per_step']:.2f}", f"{b['grads_per_step']:.2f}",
                     f"{row['gradient_end']:.3f}")
                )  # fmt: skip
                print(rows[-1], flush=True)
    results["accuracy"] = out
    save(results)
    header = (
        "dtype", "seed", "end: RKC2", "end: Heun", "max after onset: RKC2",
        "max: Heun", "grads: RKC2", "grads: Heun", "gradient flow end",
    )  # fmt: skip
    print(table(rows, header))


def main():
    parts = sys.argv[1:] or ["cost", "accuracy"]
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results["machine"] = (
        f"{platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}"
    )
    if "cost" in parts:
        cost_part(results)
    if "accuracy" in parts:
        accuracy_part(results)


if __name__ == "__main__":
    sys.exit(main())
