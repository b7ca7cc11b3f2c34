"""The `flowode` command line: `flowode demo`, `flowode run` and `flowode sweep`."""

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
import xarray as xr

from . import optimisers, plot
from ._simulate import EIGS_AT, FLOWS, simulate
from ._sweep import sweep
from .problems import PROBLEMS


class UserError(Exception):
    """A mistake in the command line: reported in one line, without a traceback."""


OPTIMISERS = {
    "gd": optimisers.GD,
    "heavy_ball": optimisers.HeavyBall,
    "nesterov": optimisers.Nesterov,
    "rmsprop": optimisers.RMSProp,
    "adam": optimisers.Adam,
}
HYPER = ("beta", "beta1", "beta2", "eps")


def _summary(ds) -> str:
    """One row per process: final loss, predicted loss, λ₁(P⁻¹H) (η·S for GD), distance to
    the discrete run, cost."""
    lr, last = ds.attrs["lr"], ds.step.values[-1]
    rows = [
        f"{ds.attrs['problem']}  ({ds.attrs.get('optimizer', 'GD')}, η = {lr}, {last} steps, "
        f"{ds.attrs['dtype']}; edge of stability at λ₁(P⁻¹H) = {ds.attrs.get('threshold', 2):g})",
        f"{'flow':<12}{'loss':>11}{'pred.loss':>11}{'λ₁(P⁻¹H)':>10}{'distance':>10}"
        f"{'grads':>9}{'HVPs':>8}{'diverged':>9}",
    ]
    for flow in ds.flow.values:
        d = ds.sel(flow=flow, step=last)
        rows.append(
            f"{flow:<12}{float(d.loss):>11.4g}{float(d.predicted_loss):>11.4g}"
            f"{float(d.effective_sharpness):>10.3f}{float(d.distance_to_gd):>10.3g}"
            f"{int(d.n_grad):>9}{int(d.n_hvp):>8}"
            f"{int(d.diverged_at):>9}"
        )
    rows.append(
        f"compiled run {float(ds.wall_time.max()):.2f} s for all processes together, "
        f"compilation {float(ds.compile_time.max()):.1f} s"
    )
    return "\n".join(rows)


def _optimiser(name: str, lr: float, hyper: dict):
    if name not in OPTIMISERS:
        raise UserError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMISERS)}")
    cls = OPTIMISERS[name]
    given = {k: v for k, v in hyper.items() if v is not None}
    unknown = [k for k in given if k not in cls.__dataclass_fields__]
    if unknown:
        raise UserError(f"--optimizer {name} has no --{unknown[0].replace('_', '-')}")
    try:
        return cls(lr, **given)
    except ValueError as e:
        raise UserError(str(e)) from None


def _run_one(
    name, lr, steps, flows, out, png, optimizer="gd", hyper=None, problem_args=None, **kwargs
):
    if name not in PROBLEMS:
        raise UserError(f"unknown problem {name!r}; choose from {', '.join(sorted(PROBLEMS))}")
    make, default_lr = PROBLEMS[name][:2]
    lr = default_lr if lr is None else lr
    opt = _optimiser(optimizer, lr, hyper or {})
    problem_args = problem_args or {}  # the constructor's arguments (`run` uses defaults)
    # What rebuilds the problem on --resume: the CLI's key and the constructor's arguments
    # (a run file otherwise records the problem's own name, e.g. mlp-8-16-16-1).
    attrs = {"cli_problem": name, "cli_problem_args": json.dumps(problem_args)}
    start = time.perf_counter()
    try:
        ds = simulate(
            make(**problem_args),
            optimizer=opt,
            steps=steps,
            flows=flows,
            out=out,
            attrs=attrs,
            **kwargs,
        )
    except (ValueError, FileNotFoundError) as e:  # bad settings are the user's to fix
        raise UserError(str(e)) from None
    print(_summary(ds))
    print(f"({time.perf_counter() - start:.1f} s in all, compilation included)\n")
    if out is not None:
        print(f"wrote {out}")
    if png is not None:
        plot.overview(ds, png)
        print(f"wrote {png}")
    return ds


def _demo(args):
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    flows = ("gd", "gradient", "central", "rod", "edge")
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
    if args.resume is not None:
        _resume(args)
        return
    if args.problem is None:
        raise UserError("run needs --problem (or --resume FILE to continue a run)")
    flows = tuple(s.strip() for s in args.flows.split(",") if s.strip())
    steps = 1000 if args.steps is None else args.steps
    _run_one(
        args.problem,
        args.lr,
        steps,
        flows,
        args.output,
        args.plot,
        optimizer=args.optimizer,
        hyper={k: getattr(args, k) for k in HYPER},
        eig_k=1 if args.eig_k is None else args.eig_k,
        eigs_at=EIGS_AT[0] if args.eigs_at is None else args.eigs_at,
        chunk=1000 if args.chunk is None else args.chunk,
        progress=True,
    )


