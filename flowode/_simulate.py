"""`simulate`: run GD and its flows from the same start and return one Dataset."""

import functools
import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _codes, _runner, _store
from ._problem import Problem
from ._results import PARAM_VARS, build_dataset, read as read_results, variable
from ._version import __version__
from .flows import (
    AbstractProcess,
    CentralFlow,
    EdgeFlow,
    GlobalErrorEstimate,
    GradientDescent,
    GradientFlow,
    RodFlow,
)
from .optimisers import GD, AbstractOptimiser, check_scalar, check_schedule, threshold_value

FLOWS: dict[str, Callable[[], AbstractProcess]] = {
    "gd": GradientDescent,
    "gradient": GradientFlow,
    "central": CentralFlow,
    "rod": RodFlow,
    "gradient_me": functools.partial(GradientFlow, modified_equation=True),
    "rod_me": functools.partial(RodFlow, modified_equation=True),
    "edge": EdgeFlow,
}

# Central flow's `gd_variance`: GD's squared deviation along Σ's eigenvectors, averaged
# over this many steps (even, so that the period-2 oscillation averages out).
VARIANCE_WINDOW = 20
# Central flow: warn where the SDCP's scale-free residual is above this.
SDCP_WARN = 1e-3
# The eigen-observer (`_observe`): a reported Ritz pair whose residual ‖Hu − θu‖ is above
# EIG_TOL·|θ₁| takes a LOBPCG step, and one still above FALLBACK_TOL·|θ₁| after it goes
# on to a full solve; GUARDS more eigenvectors are followed than reported. Chosen by
# measurement (benchmarks/README.md, "Observation"): eigenvalues to 1e-4 to 1e-3.
EIG_TOL = 1e-2
FALLBACK_TOL = 1e-1
GUARDS = 1
EIGS_AT = ("midpoint", "iterate", "both")  # `eigs_at`'s values, the default first


def _resolve(flows, opt: AbstractOptimiser) -> list[AbstractProcess]:
    if isinstance(flows, str | AbstractProcess):
        flows = (flows,)
    out: list[AbstractProcess] = []
    for flow in flows:
        if isinstance(flow, str) and flow == opt.name:
            flow = "gd"  # the discrete reference, by the optimiser's name
        if isinstance(flow, str):
            if flow not in FLOWS:
                raise ValueError(f"Unknown flow {flow!r}. Valid names: {', '.join(sorted(FLOWS))}.")
            flow = FLOWS[flow]()
        elif not isinstance(flow, AbstractProcess):
            raise TypeError(f"flows must hold flow names or flow objects, got {flow!r}.")
        if isinstance(flow, GradientDescent):
            flow = GradientDescent(name=opt.name)
        if any(p.name == flow.name for p in out):
            raise ValueError(f"Flow {flow.name!r} is given twice.")
        if not flow.supports(opt):
            raise ValueError(
                f"flow {flow.name!r} models {flow.models} only, not "
                f"{type(opt).__name__}; with {type(opt).__name__} run the discrete "
                f"optimiser and its stable flow (flows=('{opt.name}', 'gradient'))."
            )
        out.append(flow)
    if not any(isinstance(p, GradientDescent) for p in out):
        # the reference every distance is measured to
        out.insert(0, GradientDescent(name=opt.name))
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


def _check_out(out, resume: bool, what: str):
    """`out`'s folder exists, and `resume` has an `out` (`what` it names)."""
    if resume and out is None:
        raise ValueError(f"resume=True needs out=, {what}.")
    if out is not None and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise FileNotFoundError(f"out: the folder of {os.fspath(out)!r} does not exist.")


def _check_same_run(path, saved: dict, attrs: dict):
    for key in (
        "problem",
        "fingerprint",
        "lr",
        "optimizer",
        "dtype",
        "flow_settings",
        "eig_k",
        "eig_every",
        "eigs_at",
        "eig_tol",
    ):
        key_saved = saved.get(key)
        if isinstance(key_saved, np.generic):
            key_saved = key_saved.item()
        if key_saved != attrs[key]:
            raise ValueError(
                f"cannot resume {os.fspath(path)!r}: it was written with {key} = {key_saved!r}, "
                f"this run has {key} = {attrs[key]!r}. Resume with the same problem and "
                "settings, or start a new file."
            )


