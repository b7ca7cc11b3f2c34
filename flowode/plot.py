"""Standard figures from a `simulate` Dataset (and nothing else): loss, sharpness, distance."""

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib import ticker
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


def plain_log_ticks(ax, nbins: int = 5):
    """On a log y-axis that spans less than a decade, evenly spaced ticks with plain
    labels (2.1, 2.2, 2.3), instead of matplotlib's minor ticks labelled 2.1×10⁰ or a
    single tick."""
    if ax.get_yscale() != "log":
        return ax
    low, high = ax.get_ylim()
    if low > 0 and high / low < 10:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
    return ax


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
    plain_log_ticks(ax)
    ax.legend(fontsize=7)
    return ax


def sharpness(ds: xr.Dataset, ax=None):
    """Preconditioned sharpness λ₁(P⁻¹H) per process against the optimiser's threshold
    (ηS against 2 for GD, with any lr schedule)."""
    ax = ax or plt.gca()
    if "effective_sharpness" not in ds:  # a file from before optimisers: plain GD
        ds = ds.assign(effective_sharpness=ds.sharpness * float(ds.attrs["lr"]))
    # GD's midpoint is drawn where its iterate was not observed (`eigs_at="midpoint"`).
    iterate = ds.effective_sharpness.sel(flow=_reference(ds))
    skip = "midpoint" if np.isfinite(iterate).any() else _reference(ds)
    for flow in ds.flow.values:
        if flow == skip:
            continue
        s = ds.effective_sharpness.sel(flow=flow)
        ok = np.isfinite(s)  # thinned by eig_every
        ax.plot(ds.step[ok], s[ok], **_style(flow))
    threshold = float(ds.attrs.get("threshold", 2.0))
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}", zorder=0)
    top = np.nanmax(ds.effective_sharpness.where(ds.flow != skip).values, initial=0)
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
        ax.plot(ds.step, d.where(d > 0), **_style(flow))  # 0 at step 0: off a log axis
    ax.set(xlabel="step", ylabel="‖w − ŵ‖", yscale="log", title="distance to the discrete run")
    plain_log_ticks(ax)
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


def sweep(ds: xr.Dataset, path=None, *, axes=None, last: int = 100):
    """The EOS phase diagram of a `fo.sweep` Dataset: against the swept value, each
    process's loss, its sharpness λ₁(P⁻¹H) and each flow's distance to the discrete run,
    averaged over the last `last` steps (GD's period-2 oscillation averages out), the
    mean over seeds as a line and their range as a band. Drawn into three `axes`, or a
    new figure; saved as PNG when `path` is given.
    """
    name = str(ds.attrs["swept"])
    x = ds[name].values
    tail = ds.isel(step=slice(-last, None))
    if axes is None:
        fig = Figure(figsize=(15, 4.2), layout="constrained")
        axes = fig.subplots(1, 3)
        fig.suptitle(f"{ds.attrs.get('optimizer', 'GD')}: {ds.sizes['seed']} seeds, {name} swept")
    else:
        fig = axes[0].figure
    reference = _reference(ds)
    panels = (
        ("loss", "loss", "final loss", "log"),
        ("effective_sharpness", "λ₁(P⁻¹H)  (ηλ₁ for GD)", "sharpness", "linear"),
        ("distance_to_gd", "‖w − ŵ‖", "distance to the discrete run", "log"),
    )
    for ax, (var, ylabel, title, scale) in zip(axes, panels, strict=True):
        for flow in ds.flow.values:
            if flow == "midpoint" or (var == "distance_to_gd" and flow == reference):
                continue
            v = tail[var].sel(flow=flow).mean("step", skipna=True)  # (seed, value)
            st = _style(str(flow))
            ax.plot(x, v.mean("seed"), marker="o", ms=3, **st)
            ax.fill_between(x, v.min("seed"), v.max("seed"), color=st.get("color"), alpha=0.2)
        ax.set(xlabel=name, ylabel=ylabel, title=f"{title} (last {last} steps)", yscale=scale)
        plain_log_ticks(ax)
        ax.legend(fontsize=7)
    threshold = float(ds.attrs.get("threshold", 2.0))
    axes[1].axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    axes[1].legend(fontsize=7)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
