"""Every process on every benchmark problem: compiled wall time (median of repeats),
compile time, oracle calls per GD step, ratio to GD in the same run, and the compiled
program's memory (XLA's own accounting: arguments + outputs + temporaries).

Prints one table and writes benchmarks/results.json.
"""

import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from _common import median_run, table

import flowode as fo

HERE = Path(__file__).parent
FLOWS = ("gd", "gradient", "central", "rod")
PROBLEMS = {  # label: (problem, lr, steps, repeats)
    "quartic": (lambda: fo.problems.softening_quartic(), 1.0, 1000, 3),
    "mlp-regression-433": (lambda: fo.problems.mlp_regression(), 0.1, 1000, 3),
    "digits-mlp-55k": (lambda: fo.problems.digits_mlp(width=200), 0.6, 300, 3),
    "digits-cnn": (lambda: fo.problems.digits_cnn(), 0.25, 300, 1),
}


def memory_mb(process, problem, lr, steps):
    """XLA's memory accounting of the compiled run (MB); None where not reported."""
    f, w0 = problem.flat_loss, problem.flat_w0
    run = lambda w, lr, d: process.run(f, w, lr, d, steps)
    stats = jax.jit(run).lower(w0, jnp.asarray(lr, w0.dtype), problem.data).compile()
    stats = stats.memory_analysis()
    if stats is None:
        return None
    total = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    return total / 2**20


def main(names=None):
    results, rows = [], []
    for label, (make, lr, steps, repeats) in PROBLEMS.items():
        if names and label not in names:
            continue
        problem = make()
        ds = median_run(problem, FLOWS, lr=lr, steps=steps, repeats=repeats, eig_every=steps)
        gd_wall = float(ds.wall_time.sel(flow="gd"))
        for flow in FLOWS:
            r = ds.sel(flow=flow)
            process = fo.FLOWS[flow]()
            entry = {
                "problem": label,
                "n_params": problem.n_params,
                "lr": lr,
                "steps": steps,
                "flow": flow,
                "wall_s": float(r.wall_time),
                "compile_s": float(r.compile_time),
                "ratio_to_gd": float(r.wall_time) / gd_wall,
                "grads_per_step": int(r.n_grad) / steps,
                "hvps_per_step": int(r.n_hvp) / steps,
                "thirds_per_step": int(r.n_third) / steps,
                "memory_mb": memory_mb(process, problem, lr, steps),
            }
            results.append(entry)
            mem = entry["memory_mb"]
            rows.append(
                (
                    label,
                    str(problem.n_params),
                    flow,
                    f"{entry['wall_s']:.3f}",
                    f"{entry['compile_s']:.1f}",
                    f"{entry['ratio_to_gd']:.1f}",
                    f"{entry['grads_per_step']:.2f}",
                    f"{entry['hvps_per_step']:.1f}",
                    f"{entry['thirds_per_step']:.2f}",
                    "-" if mem is None else f"{mem:.1f}",
                )
            )
        print(f"done {label}", file=sys.stderr, flush=True)
    machine = (
        f"{platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})"
    )
    header = (
        "problem", "params", "flow", "wall s", "compile s", "×GD", "grads/step",
        "HVPs/step", "thirds/step", "memory MB",
    )  # fmt: skip
    print(f"all flows, float32, median of repeats; {machine}")
    print(table(rows, header))
    (HERE / "results.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=1)
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
