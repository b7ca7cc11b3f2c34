"""Make tests/data/rmsprop_central_reference.npz with the *published* RMSProp central flow.

Runs the JAX code of Cohen, Damian et al. (2025), github.com/alex-damian/central_flows_jax
(`Flow.central` and `Flow.discrete` with `RMSProp`), unmodified, on flowode's
`mlp_regression(width=8, n=64)` in float64. Keys without a suffix come from the published code
as it is; keys ending in `_hu` come from a diagnostic variant with one line of flows.py changed
in memory (see `load_hu_flow`). The published code is not part of flowode: pass
the path of an extracted copy of that repository (the folder holding `src/central_flows_jax`)
on the command line, e.g.

    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/cfj
    python make_rmsprop_central_reference.py /tmp/cfj --commit <sha>

It needs `cvxpy` and `cvxopt` (the published SDCP solver). About 1-2 minutes on a CPU.
See rmsprop_central_reference.md for the equations the published code integrates.
"""

import argparse
import os
import subprocess
import sys
import time
from functools import partial

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import flowode as fo  # noqa: E402

PUBLISHED_LINE = "ds_dt_X = apply_to_pairs(ds_dt_X_fn, U).T"
HU_LINE = "ds_dt_X = apply_to_pairs(ds_dt_X_fn, HU).T"


