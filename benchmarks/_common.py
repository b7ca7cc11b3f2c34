"""Shared helpers for the benchmarks: per-process wall times of repeated compiled runs,
and a table."""

import statistics
import time

import jax
import jax.numpy as jnp

import flowode as fo


def dynamics_seconds(process, problem, *, lr, steps, repeats=3) -> float:
    """Median wall time of `process.run` (its dynamics only, compiled once)."""
    f, w0, data = problem.flat_loss, problem.flat_w0, problem.data
    run = jax.jit(lambda w, lr, d: process.run(f, w, lr, d, steps))
    lr = jnp.asarray(lr, w0.dtype)
    jax.block_until_ready(run(w0, lr, data))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(w0, lr, data))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_run(problem, flows, *, lr, steps, repeats=3, **kwargs):
    """One `simulate` run for the oracle counts and accuracy, with `wall_time` replaced by
    each process's own dynamics time (median of `repeats` compiled runs of
    `process.run`), since `simulate` runs every process in one program."""
    ds = fo.simulate(problem, lr=lr, steps=steps, flows=flows, **kwargs)
    processes = {p.name: p for p in (fo.FLOWS[f]() if isinstance(f, str) else f for f in flows)}
    processes.setdefault("gd", fo.GradientDescent())
    walls = []
    for label in ds.flow.values:
        process = processes["gd" if label == "midpoint" else str(label)]
        walls.append(dynamics_seconds(process, problem, lr=lr, steps=steps, repeats=repeats))
    ds = ds.copy()
    ds["wall_time"] = ds.wall_time.copy(data=walls)
    return ds


def table(rows, header):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)
