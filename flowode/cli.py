"""The `flowode` command line: `flowode demo` and `flowode run`."""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import plot
from ._results import save
from ._simulate import FLOWS, simulate
from .problems import PROBLEMS


class UserError(Exception):
    """A mistake in the command line: reported in one line, without a traceback."""


def _summary(ds) -> str:
    """One row per process: final loss, predicted loss, sharpness·η, distance to GD, cost."""
    lr, last = ds.attrs["lr"], ds.step.values[-1]
    rows = [
        f"{ds.attrs['problem']}  (η = {lr:g}, {last} steps, {ds.attrs['dtype']})",
        f"{'flow':<10}{'loss':>11}{'pred.loss':>11}{'η·S':>8}{'dist GD':>10}"
        f"{'wall s':>9}{'grads':>9}{'HVPs':>8}{'diverged':>9}",
    ]
    for flow in ds.flow.values:
        d = ds.sel(flow=flow, step=last)
        rows.append(
            f"{flow:<10}{float(d.loss):>11.4g}{float(d.predicted_loss):>11.4g}"
            f"{lr * float(d.sharpness):>8.3f}{float(d.distance_to_gd):>10.3g}"
            f"{float(d.wall_time):>9.3f}{int(d.n_grad):>9}{int(d.n_hvp):>8}"
            f"{int(d.diverged_at):>9}"
        )
    return "\n".join(rows)


def _run_one(name, lr, steps, flows, out, png, **kwargs):
    if name not in PROBLEMS:
        raise UserError(f"unknown problem {name!r}; choose from {', '.join(sorted(PROBLEMS))}")
    make, default_lr = PROBLEMS[name]
    lr = default_lr if lr is None else lr
    start = time.perf_counter()
    try:
        ds = simulate(make(), lr=lr, steps=steps, flows=flows, **kwargs)
    except ValueError as e:  # bad settings are the user's to fix, not a crash
        raise UserError(str(e)) from None
    print(_summary(ds))
    print(f"({time.perf_counter() - start:.1f} s in all, compilation included)\n")
    if out is not None:
        save(ds, out)
        print(f"wrote {out}")
    if png is not None:
        plot.overview(ds, png)
        print(f"wrote {png}")
    return ds


def _demo(args):
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    flows = tuple(FLOWS)
    for name, steps in (("quartic", 300), ("mlp", 1000)):
        _run_one(name, None, steps, flows, outdir / f"{name}.nc", outdir / f"{name}.png")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (np.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    return parse


def _run(args):
    flows = tuple(s.strip() for s in args.flows.split(",") if s.strip())
    _run_one(args.problem, args.lr, args.steps, flows, args.output, args.plot, eig_k=args.eig_k)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="flowode", description="ODE models of gradient descent at the edge of stability."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the built-in default: quartic toy and MLP, all flows")
    demo.add_argument("--outdir", default="out", help="where the .nc and .png files go")
    demo.set_defaults(func=_demo)
    run = sub.add_parser("run", help="run one built-in problem")
    run.add_argument("--problem", required=True, help=f"one of {', '.join(sorted(PROBLEMS))}")
    run.add_argument("--lr", type=_positive(float), default=None, help="learning rate η")
    run.add_argument("--steps", type=_positive(int), default=1000, help="GD steps")
    run.add_argument("--flows", default="gd,gradient", help=f"comma-separated: {','.join(FLOWS)}")
    run.add_argument("--eig-k", type=_positive(int), default=1, help="top eigenvalues to track")
    run.add_argument("-o", "--output", default=None, help="netCDF file to write")
    run.add_argument("--plot", default=None, help="PNG file to write")
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"flowode: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
