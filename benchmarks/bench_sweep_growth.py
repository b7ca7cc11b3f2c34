"""How a sweep's wall time grows with its members, on one device: members one after
another (`lax.map`, the default) against all members vmapped (`vmap=True`), and the
floor set by the hardware: plain GD (one jitted `lax.scan`) vmapped over as many members.

MLP regression (433 parameters), gd, gradient and rod flow, 1000 steps, `eig_every=10`,
float32; members = 4 seeds × lrs evenly spaced in [0.02, 0.2] (1 member: seed 0,
η = 0.1). Each sweep is timed warm (its second call); the reference is one member's warm
`simulate` in the same run. Writes benchmarks/sweep_growth.json and prints a table.
"""

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import results_path, table

import flowode as fo

STEPS, FLOWS = 1000, ("gd", "gradient", "rod")
# EIG_EVERY=1000 observes only the first and last rows: what the members' lock-step costs
# without the observer's Ritz steps and fallback solves (to tell the two apart on a GPU).
EVERY = int(os.environ.get("EIG_EVERY", 10))
NAME = "sweep_growth" if EVERY == 10 else f"sweep_growth_every{EVERY}"
VMAP_UP_TO = 16  # vmapped 64 members took 281 s (7.2× mapped), see benchmarks/README.md


def warm(fn):
    jax.block_until_ready(fn())
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def plain_gd(problems, lrs):
    """Warm seconds of plain GD, one `lax.scan` per member, vmapped over the members."""
    f = problems[0].flat_loss

    def gd(w, lr, data):
        body = lambda w, _: (w - lr * jax.grad(f)(w, data), None)
        return jax.lax.scan(body, w, None, STEPS)[0]

    W = jnp.stack([p.flat_w0 for p in problems])
    D = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[p.data for p in problems])
    run = jax.jit(jax.vmap(gd))
    return warm(lambda: run(W, jnp.asarray(lrs, W.dtype), D))


def main(sizes=(1, 4, 16, 64, 256)):
    make = lambda s: fo.problems.mlp_regression(seed=s)
    one = warm(lambda: fo.simulate(make(0), lr=0.1, steps=STEPS, flows=FLOWS, eig_every=EVERY))
    gd_one = plain_gd([make(0)], [0.1])
    rows = []
    out = {"one_member_simulate_s": one, "one_member_plain_gd_s": gd_one, "eig_every": EVERY}
    out["sizes"] = {}
    for m in sizes:
        seeds = [0] if m == 1 else list(range(4))
        lrs = [0.1] if m == 1 else list(np.linspace(0.02, 0.2, m // 4))
        entry = {}
        modes = (("map", None), ("vmap", True)) if m <= VMAP_UP_TO else (("map", None),)
        if jax.default_backend() != "cpu":  # members are vmapped there by default
            modes = (("vmap", None),)
        for mode, vmap in modes:
            kw = dict(seeds=seeds, lr=lrs, steps=STEPS, flows=FLOWS, eig_every=EVERY, vmap=vmap)
            entry[mode] = warm(lambda kw=kw: fo.sweep(make, **kw))
            print(m, mode, f"{entry[mode]:.2f} s", flush=True)
        problems = [make(s) for s in seeds for _ in lrs]
        entry["plain_gd"] = plain_gd(problems, [lr for _ in seeds for lr in lrs])
        out["sizes"][m] = entry
        results_path(NAME).write_text(json.dumps(out, indent=1))  # after each size
        v, mapped = entry.get("vmap", float("nan")), entry.get("map", float("nan"))
        rows.append(
            (
                m,
                f"{mapped:.2f}",
                f"{mapped / one:.1f}",
                f"{v:.2f}",
                f"{v / one:.1f}",
                f"{entry['plain_gd'] / gd_one:.1f}",
            )
        )
    print(f"one member's warm simulate: {one:.2f} s; plain GD: {gd_one:.3f} s")
    print(
        table(
            rows,
            ("members", "map s", "map × one", "vmap s", "vmap × one", "plain GD × one"),
        )
    )


if __name__ == "__main__":
    sys.exit(main(tuple(int(a) for a in sys.argv[1:]) or (1, 4, 16, 64, 256)))
