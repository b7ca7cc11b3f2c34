"""The rod grows just above 2/η and decays just below it, as GD's oscillation does.

Quadratic with η·λ₁ = 2 ± 0.06 (and a stable second direction). Plots |u₁ᵀY| for the rod
and GD's displacement |u₁ᵀ(w_k − w*_k)| from its midpoint, with the predicted rate
|1 − ηλ₁|^t = exp(ln(1 + ηλ₁ − 2)·t): GD's exact rate, which the rod's amplitude follows
by default (`RodFlow(amplitude_rate="map")`). Writes rod_threshold.png and rod_threshold.nc.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import flowode as fo

HERE = Path(__file__).parent
LR = 0.1


def main():
    runs = {}
    with jax.enable_x64(True):
        for offset in (0.06, -0.06):
            problem = fo.problems.quadratic([(2 + offset) / LR, 3.0], [1.0, 1.0], dtype=jnp.float64)
            runs[offset] = fo.simulate(
                problem, lr=LR, steps=80, flows=("gd", "rod"), eigs_at="both"
            )
    xr.concat(list(runs.values()), dim=xr.DataArray(list(runs), dims="offset")).to_netcdf(
        HERE / "rod_threshold.nc", engine="h5netcdf"
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained", sharey=True)
    for ax, (offset, ds) in zip(axes, runs.items(), strict=True):
        steps = ds.step.values
        rod = np.sqrt(ds.oscillation_u1.sel(flow="rod").values)
        gd = np.sqrt(ds.oscillation_u1.sel(flow="gd").values)
        ax.semilogy(steps, gd, "o", ms=4, mfc="none", color="0.4", label="GD |u₁ᵀ(w − w*)|")
        ax.semilogy(steps, rod, color="tab:green", lw=2, label="rod |u₁ᵀY|")
        ax.semilogy(
            steps,
            rod[0] * np.exp(np.log1p(offset) * steps),
            "k--",
            lw=1,
            label=f"|1 − ηλ₁|^t, ηλ₁ − 2 = {offset:+.2f}",
        )
        ax.set(
            xlabel="step",
            title=f"ηλ₁ = {2 + offset:.2f}: rod " + ("grows" if offset > 0 else "decays"),
        )
        ax.legend(fontsize=8)
    axes[0].set_ylabel("oscillation along u₁")
    fig.suptitle("rod flow's critical threshold is ηλ₁ = 2")
    fig.savefig(HERE / "rod_threshold.png", dpi=120)
    print("wrote", HERE / "rod_threshold.png")


if __name__ == "__main__":
    main()
