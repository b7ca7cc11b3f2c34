"""How the cost of each flow grows with the number of parameters n and of unstable
eigenvalues k, with fitted log-log slopes.

n: MLP regressions (8-w-w-1, 128 points) of 1e3 to 1e5 parameters, η = 1.5/S(w0), so
   that GD starts at ηS = 1.5 (at 2/S(w0) it diverged at n = 1093 in float32). Every
   process's own dynamics (`process.run`, compiled), wall time per GD step and its ratio
   to GD, fastest of 3 interleaved rounds; oracle counts from one `simulate` run.
k: central flow on k copies of the softening quartic (each its own unstable direction)
   next to a 1000-dimensional quadratic bulk, so that k eigenvalues sit at 2/η (float64).

Run: python benchmarks/bench_scaling.py [n|k]  (writes benchmarks/scaling.json)
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from _common import interleaved_times, results_path, table

import flowode as fo

FLOWS = ("gd", "gradient", "rod", "central")
WIDTHS = (28, 50, 95, 170, 310)  # n = w² + 11w + 1: 1.1e3 .. 1.0e5
KS = (1, 2, 4, 8)
STEPS = 200


def quartic_copies(k: int, bulk: int = 1000, dtype=jnp.float64) -> fo.Problem:
    """k softening quartics (u_i, v_i) with slightly different sharpness, plus a bulk."""
    s0 = jnp.linspace(1.85, 1.95, k)
    lam = jnp.linspace(0.01, 1.0, bulk)

    def loss(w):
        u, v, z = w[:k], w[k : 2 * k], w[2 * k :]
        quartic = -0.01 * u + 0.5 * (s0 + u) * v**2 - 0.75 * v**4
        return jnp.sum(quartic) + 0.5 * jnp.sum(lam * z**2)

    w0 = jnp.concatenate([jnp.zeros(k), jnp.full(k, 0.1), jnp.full(bulk, 0.1)]).astype(dtype)
    return fo.Problem(loss, w0, name=f"quartic-x{k}")


def slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def scale_n():
    rows, results = [], []
    for width in WIDTHS:
        problem = fo.problems.mlp_regression(width=width)
        f, w0, data = problem.flat_loss, problem.flat_w0, problem.data
        U0 = jax.random.normal(jax.random.key(0), (w0.shape[0], 2), w0.dtype)
        top = fo.top_eigs(f, w0, U0, data, maxiter=300)[0]
        lr = 1.5 / float(top[0])  # 2/S(w0) made GD diverge at n = 1093 (float32)
        # Oracle counts from one simulate run; wall times of each process's own dynamics
        # (`process.run`, compiled), fastest of interleaved rounds: simulate runs every
        # process in one program, so its wall_time is the whole run's.
        ds = fo.simulate(problem, lr=lr, steps=STEPS, flows=FLOWS, eig_every=STEPS)
        processes = {name: fo.FLOWS[name]() for name in FLOWS}
        runs = {
            name: jax.jit(lambda w, lr, d, p=p, f=f: p.run(f, w, lr, d, STEPS))
            for name, p in processes.items()
        }
        lr_arr = jnp.asarray(lr, w0.dtype)
        for run in runs.values():
            jax.block_until_ready(run(w0, lr_arr, data))
        times = interleaved_times(runs, w0, lr_arr, data, rounds=3)
        best = {name: min(t) for name, t in times.items()}
        for flow in FLOWS:
            r = ds.sel(flow=flow)
            entry = {
                "n_params": problem.n_params,
                "flow": flow,
                "lr": lr,
                "per_step_ms": 1e3 * best[flow] / STEPS,
                "ratio_to_gd": best[flow] / best["gd"],
                "grads_per_step": int(r.n_grad) / STEPS,
                "hvps_per_step": int(r.n_hvp) / STEPS,
                "thirds_per_step": int(r.n_third) / STEPS,
            }
            results.append(entry)
            rows.append(
                (
                    problem.n_params,
                    flow,
                    f"{entry['per_step_ms']:.3f}",
                    f"{entry['ratio_to_gd']:.1f}",
                    f"{entry['grads_per_step']:.1f}",
                    f"{entry['hvps_per_step']:.1f}",
                    f"{entry['thirds_per_step']:.2f}",
                )
            )
            print(rows[-1], flush=True)
    header = ("n", "flow", "ms/step", "x GD", "grads", "HVPs", "thirds")
    print(table(rows, header))
    slopes = {}
    for flow in FLOWS:
        sel = [e for e in results if e["flow"] == flow]
        slopes[flow] = slope([e["n_params"] for e in sel], [e["per_step_ms"] for e in sel])
    print("fitted slope of log(time per step) against log(n):", slopes)
    return {"runs": results, "slopes": slopes}


def scale_k():
    # float64: in float32 central flow diverged at k = 8 on this problem (step 20, the
    # SDCP residual near 1e-4 just before); k ≤ 6 ran fine in float32.
    with jax.enable_x64(True):
        return _scale_k()


def _scale_k():
    rows, results = [], []
    for k in KS:
        problem = quartic_copies(k)
        flow = fo.CentralFlow(max_k=k + 2)
        ds = fo.simulate(problem, lr=1.0, steps=STEPS, flows=("gd", flow), eig_every=STEPS)
        r = ds.sel(flow="central")
        entry = {
            "k": k,
            "n_params": problem.n_params,
            "max_critical": int(r.n_critical.max()),
            "per_step_ms": 1e3 * float(r.wall_time) / STEPS,
            "ratio_to_gd": float(r.wall_time) / float(ds.wall_time.sel(flow="gd")),
            "hvps_per_step": int(r.n_hvp) / STEPS,
            "thirds_per_step": int(r.n_third) / STEPS,
            "pinned": abs(float(r.sharpness.sel(step=STEPS)) - 2.0),  # η = 1
        }
        results.append(entry)
        rows.append(
            (
                k,
                entry["max_critical"],
                f"{entry['per_step_ms']:.3f}",
                f"{entry['ratio_to_gd']:.0f}",
                f"{entry['hvps_per_step']:.1f}",
                f"{entry['thirds_per_step']:.1f}",
                f"{entry['pinned']:.1e}",
            )
        )
        print(rows[-1], flush=True)
    print(table(rows, ("k", "critical", "ms/step", "x GD", "HVPs", "thirds", "|S-2|")))
    s = slope([e["k"] for e in results], [e["per_step_ms"] for e in results])
    print(f"fitted slope of log(central time per step) against log(k): {s:.2f}")
    return {"runs": results, "slope": s}


def main(which=("n", "k")):
    path = results_path("scaling")
    out = json.loads(path.read_text()) if path.exists() else {}
    for part, run in (("n", scale_n), ("k", scale_k)):
        if part in which:
            out[part] = run()
            path.write_text(json.dumps(out, indent=1))  # after each part
            print(f"wrote {path}")


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ("n", "k"))
