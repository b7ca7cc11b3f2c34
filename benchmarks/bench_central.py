"""Central flow's cost and accuracy against GD for several integration schemes, in one run.

MLP regression (433 parameters), η = 0.1, 1000 steps, float32. Ratios are to GD's
compiled wall time in the same run. Accuracy: the largest |ηS − 2| from the first step
where ηS is within 1e-4 of 2, the centre's final distance to GD's midpoint process, and
the final distance to two reference central flows: Euler at 16 substeps per GD step (the
issue's), and PinnedHeun at 16 (second order, so converged much further).

`python bench_central.py several`: the same schemes on `mlp_regression(d_out=3)`, where
three eigenvalues turn critical, with each one's pinning. `python bench_central.py
predictor [mlp|cnn]`: PinnedHeun's predictor in the carried basis against the refined one.
"""

import platform
import sys
import time

import diffrax
import jax
import numpy as np
from _common import median_run, table

import flowode as fo

STEPS = 1000
# The published scheme, Euler at 4 substeps per GD step with every column refined; the
# default is PinnedHeun at dt = 1 with the adaptive width.
EULER = dict(solver=diffrax.Euler(), dt0=0.25, adaptive_width=False)
PINNED_FULL = dict(adaptive_width=False)  # PinnedHeun dt = 1, every column refined


def hvp_block_cost(problem, repeats=20, n=200):
    """Wall time of an HVP block of width 1, 2, 4, 8, in gradients (one compiled loop each)."""
    from flowode._spectral import hvp_block

    f, w0, d = problem.flat_loss, problem.flat_w0, problem.data

    def best(fn, *a):
        jax.block_until_ready(fn(*a))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times.append(time.perf_counter() - start)
        return min(times)

    step = lambda i, w: w - 1e-3 * jax.grad(f)(w, d)  # noqa: E731
    grad = best(jax.jit(lambda w: jax.lax.fori_loop(0, n, step, w)), w0)
    out = {}
    for k in (1, 2, 4, 8):
        V = jax.random.normal(jax.random.key(0), (w0.shape[0], k), w0.dtype)
        body = lambda i, V: V - 1e-3 * hvp_block(f, w0, V, d)  # noqa: E731
        loop = jax.jit(lambda V, body=body: jax.lax.fori_loop(0, n, body, V))
        out[k] = best(loop, V) / grad
    return out


def several(steps=1000):
    """Three critical directions: each scheme's pinning per eigenvalue, and its distance
    to a converged reference (PinnedHeun at 16 steps per GD step)."""
    problem = fo.problems.mlp_regression(d_out=3)
    converged = fo.CentralFlow(solver=fo.PinnedHeun(exponential=False), dt0=1 / 16)
    conv = fo.simulate(problem, lr=0.1, steps=steps, flows=(converged,), save_params=True)
    conv_w = conv.params.sel(flow="central").values
    schemes = {
        "Euler dt=1/4 (published)": fo.CentralFlow(**EULER),
        "PinnedHeun dt=1, plain": fo.CentralFlow(solver=fo.PinnedHeun(exponential=False)),
        "PinnedHeun dt=1 (default)": fo.CentralFlow(),
        "PinnedHeun dt=1/2": fo.CentralFlow(dt0=0.5),
    }
    rows = []
    for label, flow in schemes.items():
        ds = fo.simulate(problem, lr=0.1, steps=steps, flows=(flow,), save_params=True, eig_k=3)
        c = ds.sel(flow="central")
        scaled = 0.1 * c.eigs.values[:, :3]
        pins = []
        for j in range(3):
            reached = scaled[:, j] >= 2 - 1e-4
            first = int(np.argmax(reached))
            pins.append(f"{np.abs(scaled[first:, j] - 2).max():.1e}" if reached.any() else "-")
        dist = np.linalg.norm(c.params.values - conv_w, axis=1)
        rows.append(
            (label, f"{int(c.n_grad) / steps:.1f}", *pins, f"{dist[-1]:.3f}", f"{dist.max():.3f}")
        )
    print(f"central flow on mlp_regression(d_out=3), η = 0.1, {steps} steps, float32")
    header = ("scheme", "grads/step", "max|ηλ₁-2|", "max|ηλ₂-2|", "max|ηλ₃-2|", "end", "max")
    print(table(rows, header))


