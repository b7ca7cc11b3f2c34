"""Assemble per-process records into the xarray Dataset of DESIGN §4, and read/write it."""

import os
from typing import NamedTuple

import h5netcdf
import numpy as np
import xarray as xr

# A run file's checkpoint slots (`_store`): each is tagged with its completed step and
# keeps the per-flow totals of that step.
SLOTS = ("checkpoint0", "checkpoint1")
SLOT_STEP = "slot_step"
SLOT_TOTAL = "total_"


class Variable(NamedTuple):
    """One Dataset variable, declared once: its dims after `flow`, its kind and meaning.

    Kinds: "float" (float64, NaN where a process has no value), "int" (int64, −1), and
    "param" (a point in parameter space, in the run's own dtype, NaN-filled).
    """

    dims: tuple[str, ...]  # (): one value per flow; ("step",); ("step", "eig" | "param")
    kind: str
    description: str


_STEP, _EIG, _PARAM, _COST = ("step",), ("step", "eig"), ("step", "param"), ()

SCHEMA: dict[str, Variable] = {
    "loss": Variable(
        _STEP, "float", "L at the process's own point (GD iterate, flow state, rod centre)"
    ),
    "predicted_loss": Variable(_STEP, "float", "the process's prediction of time-averaged GD loss"),
    "sharpness": Variable(
        _STEP, "float", "largest Hessian eigenvalue at the process's point (not times lr)"
    ),
    "effective_sharpness": Variable(
        _STEP,
        "float",
        "λ₁(P⁻¹H), the optimiser's preconditioned sharpness (ηS for GD); its edge of "
        "stability is the attribute `threshold`",
    ),
    "eigs": Variable(_EIG, "float", "top Hessian eigenvalues at the process's point"),
    "grad_norm": Variable(_STEP, "float", "gradient norm at the process's point"),
    "distance_to_gd": Variable(_STEP, "float", "||w_GD(k) - predicted GD iterate(k)||"),
    "center_distance_to_gd": Variable(_STEP, "float", "||GD midpoint(k) - centre(k)||"),
    "params": Variable(_PARAM, "param", "the process's own point, in ravel_pytree(w0) order"),
    "iterates": Variable(
        _PARAM, "param", "the process's prediction of the GD iterate (rod: X + (-1)^k Y)"
    ),
    "n_grad": Variable(_COST, "int", "gradient evaluations of the process's dynamics"),
    "n_hvp": Variable(_COST, "int", "Hessian-vector products of the process's dynamics"),
    "n_third": Variable(_COST, "int", "third-derivative contractions of the process's dynamics"),
    "n_hvp_observe": Variable(
        _COST, "int", "Hessian-vector products spent observing eigenvalues (not dynamics)"
    ),
    "n_eig_fallback": Variable(
        _COST, "int", "observed steps whose warm-started Ritz step went on to a full solve"
    ),
    "wall_time": Variable(
        _COST,
        "float",
        "seconds of the whole compiled run (every process in one program), compilation excluded",
    ),
    "compile_time": Variable(
        _COST, "float", "seconds spent compiling the run (0 when the program was cached)"
    ),
    "diverged_at": Variable(_COST, "int", "first step with a non-finite state, -1 if none"),
    "predicted_grad_norm": Variable(
        _STEP, "float", "central: sqrt(|grad L|^2 + <U^T H^2 U, X>) (GD's RMS grad norm)"
    ),
    "sigma": Variable(
        _EIG,
        "float",
        "central: eigenvalues of X, GD's oscillation variance along Sigma's eigenvectors",
    ),
    "gd_deviation": Variable(
        _EIG, "float", "central: (v_i^T (w_GD - w))^2 along Sigma's eigenvectors v_i"
    ),
    "gd_variance": Variable(
        _EIG, "float", "central: gd_deviation, centred moving average over variance_window steps"
    ),
    "n_critical": Variable(
        _STEP, "float", "central: number of eigenvalues in the SDCP (lr*lambda > sdcp_threshold)"
    ),
    "n_tracked": Variable(
        _STEP, "float", "central: number of eigenvalues with lr*lambda >= track_threshold"
    ),
    "sdcp_residual": Variable(
        _STEP, "float", "central: scale-free natural residual of the SDCP solve"
    ),
    "rod_length": Variable(
        _STEP, "float", "rod: |Y|, half the distance between consecutive predicted iterates"
    ),
    "oscillation_magnitude": Variable(
        _STEP,
        "float",
        "edge: |Y| = e^a, the oscillation's half-amplitude (k > 1: sqrt(sum e^(2 a_i)))",
    ),
    "edge_magnitudes": Variable(
        _EIG, "float", "edge, k > 1: e^(a_i), the magnitude along each direction"
    ),
    "edge_sharpness": Variable(
        _STEP,
        "float",
        "edge: u^T H u at the centre along its direction, raw (k > 1: the largest u_i^T H u_i)",
    ),
    "alignment": Variable(
        _STEP,
        "float",
        "edge: |u^T u1|, its direction against the observer's top eigenvector (k > 1: the "
        "norm of u1's projection on span(U))",
    ),
    "global_error": Variable(
        _STEP,
        "float",
        "GlobalErrorEstimate: |c - c_twin| / |c_twin|, the centre's distance to a twin at "
        "rtol and atol / factor (an a-posteriori estimate of the flow's global error)",
    ),
    "oscillation_u1": Variable(
        _STEP, "float", "(u1^T (w - centre))^2: squared oscillation along the top eigenvector"
    ),
}

