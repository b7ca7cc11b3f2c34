"""The EOS phase diagram: a sweep over learning rates and seeds (`fo.sweep`, `fo.plot.sweep`).

Top: MLP regression (433 parameters), 4 seeds × 8 learning rates in [0.02, 0.2], 1000
steps. Bottom: the digits MLP (3466 parameters), 2 seeds × 6 learning rates in
[0.1, 0.9], 600 steps. Gd, gradient and rod flow; every quantity is averaged over the
last 100 steps, the mean over seeds drawn as a line and their range as a band. Where ηS
never reaches 2 (small η) gradient flow follows GD; past it GD and the rod hover at
ηS = 2 while gradient flow sharpens on, and only the rod stays close to GD's iterates.
Writes fig10_sweep.png.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowode as fo  # noqa: E402

HERE = Path(__file__).parent
FLOWS = ("gd", "gradient", "rod")


SWEEPS = (  # (title, problem, seeds, learning rates, steps)
    ("mlp-8-16-16-1, 4 seeds", fo.problems.mlp_regression, 4, np.linspace(0.02, 0.2, 8), 1000),
    ("digits MLP 64-32-32-10, 2 seeds", fo.problems.digits_mlp, 2, np.linspace(0.1, 0.9, 6), 600),
)


def main():
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4), layout="constrained")
    for row, (title, problem, seeds, lrs, steps) in enumerate(SWEEPS):
        ds = fo.sweep(
            lambda s, problem=problem: problem(seed=s),
            seeds=range(seeds),
            lr=lrs,
            steps=steps,
            flows=FLOWS,
            eig_every=10,
            eigs_at="both",
        )
        fo.plot.sweep(ds, axes=axes[row])
        axes[row, 0].set_title(f"{title}: final loss (last 100 steps)")
    fig.suptitle("The EOS phase diagram: GD, gradient flow and rod flow against η")
    fig.savefig(HERE / "fig10_sweep.png", dpi=110)


if __name__ == "__main__":
    main()