def simulate(
    problem: Problem,
    *,
    lr: float | Callable | None = None,
    optimizer: AbstractOptimiser | None = None,
    steps: int,
    flows: Sequence[str | AbstractProcess] = ("gd", "gradient"),
    eig_k: int = 1,
    eig_every: int = 1,
    eigs_at: str = EIGS_AT[0],
    eig_tol: float = EIG_TOL,
    save_params: bool = False,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    chunk: int = 1000,
    progress: bool | Callable[[int, int], object] | None = None,
    devices: Sequence[jax.Device] | None = None,
    precision: str = "highest",
    throw: bool = False,
    attrs: dict[str, str | int | float] | None = None,
) -> xr.Dataset:
    """Run an optimiser and the given flows on `problem` for `steps` steps.

    `lr=η` is shorthand for `optimizer=fo.GD(η)` (η a number or a schedule of the step);
    any other optimiser is given as `optimizer=fo.Adam(...)` and so on. Every process
    starts from `problem.w0`; the discrete optimiser always runs, as the reference,
    labelled with its name (`gd`, `heavy_ball`, `nesterov`, `rmsprop`, `adam`). Returns a
    Dataset with dims `flow` and `step` (0..steps), `eig` (eig_k top eigenvalues) and,
    with `save_params=True`, `param`. A process that fails does not stop the others: its
    `diverged_at` is the first non-finite step, its values before that are kept, and a
    warning says what happened and what to change (`throw=True` raises instead).

    The run is one compiled program per chunk of `chunk` steps, in which every process
    advances and is observed; results do not depend on `chunk`. With `out`, every chunk
    is appended to that netCDF file as soon as it is done, with a checkpoint of the run
    state, and the Dataset returned reads its parameters from the file, so memory does
    not grow with `steps`. `resume=True` continues the run in `out` from its last
    checkpoint (same problem and settings; `steps` may be larger), bit-identical to an
    uninterrupted run. `progress`: True shows a tqdm bar in GD steps (rate and ETA,
    updated about once a second), False nothing, and a callable is called as
    progress(done, steps) about once a second; the default is a bar that appears once
    the run has taken a few seconds. Ctrl-C returns (and writes) the completed steps,
    with a warning. `attrs`: attributes of your own (str, int or float values) recorded
    in the Dataset and the run file.

    `eigs_at`: where the discrete optimiser's top eigenvalues are observed: "midpoint"
    (default: its midpoint process w*_k = (w_{k−1} + 2w_k + w_{k+1})/4, which averages out
    the period-2 oscillation, so the eigenvalues move smoothly and cost less to follow),
    "iterate" (its iterates w_k, the sharpness of the edge-of-stability literature, which
    oscillates with them) or "both". The label not observed has NaN eigenvalues. Each
    observed point costs about 3·eig_k HVPs per step or less (benchmarks/README.md,
    "Observation"). `eig_tol`: the Ritz residual ‖Hu − θu‖/|θ₁| above which the observer
    refines; the default, 1e-2, keeps eigenvalues to 1e-4 to 1e-3 relative, and a
    smaller one buys accuracy with HVPs (3e-3: about 1e-6 at 1.7× the HVPs).

    `devices`: run data-parallel over these devices: every array of the problem's data
    is split along its leading (batch) axis, the rest replicated, and XLA partitions the
    gradients, HVPs and third derivatives (for a loss that is a mean over the batch);
    the results equal a one-device run to round-off. Default: the default device.

    `precision`: the matmul precision the run is compiled with (`"highest"`, `"high"` or
    `"default"`, as `jax.default_matmul_precision`; scoped to this call). The default
    keeps float32 in full precision on GPUs, where JAX's own default (TF32) is too
    coarse for eigenvalues and the SDCP; it changes nothing on CPUs.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"simulate needs a flowode.Problem, got {type(problem).__name__}.")
    opt = _optimiser(lr, optimizer)
    for name, value in (
        ("steps", steps),
        ("eig_k", eig_k),
        ("eig_every", eig_every),
        ("chunk", chunk),
    ):
        _check_positive_int(name, value)
    if eig_k > problem.n_params:
        raise ValueError(
            f"eig_k = {eig_k} is more eigenvalues than the problem has parameters "
            f"({problem.n_params}); use eig_k <= {problem.n_params}."
        )
    if not isinstance(save_params, bool | np.bool_):
        raise TypeError(f"save_params must be True or False, got {save_params!r}.")
    _check_out(out, resume, "the run file to continue")
    _check_precision(precision)
    if not (progress is None or callable(progress) or isinstance(progress, bool | np.bool_)):
        raise TypeError(f"progress must be True, False or a callable, got {progress!r}.")
    _check_eigs_at(eigs_at, eig_tol)
    processes = _resolve(flows, opt)

    f, w0, data = problem.flat_loss, problem.flat_w0, problem.data
    check_schedule(opt, int(steps), w0.dtype)
    opt_arr = opt.astype(w0.dtype)
    if devices is not None and len(devices) > 1:
        w0, opt_arr, data = _data_parallel(w0, opt_arr, data, list(devices))
    settings = _runner.Settings(
        tuple(processes),
        int(eig_k),
        bool(save_params),
        tol=float(eig_tol),
        fallback_tol=FALLBACK_TOL,
        guards=GUARDS,
        eigs_at=eigs_at,
    )
    labels = settings.labels
    own = _attributes(problem, processes, opt, steps, eig_k, eig_every, chunk, settings)
    attrs = {**own, **_user_attributes(attrs, reserved=own)}
    length = _rows_per_chunk(chunk, steps)
    wall = compile_seconds = 0.0
    if resume:
        saved, _, arrays = _store.read(out)
        _check_same_run(out, saved, attrs)
        done = int(saved["completed_steps"])
        if done > steps:
            raise ValueError(
                f"cannot resume {os.fspath(out)!r} to {steps} steps: it already has {done}."
            )
        like = jax.eval_shape(lambda: _runner.start(settings, f, w0, opt_arr, data))
        state = _restore(like, arrays)
        wall, compile_seconds = float(saved.get("wall_time_total", 0.0)), 0.0
    else:
        done = -1  # the last row observed
        state, _, compile_seconds = _runner.timed(
            _runner.start_run, settings, f, w0, opt_arr, data, precision=precision
        )

    bar = _Progress(progress, steps, max(done, 0))
    pace = _Pace(length, paced=bar.active)
    chunks: list[dict] = []  # without `out`
    pending: list[tuple[np.ndarray, dict]] = []  # rows of the chunk in progress
    written = done  # the last row in the run file

    def flush():
        nonlocal written
        if not pending:
            return
        new_steps = np.concatenate([s for s, _ in pending])
        records = _merge([r for _, r in pending], labels)
        pending.clear()
        if out is None:
            chunks.append(records)
        else:
            _write_chunk(out, new_steps, records, state, labels, attrs, steps, wall)
        written = int(new_steps[-1])

    interrupted = False
    try:
        while done < steps:
            # A chunk is `length` rows (the first one row 0 too); it is run in calls of
            # `pace.rows()` rows of the same compiled program, so that a progress bar
            # moves every second or so, and written to `out` whole.
            chunk_end = min(written + (length if written < 0 else length - 1), steps)
            n = min(pace.rows(), chunk_end - done)
            (state, rows), seconds, compiled = _runner.timed(
                _runner.run_chunk,
                settings,
                f,
                state,
                opt_arr,
                data,
                jnp.asarray(eig_every, jnp.int32),
                jnp.asarray(n, jnp.int32),
                length,
                precision=precision,
            )
            pace.record(n, seconds)
            wall, compile_seconds = wall + seconds, compile_seconds + compiled
            rows = jax.tree_util.tree_map(lambda x, n=n: np.asarray(x[:n]), rows)
            new_steps = np.arange(done + 1, done + 1 + n)
            pending.append((new_steps, _records(rows, labels, state, wall, compile_seconds)))
            done = int(new_steps[-1])
            if done == chunk_end:
                flush()
            bar.update(done)
    except KeyboardInterrupt:
        if done < 0:
            raise
        flush()  # the calls completed so far: `state` is the state after the last one
        interrupted = True
        warnings.warn(
            f"simulate was interrupted after step {done} of {steps}: the Dataset holds "
            "the completed steps.",
            stacklevel=2,
        )
    finally:
        bar.close()

    if out is None:
        ds = _in_memory(chunks, labels, state, attrs, done)
    else:
        ds = _from_file(out)
    _report(processes, ds, throw=throw and not interrupted)
    return ds


def _user_attributes(attrs, reserved) -> dict[str, str | int | float]:
    """A user's own attributes, checked: netCDF stores str, int and float values, and
    flowode's own attributes keep their names."""
    if attrs is None:
        return {}
    if not isinstance(attrs, dict):
        raise TypeError(f"attrs must be a dict of str keys, got {type(attrs).__name__}.")
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise TypeError(f"attrs: keys must be strings, got {key!r}.")
        if key in reserved or key.endswith("_status") or key == "completed_steps":
            raise ValueError(f"attrs: {key!r} is one of flowode's own attributes; rename it.")
        ok = isinstance(value, str | int | float | np.integer | np.floating)
        if not ok or isinstance(value, bool | np.bool_):
            raise TypeError(f"attrs[{key!r}] must be a str, int or float, got {value!r}.")
    return dict(attrs)