def _resume(args):
    """Continue the run in a file: its problem and settings come from the file itself."""
    path = args.resume
    if args.output is not None and Path(args.output) != Path(path):
        raise UserError("--resume continues the run in its own file; leave out -o")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            a = dict(ds.attrs)
    except FileNotFoundError:
        raise UserError(f"nothing to resume: {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} as a flowode run file ({e})") from None
    missing = [k for k in ("problem", "lr", "steps", "flows", "eig_k", "chunk") if k not in a]
    if missing:
        raise UserError(f"{path} is not a flowode run file (no {', '.join(missing)} attribute)")
    key, problem_args = _problem_recipe(path, a)
    eigs_at = str(a.get("eigs_at", "both"))  # files from before `eigs_at` observed both
    for option, saved in (("problem", key), ("lr", a["lr"]), ("eig_k", a["eig_k"]),
                          ("eigs_at", eigs_at), ("chunk", a["chunk"])):  # fmt: skip
        given = getattr(args, option)
        if given is not None and str(given) != str(saved):
            raise UserError(f"{path} was run with --{option} {saved}; it cannot change")
    steps = int(a["steps"]) if args.steps is None else args.steps
    print(f"resuming {path} at step {int(a.get('completed_steps', 0))} of {steps}")
    _run_one(
        key,
        float(a["lr"]),
        steps,
        tuple(str(a["flows"]).split(",")),
        path,
        args.plot,
        optimizer=str(a.get("reference", "gd")),
        hyper={k: float(a[f"optimizer_{k}"]) for k in HYPER if f"optimizer_{k}" in a},
        eig_k=int(a["eig_k"]),
        eigs_at=eigs_at,
        chunk=int(a["chunk"]),
        problem_args=problem_args,
        resume=True,
        progress=True,
    )


def _problem_recipe(path, attrs: dict) -> tuple[str, dict]:
    """The built-in problem a run file was written with, and its constructor's arguments:
    its `cli_problem` attributes, or, for a file written by `simulate`, the built-in
    problem whose default has the file's problem name."""
    if "cli_problem" in attrs:
        return str(attrs["cli_problem"]), json.loads(str(attrs.get("cli_problem_args", "{}")))
    name = str(attrs["problem"])
    for key, (make, *_) in PROBLEMS.items():
        if key == name or make().name == name:
            return key, {}
    raise UserError(
        f"{path} holds a run of problem {name!r}, which is not one of the command line's "
        "built-in problems; continue it from Python with "
        "fo.simulate(problem, ..., out=FILE, resume=True)"
    )


def _lr_grid(text: str) -> list[float]:
    """'a:b:n' (n learning rates evenly spaced from a to b) or 'a,b,c'."""
    try:
        if ":" in text:
            a, b, n = text.split(":")
            values = list(np.linspace(float(a), float(b), int(n)))
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a:b:n or a,b,c, got {text!r}") from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"learning rates must be positive, got {text!r}")
    return [float(v) for v in values]


def _sweep(args):
    if args.problem not in PROBLEMS:
        raise UserError(
            f"unknown problem {args.problem!r}; choose from {', '.join(sorted(PROBLEMS))}"
        )
    make = PROBLEMS[args.problem][0]
    seeded = "seed" in inspect.signature(make).parameters
    if not seeded and args.seeds > 1:
        raise UserError(f"problem {args.problem} has no seed; use --seeds 1")
    factory = (lambda s: make(seed=s)) if seeded else (lambda s: make())
    flows = tuple(s.strip() for s in args.flows.split(",") if s.strip())
    start = time.perf_counter()
    try:
        ds = sweep(
            factory,
            seeds=range(args.seeds),
            lr=args.lr,
            steps=args.steps,
            flows=flows,
            eig_every=args.eig_every,
            out=args.output,
            resume=args.resume,
        )
    except (ValueError, FileNotFoundError, TypeError) as e:
        raise UserError(str(e)) from None
    tail = ds.isel(step=slice(-100, None)).mean(("step", "seed"), skipna=True)
    print(f"{args.problem}: {len(ds.seed)} seeds × {len(ds.lr)} learning rates, {args.steps} steps")
    print("mean over seeds and the last 100 steps: λ₁(P⁻¹H) (ηλ₁) and distance to GD")
    # GD is shown at the point its eigenvalues were observed (`eigs_at`): its midpoint
    # process by default, else its iterate.
    unseen = not np.isfinite(tail.effective_sharpness.sel(flow="midpoint")).any()
    shown = [f for f in ds.flow.values if f != ("midpoint" if unseen else ds.flow.values[0])]
    print(f"{'lr':>8}" + "".join(f"{str(f):>22}" for f in shown))
    for lr in ds.lr.values:
        cells = [
            f"{float(tail.effective_sharpness.sel(lr=lr, flow=f)):>10.3f}"
            f"{float(tail.distance_to_gd.sel(lr=lr, flow=f)):>12.3g}"
            for f in shown
        ]
        print(f"{lr:>8.4g}" + "".join(cells))
    print(f"({time.perf_counter() - start:.1f} s in all, compilation included)")
    if args.output is not None:
        print(f"wrote the members' run files to {args.output}")
    if args.plot is not None:
        plot.sweep(ds, args.plot)
        print(f"wrote {args.plot}")


