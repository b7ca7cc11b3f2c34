"""Shared helpers for the benchmarks: per-process wall times of repeated compiled runs,
and a table."""

import dataclasses
import statistics
import time
from pathlib import Path

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


def labelled(flow, label):
    """`flow` under another Dataset label, to run several settings of one flow together."""
    cls = type(f"{type(flow).__name__}_{label}", (type(flow),), {"name": property(lambda s: label)})
    fields = {fl.name: getattr(flow, fl.name) for fl in dataclasses.fields(flow)}
    return cls(**fields)


def interleaved_times(runs, *args, rounds=7):
    """{name: [seconds per round]} of each compiled `runs[name](*args)`, timed in
    interleaved rounds: this machine's load varies within minutes, so each process is
    best compared with the others by its fastest round."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run(*args))
            times[name].append(time.perf_counter() - start)
    return times


def results_path(name: str) -> Path:
    """benchmarks/<name>.json on a CPU, <name>_gpu.json (or the backend's name) elsewhere,
    so that a run on an accelerator keeps the CPU figures beside its own."""
    backend = jax.default_backend()
    return Path(__file__).with_name(name + ("" if backend == "cpu" else f"_{backend}") + ".json")
