"""The run program (issue 14): what a user waits for, against plain GD in one `lax.scan`.

MLP regression (433 parameters), η = 0.1, 1000 steps, float32. Every row is measured in
this one run: first calls in fresh processes (compilation included), warm calls, a new
seed, and the central flow's own dynamics (`CentralFlow().run`, no observation).
Prints a table and writes benchmarks/run.json.
"""

import json
import platform
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import results_path, table

import flowode as fo

FLOWS = ("gd", "gradient", "rod", "central")
LR, STEPS = 0.1, 1000


def plain_gd_seconds(problem) -> float:
    f, d = problem.flat_loss, problem.data
    grad = jax.grad(f)

    @jax.jit
    def run(w, lr, d):
        return jax.lax.scan(lambda w, _: (w - lr * grad(w, d), None), w, None, length=STEPS)[0]

    lr = jnp.asarray(LR, problem.dtype)
    jax.block_until_ready(run(problem.flat_w0, lr, d))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(run(problem.flat_w0, lr, d))
        times.append(time.perf_counter() - start)
    return sorted(times)[2]


def first_call_seconds(flows) -> float:
    """simulate's first call in a fresh process, compilation included."""
    script = textwrap.dedent(
        f"""
        import time
        import flowode as fo
        p = fo.problems.mlp_regression()
        start = time.perf_counter()
        fo.simulate(p, lr={LR}, steps={STEPS}, flows={flows!r})
        print(time.perf_counter() - start)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    return float(out.stdout.decode().split()[-1])


def warm_seconds(problem, **kwargs) -> float:
    fo.simulate(problem, lr=LR, steps=STEPS, **kwargs)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fo.simulate(problem, lr=LR, steps=STEPS, **kwargs)
        times.append(time.perf_counter() - start)
    return sorted(times)[1]


def second_call_and_central_seconds(problem, flows, rounds=5) -> tuple[float, float]:
    """simulate's warm call and central flow's own dynamics, in interleaved rounds
    (medians): the target compares the two, and this machine's speed drifts."""
    f, w0, d = problem.flat_loss, problem.flat_w0, problem.data
    run = jax.jit(lambda w, lr, d: fo.CentralFlow().run(f, w, lr, d, STEPS))
    lr = jnp.asarray(LR, w0.dtype)
    jax.block_until_ready(run(w0, lr, d))
    fo.simulate(problem, lr=LR, steps=STEPS, flows=flows)
    warm, central = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        fo.simulate(problem, lr=LR, steps=STEPS, flows=flows)
        warm.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(run(w0, lr, d))
        central.append(time.perf_counter() - start)
    return float(np.median(warm)), float(np.median(central))


def main():
    p = fo.problems.mlp_regression()
    gd = plain_gd_seconds(p)
    rows, out = [], {"plain_gd_s": gd}

    def row(name, seconds, target=""):
        out[name] = seconds
        rows.append((name, f"{seconds:.3f}", f"{seconds / gd:.1f}", target))
        print(*rows[-1], sep="  ", flush=True)

    row("simulate(gd), warm, eig_every=1", warm_seconds(p, flows=("gd",)), "<= 8x")
    row("simulate(gd), warm, eig_every=20", warm_seconds(p, flows=("gd",), eig_every=20), "<= 2x")
    row("all four flows, first call (fresh process)", first_call_seconds(FLOWS), "<= 10 s")
    warm, central = second_call_and_central_seconds(p, FLOWS)
    row("all four flows, second call", warm, f"<= {central + 1:.2f} s")
    row("central flow's own dynamics", central)
    seed1 = fo.simulate(fo.problems.mlp_regression(seed=1), lr=LR, steps=STEPS, flows=FLOWS)
    out["seed1_compile_time"] = float(seed1.compile_time.max())
    ds = fo.simulate(p, lr=LR, steps=STEPS, flows=FLOWS)
    for name in ("n_grad", "n_hvp", "n_third", "n_hvp_observe", "n_eig_fallback"):
        out[name] = {str(k): int(v) for k, v in zip(ds.flow.values, ds[name].values, strict=True)}
    print(table(rows, ("call", "seconds", "x plain GD", "target")))
    print(
        f"plain GD (lax.scan): {gd:.4f} s; mlp_regression(seed=1) after seed 0: "
        f"compile_time {out['seed1_compile_time']}"
    )
    print(
        "oracle calls per run:",
        json.dumps(
            {k: out[k] for k in ("n_grad", "n_hvp", "n_third", "n_hvp_observe", "n_eig_fallback")}
        ),
    )
    out["machine"] = f"{platform.machine()}, jax {jax.__version__} on {jax.default_backend()}"
    results_path("run").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
