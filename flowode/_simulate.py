"""`simulate`: run GD and its flows from the same start and return one Dataset."""

import time
import warnings
from collections.abc import Sequence
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ._observe import observe
from ._problem import Problem
from ._results import build_dataset
from ._version import __version__
from .flows import (
    AbstractFlow,
    AbstractProcess,
    CentralFlow,
    GradientDescent,
    GradientFlow,
    Midpoint,
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

# Compiled programs, keyed by process, loss, settings and argument shapes.
_PROGRAMS: dict[Any, Any] = {}


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))


def _compiled(key, fn, *args):
    """AOT-compile `fn(*args)` once per key; returns (executable, compile seconds)."""
    key = (key, _signature(args))
    try:
        hit = _PROGRAMS.get(key)
    except TypeError:  # an unhashable setting: compile every time
        key, hit = None, None
    if hit is not None:
        return hit, 0.0
    start = time.perf_counter()
    program = jax.jit(fn).lower(*args).compile()
    elapsed = time.perf_counter() - start
    if key is not None:
        _PROGRAMS[key] = program
    return program, elapsed


def _timed(program, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(program(*args))
    return out, time.perf_counter() - start


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


def _first_nonfinite(*arrays) -> int:
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        a = np.asarray(a).reshape(len(a), -1)
        bad |= ~np.all(np.isfinite(a), axis=1)
    return int(np.argmax(bad)) if bad.any() else -1


def simulate(
    problem: Problem,
    *,
    lr: float,
    steps: int,
    flows: Sequence[str | AbstractProcess] = ("gd", "gradient"),
    eig_k: int = 1,
    eig_every: int = 1,
    save_params: bool = False,
    progress: bool | None = None,
) -> xr.Dataset:
    """Run GD and the given flows on `problem` for `steps` GD steps at learning rate `lr`.

    Every process starts from `problem.w0`; GD always runs, as the reference. Returns a
    Dataset with dims `flow` and `step` (0..steps), `eig` (eig_k top eigenvalues) and,
    with `save_params=True`, `param`. `progress` shows a bar for each flow's solve
    (default: on for runs of 5000 steps or more). A diverging process does not raise: its
    `diverged_at` is the first non-finite step, and its values before that are kept.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"simulate needs a flowode.Problem, got {type(problem).__name__}.")
    try:
        lr_value = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a positive number, got {lr!r}.") from None
    if not (np.isfinite(lr_value) and lr_value > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}.")
    _check_positive_int("steps", steps)
    _check_positive_int("eig_k", eig_k)
    _check_positive_int("eig_every", eig_every)
    if not isinstance(save_params, bool | np.bool_):
        raise TypeError(f"save_params must be True or False, got {save_params!r}.")
    processes = _resolve(flows)
    progress = steps >= 5000 if progress is None else progress

    f, w0, data = problem.flat_loss, problem.flat_w0, problem.data
    lr_arr = jnp.asarray(lr_value, dtype=w0.dtype)
    records: dict[str, dict[str, np.ndarray]] = {}
    attrs: dict[str, Any] = {
        "lr": lr_value,
        "steps": int(steps),
        "problem": problem.name,
        "n_params": problem.n_params,
        "dtype": str(w0.dtype),
        "eig_k": int(eig_k),
        "eig_every": int(eig_every),
        "flowode_version": __version__,
    }

    def observed(process, states, w_gd=None):
        key = ("observe", process, f, steps, eig_k, eig_every)
        fn = lambda s, lr, d, g: observe(process, f, s, lr, d, g, eig_k=eig_k, eig_every=eig_every)
        program, _ = _compiled(key, fn, states, lr_arr, data, w_gd)
        return jax.device_get(program(states, lr_arr, data, w_gd))

    for process in processes:
        kwargs = {}
        if isinstance(process, AbstractFlow) and progress:
            kwargs["progress_meter"] = diffrax.TqdmProgressMeter()
        key = ("run", process, f, steps, progress)
        run = lambda w, lr, d, p=process, kw=kwargs: p.run(f, w, lr, d, steps, **kw)
        program, compile_time = _compiled(key, run, w0, lr_arr, data)
        (states, counts, result), wall = _timed(program, w0, lr_arr, data)
        costs = {
            "n_grad": int(counts.n_grad),
            "n_hvp": int(counts.n_hvp),
            "n_third": int(counts.n_third),
            "wall_time": wall,
            "compile_time": compile_time,
        }
        for name, value in process.describe().items():
            attrs[f"{process.name}_{name}"] = value
        if result is not None:
            attrs[f"{process.name}_status"] = status = _status(result)
            if status.startswith("failed"):
                warnings.warn(
                    f"{process.name} flow {status} Its values stop where the solve did "
                    "(see diverged_at); everything before is kept.",
                    stacklevel=2,
                )
        if isinstance(process, GradientDescent):  # its states carry the midpoint process
            records[process.name] = {**observed(process, states), **costs}
            gd_iterates = jnp.asarray(records["gd"]["center"])
            records["midpoint"] = {**observed(Midpoint(), states, gd_iterates), **costs}
            records["midpoint"]["n_grad"] += 1  # it needs one step beyond the last
        else:
            records[process.name] = {**observed(process, states, gd_iterates), **costs}
        rec = records[process.name]
        if "gd_deviation" in rec:
            rec["gd_variance"] = _moving_average(rec.pop("gd_deviation"), VARIANCE_WINDOW)
            attrs["variance_window"] = VARIANCE_WINDOW
        if isinstance(process, CentralFlow) and np.any(rec["n_tracked"] >= rec["sigma"].shape[1]):
            warnings.warn(
                f"central flow: all {rec['sigma'].shape[1]} tracked eigenvalues rose above "
                f"lr*lambda = {process.track_threshold}; a further one may turn critical "
                "unseen. Use CentralFlow(max_k=...) with a larger max_k.",
                stacklevel=2,
            )

    # Distances to GD (iterates) and to its midpoint process (centres).
    gd = records["gd"]["center"]
    gd_mid = records["midpoint"]["center"]
    for rec in records.values():
        with np.errstate(all="ignore"):  # diverged processes give inf - inf
            iterate = rec.pop("iterate")
            rec["distance_to_gd"] = np.linalg.norm(iterate - gd, axis=-1)
            rec["center_distance_to_gd"] = np.linalg.norm(rec["center"] - gd_mid, axis=-1)
        rec["sharpness"] = rec["eigs"][:, 0]
        rec["diverged_at"] = _first_nonfinite(rec["center"], rec["loss"])
        rec.pop("observe_hvps")
        center = rec.pop("center")
        if save_params:
            rec["params"] = center
            rec["iterates"] = iterate
    return build_dataset(records, attrs)


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


def _status(result) -> str:
    """diffrax's result code as a sentence that says what to change."""
    R = diffrax.RESULTS
    if result == R.successful:
        return "successful"
    if result == R.event_occurred:
        return "stopped: the state diverged (non-finite or past the blow-up bound)"
    if result == R.max_steps_reached:
        return (
            "failed: the solver reached its step limit (max_steps_per_gd_step x steps); the "
            "flow is stiffer than this solver handles at this tolerance. Raise "
            "max_steps_per_gd_step, loosen rtol/atol, or use a stabilised solver (fo.RKC2)."
        )
    if result == R.dt_min_reached:
        return (
            "failed: the step size fell below the controller's dtmin. Loosen rtol/atol, "
            "lower dtmin, or use a stiffness-aware solver (fo.RKC2)."
        )
    if result == R.max_steps_rejected:
        return (
            "failed: too many rejected steps in a row. Loosen rtol/atol or give the "
            "controller a smaller dt0."
        )
    return f"failed: {R[result]} Try a smaller step (dt0), looser tolerances or another solver."
