"""A run file: the Dataset of `simulate`, written one chunk of steps at a time.

The file is netCDF4 (HDF5, through h5netcdf) with an unlimited `step` dimension. After
every chunk it is opened, extended, written and closed, so a killed run leaves a
readable file with every completed chunk. Its group `checkpoint` holds what each
process needs to go on (its carry and its eigen-solver's warm start); the attribute
`completed_steps`, written last, says how far the file is complete.
"""

import os

import h5netcdf
import h5py
import numpy as np

from ._results import COST_VARS, DESCRIPTIONS, INT_VARS, PARAM_VARS, eig_width

CHECKPOINT = "checkpoint"


def _dims(name: str, value: np.ndarray) -> tuple[str, ...]:
    if name in COST_VARS:
        return ("flow",)
    if value.ndim == 1:
        return ("flow", "step")
    return ("flow", "step", "param" if name in PARAM_VARS else "eig")


def _file_dtype(name: str, value: np.ndarray):
    if name in INT_VARS:
        return np.int64
    if name in PARAM_VARS:
        return value.dtype
    return np.float64


def _open(path, mode):
    try:
        return h5netcdf.File(path, mode)
    except OSError as e:
        raise OSError(
            f"cannot open {os.fspath(path)!r} to write the run ({e}). If a Dataset from an "
            "earlier run still reads it, close that first (ds.close())."
        ) from None


def _labels(f) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in f.variables["flow"][:]]


def create(path, labels: list[str], sample: dict[str, dict[str, np.ndarray]], attrs: dict):
    """A new run file with every variable of `sample` ({label: {name: array}}) at 0 steps."""
    n_eig = eig_width(sample)
    with _open(path, "w") as f:
        f.dimensions = {"flow": len(labels), "step": None}
        if n_eig:
            f.dimensions["eig"] = n_eig
        flow = f.create_variable("flow", ("flow",), dtype=h5py.string_dtype())
        flow[:] = np.array(labels, dtype=object)
        f.create_variable("step", ("step",), dtype=np.int64)
        made = set()
        for rec in sample.values():
            for name, value in rec.items():
                if name in made:
                    continue
                made.add(name)
                value = np.asarray(value)
                dims = _dims(name, value)
                if "param" in dims and "param" not in f.dimensions:
                    f.dimensions["param"] = value.shape[-1]
                dtype = _file_dtype(name, value)
                # Integers get no fill value: xarray would decode them to float with NaN.
                fill = None if name in INT_VARS else np.dtype(dtype).type(np.nan)
                var = f.create_variable(name, dims, dtype=dtype, fillvalue=fill)
                var.attrs["description"] = DESCRIPTIONS.get(name, "")
        f.attrs.update(attrs)


def append(
    path,
    steps: np.ndarray,
    records: dict[str, dict[str, np.ndarray]],
    attrs: dict,
    checkpoint: dict[str, np.ndarray],
    completed: int,
):
    """Write the rows for `steps`, the cost totals, attributes and the checkpoint."""
    with _open(path, "a") as f:
        labels = _labels(f)
        start = int(steps[0])
        stop = start + len(steps)
        f.resize_dimension("step", stop)
        f.variables["step"][start:stop] = steps
        for i, label in enumerate(labels):
            for name, value in records.get(label, {}).items():
                var = f.variables[name]
                value = np.asarray(value)
                if var.dimensions == ("flow",):
                    var[i] = value
                else:
                    index = (i, slice(start, stop), *(slice(0, s) for s in value.shape[1:]))
                    var[index] = value
        group = f.groups[CHECKPOINT] if CHECKPOINT in f.groups else f.create_group(CHECKPOINT)
        for name, value in checkpoint.items():
            value = np.asarray(value)
            if name not in group.variables:
                dims = tuple(f"{name}_{d}" for d in range(value.ndim))
                for d, size in zip(dims, value.shape, strict=True):
                    group.dimensions[d] = size
                group.create_variable(name, dims, dtype=value.dtype)
            group.variables[name][...] = value
        f.attrs.update(attrs)
        f.attrs["completed_steps"] = completed  # last: the file is complete up to here


def write_variable(path, name: str, value: np.ndarray, attrs: dict):
    """Add or overwrite one per-step float variable (dims flow, step[, eig]) and attributes."""
    with _open(path, "a") as f:
        if name not in f.variables:
            var = f.create_variable(name, _dims(name, value[0]), dtype=np.float64)
            var.attrs["description"] = DESCRIPTIONS.get(name, "")
        f.variables[name][...] = value
        f.attrs.update(attrs)


def read(path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(attributes, {cost variable: per-flow values}, checkpoint arrays) of a run file."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"nothing to resume: {os.fspath(path)!r} does not exist.")
    try:
        f = h5netcdf.File(path, "r")
    except OSError as e:
        raise ValueError(f"{os.fspath(path)!r} is not a readable run file ({e}).") from None
    with f:
        attrs = dict(f.attrs)
        if "completed_steps" not in attrs or CHECKPOINT not in f.groups:
            raise ValueError(
                f"{os.fspath(path)!r} has no checkpoint: it was not written by "
                "simulate(out=...) or flowode run -o, so it cannot be resumed."
            )
        costs = {name: f.variables[name][:] for name in COST_VARS if name in f.variables}
        group = f.groups[CHECKPOINT]
        checkpoint = {name: var[...] for name, var in group.variables.items()}
        costs["flow"] = _labels(f)
    return attrs, costs, checkpoint
