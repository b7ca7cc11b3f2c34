"""Shared helpers for the benchmarks: a median of repeated compiled runs, and a table."""

import statistics

import flowode as fo


def median_run(problem, flows, *, lr, steps, repeats=3, **kwargs):
    """Run `simulate` `repeats` times (compiled once) and return the last Dataset with the
    median wall time per flow."""
    runs = [fo.simulate(problem, lr=lr, steps=steps, flows=flows, **kwargs) for _ in range(repeats)]
    ds = runs[-1].copy()
    ds["wall_time"] = ds.wall_time.copy(
        data=[
            statistics.median(float(r.wall_time[i]) for r in runs) for i in range(ds.sizes["flow"])
        ]
    )
    ds["compile_time"] = runs[0].compile_time
    return ds


def table(rows, header):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)
