"""Cost of every process on every figure's problem: oracle calls per GD step, read from the
netCDF files the other figure scripts wrote, and the run's compiled wall time (all
processes run in one program; per-process wall-time ratios are in benchmarks/). Writes
fig5_cost_table.md and fig5_cost_table.png."""

from pathlib import Path

import matplotlib.pyplot as plt

import flowode as fo

HERE = Path(__file__).parent
FILES = ("fig1_toy", "fig2_digits_mlp", "fig2_digits_cnn", "fig3_sigma", "fig4_transformer")
HEADER = ("problem", "params", "flow", "grads/step", "HVPs/step", "thirds/step", "run wall s")


def rows():
    for name in FILES:
        path = HERE / f"{name}.nc"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: run the other paper_figures scripts first."
            )
        ds = fo.load(path)
        steps = ds.attrs["steps"]
        for flow in ds.flow.values:
            if flow == "midpoint":
                continue
            r = ds.sel(flow=flow)
            yield (
                ds.attrs["problem"],
                str(ds.attrs["n_params"]),
                str(flow),
                f"{int(r.n_grad) / steps:.1f}",
                f"{int(r.n_hvp) / steps:.1f}",
                f"{int(r.n_third) / steps:.2f}",
                f"{float(r.wall_time):.3g}",
            )


def main():
    table = list(rows())
    md = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    md += ["| " + " | ".join(r) + " |" for r in table]
    (HERE / "fig5_cost_table.md").write_text(
        "Oracle calls per GD step, and the compiled wall time of the whole run (every "
        "process in one program, compilation excluded), on 2 CPU cores. The machine is "
        "shared and its wall times vary by 2× or more between runs: trust the counts over "
        "the seconds (per-process ratios, measured in one run, are in benchmarks/).\n\n"
        + "\n".join(md)
        + "\n"
    )
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(table) + 0.6))
    ax.axis("off")
    t = ax.table(cellText=table, colLabels=HEADER, loc="center", cellLoc="right")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.auto_set_column_width(range(len(HEADER)))
    ax.set_title("cost per process: oracle calls per GD step and compiled wall time")
    fig.savefig(HERE / "fig5_cost_table.png", dpi=120, bbox_inches="tight")
    print("\n".join(md))
    print(f"wrote {HERE / 'fig5_cost_table.png'}")


if __name__ == "__main__":
    main()
