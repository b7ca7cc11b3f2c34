"""The progress bar's cost: `simulate` with a progress callable against `progress=False`,
on the same problem in one process.

With progress, a chunk runs in calls of the same compiled program sized to take about a
second each (`_simulate._Pace`); without it, in one call. The digits CNN (cross-entropy,
η = 0.25), GD observed at its iterate and midpoint (about 0.2 s per step on 2 CPU cores,
mostly eigenvalue observation), 150 steps in chunks of 100: a chunk takes about 20 s, the
case a bar is for. Each setting is run `ROUNDS` times,
interleaved, after a compiling run; the table gives the median wall time (compiled
run, as `simulate` reports it, and the whole call), the number of progress updates and
the longest gap between them. Writes benchmarks/progress.json.
"""

import json
import statistics
import time

import numpy as np
from _common import results_path, table

import flowode as fo

STEPS, CHUNK, ROUNDS = 150, 100, 2
FLOWS = ("gd",)


def run(problem, progress):
    ticks = []

    def tick(done, steps):
        ticks.append((time.perf_counter(), done))

    start = time.perf_counter()
    ds = fo.simulate(
        problem,
        lr=0.25,
        steps=STEPS,
        chunk=CHUNK,
        flows=FLOWS,
        progress=tick if progress else False,
    )
    total = time.perf_counter() - start
    gaps = np.diff([start] + [t for t, _ in ticks]) if ticks else np.array([total])
    return ds, total, len(ticks), float(gaps[1:].max()) if len(gaps) > 1 else float("nan")


def main():
    problem = fo.problems.digits_cnn(loss="ce")
    run(problem, False)  # compile
    runs = {False: [], True: []}
    for _ in range(ROUNDS):
        for progress in (False, True):
            runs[progress].append(run(problem, progress))
    same = all(
        np.array_equal(a[0].loss.values, b[0].loss.values, equal_nan=True)
        for a, b in zip(runs[False], runs[True], strict=True)
    )
    rows, out = [], {}
    for progress, results in runs.items():
        wall = statistics.median(float(r[0].wall_time.max()) for r in results)
        total = statistics.median(r[1] for r in results)
        updates = results[0][2]
        gap = max(r[3] for r in results) if progress else float("nan")
        name = "progress" if progress else "no progress"
        out[name] = dict(wall=wall, total=total, updates=updates, longest_gap=gap)
        rows.append((name, f"{wall:.2f}", f"{total:.2f}", updates, f"{gap:.2f}"))
    ratio = out["progress"]["total"] / out["no progress"]["total"]
    out["ratio"], out["identical"] = ratio, same
    print(f"digits CNN (cross-entropy), η = 0.25, {STEPS} steps, chunk {CHUNK}, flows {FLOWS}")
    print(table(rows, ("", "compiled s", "whole call s", "updates", "longest gap s")))
    print(f"with progress ÷ without: {ratio:.3f}; losses bit-identical: {same}")
    results_path("progress").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