def _check_precision(precision) -> None:
    if precision not in _runner.PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(map(repr, _runner.PRECISIONS))}, "
            f"got {precision!r}."
        )


def _write_chunk(out, new_steps, records, state, labels, attrs, steps: int, wall: float):
    """Append a chunk's rows, statuses and checkpoint to the run file (made at step 0)."""
    if new_steps[0] == 0:
        _store.create(out, labels, records, attrs)
    status = {f"{k}_status": v for k, v in _statuses(state, labels).items()}
    _store.append(
        out,
        new_steps,
        records,
        {**status, "steps": int(steps), "wall_time_total": wall},
        _checkpoint(state),
        int(new_steps[-1]),
    )


def _in_memory(chunks: list[dict], labels, state, attrs: dict, done: int) -> xr.Dataset:
    """The Dataset of a run kept in memory: its chunks merged, statuses, GD's variance."""
    attrs = {**attrs, **{f"{k}_status": v for k, v in _statuses(state, labels).items()}}
    attrs["completed_steps"] = done
    ds = build_dataset(_merge(chunks, labels), attrs)
    if "gd_deviation" in ds:
        ds["gd_variance"] = _rolling_variance(ds.gd_deviation)
        ds.attrs["variance_window"] = VARIANCE_WINDOW
    return ds


