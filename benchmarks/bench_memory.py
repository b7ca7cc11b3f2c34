"""Peak memory of `simulate(save_params=True)` at 1k and 10k steps, streamed and in memory.

Each configuration runs in a fresh Python process. The figures are its peak resident set
size (ru_maxrss) and the resident set after the last chunk. With `out=` the parameters of
every step go to the netCDF file chunk by chunk (1000 steps per chunk), so memory should
not grow with the number of steps; without it the Dataset holds them all.

Run: python benchmarks/bench_memory.py  (about 8 minutes on 2 CPU cores)
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import table

FLOWS = ("gd", "gradient", "rod")

CHILD = """
import resource, sys, time
import flowode as fo
steps, out = int(sys.argv[1]), sys.argv[2] or None
p = fo.problems.digits_mlp()
now = []  # resident set size after each chunk
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
start = time.perf_counter()
ds = fo.simulate(p, lr=0.6, steps=steps, flows={flows!r}, save_params=True, out=out,
                 progress=lambda done, total: now.append(rss()))
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
print(peak, now[-1], wall, p.n_params, ds.sizes["step"])
"""


def measure(steps: int, streamed: bool, tmp: Path) -> dict:
    out = str(tmp / f"run_{steps}.nc") if streamed else ""
    script = CHILD.format(flows=FLOWS)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(steps), out], capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    peak, last, wall, n, n_steps = proc.stdout.split()[-5:]
    size = os.path.getsize(out) / 2**20 if out else float("nan")
    if out:
        os.remove(out)
    return {
        "steps": steps,
        "streamed": streamed,
        "peak_rss_mib": float(peak),
        "rss_after_last_chunk_mib": float(last),
        "wall_s": float(wall),
        "file_mib": size,
        "n_params": int(n),
        "saved_steps": int(n_steps),
    }


def main():
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for streamed in (True, False):
            for steps in (1000, 10000):
                results.append(measure(steps, streamed, Path(tmp)))
                print(results[-1], flush=True)
    rows = [
        (
            "out= (streamed)" if r["streamed"] else "in memory",
            r["steps"],
            f"{r['peak_rss_mib']:.0f}",
            f"{r['rss_after_last_chunk_mib']:.0f}",
            f"{r['file_mib']:.0f}" if r["streamed"] else "-",
            f"{r['wall_s']:.1f}",
        )
        for r in results
    ]
    print(f"\ndigits MLP ({results[0]['n_params']} parameters), flows {', '.join(FLOWS)}:")
    print(
        table(
            rows, ("save_params", "steps", "peak RSS MiB", "RSS at end MiB", "file MiB", "wall s")
        )
    )
    path = Path(__file__).with_name("memory.json")
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
