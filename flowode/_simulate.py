"""`simulate`: run GD and its flows from the same start and return one Dataset."""

import hashlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import _store
from ._problem import Problem
from ._results import COST_VARS, PARAM_VARS, build_dataset, read as read_results
from ._runner import Runner
from ._version import __version__
from .flows import (
    AbstractProcess,
    CentralFlow,
    GradientDescent,
    GradientFlow,
    RodFlow,
)

FLOWS: dict[str, type[AbstractProcess]] = {
    "gd": GradientDescent,
    "gradient": GradientFlow,
    "central": CentralFlow,
    "rod": RodFlow,
}

# Central flow's `gd_variance`: GD's squared deviation along Σ's eigenvectors, averaged
# over this many steps (even, so that the period-2 oscillation averages out).
VARIANCE_WINDOW = 20
# Central flow: warn where the SDCP's scale-free residual is above this.
SDCP_WARN = 1e-3


def _resolve(flows) -> list[AbstractProcess]:
    if isinstance(flows, str | AbstractProcess):
        flows = (flows,)
    out: list[AbstractProcess] = []
    for flow in flows:
        if isinstance(flow, str):
            if flow not in FLOWS:
                raise ValueError(f"Unknown flow {flow!r}. Valid names: {', '.join(sorted(FLOWS))}.")
            flow = FLOWS[flow]()
        elif not isinstance(flow, AbstractProcess):
            raise TypeError(f"flows must hold flow names or flow objects, got {flow!r}.")
        if any(p.name == flow.name for p in out):
            raise ValueError(f"Flow {flow.name!r} is given twice.")
        out.append(flow)
    if not any(isinstance(p, GradientDescent) for p in out):
        out.insert(0, GradientDescent())  # the reference every distance is measured to
    # GD runs first: other processes compare themselves with its iterates.
    return sorted(out, key=lambda p: not isinstance(p, GradientDescent))


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _fingerprint(problem: Problem) -> str:
    """A digest of w0 and the data, to check that a resumed run is the same problem."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves((problem.flat_w0, problem.data)):
        leaf = np.asarray(jax.device_get(leaf))
        digest.update(str((leaf.shape, leaf.dtype)).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()[:20]


def _check_same_run(path, saved: dict, attrs: dict):
    for key in ("problem", "fingerprint", "lr", "dtype", "flow_settings", "eig_k", "eig_every"):
        key_saved = saved.get(key)
        if isinstance(key_saved, np.generic):
            key_saved = key_saved.item()
        if key_saved != attrs[key]:
            raise ValueError(
                f"cannot resume {os.fspath(path)!r}: it was written with {key} = {key_saved!r}, "
                f"this run has {key} = {attrs[key]!r}. Resume with the same problem and "
                "settings, or start a new file."
            )
    if int(saved["chunk"]) != attrs["chunk"]:
        raise ValueError(
            f"cannot resume {os.fspath(path)!r}: it was written in chunks of "
            f"{int(saved['chunk'])} steps, this run asks for {attrs['chunk']}."
        )


def simulate(
    problem: Problem,
    *,
    lr: float,
    steps: int,
    flows: Sequence[str | AbstractProcess] = ("gd", "gradient"),
    eig_k: int = 1,
    eig_every: int = 1,
    save_params: bool = False,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    chunk: int = 1000,
    progress: bool | Callable[[int, int], object] | None = None,
) -> xr.Dataset:
    """Run GD and the given flows on `problem` for `steps` GD steps at learning rate `lr`.

    Every process starts from `problem.w0`; GD always runs, as the reference. Returns a
    Dataset with dims `flow` and `step` (0..steps), `eig` (eig_k top eigenvalues) and,
    with `save_params=True`, `param`. A diverging process does not raise: its
    `diverged_at` is the first non-finite step, and its values before that are kept.

    The run goes in compiled chunks of `chunk` steps. With `out`, every chunk is appended
    to that netCDF file as soon as it is done, with a checkpoint of every process, and
    the Dataset returned reads its parameters from the file, so memory does not grow
    with `steps`. `resume=True` continues the run in `out` from its last checkpoint (same
    problem and settings; `steps` may be larger), bit-identical to an uninterrupted run.
    `progress`: True prints a line per chunk; a callable is called as progress(done,
    steps) after each (default: a line per chunk from 5000 steps on).
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"simulate needs a flowode.Problem, got {type(problem).__name__}.")
    try:
        lr_value = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a positive number, got {lr!r}.") from None
    if not (np.isfinite(lr_value) and lr_value > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}.")
    for name, value in (
        ("steps", steps),
        ("eig_k", eig_k),
        ("eig_every", eig_every),
        ("chunk", chunk),
    ):
        _check_positive_int(name, value)
    if not isinstance(save_params, bool | np.bool_):
        raise TypeError(f"save_params must be True or False, got {save_params!r}.")
    if resume and out is None:
        raise ValueError("resume=True needs out=, the run file to continue.")
    if out is not None and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise FileNotFoundError(f"out: the folder of {os.fspath(out)!r} does not exist.")
    if progress is None:
        progress = steps >= 5000
    if not (callable(progress) or isinstance(progress, bool | np.bool_)):
        raise TypeError(f"progress must be True, False or a callable, got {progress!r}.")
    report = progress if callable(progress) else (_print_progress if progress else None)
    processes = _resolve(flows)

    w0 = problem.flat_w0
    lr_arr = jnp.asarray(lr_value, dtype=w0.dtype)
    runner = Runner(
        processes,
        problem.flat_loss,
        w0,
        lr_arr,
        problem.data,
        length=min(int(chunk), int(steps)),
        eig_k=int(eig_k),
        eig_every=int(eig_every),
        save_params=bool(save_params),
    )
    attrs = _attributes(problem, processes, lr_value, steps, eig_k, eig_every, chunk)
    if resume:
        saved, saved_costs, arrays = _store.read(out)
        _check_same_run(out, saved, attrs)
        done = int(saved["completed_steps"])
        if done > steps:
            raise ValueError(
                f"cannot resume {os.fspath(out)!r} to {steps} steps: it already has {done}."
            )
        costs = {
            label: {name: saved_costs[name][i].item() for name in COST_VARS}
            for i, label in enumerate(saved_costs["flow"])
        }
        statuses = {
            p.name: str(saved[f"{p.name}_status"]) for p in processes if f"{p.name}_status" in saved
        }
        runner.restore(done, arrays, costs, statuses)
    else:
        runner.start()

    chunks: dict[str, dict[str, list]] = {label: {} for label in runner.labels}  # no `out`
    while runner.done < steps:
        new_steps, records = runner.chunk(min(runner.length, steps - runner.done))
        status = {f"{k}_status": v for k, v in runner.statuses.items()}
        if out is None:
            for label, rec in records.items():
                for name, value in rec.items():
                    chunks[label].setdefault(name, []).append(value)
        else:
            if new_steps[0] == 0:
                _store.create(out, runner.labels, records, attrs)
            _store.append(
                out,
                new_steps,
                records,
                {**status, "steps": int(steps)},
                runner.checkpoint(),
                runner.done,
            )
        if report is not None:
            report(runner.done, steps)

    # Central flow's GD variance is a moving average across chunks: taken at the end.
    if out is None:
        attrs.update({f"{k}_status": v for k, v in runner.statuses.items()})
        merged = {
            label: {k: v[-1] if k in COST_VARS else np.concatenate(v) for k, v in rec.items()}
            for label, rec in chunks.items()
        }
        for rec in merged.values():
            if "gd_deviation" in rec:
                rec["gd_variance"] = _moving_average(rec["gd_deviation"], VARIANCE_WINDOW)
                attrs["variance_window"] = VARIANCE_WINDOW
        ds = build_dataset(merged, attrs)
    else:
        with read_results(out) as ds:
            deviation = ds.gd_deviation.values if "gd_deviation" in ds else None
        if deviation is not None:
            variance = np.stack([_moving_average(row, VARIANCE_WINDOW) for row in deviation])
            attrs = {"variance_window": VARIANCE_WINDOW}
            _store.write_variable(out, "gd_variance", variance, attrs)
        ds = read_results(out)
        for name in ds.data_vars:  # all but the parameters, which stay on disk
            if name not in PARAM_VARS:
                ds[name].load()
        if not any(name in ds for name in PARAM_VARS):
            ds.close()  # everything is in memory
    _warn(processes, ds, runner.statuses)
    return ds