def _persistent_cache():
    """Keep compiled programs on disk, so a second `flowode` process starts warm.

    Only the command line does this: the library never changes JAX's global settings.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "flowode", "jax")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return  # a read-only home: run without the cache
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _problems_table() -> str:
    """The built-in problems, their default lr and the step at which GD reaches EOS."""
    rows = ["built-in problems: default --lr, and the step at which GD's ηS first reaches 1.9"]
    for key, (_, lr, onset) in sorted(PROBLEMS.items()):
        when = "no EOS (constant sharpness)" if onset is None else f"EOS at step {onset}"
        rows.append(f"  {key:<17} --lr {lr:<5g} {when}")
    rows.append("run past that step (--steps) to see GD at the edge of stability.")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="flowode", description="ODE models of gradient descent at the edge of stability."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the built-in default: quartic toy and MLP, all flows")
    demo.add_argument("--outdir", default="out", help="where the .nc and .png files go")
    demo.set_defaults(func=_demo)
    run = sub.add_parser(
        "run",
        help="run one built-in problem",
        epilog=_problems_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--problem", default=None, help=f"one of {', '.join(sorted(PROBLEMS))}")
    run.add_argument(
        "--lr", type=_positive(float), default=None, help="learning rate η (the problem's, below)"
    )
    run.add_argument(
        "--optimizer", default="gd", choices=tuple(OPTIMISERS), help="the discrete optimiser (gd)"
    )
    for name, text in (
        ("beta", "momentum of heavy_ball and nesterov (0.9)"),
        ("beta1", "Adam's first-moment decay (0.9)"),
        ("beta2", "RMSProp's and Adam's second-moment decay (0.99, 0.999)"),
        ("eps", "RMSProp's and Adam's ε (1e-8)"),
    ):
        run.add_argument(f"--{name}", type=float, default=None, help=text)
    run.add_argument("--steps", type=_positive(int), default=None, help="GD steps (1000)")
    run.add_argument("--flows", default="gd,gradient", help=f"comma-separated: {','.join(FLOWS)}")
    run.add_argument("--eig-k", type=_positive(int), default=None, help="top eigenvalues (1)")
    run.add_argument(
        "--eigs-at",
        choices=EIGS_AT,
        default=None,
        help=f"where GD's eigenvalues are observed ({EIGS_AT[0]})",
    )
    run.add_argument("--chunk", type=_positive(int), default=None, help="steps per chunk (1000)")
    run.add_argument(
        "-o", "--output", default=None, help="netCDF file, written chunk by chunk as the run goes"
    )
    run.add_argument(
        "--resume", default=None, metavar="FILE", help="continue the run written to FILE"
    )
    run.add_argument("--plot", default=None, help="PNG file to write")
    run.set_defaults(func=_run)
    sw = sub.add_parser("sweep", help="one built-in problem over learning rates and seeds")
    sw.add_argument("--problem", required=True, help=f"one of {', '.join(sorted(PROBLEMS))}")
    sw.add_argument("--lr", type=_lr_grid, required=True, help="a:b:n (n values) or a,b,c")
    sw.add_argument("--seeds", type=_positive(int), default=1, help="seeds 0..N-1 (1)")
    sw.add_argument("--steps", type=_positive(int), default=1000, help="GD steps (1000)")
    sw.add_argument("--flows", default="gd,gradient", help=f"comma-separated: {','.join(FLOWS)}")
    sw.add_argument("--eig-every", type=_positive(int), default=10, help="observe every N (10)")
    sw.add_argument("-o", "--output", default=None, help="folder: one run file per member")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in -o")
    sw.add_argument("--plot", default=None, help="PNG file of the phase diagram")
    sw.set_defaults(func=_sweep)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"flowode: error: {e}", file=sys.stderr)
        return 2
    return 0


def console() -> int:
    """The `flowode` program: `main` with compiled programs kept on disk between processes.

    `main` itself leaves JAX's settings alone, so calling it in-process (tests, notebooks)
    never turns on the persistent cache of the caller's process.
    """
    _persistent_cache()
    return main()


if __name__ == "__main__":
    sys.exit(console())
