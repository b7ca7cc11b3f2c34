"""The three EOS models at the onset: GD, central, rod and edge flow's sharpness and error.

MLP regression (seed 0, 433 parameters), η = 0.1, float32, every step observed. Top: ηS
against the step, zoomed on the onset of EOS: at GD's iterate (it overshoots 2, then
oscillates and settles), at central flow's point (pinned at 2 once the constraint is
active), at the rod's and edge flow's centres, and edge flow's own ηuᵀHu along its
direction (dashed). Middle: each model's distance to GD over the same steps: solid, its
predicted iterate against GD's (rod and edge: X + (−1)^k Y, the phase included; central:
its point); dashed, its centre against GD's midpoint process. Bottom: the same distances
over the whole run, gradient flow for scale. Writes fig7_edge.png.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowode as fo  # noqa: E402

HERE = Path(__file__).parent
LR, STEPS, SEED = 0.1, 800, 0
STYLE = {
    "gd": dict(color="0.4", lw=0.9, label="GD"),
    "central": dict(color="tab:blue", lw=1.6, label="central flow"),
    "rod": dict(color="tab:green", lw=1.6, label="rod flow"),
    "edge": dict(color="tab:purple", lw=1.6, label="edge flow"),
    "gradient": dict(color="tab:red", lw=1.2, label="gradient flow"),
}


def gd_onset(ds):
    w = ds.params.sel(flow="gd").values
    half_second_difference = np.linalg.norm(w[2:] - 2 * w[1:-1] + w[:-2], axis=1) / 4
    return int(np.argmax(half_second_difference > 1e-2)) + 1


def main():
    p = fo.problems.mlp_regression(seed=SEED)
    flows = ("gradient", "central", "rod", "edge")
    ds = fo.simulate(
        p, lr=LR, steps=STEPS, flows=flows, eig_every=1, save_params=True, eigs_at="both"
    )
    onset = gd_onset(ds)
    cross = int(np.argmax(LR * ds.sharpness.sel(flow="gd").values > 2))
    zoom = slice(cross - 60, onset + 120)

    fig, axes = plt.subplots(3, 1, figsize=(10, 11), layout="constrained")
    ax = axes[0]
    for flow in ("gd", "central", "rod", "edge"):
        s = LR * ds.sharpness.sel(flow=flow).isel(step=zoom)
        ax.plot(s.step, s, **STYLE[flow])
    e = LR * ds.edge_sharpness.sel(flow="edge").isel(step=zoom)
    ax.plot(e.step, e, **{**STYLE["edge"], "ls": "--", "lw": 1.0, "label": "edge flow: ηuᵀHu"})
    ax.axhline(2.0, color="k", lw=0.8, ls=":")
    ax.axvline(onset, color="0.6", lw=0.8, ls="--", label=f"GD's onset (step {onset})")
    ax.set(xlabel="step", ylabel="ηS", title="sharpness at the onset of EOS (zoom)")
    ax.legend(fontsize=8, ncol=2)

    for ax, window in ((axes[1], zoom), (axes[2], slice(0, None))):
        for flow in ("gradient", "central", "rod", "edge"):
            if flow == "gradient" and window is zoom:
                continue
            d = ds.distance_to_gd.sel(flow=flow).isel(step=window)
            c = ds.center_distance_to_gd.sel(flow=flow).isel(step=window)
            ax.semilogy(d.step, np.maximum(d, 1e-8), **STYLE[flow])
            ax.semilogy(c.step, np.maximum(c, 1e-8), **{**STYLE[flow], "ls": "--", "lw": 1.0,
                                                         "label": None})  # fmt: skip
        ax.axvline(onset, color="0.6", lw=0.8, ls="--")
        ax.set(xlabel="step", ylabel="distance", ylim=(1e-3, None))
        ax.legend(
            fontsize=8, title="solid: ‖ŵ − w_GD‖;  dashed: ‖centre − w*_GD‖", title_fontsize=8
        )
    axes[1].set_title("distance to GD at the onset (zoom)")
    axes[2].set_title("distance to GD, whole run")
    axes[2].axvspan(zoom.start, zoom.stop, color="0.9", zorder=0)
    fig.suptitle(f"{ds.attrs['problem']}, seed {SEED}, η = {LR}, float32")
    fig.savefig(HERE / "fig7_edge.png", dpi=110)
    print("GD onset", onset, "ηS > 2 at", cross)
    for flow in ("gd", "central", "rod", "edge"):
        s = LR * ds.sharpness.sel(flow=flow).values[: onset + 101]
        print(flow, "peak ηS", float(np.nanmax(s)), "at", int(np.nanargmax(s)))


if __name__ == "__main__":
    main()
