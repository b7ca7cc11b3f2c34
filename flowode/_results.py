"""Assemble per-process records into the xarray Dataset of DESIGN §4, and read/write it."""

import os

import numpy as np
import xarray as xr

# Per-step variables every process has; others (rod_length, sigma, ...) are added as found.
STEP_VARS = (
    "loss",
    "predicted_loss",
    "sharpness",
    "grad_norm",
    "distance_to_gd",
    "center_distance_to_gd",
)
COST_VARS = (
    "n_grad",
    "n_hvp",
    "n_third",
    "n_hvp_observe",
    "n_eig_fallback",
    "wall_time",
    "compile_time",
    "diverged_at",
)
INT_VARS = ("diverged_at", "n_grad", "n_hvp", "n_third", "n_hvp_observe", "n_eig_fallback")
PARAM_VARS = ("params", "iterates")  # along `param`, kept in the run's dtype

DESCRIPTIONS = {
    "loss": "L at the process's own point (GD iterate, flow state, rod centre)",
    "predicted_loss": "the process's prediction of time-averaged GD loss",
    "sharpness": "largest Hessian eigenvalue at the process's point (not times lr)",
    "effective_sharpness": "λ₁(P⁻¹H), the optimiser's preconditioned sharpness (ηS for GD); "
    "its edge of stability is the attribute `threshold`",
    "eigs": "top Hessian eigenvalues at the process's point",
    "grad_norm": "gradient norm at the process's point",
    "distance_to_gd": "||w_GD(k) - predicted GD iterate(k)||",
    "center_distance_to_gd": "||GD midpoint(k) - centre(k)||",
    "params": "the process's own point, in ravel_pytree(w0) order",
    "iterates": "the process's prediction of the GD iterate (rod: X + (-1)^k Y)",
    "n_grad": "gradient evaluations of the process's dynamics",
    "n_hvp": "Hessian-vector products of the process's dynamics",
    "n_third": "third-derivative contractions of the process's dynamics",
    "n_hvp_observe": "Hessian-vector products spent observing eigenvalues (not dynamics)",
    "n_eig_fallback": "observed steps whose warm-started Ritz step went on to a full solve",
    "wall_time": "seconds of the whole compiled run (every process in one program), "
    "compilation excluded",
    "compile_time": "seconds spent compiling the run (0 when the program was cached)",
    "diverged_at": "first step with a non-finite state, -1 if none",
    "predicted_grad_norm": "central: sqrt(|grad L|^2 + <U^T H^2 U, X>) (GD's RMS grad norm)",
    "sigma": "central: eigenvalues of X, GD's oscillation variance along Sigma's eigenvectors",
    "gd_deviation": "central: (v_i^T (w_GD - w))^2 along Sigma's eigenvectors v_i",
    "gd_variance": "central: gd_deviation, centred moving average over variance_window steps",
    "n_critical": "central: number of eigenvalues in the SDCP (lr*lambda > sdcp_threshold)",
    "n_tracked": "central: number of eigenvalues with lr*lambda >= track_threshold",
    "sdcp_residual": "central: scale-free natural residual of the SDCP solve",
    "rod_length": "rod: |Y|, half the distance between consecutive predicted iterates",
    "oscillation_magnitude": "edge: |Y| = e^a, the oscillation's half-amplitude (k > 1: "
    "sqrt(sum e^(2 a_i)))",
    "edge_magnitudes": "edge, k > 1: e^(a_i), the magnitude along each direction",
    "edge_sharpness": "edge: u^T H u at the centre along its direction, raw (k > 1: the "
    "largest u_i^T H u_i)",
    "alignment": "edge: |u^T u1|, its direction against the observer's top eigenvector "
    "(k > 1: the norm of u1's projection on span(U))",
    "oscillation_u1": "(u1^T (w - centre))^2: squared oscillation along the top eigenvector",
}


def eig_width(records: dict[str, dict[str, np.ndarray]]) -> int:
    """Length of the `eig` dim: the widest per-step variable along it, over all processes."""
    return max(
        (
            np.shape(v)[1]
            for rec in records.values()
            for k, v in rec.items()
            if np.ndim(v) == 2 and k not in PARAM_VARS
        ),
        default=0,
    )


def build_dataset(records: dict[str, dict[str, np.ndarray]], attrs: dict) -> xr.Dataset:
    """One Dataset from {flow label: {variable: array}}; missing variables are NaN.

    Per-step variables have shape (steps+1,) or (steps+1, m) with m along `eig` or
    `param`; cost variables are scalars.
    """
    labels = list(records)
    names: list[str] = []
    for rec in records.values():
        names += [k for k in rec if k not in names]
    n_step = len(next(iter(records.values()))["loss"])
    n_eig = eig_width(records)
    data_vars = {}
    for name in names:
        sample = next(rec[name] for rec in records.values() if name in rec)
        sample = np.asarray(sample)
        if name in COST_VARS:
            dims, shape = ("flow",), ()
        elif sample.ndim == 1:
            dims, shape = ("flow", "step"), (n_step,)
        else:  # along `eig`, processes may give different lengths: pad with NaN
            last = "param" if name in PARAM_VARS else "eig"
            width = n_eig if last == "eig" else sample.shape[1]
            dims, shape = ("flow", "step", last), (n_step, width)
        fill, dtype = (-1, np.int64) if name in INT_VARS else (np.nan, float)
        if name in PARAM_VARS:
            dtype = sample.dtype
        arr = np.full((len(labels), *shape), fill, dtype=dtype)
        for i, label in enumerate(labels):
            if name in records[label]:
                value = np.asarray(records[label][name])
                arr[(i, *(slice(0, s) for s in value.shape))] = value
        data_vars[name] = xr.Variable(dims, arr, attrs={"description": DESCRIPTIONS.get(name, "")})
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
    if done is not None and ds.sizes.get("step", 0) > int(done) + 1:  # killed mid-write
        ds = ds.isel(step=slice(0, int(done) + 1))
    return ds