def _from_file(out) -> xr.Dataset:
    """The Dataset of a run file: GD's variance written, all but the parameters in memory."""
    with read_results(out) as ds:
        variance = _rolling_variance(ds.gd_deviation).values if "gd_deviation" in ds else None
    if variance is not None:
        _store.write_variable(out, "gd_variance", variance, {"variance_window": VARIANCE_WINDOW})
    ds = read_results(out)
    for name in ds.data_vars:  # all but the parameters, which stay on disk
        if name not in PARAM_VARS:
            ds[name].load()
    if not any(name in ds for name in PARAM_VARS):
        ds.close()  # everything is in memory
    return ds


def _data_parallel(w0, opt, data, devices):
    """The data's arrays split along their leading (batch) axis over `devices`, w0 and
    the optimiser replicated: jit then partitions every oracle call across them."""
    mesh = Mesh(np.array(devices), ("batch",))
    batch, whole = NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())

    replicate = lambda x: jax.device_put(x, whole) if eqx.is_array(x) else x  # noqa: E731

    def split(x):
        if not eqx.is_array(x) or x.ndim == 0:
            return replicate(x)
        if x.shape[0] % len(devices):
            raise ValueError(
                f"devices: a data array of shape {x.shape} does not split over {len(devices)} "
                "devices; its leading (batch) axis must be a multiple of the number of devices."
            )
        return jax.device_put(x, batch)

    tree_map = jax.tree_util.tree_map
    return tree_map(replicate, w0), tree_map(replicate, opt), tree_map(split, data)


