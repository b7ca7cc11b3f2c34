"""Panels shared by the paper figures: loss (raw and smoothed GD, each flow's own and
predicted loss), top eigenvalues of every process, and centre distance to GD."""

import numpy as np

import flowode as fo

WINDOW = 20  # steps; even, so the period-2 oscillation averages out


def smooth(x, window=WINDOW):
    """Trailing moving average (the first window−1 values average what there is)."""
    c = np.cumsum(np.insert(np.asarray(x, float), 0, 0.0))
    n = np.arange(1, len(x) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def loss_panel(ax, ds):
    steps = ds.step.values
    gd = ds.loss.sel(flow="gd").values
    ax.plot(steps, gd, color="0.75", lw=0.7, label="GD (raw)")
    ax.plot(steps, smooth(gd), color="black", lw=1.4, label=f"GD ({WINDOW}-step mean)")
    for flow in ds.flow.values:
        if flow in ("gd", "midpoint"):
            continue
        st = fo.plot.STYLE[flow]
        ax.plot(steps, ds.loss.sel(flow=flow), **{**st, "lw": 1.0, "label": f"{st['label']}: L"})
        if flow != "gradient":
            pred = ds.predicted_loss.sel(flow=flow)
            ax.plot(steps, pred, **{**st, "ls": "--", "label": f"{st['label']}: predicted"})
    ax.set(xlabel="step", ylabel="train loss", yscale="log", title="train loss")
    ax.legend(fontsize=7)


def eig_panel(ax, ds):
    steps = ds.step.values
    for flow in ds.flow.values:
        if flow == "midpoint":
            continue
        st = fo.plot.STYLE[flow]
        eigs = ds.eigs.sel(flow=flow).values
        for i in range(ds.attrs["eig_k"]):
            ok = np.isfinite(eigs[:, i])
            label = st["label"] if i == 0 else None
            lw = 0.7 if flow == "gd" else 1.4
            ax.plot(
                steps[ok], eigs[ok, i], **{**st, "lw": lw, "label": label, "alpha": 1 - 0.35 * i}
            )
    ax.axhline(2 / ds.attrs["lr"], color="k", ls="--", lw=1, label="2/η", zorder=0)
    ax.set(
        xlabel="step", ylabel="Hessian eigenvalues", title=f"top {ds.attrs['eig_k']} eigenvalues"
    )
    ax.set_ylim(0, 1.6 * 2 / ds.attrs["lr"])
    ax.legend(fontsize=7)


def distance_panel(ax, ds):
    steps = ds.step.values
    for flow in ("gradient", "central", "rod"):
        if flow in ds.flow.values:
            d = ds.center_distance_to_gd.sel(flow=flow).values
            ax.plot(steps[1:], d[1:], **fo.plot.STYLE[flow])
    ax.set(xlabel="step", ylabel="‖GD midpoint − centre‖", yscale="log", title="distance to GD")
    ax.legend(fontsize=7)