COST_VARS = tuple(k for k, v in SCHEMA.items() if v.dims == _COST)
PARAM_VARS = tuple(k for k, v in SCHEMA.items() if v.kind == "param")


def variable(name: str) -> Variable:
    """The declaration of `name` (every variable a process records must have one)."""
    try:
        return SCHEMA[name]
    except KeyError:
        raise KeyError(
            f"flowode records {name!r}, which _results.SCHEMA does not declare."
        ) from None


def dims(name: str) -> tuple[str, ...]:
    return ("flow", *variable(name).dims)


def dtype_and_fill(name: str, sample: np.ndarray) -> tuple[np.dtype, object]:
    """The stored dtype and fill of `name` (a "param" keeps the run's dtype, `sample`'s)."""
    kind = variable(name).kind
    if kind == "int":
        return np.dtype(np.int64), -1
    return (np.asarray(sample).dtype if kind == "param" else np.dtype(np.float64)), np.nan


def eig_width(records: dict[str, dict[str, np.ndarray]]) -> int:
    """Length of the `eig` dim: the widest per-step variable along it, over all processes."""
    return max(
        (
            np.shape(v)[1]
            for rec in records.values()
            for k, v in rec.items()
            if variable(k).dims == _EIG
        ),
        default=0,
    )


def build_dataset(records: dict[str, dict[str, np.ndarray]], attrs: dict) -> xr.Dataset:
    """One Dataset from {flow label: {variable: array}}; missing variables are NaN.

    Each variable's dims, dtype and fill come from its declaration in `SCHEMA`.
    """
    labels = list(records)
    names: list[str] = []
    for rec in records.values():
        names += [k for k in rec if k not in names]
    n_step = len(next(iter(records.values()))["loss"])
    n_eig = eig_width(records)
    data_vars = {}
    for name in names:
        sample = np.asarray(next(rec[name] for rec in records.values() if name in rec))
        var_dims = dims(name)
        sizes = {"step": n_step, "eig": n_eig}
        shape = tuple(sizes.get(d, sample.shape[-1]) for d in var_dims[1:])  # param: its own
        dtype, fill = dtype_and_fill(name, sample)
        arr = np.full((len(labels), *shape), fill, dtype=dtype)
        for i, label in enumerate(labels):
            if name in records[label]:
                value = np.asarray(records[label][name])
                # (along `eig`, processes may give different lengths: the rest stays NaN)
                arr[(i, *(slice(0, s) for s in value.shape))] = value
        data_vars[name] = xr.Variable(
            var_dims, arr, attrs={"description": variable(name).description}
        )
    coords = {"flow": np.array(labels, dtype=object), "step": np.arange(n_step)}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def save(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write a Dataset to netCDF4 (through h5netcdf)."""
    ds.to_netcdf(path, engine="h5netcdf")


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a Dataset written by `save` or `simulate(out=...)` fully into memory.

    A run file from an unfinished run holds the steps it completed.
    """
    with read(path) as ds:
        return ds.load()


def read(path: str | os.PathLike) -> xr.Dataset:
    """Open a results file lazily: variables are read from disk when they are used.

    Everything but `params` and `iterates` is small; those stay on disk until indexed.
    Close the Dataset (or use `with`) before the same file is written again.
    """
    ds = xr.open_dataset(path, engine="h5netcdf")
    done = ds.attrs.get("completed_steps")
    if done is None:
        return ds
    if ds.sizes.get("step", 0) > int(done) + 1:  # killed mid-write
        ds = ds.isel(step=slice(0, int(done) + 1))
    for name, values in _slot_totals(path, int(done)).items():
        if name in COST_VARS and name in ds:
            ds[name] = ds[name].copy(data=values)
    return ds


def _slot_totals(path, done: int) -> dict[str, np.ndarray]:
    """The per-flow totals kept with the checkpoint of step `done` ({} if there is none)."""
    with h5netcdf.File(path, "r") as f:
        slot = slot_at(f, done)
        return {} if slot is None else slot_totals(slot)


def slot_at(f: h5netcdf.File, step: int):
    """The checkpoint slot of a run file tagged with `step`, or None."""
    for name in SLOTS:
        group = f.groups.get(name)
        if group is not None and SLOT_STEP in group.variables:
            if int(group.variables[SLOT_STEP][...]) == int(step):
                return group
    return None


def slot_totals(slot) -> dict[str, np.ndarray]:
    """The per-flow totals a checkpoint slot keeps, by variable name."""
    return {n[len(SLOT_TOTAL) :]: v[...] for n, v in slot.variables.items() if is_total(n)}


def is_total(name: str) -> bool:
    return name.startswith(SLOT_TOTAL)