def cnn(steps=1000):
    """The issue's second problem: the digits CNN (838 parameters, η = 0.25), max_k = 2 as
    in the figures; one run each (the central flow's own dynamics against GD's)."""
    problem = fo.problems.digits_cnn()
    schemes = {
        "Euler dt=1/4 (published)": fo.CentralFlow(max_k=2, **EULER),
        "PinnedHeun dt=1 (default)": fo.CentralFlow(max_k=2),
    }
    rows = []
    for label, flow in schemes.items():
        ds = median_run(problem, ("gd", flow), lr=0.25, steps=steps, repeats=1, eig_every=1)
        gd, c = ds.sel(flow="gd"), ds.sel(flow="central")
        sharp = 0.25 * c.sharpness.values
        reached = sharp >= 2 - 1e-4
        pinned = np.abs(sharp[int(np.argmax(reached)) :] - 2).max() if reached.any() else np.nan
        rows.append(
            (
                label,
                f"{float(c.wall_time):.2f}",
                f"{float(c.wall_time / gd.wall_time):.0f}",
                f"{int(c.n_grad) / steps:.1f}",
                f"{int(c.n_hvp) / steps:.1f}",
                f"{int(c.n_third) / steps:.2f}",
                f"{pinned:.1e}",
                f"{float(c.center_distance_to_gd[-1]):.3f}",
            )
        )
    print(f"central flow on {problem.name}, η = 0.25, {steps} steps, float32")
    header = ("scheme", "s", "×GD", "grads/step", "HVPs/step", "thirds/step", "max|ηS-2|", "centre")
    print(table(rows, header))


def predictor(name="mlp", steps=1000, rounds=9):
    """Exponential PinnedHeun's predictor in the carried basis (the default) against the
    basis refined first (before 2026-12-01's change), in one process, interleaved: GD,
    both, in `rounds` rounds, fastest of each. Both are traced here, apart from
    `simulate`'s cache, with `central_flow._CARRIED_PREDICTOR` set for each. Run it as
    `XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    taskset -c 0 python bench_central.py predictor [mlp|cnn]` for steadier figures."""
    from _common import interleaved_times

    from flowode.flows import central_flow

    problem, lr, flow = {
        "mlp": (fo.problems.mlp_regression(), 0.1, fo.CentralFlow()),
        "cnn": (fo.problems.digits_cnn(), 0.25, fo.CentralFlow(max_k=2)),
    }[name]
    f, w0, d = problem.flat_loss, problem.flat_w0, problem.data
    lr = jax.numpy.asarray(lr, w0.dtype)

    def compiled(process):
        run = lambda w, lr, d: process.run(f, w, lr, d, steps)  # noqa: E731
        return jax.jit(run).lower(w0, lr, d).compile()

    runs = {"gd": compiled(fo.GradientDescent())}
    for label, carried in (("refined first", False), ("carried (default)", True)):
        central_flow._CARRIED_PREDICTOR = carried
        runs[label] = compiled(flow)
    central_flow._CARRIED_PREDICTOR = True
    out = {label: run(w0, lr, d) for label, run in runs.items()}
    times = interleaved_times(runs, w0, lr, d, rounds=rounds)
    gd = min(times["gd"])
    rows = []
    for label, (_, counts, _) in out.items():
        rows.append(
            (
                label,
                f"{min(times[label]):.3f}",
                f"{min(times[label]) / gd:.1f}",
                f"{int(counts.n_grad) / steps:.2f}",
                f"{int(counts.n_hvp) / steps:.2f}",
                f"{int(counts.n_third) / steps:.2f}",
            )
        )
    print(f"{problem.name}, {steps} steps, fastest of {rounds} interleaved rounds")
    print(table(rows, ("process", "s", "×GD", "grads/step", "HVPs/step", "thirds/step")))