def load_hu_flow(flows_module):
    """`Flow` of the published flows.py with one line changed (diagnostic variant "hu").

    The published `central_flow_substep` feeds the second g-derivative of dstate_dt the
    directions u_i (the P-orthonormal eigenvectors), so the oscillation adds diag(U X U^T)
    = diag(Sigma) to the squared gradient. The paper / centralflows.github.io part III has
    E[g^2] = grad L^2 + diag(H Sigma H) (= grad L^2 + 4 nu/eta^2 * diag(Sigma) at eigenvalue 2).
    The variant uses the directions H u_i = lambda_i P u_i, the array `HU` that the published
    function already computes and leaves unused. The published source is patched in memory
    only; nothing of it is written anywhere.
    """
    import types

    src = open(flows_module.__file__).read()
    assert src.count(PUBLISHED_LINE) == 1, "published flows.py changed; check the patch"
    mod = types.ModuleType("central_flows_jax.flows_hu")
    mod.__package__ = "central_flows_jax"
    mod.__file__ = flows_module.__file__
    code = compile(src.replace(PUBLISHED_LINE, HU_LINE), mod.__file__ + " [HU]", "exec")
    exec(code, mod.__dict__)
    return mod.Flow


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source", help="extracted alex-damian/central_flows_jax repository")
    ap.add_argument("--commit", default=None, help="its commit (else `git rev-parse HEAD` there)")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "rmsprop_central_reference.npz"))
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--beta2", type=float, default=0.99)
    ap.add_argument("--eps", type=float, default=0.0)  # the published RMSProp default
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--k", type=int, default=5, help="eigenvectors tracked (published example: 5)")
    ap.add_argument("--substeps", type=int, default=4, help="Flow.central substeps (default 4)")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--no-hu", action="store_true", help="skip the diag(H Sigma H) variant")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()

    sys.path.insert(0, os.path.join(args.source, "src"))
    import central_flows_jax.flows
    from central_flows_jax import Flow, RMSProp

    commit = args.commit
    if commit is None:
        commit = subprocess.run(
            ["git", "-C", args.source, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    p = fo.problems.mlp_regression(width=args.width, n=args.n, dtype=jnp.float64)
    f, w0, data = p.flat_loss, p.flat_w0, p.data
    loss_fn = lambda w: f(w, data)  # the published code takes a loss of the flat parameters

    opt = RMSProp(lr=args.lr, beta2=args.beta2, eps=args.eps)
    opt.initialize_state(w0)  # sets opt.unflatten; the published default is nu0 = 0
    g0 = jax.grad(loss_fn)(w0)
    # nu0 = grad L(w0)^2 instead: same flat layout as initialize_state ({"nu", "t"} raveled)
    state0, _ = ravel_pytree({"t": jnp.array(0.0, dtype=w0.dtype), "nu": jnp.square(g0)})
    assert jnp.allclose(opt.unflatten(state0)["nu"], jnp.square(g0))
    nu_of = lambda s: np.asarray(opt.unflatten(s)["nu"])

    U0 = jax.random.normal(jax.random.key(0), (w0.size, args.k), dtype=w0.dtype)
    T, E = args.steps, args.every
    snap = [t for t in range(T + 1) if t % E == 0 or t == T]

    def run(step, name):
        """Iterate one published Flow method from (w0, nu0, U0) for T unit-time steps."""
        val = (w0, state0, U0)
        rec = {"L": [], "eigs": [], "X": [], "params": [], "nu": []}
        t0 = time.time()
        for t in range(T + 1):
            if t in snap:
                rec["params"].append(np.asarray(val[0]))
                rec["nu"].append(nu_of(val[1]))
            # aux of the step from time t: L and eigs at the point at time t (for central: at
            # its first substep); X averaged over the substeps of the step
            new_val, aux = step(*val)
            rec["L"].append(float(aux["L"]))
            rec["eigs"].append(np.asarray(aux["eigs"]))
            rec["X"].append(np.asarray(aux.get("X", np.zeros((args.k, args.k)))))
            val = new_val if t < T else val
            if t % 100 == 0:
                print(
                    f"{name} t={t} L={rec['L'][-1]:.5f} eigs={rec['eigs'][-1][:3]} "
                    f"trX={np.trace(rec['X'][-1]):.3e} ({time.time() - t0:.0f}s)",
                    flush=True,
                )
        return {k: np.asarray(v) for k, v in rec.items()}

    out = {"steps": np.arange(T + 1), "snapshot_steps": np.asarray(snap)}
    d = run(Flow(loss_fn, opt).discrete, "rmsprop")
    out.update(
        loss_rmsprop=d["L"],
        eigs_rmsprop=d["eigs"],
        eff_sharpness_rmsprop=d["eigs"].max(1),
        params_rmsprop=d["params"],
        nu_rmsprop=d["nu"],
    )
    variants = [("", Flow)]
    if not args.no_hu:
        variants.append(("_hu", load_hu_flow(central_flows_jax.flows)))
    for suffix, FlowCls in variants:
        flow = FlowCls(loss_fn, opt)
        c = run(partial(flow.central, substeps=args.substeps), "central" + suffix)
        lam, X = c["eigs"], c["X"]
        # published prediction f(w) + 1/2 <U^T H U, X>, U^T H U = diag(eigs) (U P-orthonormal);
        # the published example plots L + tr(X), which equals it where the eigs are 2.
        onset = np.flatnonzero(np.einsum("tii->t", X) > 0)
        out.update(
            {
                "loss_central" + suffix: c["L"],
                "predicted_loss" + suffix: c["L"] + 0.5 * np.einsum("ti,tii->t", lam, X),
                "eigs_central" + suffix: lam,
                "eff_sharpness_central" + suffix: lam.max(1),
                "X_central" + suffix: X,
                "params_central" + suffix: c["params"],
                "nu_central" + suffix: c["nu"],
                "onset_step" + suffix: np.asarray(onset[0] if onset.size else -1),
            }
        )
    out.update(
        lr=np.asarray(args.lr),
        beta2=np.asarray(args.beta2),
        eps=np.asarray(args.eps),
        width=np.asarray(args.width),
        n=np.asarray(args.n),
        k=np.asarray(args.k),
        substeps=np.asarray(args.substeps),
        source_commit=np.asarray(commit),
        source_repo=np.asarray("https://github.com/alex-damian/central_flows_jax"),
        nu_init=np.asarray("grad L(w0)**2"),
    )
    np.savez_compressed(args.out, **out)
    print("wrote", args.out, "onset", out["onset_step"], out.get("onset_step_hu"))


if __name__ == "__main__":
    main()
