"""GD enters the edge of stability as a learning-rate warm-up rises.

MLP regression (433 parameters), η warmed up linearly from 0.02 to 0.1 over 400 steps
(optax's `linear_schedule`, given to `simulate` as it is), then held. Left: the schedule.
Middle: ηS for GD and every flow: the sharpness climbs while η rises, until ηS reaches 2
and GD, the rod and central flow hover there; gradient flow goes on past it. Right: each
flow's distance to GD's iterates. Writes fig8_warmup.png.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import flowode as fo  # noqa: E402

HERE = Path(__file__).parent
STEPS = 900
SCHEDULE = optax.linear_schedule(0.02, 0.1, 400)


def main():
    ds = fo.simulate(
        fo.problems.mlp_regression(),
        lr=SCHEDULE,
        steps=STEPS,
        flows=("gd", "gradient", "rod", "central"),
        eig_every=5,
        eigs_at="both",
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    steps = np.arange(STEPS + 1)
    axes[0].plot(steps, [float(SCHEDULE(k)) for k in steps], color="k")
    axes[0].set(xlabel="step", ylabel="η", title="learning rate (linear warm-up)")
    fo.plot.sharpness(ds, axes[1])
    axes[1].set_title("ηS: GD enters EOS as η rises")
    fo.plot.distance(ds, axes[2])
    fig.suptitle("mlp-8-16-16-1, GD with a learning-rate warm-up")
    fig.savefig(HERE / "fig8_warmup.png", dpi=120)


if __name__ == "__main__":
    main()
