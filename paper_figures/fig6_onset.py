"""The rod enters the edge of stability when GD does, in float32 and float64, at any tolerance.

MLP regression (seed 0, 433 parameters), η = 0.1. Top row, per dtype: the rod's
half-length |Y| (default solver, and Tsit5 at the tightest tolerance the dtype allows)
against GD's oscillation: half its second difference |w_{k+1} − 2w_k + w_{k−1}|/4 and its
displacement from its midpoint process along the top eigenvector (before the onset both
measure GD's smooth path, its curvature and half a step, not an oscillation, so they sit
above the rounding level where the oscillation itself starts); ηS = 2 is marked.
Below the threshold the rod sits on its floor, ε‖w‖ (GD's own rounding); it leaves it at
the exact period-2 rate once ηS > 2. Bottom: distance to GD's iterates before the onset
(float64) for gradient flow, its modified equation, the rod and the rod with its O(η²)
centre correction. Writes fig6_onset.png.
"""

from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowode as fo  # noqa: E402

HERE = Path(__file__).parent
LR, STEPS, SEED = 0.1, 700, 0
TIGHT = {
    "float64": diffrax.PIDController(rtol=1e-8, atol=1e-12),
    "float32": diffrax.PIDController(rtol=1e-6, atol=1e-6),
}


def half_second_difference(ds):
    w = ds.params.sel(flow="gd").values
    out = np.full(len(w), np.nan)
    out[1:-1] = np.linalg.norm(w[2:] - 2 * w[1:-1] + w[:-2], axis=1) / 4
    return out


def main():
    runs = {}
    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            p = fo.problems.mlp_regression(seed=SEED, dtype=getattr(jnp, dtype))
            flows = (
                ("gradient", fo.GradientFlow(modified_equation=True), "rod",
                 fo.RodFlow(modified_equation=True))
                if dtype == "float64"
                else ("rod",)
            )  # fmt: skip
            ds = fo.simulate(
                p, lr=LR, steps=STEPS, flows=flows, eig_every=5, save_params=True, eigs_at="both"
            )
            tight = fo.RodFlow(solver=diffrax.Tsit5(), stepsize_controller=TIGHT[dtype])
            ds_tight = fo.simulate(
                p, lr=LR, steps=STEPS, flows=(tight,), eig_every=STEPS, eigs_at="both"
            )
            runs[dtype] = (ds, ds_tight)

    fig = plt.figure(figsize=(12, 8), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    for col, (dtype, (ds, ds_tight)) in enumerate(runs.items()):
        ax = fig.add_subplot(grid[0, col])
        steps = ds.step.values
        ax.semilogy(steps, half_second_difference(ds), color="0.45", lw=1.0,
                    label="GD: |w₊ − 2w + w₋|/4")  # fmt: skip
        osc = np.sqrt(ds.oscillation_u1.sel(flow="gd"))
        osc = osc[np.isfinite(osc)]
        ax.semilogy(osc.step, osc, ".", ms=3, color="0.2",
                    label="GD: |u₁ᵀ(w − w*)| (w*: midpoint)")  # fmt: skip
        ax.semilogy(steps, ds.rod_length.sel(flow="rod"), color="tab:green", lw=1.8,
                    label="rod |Y| (default: RKC2, rtol 1e-3)")  # fmt: skip
        rtol = TIGHT[dtype].rtol
        ax.semilogy(steps, ds_tight.rod_length.sel(flow="rod"), color="tab:olive", lw=1.2,
                    ls="--", label=f"rod |Y| (Tsit5, rtol {rtol:g})")  # fmt: skip
        sharp = LR * ds.sharpness.sel(flow="gd")
        sharp = sharp[np.isfinite(sharp)]
        cross = int(sharp.step[sharp > 2][0])
        ax.axvline(cross, color="k", ls=":", lw=1, label=f"ηS = 2 (step {cross})")
        ax.axhline(1e-2, color="tab:red", lw=0.6, alpha=0.5, label="onset level 1e-2")
        ax.set(xlabel="step", ylabel="half-length / GD oscillation", title=f"{dtype}: onset of EOS")
        ax.set_ylim(np.finfo(dtype).eps * 0.1, 10)
        ax.legend(fontsize=7, loc="upper left")

    ds = runs["float64"][0]
    ax = fig.add_subplot(grid[1, :])
    styles = {
        "gradient": dict(color="tab:red", label="gradient flow"),
        "gradient_me": dict(color="tab:red", ls="--", label="gradient flow + (η²/2)H∇L term"),
        "rod": dict(color="tab:green", label="rod flow"),
        "rod_me": dict(color="tab:green", ls="--", label="rod flow + O(η²) centre term"),
    }
    before = slice(1, 300)
    for flow, st in styles.items():
        d = ds.distance_to_gd.sel(flow=flow).isel(step=before)
        ax.semilogy(d.step, d, lw=1.5, **st)
    ax.set(xlabel="step", ylabel="‖ŵ − w_GD‖",
           title="float64: distance to GD's iterates before the onset")  # fmt: skip
    ax.legend(fontsize=8)
    fig.suptitle(f"{ds.attrs['problem']}, seed {SEED}, η = {LR}")
    fig.savefig(HERE / "fig6_onset.png", dpi=110)


if __name__ == "__main__":
    main()