class _Progress:
    """A tqdm bar in GD steps (with rate and ETA), a user's callable, or nothing.

    `progress=None` (the default) is a bar that appears once the run has taken a few
    seconds, so short runs print nothing.
    """

    DELAY = 3.0  # seconds before the default bar appears

    def __init__(self, progress, steps: int, done: int):
        self.call = progress if callable(progress) else None
        self.bar = None
        if progress is None or progress is True or (isinstance(progress, np.bool_) and progress):
            from tqdm.auto import tqdm

            delay = self.DELAY if progress is None else 0.0
            self.bar = tqdm(
                total=steps, initial=done, unit="step", desc="flowode", delay=delay, leave=True
            )
        self.done, self.steps = done, steps

    @property
    def active(self) -> bool:
        return self.bar is not None or self.call is not None

    def update(self, done: int):
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        if self.call is not None:
            self.call(done, self.steps)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _Pace:
    """How many rows the next call of the chunk program runs.

    Without progress, a whole chunk. With it, as many rows as take about `SECONDS`, from
    the measured time per row of the calls so far, so that the bar moves about once a
    second on a network of any size. The calls run the same compiled program (its
    length is static, the number of rows traced): no recompilation, and the rows are
    the same as in one call.
    """

    SECONDS = 1.0
    GROWTH = 16  # at most this factor more rows than the last call

    def __init__(self, length: int, paced: bool):
        self.length, self.paced, self.next = length, paced, (1 if paced else length)

    def rows(self) -> int:
        return self.next

    def record(self, n: int, seconds: float):
        if self.paced:
            want = self.SECONDS * n / max(seconds, 1e-6)
            self.next = int(np.clip(want, 1, min(self.GROWTH * n, self.length)))


def _records(rows, labels, state, wall, compile_seconds) -> dict[str, dict[str, np.ndarray]]:
    """Per label: the chunk's rows with `sharpness`, and the cost totals so far."""
    out = {}
    for i, label in enumerate(labels):
        rec = dict(rows[label])
        rec["sharpness"] = rec["eigs"][:, 0]
        j = 0 if i == 0 else max(i - 1, 0)
        ps = state.processes[j]
        counts = np.asarray(ps.counts)
        tracks = state.tracks
        rec.update(
            n_grad=int(counts[0]) + (1 if label == "midpoint" else 0),
            n_hvp=int(counts[1]),
            n_third=int(counts[2]),
            n_hvp_observe=int(tracks.n_hvp[i]),
            n_eig_fallback=int(tracks.n_fallback[i]),
            wall_time=wall,
            compile_time=compile_seconds,
            diverged_at=int(ps.diverged_at),
        )
        out[label] = rec
    return out


def _rows_per_chunk(chunk: int, steps: int) -> int:
    """Rows per compiled chunk. Short runs round up to a power of two, so that runs of
    similar length share one program (the rows past the end are skipped, not computed)."""
    return min(int(chunk), 1 << max(int(steps) - 1, 1).bit_length()) + 1


def _merge(chunks: list[dict], labels) -> dict[str, dict[str, np.ndarray]]:
    """Per label, the chunks' rows joined along the steps; totals from the last chunk."""
    last = chunks[-1]
    return {
        label: {
            name: last[label][name]
            if np.ndim(last[label][name]) == 0
            else np.concatenate([c[label][name] for c in chunks])
            for name in last[label]
        }
        for label in labels
    }


def _statuses(state, labels) -> dict[str, str]:
    out = {}
    for i, label in enumerate(labels):
        if label == "midpoint":
            continue
        j = 0 if i == 0 else i - 1
        out[label] = _codes.name(int(state.processes[j].result))
    return out


def _checkpoint(state) -> dict[str, np.ndarray]:
    """The run state flattened: one array per leaf."""
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)]
    # netCDF has no booleans: they are stored as bytes and cast back on restore.
    return {
        f"leaf_{i:04d}": leaf.astype(np.int8) if leaf.dtype == bool else leaf
        for i, leaf in enumerate(leaves)
    }


def _restore(like, arrays):
    leaves, treedef = jax.tree_util.tree_flatten(like)
    names = [f"leaf_{i:04d}" for i in range(len(leaves))]
    fits = len(arrays) == len(leaves) and all(
        name in arrays and np.size(arrays[name]) == np.size(leaf)
        for name, leaf in zip(names, leaves, strict=True)
    )
    if not fits:  # another number of leaves, or a leaf of another size
        raise ValueError(
            "the run file's checkpoint does not fit this run's state; it was written by "
            "another version of flowode or with other flows. Start a new file."
        )
    values = [
        jnp.asarray(arrays[name], dtype=leaf.dtype).reshape(leaf.shape)
        for name, leaf in zip(names, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, values)


def _rolling_variance(deviation: xr.DataArray) -> xr.DataArray:
    """GD's squared deviation along Σ's eigenvectors, centred mean over VARIANCE_WINDOW."""
    out = deviation.rolling(step=VARIANCE_WINDOW, center=True).mean()
    out.attrs = {"description": variable("gd_variance").description}
    return out


def _optimiser(lr, optimizer) -> AbstractOptimiser:
    if optimizer is not None:
        if lr is not None:
            raise ValueError("give lr= (for GD) or optimizer=, not both.")
        if not isinstance(optimizer, AbstractOptimiser):
            raise TypeError(
                "optimizer must be a flowode optimiser (fo.GD, fo.HeavyBall, fo.Nesterov, "
                f"fo.RMSProp, fo.Adam), got {optimizer!r}."
            )
        check_scalar(optimizer)
        return optimizer
    if lr is None:
        raise ValueError("simulate needs lr= (plain GD) or optimizer=.")
    if callable(lr):
        return GD(lr)
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a positive number or a schedule, got {lr!r}.") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}.")
    return GD(value)