def _attributes(problem, processes, lr, steps, eig_k, eig_every, chunk) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "lr": lr,
        "steps": int(steps),
        "problem": problem.name,
        "n_params": problem.n_params,
        "dtype": str(problem.flat_w0.dtype),
        "eig_k": int(eig_k),
        "eig_every": int(eig_every),
        "chunk": int(chunk),
        "flows": ",".join(p.name for p in processes),
        "flow_settings": "; ".join(repr(p) for p in processes),
        "fingerprint": _fingerprint(problem),
        "flowode_version": __version__,
    }
    for process in processes:
        for name, value in process.describe().items():
            attrs[f"{process.name}_{name}"] = value
    return attrs


def _warn(processes, ds: xr.Dataset, statuses: dict[str, str]):
    for process in processes:
        status = statuses.get(process.name, "successful")
        if status.startswith("failed"):
            warnings.warn(
                f"{process.name} flow {status} Its values stop where the solve did "
                "(see diverged_at); everything before is kept.",
                stacklevel=3,
            )
        if isinstance(process, CentralFlow):
            residual = ds.sdcp_residual.sel(flow=process.name).values
            bad = int(np.sum(residual > SDCP_WARN))
            if bad:
                warnings.warn(
                    f"central flow: the SDCP solve did not converge at {bad} steps (largest "
                    f"residual {np.nanmax(residual):.1e}, see sdcp_residual); Sigma is "
                    "approximate there. Float64 or a smaller dt0 usually helps.",
                    stacklevel=3,
                )
            n_tracked, width = ds.n_tracked.sel(flow=process.name), process.max_k
            if np.any(n_tracked.values >= min(width, ds.attrs["n_params"])):
                warnings.warn(
                    f"central flow: all {width} tracked eigenvalues rose above "
                    f"lr*lambda = {process.track_threshold}; a further one may turn critical "
                    "unseen. Use CentralFlow(max_k=...) with a larger max_k.",
                    stacklevel=3,
                )


def _print_progress(done: int, steps: int):
    print(f"flowode: {done}/{steps} steps", file=sys.stderr, flush=True)


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 over `window` steps; NaN where it does not fit."""
    x = np.asarray(x, dtype=float)
    out = np.full_like(x, np.nan)
    if len(x) < window:
        return out
    c = np.cumsum(np.concatenate([np.zeros_like(x[:1]), x]), axis=0)
    half = window // 2
    out[half : half + len(x) - window + 1] = (c[window:] - c[:-window]) / window
    return out
