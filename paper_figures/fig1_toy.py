"""GD iterates against the rod ends X ± Y on the softening quartic, with gradient flow,
and the sharpness against 2/η. Writes fig1_toy.png and fig1_toy.nc."""

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import flowode as fo

HERE = Path(__file__).parent
FLOWS = tuple(name for name in ("gd", "gradient", "central", "rod") if name in fo.FLOWS)


def main():
    with jax.enable_x64(True):
        problem = fo.problems.softening_quartic(dtype=jnp.float64)
        ds = fo.simulate(problem, lr=1.0, steps=300, flows=FLOWS, save_params=True, eigs_at="both")
    fo.save(ds, HERE / "fig1_toy.nc")
    steps = ds.step.values
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), layout="constrained")

    ax = axes[0]  # the plane (u, v)
    gd = ds.params.sel(flow="gd").values
    ax.plot(gd[:, 0], gd[:, 1], ".", ms=3, color="0.5", label="GD iterates")
    for flow in FLOWS[1:]:
        w = ds.params.sel(flow=flow).values
        ax.plot(w[:, 0], w[:, 1], **fo.plot.STYLE[flow])
    rod_ends = ds.iterates.sel(flow="rod").values
    ax.plot(rod_ends[:, 0], rod_ends[:, 1], ".", ms=2, color="tab:green", label="rod X + (−1)ᵏY")
    ax.set(xlabel="u", ylabel="v", title="trajectories in the plane")
    ax.legend(fontsize=8)

    ax = axes[1]  # v against step: GD iterates vs the rod's ends X ± Y
    window = steps <= 150  # the approach to EOS, its onset and the settled oscillation
    centre = ds.params.sel(flow="rod").values[:, 1]
    predicted = ds.iterates.sel(flow="rod").values[:, 1]  # X + (−1)^k Y
    other_end = 2 * centre - predicted  # X − (−1)^k Y
    k = steps[window]
    ax.plot(k, gd[window, 1], "o", ms=5, mfc="none", color="0.35", label="GD iterate v_k")
    ax.plot(k, predicted[window], ".", ms=4, color="tab:green", label="rod X + (−1)ᵏY")
    ax.fill_between(
        k,
        np.minimum(predicted, other_end)[window],
        np.maximum(predicted, other_end)[window],
        color="tab:green",
        alpha=0.15,
        label="rod ends X ± Y",
    )
    ax.plot(k, centre[window], color="tab:green", lw=1, label="rod centre X")
    ax.set(xlabel="step", ylabel="v", title="GD oscillation and the rod (v coordinate)")
    ax.legend(fontsize=8, loc="lower right")

    fo.plot.sharpness(ds, axes[2])
    fig.suptitle("softening quartic L = −cu + ½(s₀ + au)v² + ¼bv⁴, η = 1")
    fig.savefig(HERE / "fig1_toy.png", dpi=120)
    print("wrote", HERE / "fig1_toy.png")


if __name__ == "__main__":
    main()
