"""A run file: the Dataset of `simulate`, written one chunk of steps at a time.

The file is netCDF4 (HDF5, through h5netcdf) with an unlimited `step` dimension. After
every chunk it is opened, extended, written and closed, so a killed run leaves a
readable file with every completed chunk. The attribute `completed_steps`, metadata that
HDF5 writes when the file is closed, says how far the file is complete.

What the run needs to go on (the flattened `RunState`) is kept in two slots, the groups
`checkpoint0` and `checkpoint1`, each tagged with the step it belongs to. An append
overwrites the slot that does not hold the completed step, so a writer killed inside an
append (its new checkpoint data on disk, its `completed_steps` not) leaves the slot that
matches `completed_steps` intact, and resume reads that one.
"""

import os

import h5netcdf
import h5py
import numpy as np

from ._results import (
    COST_VARS,
    SLOT_STEP,
    SLOT_TOTAL,
    SLOTS,
    dims,
    dtype_and_fill,
    eig_width,
    is_total,
    slot_at,
    slot_totals,
    variable,
)


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
                var_dims = dims(name)
                if "param" in var_dims and "param" not in f.dimensions:
                    f.dimensions["param"] = value.shape[-1]
                dtype, fill = dtype_and_fill(name, value)
                # Integers get no fill value: xarray would decode them to float with NaN.
                fill = None if np.issubdtype(dtype, np.integer) else dtype.type(fill)
                var = f.create_variable(name, var_dims, dtype=dtype, fillvalue=fill)
                var.attrs["description"] = variable(name).description
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
        group = _free_slot(f)
        for name, value in checkpoint.items():
            _put(group, name, np.asarray(value))
        # The per-flow totals are overwritten in place above, so a kill can leave them a
        # chunk ahead of `completed_steps`: the slot keeps a copy that readers take.
        for name in COST_VARS:
            if name in f.variables:
                _put(group, SLOT_TOTAL + name, np.asarray(f.variables[name][...]))
        _put(group, SLOT_STEP, np.asarray(completed, np.int64))  # after the data it tags
        f.attrs.update(attrs)
        f.attrs["completed_steps"] = completed  # last: the file is complete up to here


def _free_slot(f):
    """The checkpoint group that does not hold the file's completed step (made if missing)."""
    done = f.attrs.get("completed_steps")
    for name in SLOTS:
        if name not in f.groups:
            return f.create_group(name)
        if done is None or int(f.groups[name].variables[SLOT_STEP][...]) != int(done):
            return f.groups[name]
    raise AssertionError("two checkpoint slots hold the same step")  # appends never do this


def _put(group, name: str, value: np.ndarray):
    if name not in group.variables:
        dims = tuple(f"{name}_{d}" for d in range(value.ndim))
        for d, size in zip(dims, value.shape, strict=True):
            group.dimensions[d] = size
        group.create_variable(name, dims, dtype=value.dtype)
    group.variables[name][...] = value


def write_variable(path, name: str, value: np.ndarray, attrs: dict):
    """Add or overwrite one per-step float variable (dims flow, step[, eig]) and attributes."""
    with _open(path, "a") as f:
        if name not in f.variables:
            var = f.create_variable(name, dims(name), dtype=np.float64)
            var.attrs["description"] = variable(name).description
        f.variables[name][...] = value
        f.attrs.update(attrs)


def read(path, at: int | None = None) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(attributes, {cost variable: per-flow values}, checkpoint arrays) of a run file.

    The checkpoint is the one of the completed step, or of step `at` (the other slot
    holds the step one chunk before the completed one).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"nothing to resume: {os.fspath(path)!r} does not exist.")
    try:
        f = h5netcdf.File(path, "r")
    except OSError as e:
        raise ValueError(f"{os.fspath(path)!r} is not a readable run file ({e}).") from None
    with f:
        attrs = dict(f.attrs)
        slot = _completed_slot(f, attrs, at)
        if slot is None and at is not None:
            raise ValueError(
                f"{os.fspath(path)!r} has no checkpoint at step {at} (it is at step "
                f"{attrs.get('completed_steps')}), so it cannot be resumed from there."
            )
        if slot is None:
            raise ValueError(
                f"{os.fspath(path)!r} has no checkpoint: it was not written by "
                "simulate(out=...) or flowode run -o, so it cannot be resumed."
            )
        costs = {name: f.variables[name][:] for name in COST_VARS if name in f.variables}
        costs.update(slot_totals(slot))
        checkpoint = {
            n: v[...] for n, v in slot.variables.items() if n != SLOT_STEP and not is_total(n)
        }
        costs["flow"] = _labels(f)
    return attrs, costs, checkpoint


def _completed_slot(f, attrs, at=None):
    """The checkpoint group tagged with the file's `completed_steps` (or `at`), or None."""
    if "completed_steps" not in attrs:
        return None
    return slot_at(f, int(attrs["completed_steps"]) if at is None else int(at))


def rewind(path, step: int):
    """Mark the file complete up to `step`, whose checkpoint it holds: rows past it are
    rewritten by the resumed run, and the slot of the later step is the next one written."""
    with _open(path, "a") as f:
        if _completed_slot(f, dict(f.attrs), step) is None:
            raise ValueError(f"{os.fspath(path)!r} has no checkpoint at step {step}.")
        f.attrs["completed_steps"] = int(step)
