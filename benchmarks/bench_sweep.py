"""A sweep in one vmapped program against a Python loop of `simulate` calls.

MLP regression (433 parameters), 2 seeds × 4 learning rates (0.05 … 0.2), 500 steps,
gd, gradient and rod flow, float32, 2 CPU cores, one device. Both sides are timed warm
(second call) and cold (first call, compilation included), and the per-member gradient
counts of the adaptive flows are compared (a vmapped adaptive solver must not force
every member onto the smallest member's steps). Prints a table and writes
benchmarks/sweep.json.
"""

import json
import time
from pathlib import Path

import numpy as np
from _common import table

import flowode as fo

HERE = Path(__file__).parent
SEEDS, LRS, STEPS, FLOWS = [0, 1], [0.05, 0.1, 0.15, 0.2], 500, ("gd", "gradient", "rod")


def main():
    make = lambda s: fo.problems.mlp_regression(seed=s)
    times = {}
    for call in ("cold", "warm"):
        start = time.perf_counter()
        ds = fo.sweep(make, seeds=SEEDS, lr=LRS, steps=STEPS, flows=FLOWS)
        times[f"sweep_{call}"] = time.perf_counter() - start
    loop = {}
    for call in ("cold", "warm"):
        start = time.perf_counter()
        for s in SEEDS:
            for lr in LRS:
                loop[(s, lr)] = fo.simulate(make(s), lr=lr, steps=STEPS, flows=FLOWS)
        times[f"loop_{call}"] = time.perf_counter() - start
    grads = {
        flow: [
            [int(ds.n_grad.sel(seed=s, lr=lr, flow=flow)), int(loop[(s, lr)].n_grad.sel(flow=flow))]
            for s in SEEDS
            for lr in LRS
        ]
        for flow in ("gradient", "rod")
    }
    diff = max(
        float(np.nanmax(np.abs(ds.loss.sel(seed=s, lr=lr).values - loop[(s, lr)].loss.values)))
        for s in SEEDS
        for lr in LRS
    )
    rows = [
        ("cold (compilation included)", f"{times['sweep_cold']:.1f}", f"{times['loop_cold']:.1f}"),
        ("warm", f"{times['sweep_warm']:.1f}", f"{times['loop_warm']:.1f}"),
    ]
    print(table(rows, ("8 members, 500 steps", "sweep (s)", "loop of simulate (s)")))
    for flow, pairs in grads.items():
        print(f"{flow} gradients per member, sweep vs own run: {pairs}")
    print(f"max |loss difference| between a member and its own run: {diff:.2e}")
    out = dict(times=times, grads=grads, max_loss_difference=diff)
    (HERE / "sweep.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
