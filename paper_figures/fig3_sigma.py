"""Central flow's σ² (eigenvalues of X) against the observed variance of GD around the
central flow, on a three-output MLP regression where Σ reaches rank 3. Writes
fig3_sigma.png and fig3_sigma.nc."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import flowode as fo

HERE = Path(__file__).parent
STEPS = 1500
LR = 0.1


def main():
    problem = fo.problems.mlp_regression(d_out=3)
    ds = fo.simulate(problem, lr=LR, steps=STEPS, flows=("central",), eig_k=3, eigs_at="both")
    fo.save(ds, HERE / "fig3_sigma.nc")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    # GD's variance is noisy step to step: average it over 100 steps for the picture.
    shown = ds.assign(gd_variance=ds.gd_variance.rolling(step=100, center=True).mean())
    fo.plot.sigma(shown, axes[0])
    axes[0].set_title("σ² (solid) against GD's variance around the flow (dotted, 100-step mean)")
    axes[0].set_yscale("log")
    axes[0].set_ylim(1e-4, 0.1)
    ax = axes[1]
    c = ds.sel(flow="central")
    for i in range(3):
        st = dict(color=f"C{i}")
        ax.plot(ds.step, LR * c.eigs[:, i], lw=1.4, label=f"central flow ηλ_{i + 1}", **st)
        ax.plot(ds.step, LR * ds.eigs.sel(flow="gd")[:, i], lw=0.5, alpha=0.6, **st)
    ax.axhline(2, color="k", ls="--", lw=1, label="ηλ = 2", zorder=0)
    ax.plot([], [], color="0.5", lw=0.5, label="GD (thin)")
    ax.set(xlabel="step", ylabel="ηλ_i", title="top eigenvalues: central flow pins each at 2/η")
    ax.set_ylim(0, 3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{problem.name}, η = {LR}: oscillation variances, predicted and observed")
    fig.savefig(HERE / "fig3_sigma.png", dpi=110)
    on = [int(np.argmax(c.n_critical.values >= k)) for k in (1, 2, 3)]
    print("onset of k = 1, 2, 3 critical directions at steps", on)
    print(f"wrote {HERE / 'fig3_sigma.png'}")


if __name__ == "__main__":
    main()
