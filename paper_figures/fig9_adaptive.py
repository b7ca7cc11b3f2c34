"""Adaptive optimisers at the edge of stability: RMSProp and Adam on the digits MLP.

Each row: train loss (discrete optimiser, its stable flow, predicted loss), the
preconditioned sharpness λ₁(P⁻¹H) against the optimiser's threshold (2 for RMSProp,
(2 + 2β₁)/(1 − β₁) for Adam), and the stable flow's distance to the discrete iterates.
The discrete optimisers rise to their thresholds and hover there (adaptive EOS, Cohen
et al. 2022); the stable flow, which has no oscillation, goes on past it and drifts away
(RMSProp's stable flow turns so stiff past it that its solver stops, at its step limit,
near step 470). RMSProp's central flow holds λ₁(P⁻¹H) at 2; its predicted loss follows
RMSProp's oscillating loss and its own loss that of RMSProp's midpoint process, while its
distance to RMSProp's iterates grows to O(1). RMSProp's rod flow (the split of its update
map, ν smooth) enters EOS with it and, predicting the oscillation's phase too, stays
closest to its iterates. (Central and rod flows for Adam are not built.)
Writes fig9_adaptive.png.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flowode as fo  # noqa: E402

HERE = Path(__file__).parent
STEPS = 1500
RUNS = {  # optimiser, flows
    "RMSProp": (fo.RMSProp(2e-3, beta2=0.99), ("gradient", "central", "rod")),
    "Adam": (fo.Adam(1e-3, beta1=0.9, beta2=0.99), ("gradient",)),
}


def main():
    problem = fo.problems.digits_mlp()
    fig, axes = plt.subplots(len(RUNS), 3, figsize=(15, 4 * len(RUNS)), layout="constrained")
    for row, (title, (opt, flows)) in zip(axes, RUNS.items(), strict=True):
        ds = fo.simulate(
            problem, optimizer=opt, steps=STEPS, flows=flows, eig_every=5, eigs_at="both"
        )
        fo.plot.loss(ds, row[0])
        fo.plot.sharpness(ds, row[1])
        fo.plot.distance(ds, row[2])
        for ax in row:
            ax.set_title(f"{title}: {ax.get_title()}")
    fig.suptitle(f"{problem.name}: adaptive optimisers at the edge of stability")
    fig.savefig(HERE / "fig9_adaptive.png", dpi=110)


if __name__ == "__main__":
    main()
