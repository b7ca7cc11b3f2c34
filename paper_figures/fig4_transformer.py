"""Edge of stability in a sequence model: a one-layer Transformer learning to sort
(cross-entropy), with GD, gradient, central and rod flow. Writes fig4_transformer.png
and fig4_transformer.nc."""

from pathlib import Path

import matplotlib.pyplot as plt
from _panels import distance_panel, eig_panel, loss_panel

import flowode as fo

HERE = Path(__file__).parent
STEPS = 800
LR = 0.1


def main():
    problem = fo.problems.sorting_transformer(loss="ce")
    flows = ("gd", "gradient", fo.CentralFlow(max_k=2), "rod")
    ds = fo.simulate(problem, lr=LR, steps=STEPS, flows=flows, eig_k=2, eig_every=5, eigs_at="both")
    fo.save(ds, HERE / "fig4_transformer.nc")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), layout="constrained")
    loss_panel(axes[0], ds)
    eig_panel(axes[1], ds)
    distance_panel(axes[2], ds)
    fig.suptitle(f"{problem.name} ({problem.n_params} params) sorting length-6 sequences, η = {LR}")
    fig.savefig(HERE / "fig4_transformer.png", dpi=110)
    print(
        "final centre distances:",
        dict(zip(ds.flow.values, ds.center_distance_to_gd[:, -1].values.round(3), strict=True)),
    )
    print(f"wrote {HERE / 'fig4_transformer.png'}")


if __name__ == "__main__":
    main()