def main():
    if sys.argv[1:2] == ["predictor"]:
        return predictor(*sys.argv[2:3])
    problem = fo.problems.mlp_regression()
    cost = hvp_block_cost(problem)
    print("HVP block of width k, in gradients:", {k: round(v, 1) for k, v in cost.items()})
    if sys.argv[1:] == ["hvp"]:
        return
    if sys.argv[1:] == ["several"]:
        return several()
    if sys.argv[1:] == ["cnn"]:
        return cnn()
    euler, heun = dict(solver=diffrax.Euler(), adaptive_width=False), diffrax.Heun()
    schemes = {
        "Euler dt=1/4, max_k=4, refined at every evaluation": fo.CentralFlow(
            **EULER, refine="evaluation"
        ),
        "Euler dt=1/4, max_k=4, refined once per GD step, all 4 columns (published)": (
            fo.CentralFlow(**EULER)
        ),
        "Euler dt=1/4, max_k=4, once per GD step, 2 columns while one is tracked": (
            fo.CentralFlow(**{**EULER, "adaptive_width": True})
        ),
        "Euler dt=1/4, max_k=2, refined once per GD step": fo.CentralFlow(max_k=2, **EULER),
        "Euler dt=1/2, kappa=2": fo.CentralFlow(**euler, dt0=0.5, kappa=2.0),
        "Heun dt=1, kappa=1": fo.CentralFlow(solver=heun, dt0=1.0, kappa=1.0, adaptive_width=False),
        "Heun dt=1/2, kappa=2": fo.CentralFlow(
            solver=heun, dt0=0.5, kappa=2.0, adaptive_width=False
        ),
        "PinnedHeun dt=1, plain (through diffrax)": fo.CentralFlow(
            solver=fo.PinnedHeun(exponential=False), **PINNED_FULL
        ),
        "PinnedHeun dt=1": fo.CentralFlow(**PINNED_FULL),
        "PinnedHeun dt=1, 2 columns while one is tracked (default)": fo.CentralFlow(),
        "PinnedHeun dt=1/2": fo.CentralFlow(dt0=0.5, **PINNED_FULL),
    }
    if len(sys.argv) > 1:  # a subset, by position
        keep = [int(i) for i in sys.argv[1].split(",")]
        schemes = {k: v for i, (k, v) in enumerate(schemes.items()) if i in keep}
    reference = fo.CentralFlow(**{**EULER, "dt0": 1 / 16})
    ref = fo.simulate(
        problem,
        lr=0.1,
        steps=STEPS,
        flows=("gradient", reference),
        eig_every=STEPS,
        save_params=True,
    )
    ref_w = ref.params.sel(flow="central").values[-1]
    converged = fo.CentralFlow(solver=fo.PinnedHeun(exponential=False), dt0=1 / 16)
    conv = fo.simulate(problem, lr=0.1, steps=STEPS, flows=(converged,), save_params=True)
    conv_w = conv.params.sel(flow="central").values[-1]
    rows = []
    for label, flow in schemes.items():
        ds = median_run(problem, ("gd", flow), lr=0.1, steps=STEPS, eig_every=1, save_params=True)
        gd, c = ds.sel(flow="gd"), ds.sel(flow="central")
        sharp = 0.1 * c.sharpness.values
        reached = int(np.argmax(sharp >= 2 - 1e-4))
        pinned = np.abs(sharp[reached:] - 2).max()
        rows.append(
            (
                label,
                f"{float(c.wall_time):.2f}",
                f"{float(c.compile_time):.1f}",
                f"{float(c.wall_time / gd.wall_time):.0f}",
                f"{int(c.n_grad) / STEPS:.1f}",
                f"{int(c.n_hvp) / STEPS:.1f}",
                f"{int(c.n_third) / STEPS:.2f}",
                f"{pinned:.1e}",
                f"{float(c.center_distance_to_gd[-1]):.3f}",
                f"{np.linalg.norm(c.params.values[-1] - ref_w):.3f}",
                f"{np.linalg.norm(c.params.values[-1] - conv_w):.3f}",
            )
        )
    gf_dist = float(ref.center_distance_to_gd.sel(flow="gradient")[-1])
    ref_dist = float(ref.center_distance_to_gd.sel(flow="central")[-1])
    print(
        f"central flow on {problem.name}, η = 0.1, {STEPS} steps, float32; "
        f"{platform.processor() or platform.machine()}, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; reference (Euler dt=1/16) centre distance "
        f"{ref_dist:.3f}, gradient flow's {gf_dist:.3f}"
    )
    print(
        table(
            rows,
            (
                "scheme",
                "central s",
                "compile s",
                "central/GD",
                "grads/step",
                "HVPs/step",
                "thirds/step",
                "max|ηS-2|",
                "centre dist",
                "dist to ref",
                "dist to converged",
            ),
        )
    )


if __name__ == "__main__":
    sys.exit(main())
