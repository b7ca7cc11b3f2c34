"""What observing the top Hessian eigenvalues costs, and how accurate it is.

For each problem, `simulate(flows=("gd",))` is run once for its cost (HVPs per observed
point per step, the share of observed steps that fell back to a full solve, its wall time
÷ a plain GD step of the same problem in this process) and once with `save_params=True`
for its accuracy: at 5 sampled steps after the first 10, the observed eigenvalues against
a converged solve at the same point (a dense `eigh` of the Hessian for small models,
`scipy.sparse.linalg.eigsh` on an HVP operator for the 853k-parameter one). On the same
trajectory, warm-started `jax.experimental.sparse.linalg.lobpcg_standard` (as the
published central-flows JAX code calls it every step) is run with 1, 2, 3, … iterations
per step until it is as accurate, and its HVPs are reported.

Problems: MLP-433 (Gaussian regression), the digits MLP and CNN, a small residual CNN on
digits with cross-entropy, and the official central-flows code's default shape (GELU
MLP 3072-256-256-4, 853,508 parameters) on real images (digits 0-3 at 32×32×3, 1000
images) and on Gaussian inputs. `python bench_observe.py [quick]`; writes
benchmarks/observe.json.
"""

import json
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import results_path, table
from jax.experimental.sparse.linalg import lobpcg_standard
from scipy.sparse.linalg import LinearOperator, eigsh

import flowode as fo
from flowode._spectral import hvp_block


class ImageMLP(eqx.Module):
    """The official default: a GELU MLP on flattened 32×32×3 images."""

    mlp: eqx.nn.MLP

    def __call__(self, x):  # (B, 3, 32, 32) -> (B, 4)
        return jax.vmap(self.mlp)(x.reshape(x.shape[0], -1))


class ResidualCNN(eqx.Module):
    """A new user's own network: a 3×3 stem, one residual block, pooling, a linear head."""

    stem: eqx.nn.Conv2d
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, channels=6, key=None):
        k = jax.random.split(key, 4)
        self.stem = eqx.nn.Conv2d(1, channels, 3, padding=1, key=k[0])
        self.conv1 = eqx.nn.Conv2d(channels, channels, 3, padding=1, key=k[1])
        self.conv2 = eqx.nn.Conv2d(channels, channels, 3, padding=1, key=k[2])
        self.head = eqx.nn.Linear(channels * 16, 10, key=k[3])

    def __call__(self, x):  # one image (64,) -> logits (10,)
        h = jax.nn.gelu(self.stem(x.reshape(1, 8, 8)))
        h = h + self.conv2(jax.nn.gelu(self.conv1(h)))
        h = h.reshape(h.shape[0], 4, 2, 4, 2).mean((2, 4))
        return self.head(h.reshape(-1))


def mse_onehot(model, data):
    x, y = data
    return 0.5 * jnp.mean(jnp.sum((model(x) - jax.nn.one_hot(y, 4)) ** 2, -1))