def _check_eigs_at(eigs_at, eig_tol):
    if eigs_at not in EIGS_AT:
        choices = ", ".join(map(repr, EIGS_AT))
        raise ValueError(f"eigs_at must be one of {choices}, got {eigs_at!r}.")
    ok = isinstance(eig_tol, float | int | np.floating) and not isinstance(eig_tol, bool)
    if not (ok and 0 < eig_tol < FALLBACK_TOL):
        raise ValueError(f"eig_tol must be a number in (0, {FALLBACK_TOL}), got {eig_tol!r}.")


def _attributes(problem, processes, opt, steps, eig_k, eig_every, chunk, settings) -> dict:
    hyper = opt.hyperparameters()
    attrs: dict[str, Any] = {
        "lr": hyper["lr"],
        "optimizer": type(opt).__name__,
        "reference": opt.name,
        "threshold": threshold_value(opt),
        "steps": int(steps),
        "problem": problem.name,
        "n_params": problem.n_params,
        "dtype": str(problem.flat_w0.dtype),
        "eig_k": int(eig_k),
        "eig_every": int(eig_every),
        "eigs_at": settings.eigs_at,
        "eig_tol": settings.tol,
        "chunk": int(chunk),
        "flows": ",".join(p.name for p in processes),
        "flow_settings": "; ".join(repr(p) for p in processes),
        "fingerprint": _fingerprint(problem),
        **{f"optimizer_{k}": v for k, v in hyper.items() if k != "lr"},
        "flowode_version": __version__,
    }
    for process in processes:
        for name, value in process.describe().items():
            attrs[f"{process.name}_{name}"] = value
    return attrs


def _report(processes, ds: xr.Dataset, *, throw: bool = False):
    """Warn (or raise, with `throw`) for every failed or doubtful process."""
    problems = []
    for process in processes:
        label = process.name
        status = str(ds.attrs.get(f"{label}_status", "successful"))
        if status != "successful":
            code = _codes.RESULTS._name_to_item.get(status)
            solver = ds.attrs.get(f"{label}_solver")  # the advice names another one
            text = _codes.message(_codes.code(code), solver) if code is not None else status
            problems.append(f"{label}: {text}")
        if isinstance(process, GlobalErrorEstimate) and process.tol is not None:
            error = ds.global_error.sel(flow=label).values
            over = np.nonzero(error > process.tol)[0]
            if over.size:
                problems.append(
                    f"{label}: its estimated global error exceeds tol = {process.tol:g} from "
                    f"step {int(ds.step[over[0]])} (largest {np.nanmax(error):.2g}, see "
                    f"global_error). Tighten the flow's rtol and atol: its error scales "
                    f"about like rtol^{process.exponent:.2g}."
                )
        if isinstance(process, CentralFlow):
            residual = ds.sdcp_residual.sel(flow=label).values
            bad = int(np.sum(residual > SDCP_WARN))
            if bad:
                problems.append(
                    f"{label}: the SDCP solve did not converge at {bad} steps (largest "
                    f"residual {np.nanmax(residual):.1e}, see sdcp_residual); Sigma is "
                    "approximate there. Float64 or a smaller dt0 usually helps."
                )
            n_tracked, width = ds.n_tracked.sel(flow=label), process.max_k
            if np.any(n_tracked.values >= min(width, ds.attrs["n_params"])):
                problems.append(
                    f"{label}: all {width} tracked eigenvalues rose above "
                    f"lr*lambda = {process.track_threshold}; a further one may turn critical "
                    "unseen. Use CentralFlow(max_k=...) with a larger max_k."
                )
    if throw and problems:
        raise RuntimeError("; ".join(problems))
    for text in problems:
        warnings.warn(text, stacklevel=3)
