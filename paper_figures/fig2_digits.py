"""MLP and CNN on scikit-learn's digits (MSE): train loss (raw and smoothed GD, each
flow's own and predicted loss), the top Hessian eigenvalues of every process, and the
centre distance to GD. Writes fig2_digits.png and fig2_digits_{mlp,cnn}.nc."""

from pathlib import Path

import matplotlib.pyplot as plt
from _panels import distance_panel, eig_panel, loss_panel

import flowode as fo

HERE = Path(__file__).parent
STEPS = 1000
RUNS = {  # name: (problem, learning rate, central flow)
    "mlp": (fo.problems.digits_mlp, 0.6, fo.CentralFlow()),
    "cnn": (fo.problems.digits_cnn, 0.25, fo.CentralFlow(max_k=2)),
}


def main():
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), layout="constrained")
    for row, (name, (make, lr, central)) in zip(axes, RUNS.items(), strict=True):
        problem = make()
        flows = ("gd", "gradient", central, "rod")
        ds = fo.simulate(
            problem, lr=lr, steps=STEPS, flows=flows, eig_k=2, eig_every=5, eigs_at="both"
        )
        fo.save(ds, HERE / f"fig2_digits_{name}.nc")
        loss_panel(row[0], ds)
        eig_panel(row[1], ds)
        distance_panel(row[2], ds)
        for ax in row:
            ax.set_title(f"{problem.name} ({problem.n_params} params), η = {lr}: {ax.get_title()}")
            ax.title.set_fontsize(9)
        print(name, "final centre distances:", ds.center_distance_to_gd[:, -1].values.round(3))
    fig.savefig(HERE / "fig2_digits.png", dpi=110)
    print(f"wrote {HERE / 'fig2_digits.png'}")


if __name__ == "__main__":
    main()
