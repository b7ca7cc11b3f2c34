"""Standard figures from a `simulate` Dataset (and nothing else): loss, sharpness, distance."""

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

STYLE = {
    "gd": dict(color="0.55", lw=0.8, label="GD"),
    "midpoint": dict(color="black", lw=1.2, ls=":", label="GD midpoint"),
    "gradient": dict(color="tab:red", lw=1.6, label="gradient flow"),
    "central": dict(color="tab:blue", lw=1.6, label="central flow"),
    "rod": dict(color="tab:green", lw=1.6, label="rod flow"),
    "edge": dict(color="tab:purple", lw=1.6, label="edge flow"),
}


DISCRETE = ("gd", "heavy_ball", "nesterov", "rmsprop", "adam")  # drawn as GD is


def _style(flow: str) -> dict:
    if flow in DISCRETE:
        return {**STYLE["gd"], "label": "GD" if flow == "gd" else flow}
    return STYLE.get(flow, dict(lw=1.4, label=flow))


def _reference(ds: xr.Dataset) -> str:
    """The discrete optimiser's label (`gd`, `adam`, ...)."""
    return str(ds.attrs.get("reference", "gd"))


def loss(ds: xr.Dataset, ax=None, *, predicted: bool = True):
    """Loss per process (solid) and each flow's predicted GD loss (dashed)."""
    ax = ax or plt.gca()
    for flow in ds.flow.values:
        st = _style(flow)
        ax.plot(ds.step, ds.loss.sel(flow=flow), **st)
        if predicted and flow not in (_reference(ds), "midpoint"):
            pred = ds.predicted_loss.sel(flow=flow)
            if not np.allclose(pred, ds.loss.sel(flow=flow), equal_nan=True):
                ax.plot(ds.step, pred, **{**st, "ls": "--", "label": f"{st['label']} (predicted)"})
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="train loss")
    ax.legend(fontsize=7)
    return ax


def sharpness(ds: xr.Dataset, ax=None):
    """Preconditioned sharpness λ₁(P⁻¹H) per process against the optimiser's threshold
    (ηS against 2 for GD, with any lr schedule)."""
    ax = ax or plt.gca()
    if "effective_sharpness" not in ds:  # a file from before optimisers: plain GD
        ds = ds.assign(effective_sharpness=ds.sharpness * float(ds.attrs["lr"]))
    for flow in ds.flow.values:
        if flow == "midpoint":
            continue
        s = ds.effective_sharpness.sel(flow=flow)
        ok = np.isfinite(s)  # thinned by eig_every
        ax.plot(ds.step[ok], s[ok], **_style(flow))
    threshold = float(ds.attrs.get("threshold", 2.0))
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}", zorder=0)
    top = np.nanmax(ds.effective_sharpness.where(ds.flow != "midpoint").values, initial=0)
    ax.set_ylim(0, min(max(top, threshold) * 1.05, 3 * threshold))  # spikes, e.g. ν₀ = 0
    ax.set(xlabel="step", ylabel="λ₁(P⁻¹H)  (ηλ₁ for GD)", title="preconditioned sharpness")
    ax.legend(fontsize=7)
    return ax


def distance(ds: xr.Dataset, ax=None):
    """Distance of each flow's predicted iterate to the discrete optimiser's iterate."""
    ax = ax or plt.gca()
    for flow in ds.flow.values:
        if flow == _reference(ds):
            continue
        d = ds.distance_to_gd.sel(flow=flow)
        ax.plot(ds.step, np.maximum(d, 1e-12), **_style(flow))
    ax.set(xlabel="step", ylabel="‖w − ŵ‖", yscale="log", title="distance to the discrete run")
    ax.legend(fontsize=7)
    return ax


def sigma(ds: xr.Dataset, ax=None, *, flow: str = "central"):
    """Central flow's predicted oscillation variances σ² (eigenvalues of X, solid) against
    GD's observed squared deviation from the central flow along Σ's eigenvectors (dotted)."""
    ax = ax or plt.gca()
    c = ds.sel(flow=flow)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i in range(c.sizes["eig"]):
        if not np.nanmax(c.sigma[:, i], initial=0) > 0:
            continue
        color = colors[i % len(colors)]
        ax.plot(ds.step, c.sigma[:, i], color=color, lw=1.6, label=f"σ²_{i + 1} (predicted)")
        ax.plot(ds.step, c.gd_variance[:, i], color=color, lw=1, ls=":", label=f"GD, mode {i + 1}")
    ax.set(xlabel="step", ylabel="variance", title="oscillation variance along Σ's eigenvectors")
    ax.legend(fontsize=7)
    return ax


def overview(ds: xr.Dataset, path=None):
    """Loss, sharpness and distance to GD side by side; saved as PNG when `path` is given.

    Built on a bare `Figure`, so it works headless and leaves pyplot's state alone.
    """
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    loss(ds, axes[0])
    sharpness(ds, axes[1])
    distance(ds, axes[2])
    lr = ds.attrs["lr"]
    lr = f"η = {lr:g}" if isinstance(lr, int | float | np.number) else f"η: {lr}"
    name = str(ds.attrs.get("optimizer", "GD"))
    fig.suptitle(f"{ds.attrs.get('problem', '')}, {name}, {lr}")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
