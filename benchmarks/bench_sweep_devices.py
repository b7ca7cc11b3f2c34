"""A sweep sharded over the CPU's cores, exposed as JAX devices.

XLA runs one CPU device's program on one thread for ops this small, so a sweep on one
device uses one core. Started with `--xla_force_host_platform_device_count` = the number
of cores (set here, before JAX starts: the library itself changes no JAX setting), the
members are sharded over the cores (`jax.shard_map`) and each core runs its shard one
member after another. MLP regression (433 parameters), gd + gradient + rod, 1000 steps,
`eig_every=10`, float32; members = 4 seeds × lrs evenly spaced in [0.02, 0.2]; each sweep
warm (its second call), against one member's warm `simulate` in the same run. Writes
benchmarks/sweep_devices.json and prints a table.
"""

import os
import sys

CORES = os.cpu_count() or 1
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={CORES}"
)

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _common import table  # noqa: E402

import flowode as fo  # noqa: E402

HERE = Path(__file__).parent
STEPS, FLOWS, EVERY = 1000, ("gd", "gradient", "rod"), 10


def warm(fn):
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(sizes=(4, 16, 64)):
    make = lambda s: fo.problems.mlp_regression(seed=s)
    one = warm(lambda: fo.simulate(make(0), lr=0.1, steps=STEPS, flows=FLOWS, eig_every=EVERY))
    out, rows = {"cores": CORES, "one_member_simulate_s": one, "sizes": {}}, []
    for m in sizes:
        lrs = list(np.linspace(0.02, 0.2, m // 4))
        entry = {}
        for n in sorted({1, CORES}):
            kw = dict(seeds=range(4), lr=lrs, steps=STEPS, flows=FLOWS, eig_every=EVERY)
            entry[n] = warm(lambda kw=kw, n=n: fo.sweep(make, **kw, devices=jax.devices()[:n]))
            print(m, n, f"{entry[n]:.2f} s", flush=True)
        out["sizes"][m] = entry
        rows.append((m, *(f"{entry[n]:.2f} s ({entry[n] / one:.1f}×)" for n in sorted({1, CORES}))))
    (HERE / "sweep_devices.json").write_text(json.dumps(out, indent=1))
    print(f"{CORES} cores; one member's warm simulate: {one:.2f} s")
    print(table(rows, ("members", *(f"{n} device(s)" for n in sorted({1, CORES})))))


if __name__ == "__main__":
    sys.exit(main(tuple(int(a) for a in sys.argv[1:]) or (4, 16, 64)))