def cross_entropy(model, data):
    x, y = data
    logits = jax.vmap(model)(x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def image_mlp(gaussian=False):
    x, y = fo.problems.digits_images()
    if gaussian:
        x = jax.random.normal(jax.random.key(7), x.shape, x.dtype)
    model = ImageMLP(eqx.nn.MLP(3072, 4, 256, 2, activation=jax.nn.gelu, key=jax.random.key(0)))
    name = "image-mlp-853k" + ("-gaussian" if gaussian else "")
    return fo.Problem(mse_onehot, model, name=name, data=(x, y))


def residual_cnn():
    x, y = fo.problems.digits(256)
    return fo.Problem(cross_entropy, ResidualCNN(key=jax.random.key(0)), "residual-cnn", (x, y))


# label: (problem, lr, steps, eig_k values); each lr puts GD at EOS within `steps`,
# except the 853k MLP's official lr 0.02, where ηS reaches 2 near step 95.
PROBLEMS = {
    "mlp-433": (fo.problems.mlp_regression, 0.1, 1000, (1, 3)),
    "digits-mlp": (fo.problems.digits_mlp, 0.6, 600, (1, 3)),
    "digits-cnn": (fo.problems.digits_cnn, 0.25, 400, (1, 3)),
    "residual-cnn-ce": (residual_cnn, 0.4, 400, (1, 3)),
    "image-mlp-853k": (image_mlp, 0.02, 100, (3,)),
    "image-mlp-853k-gaussian": (lambda: image_mlp(gaussian=True), 0.02, 100, (3,)),
}
QUICK = ("mlp-433", "digits-cnn", "residual-cnn-ce")
LOBPCG = True  # also the published code's warm-started lobpcg_standard on each trajectory


def reference(problem, w, k):
    """The top-k eigenvalues at w by a converged solve (dense eigh or eigsh)."""
    f, data = problem.flat_loss, problem.data
    w = jnp.asarray(w)
    if w.size <= 5000:
        return np.sort(np.linalg.eigvalsh(np.asarray(jax.hessian(f)(w, data), np.float64)))[::-1][
            :k
        ]
    hv = jax.jit(lambda v: hvp_block(f, w, v[:, None], data)[:, 0])
    matvec = lambda v: np.asarray(hv(jnp.asarray(v, w.dtype)), np.float64)  # noqa: E731
    op = LinearOperator((w.size, w.size), matvec=matvec, dtype=np.float64)
    return np.sort(eigsh(op, k=k, which="LA", tol=1e-9, return_eigenvectors=False))[::-1]


def lobpcg_hvps(problem, points, sample, refs, target, k):
    """Warm-started `lobpcg_standard` along `points` (steps, n) with m iterations per
    step, m = 1, 2, 4 (1, 2 from 1e5 parameters): (HVPs per step, largest error at the
    sampled steps, m) for the first m whose error is at most `target`, or the last one."""
    f, data = problem.flat_loss, problem.data
    X0 = fo._spectral.initial_basis(points.shape[1], k, points.dtype)
    for m in (1, 2, 4) if points.shape[1] < 100_000 else (1, 2):

        def step(X, w, m=m):
            theta, X, _ = lobpcg_standard(lambda V: hvp_block(f, w, V, data), X, m=m)
            return X, jnp.sort(theta)[::-1]

        thetas = jax.jit(lambda P: jax.lax.scan(step, X0, P)[1])(jnp.asarray(points))
        thetas = np.asarray(thetas)
        errs = [np.max(np.abs(thetas[t] - refs[t]) / np.abs(refs[t])) for t in sample]
        if max(errs) <= target:
            break
    # lobpcg_standard applies H to X once, then to [X, P, R] and to X in each iteration.
    return k * (1 + 4 * m), float(max(errs)), m


def plain_gd_seconds(problem, lr, steps):
    f, w0, data = problem.flat_loss, problem.flat_w0, problem.data

    def run(w):
        return jax.lax.fori_loop(0, steps, lambda _, w: w - lr * jax.grad(f)(w, data), w)

    run = jax.jit(run)
    jax.block_until_ready(run(w0))
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(run(w0))
        best = min(best, time.perf_counter() - start)
    return best / steps


def measure(label, make, lr, steps, k):
    problem = make()
    gd_step = plain_gd_seconds(problem, lr, steps)
    ds = fo.simulate(problem, lr=lr, steps=steps, flows=("gd",), eig_k=k, progress=False)
    wall = float(ds.wall_time.sel(flow="gd"))
    full = fo.simulate(
        problem,
        lr=lr,
        steps=steps,
        flows=("gd",),
        eig_k=k,
        eigs_at="both",
        save_params=True,
        progress=False,
    )
    sample = np.linspace(steps // 5, steps, 5).astype(int)
    rows = {}
    for point in ("gd", "midpoint"):
        n_hvp = int(full.n_hvp_observe.sel(flow=point))
        observed = int(np.isfinite(full.eigs.sel(flow=point)[:, 0]).sum())
        params = full.params.sel(flow=point).values
        refs = {int(t): reference(problem, params[t], k) for t in sample}
        errs = [
            np.max(np.abs(full.eigs.sel(flow=point, step=t).values - refs[t]) / np.abs(refs[t]))
            for t in sample
        ]
        row = dict(
            n_params=problem.n_params,
            lr=lr,
            steps=steps,
            eig_k=k,
            point=point,
            hvp_per_step=n_hvp / observed,
            fallback_share=int(full.n_eig_fallback.sel(flow=point)) / observed,
            max_rel_error=float(max(errs)),
            eta_sharpness_end=float(lr * ds.eigs.sel(flow=point)[-1, 0]),
            simulate_over_gd=wall / steps / gd_step,  # observing the default point only
            default_point=ds.attrs["eigs_at"],
        )
        target = max(row["max_rel_error"], 1e-6)
        if LOBPCG:
            hvps, err, m = lobpcg_hvps(problem, params, [int(t) for t in sample], refs, target, k)
            row.update(lobpcg_hvp_per_step=hvps, lobpcg_iters=m, lobpcg_max_rel_error=err)
        rows[point] = row
        print(label, k, row, flush=True)
    return rows


def main():
    quick = "quick" in sys.argv[1:]
    out = {}
    for label, (make, lr, steps, ks) in PROBLEMS.items():
        if quick and label not in QUICK:
            continue
        for k in ks:
            for point, row in measure(label, make, lr, steps, k).items():
                out[f"{label} k={k} {point}"] = row
    rows = [
        (
            name,
            r["n_params"],
            f"{r['hvp_per_step']:.1f}",
            f"{100 * r['fallback_share']:.1f}%",
            f"{r['max_rel_error']:.1e}",
            f"{r['simulate_over_gd']:.1f}",
            f"{r.get('lobpcg_hvp_per_step')} ({r.get('lobpcg_iters')} it, "
            f"{r.get('lobpcg_max_rel_error', np.nan):.0e})",
        )
        for name, r in out.items()
    ]
    header = ("problem, k, point", "n", "HVP/step", "fallback", "rel err", "sim÷GD", "lobpcg")
    print(table(rows, header))
    results_path("observe").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
