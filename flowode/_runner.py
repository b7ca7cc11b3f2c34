"""The run program: every process advanced and observed in one compiled chunk.

`RunState` holds everything a run needs to go on, for every process: its carry, oracle
counters, result code and first non-finite step, and the observer's eigen warm start
for every label (GD, its midpoint process, each flow). `run_chunk(settings, state,
args, length)` is one pure function, a `lax.scan` over GD steps. At row k it advances
each process from step k − 1 to k and observes it, so it returns per-step scalars and
`eig`-wide vectors only (n-vectors with `save_params`). The same function, under
`vmap`, is a sweep.

Compiled programs are cached by JAX itself (`eqx.filter_jit`), keyed on the loss
function, the processes' settings and the shapes: a new lr, w0 or data of the same
shapes reuses them.
"""

import threading
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int, PyTree

from ._codes import RESULTS
from ._observe import EigObservation, observe_eigs
from ._spectral import FlatLoss, initial_basis
from .flows import AbstractProcess
from .flows.gradient_descent import midpoint
from .optimisers import AbstractOptimiser

_OK, _DIVERGED = int(RESULTS.successful._value), int(RESULTS.diverged._value)


class Settings(eqx.Module):
    """The static part of a run: what is run and how it is observed."""

    processes: tuple[AbstractProcess, ...]  # GD first
    eig_k: int
    save_params: bool
    tol: float = 1e-2  # a Ritz residual (relative to |θ₁|) that needs no LOBPCG step
    fallback_tol: float = 1e-1  # one above this after a step needs a full solve
    guards: int = 1  # eigenvectors followed beyond eig_k > 1, to speed up convergence
    eigs_at: str = "midpoint"  # where GD is observed: "midpoint", "iterate" or "both"

    @property
    def labels(self) -> list[str]:
        names = [p.name for p in self.processes]
        return [names[0], "midpoint", *names[1:]]

    @property
    def unobserved(self) -> tuple[int, ...]:
        """The labels whose eigenvalues are not observed (GD's iterate or midpoint)."""
        return {"both": (), "iterate": (1,), "midpoint": (0,)}[self.eigs_at]


class ProcessState(eqx.Module):
    carry: PyTree[Array]
    counts: Int[Array, " 3"]  # gradients, HVPs, third derivatives of the dynamics
    result: Int[Array, ""]  # flowode.RESULTS code; the first failure is kept
    diverged_at: Int[Array, ""]  # first non-finite row, −1 if none


class Tracks(eqx.Module):
    """The observer's state for every label (in `Settings.labels` order).

    GD's iterates alternate between the two ends of its oscillation, so the Hessian at
    step k is closest to the one at step k − 2: each label keeps one warm start for
    even and one for odd steps.
    """

    basis: Float[Array, "labels 2 n b"]  # b = eig_k + guards
    direction: Float[Array, "labels 2 n b"]  # LOBPCG's last search direction
    n_hvp: Int[Array, " labels"]  # HVPs spent observing
    n_fallback: Int[Array, " labels"]  # observed steps that needed a full eigen-solve
    # The top eigenvector of P⁻¹H and its direction, for a diagonal preconditioner.
    pbasis: Float[Array, "labels 2 n 1"] | None = None
    pdirection: Float[Array, "labels 2 n 1"] | None = None


class RunState(eqx.Module):
    row: Int[Array, ""]  # the next row to observe; processes are at step max(row − 1, 0)
    processes: tuple[ProcessState, ...]
    tracks: Tracks


def _int(x) -> Array:
    return jnp.asarray(x, jnp.int32)


def start(
    settings: Settings, f: FlatLoss, w0: Float[Array, " n"], opt: AbstractOptimiser, data
) -> RunState:
    """The run state at row 0: every process started, nothing observed."""
    procs = []
    for process in settings.processes:
        carry, counts = process.start(f, w0, opt, data)
        procs.append(ProcessState(carry, jnp.stack([_int(c) for c in counts]), _int(0), _int(-1)))
    L = len(settings.labels)
    # Guards only where they fit, and for k > 1: at k = 1 one doubled the cost of a step
    # for the same accuracy (benchmarks/README.md, "Observation").
    guards = settings.guards if settings.eig_k > 1 else 0
    b = min(settings.eig_k + guards, w0.shape[0])
    U0 = initial_basis(w0.shape[0], b, w0.dtype)
    basis = jnp.broadcast_to(U0, (L, 2, *U0.shape))
    zeros = jnp.zeros((L,), jnp.int32)
    pbasis = pdirection = None
    if _diagonal(opt, w0):
        pbasis = jnp.broadcast_to(initial_basis(w0.shape[0], 1, w0.dtype), (L, 2, w0.shape[0], 1))
        pdirection = jnp.zeros_like(pbasis)
    tracks = Tracks(basis, jnp.zeros_like(basis), zeros, zeros, pbasis, pdirection)
    return RunState(_int(0), tuple(procs), tracks)


def _diagonal(opt: AbstractOptimiser, w0) -> bool:
    """Whether P⁻¹ is a diagonal (then λ₁(P⁻¹H) needs an eigen-solve of its own)."""
    shape = jax.eval_shape(
        lambda: opt.inverse_preconditioner(opt.init(w0, w0), jnp.zeros((), w0.dtype))
    ).shape
    return len(shape) > 0


def _merge(sub: EigObservation, observed: list[int], given: list, k: int, due):
    """Per label: (eigs, HVPs, fell back), from the observer for the labels in `observed`,
    from the process for those that give their own eigenpairs, NaN for the rest."""
    nan = jnp.full((k,), jnp.nan, sub.eigs.dtype)
    eigs, n_hvp, fell_back = [], [], []
    for i, g in enumerate(given):
        if i in observed:
            j = observed.index(i)
            eigs.append(sub.eigs[j]), n_hvp.append(sub.n_hvp[j]), fell_back.append(sub.fell_back[j])
            continue
        eigs.append(nan if g is None else jnp.where(due, g[0], jnp.nan))
        n_hvp.append(jnp.zeros((), jnp.int32)), fell_back.append(jnp.zeros((), bool))
    return jnp.stack(eigs), jnp.stack(n_hvp), jnp.stack(fell_back)


def _tracked(basis, sub_basis, observed, parity, both):
    """The warm starts (labels, 2, n, b) with the observed labels' refreshed at `parity`,
    and at the other parity too where `both`."""
    idx = jnp.asarray(observed)
    basis = basis.at[idx, parity].set(sub_basis)
    other = jnp.where(both, sub_basis, basis[idx, 1 - parity])
    return basis.at[idx, 1 - parity].set(other)


def _row(settings: Settings, f, state: RunState, opt, data, eig_every, k):
    """Advance every process to step k (= `state.row`) and observe it: (state, records)."""
    t = k.astype(state.tracks.basis.dtype)
    due = (k % eig_every) == 0

    # -- dynamics ------------------------------------------------------------------------
    procs = []
    for process, ps in zip(settings.processes, state.processes, strict=True):
        alive = ps.result == _OK

        def go(ps, process=process):
            carry, counts, result = process.advance(f, ps.carry, opt, data, k - 1)
            counts = ps.counts + jnp.stack([_int(c) for c in counts])
            return ProcessState(carry, counts, _int(result._value), ps.diverged_at)

        procs.append(lax.cond(alive & (k > 0), go, lambda ps: ps, ps))

    # -- observation ---------------------------------------------------------------------
    gd = procs[0]
    w_gd = gd.carry.w
    w_mid = midpoint(gd.carry, opt, k)
    labels = settings.labels
    owners = [
        None if label == "midpoint" else settings.processes[max(i - 1, 0)]
        for i, label in enumerate(labels)
    ]
    owner_states = [
        gd if label == "midpoint" else procs[max(i - 1, 0)] for i, label in enumerate(labels)
    ]
    states = [
        None if p is None else p.state(ps.carry) for p, ps in zip(owners, owner_states, strict=True)
    ]
    centers = [w_mid if p is None else p.center(s) for p, s in zip(owners, states, strict=True)]
    iterates = [
        w_mid if p is None else p.iterate(t, s) for p, s in zip(owners, states, strict=True)
    ]
    # Losses and gradients: a process that has them gives them; the rest in one batch.
    cached = [
        p is not None and type(p).loss_and_grad is not AbstractProcess.loss_and_grad for p in owners
    ]
    todo = [i for i, c in enumerate(cached) if not c]
    losses, grads = [None] * len(labels), [None] * len(labels)
    if todo:
        batch = jnp.stack([centers[i] for i in todo])
        ls, gs = jax.vmap(jax.value_and_grad(f), in_axes=(0, None))(batch, data)
        for j, i in enumerate(todo):
            losses[i], grads[i] = ls[j], gs[j]
    for i, c in enumerate(cached):
        if c:
            losses[i], grads[i] = owners[i].loss_and_grad(f, owner_states[i].carry, data)

    points = jnp.stack(centers)  # (labels, n)
    parity = k % 2
    # A process that has its eigenpairs already (central flow's refined basis) gives them;
    # the observer finds the rest that are observed, together.
    eig_k = settings.eig_k
    given = [None if p is None else p.eigs(s, eig_k) for p, s in zip(owners, states, strict=True)]
    observed = [i for i, g in enumerate(given) if g is None and i not in settings.unobserved]
    tracks = state.tracks
    # The other parity's warm start is refreshed too at the first observation, and
    # always when eig_every is even (then only one parity is ever observed).
    both = (k == 0) | (eig_every % 2 == 0)
    basis, direction = tracks.basis, tracks.direction
    n_hvp, n_fallback = tracks.n_hvp, tracks.n_fallback
    nan = jnp.full((eig_k,), jnp.nan, points.dtype)
    # GD is always observed at one of its points, so `observed` is never empty.
    idx = jnp.asarray(observed)
    sub = observe_eigs(
        f,
        points[idx],
        basis[idx, parity],
        direction[idx, parity],
        data,
        due,
        k=eig_k,
        tol=settings.tol,
        fallback_tol=settings.fallback_tol,
    )
    basis = _tracked(basis, sub.basis, observed, parity, both)
    direction = _tracked(direction, sub.direction, observed, parity, both)
    eigs, sub_hvp, sub_fallback = _merge(sub, observed, given, eig_k, due)
    n_hvp = n_hvp + sub_hvp
    n_fallback = n_fallback + sub_fallback.astype(jnp.int32)

    # -- preconditioned sharpness λ₁(P⁻¹H) ----------------------------------------------
    # The discrete run's P at step k is that of the update it takes from w_k: its state
    # after absorbing g_k (Adam's bias-corrected ν̂ = g₀² at step 0, not ν₀ = 0, where
    # P⁻¹ would be η/ε). A flow's state is already the post-update one.
    post = opt.increment(gd.carry.opt_state, gd.carry.grad, k)[1]
    opt_states = [
        post if i == 0 or p is None else p.optimiser_state(s)
        for i, (p, s) in enumerate(zip(owners, states, strict=True))
    ]
    p_inv = [opt.inverse_preconditioner(s, t) for s in opt_states]
    pbasis, pdirection = tracks.pbasis, tracks.pdirection
    if pbasis is None:  # P⁻¹ = a scalar: λ₁(P⁻¹H) = P⁻¹·λ₁(H)
        effective = [p * eigs[i, 0] for i, p in enumerate(p_inv)]
    else:
        seen = [i for i in range(len(labels)) if i not in settings.unobserved]
        idx = jnp.asarray(seen)
        pobs = observe_eigs(
            f,
            points[idx],
            pbasis[idx, parity],
            pdirection[idx, parity],
            data,
            due,
            k=1,
            tol=settings.tol,
            fallback_tol=settings.fallback_tol,
            scales=jnp.sqrt(jnp.stack([p_inv[i] for i in seen])),
        )
        effective = [
            pobs.eigs[seen.index(i), 0] if i in seen else nan[0] for i in range(len(labels))
        ]
        pbasis = _tracked(pbasis, pobs.basis, seen, parity, both)
        pdirection = _tracked(pdirection, pobs.direction, seen, parity, both)
        n_hvp = n_hvp.at[idx].add(pobs.n_hvp)
        n_fallback = n_fallback.at[idx].add(pobs.fell_back.astype(jnp.int32))
    tracks = Tracks(basis, direction, n_hvp, n_fallback, pbasis, pdirection)
    # Per-label norms and checks as one reduction each over the stacked points (labels, n):
    # at small n a row costs its kernel launches more than its arithmetic.
    grad_norms = jnp.linalg.norm(jnp.stack(grads), axis=1)
    dist = jnp.linalg.norm(jnp.stack(iterates) - w_gd, axis=1)
    center_dist = jnp.linalg.norm(points - w_mid, axis=1)
    finite = jnp.all(jnp.isfinite(points), axis=1) & jnp.isfinite(jnp.stack(losses))
    records = []
    for i in range(len(labels)):
        rec = {
            "loss": losses[i],
            "grad_norm": grad_norms[i],
            "eigs": eigs[i],
            "effective_sharpness": effective[i],
        }
        if owners[i] is None:
            rec["predicted_loss"] = losses[i]
        else:
            j = 1 - i if i in settings.unobserved else i  # GD's other point
            U = given[i][1] if given[i] is not None else basis[j, parity, :, :eig_k]
            rec.update(owners[i].observables(f, t, states[i], U, opt, data, w_gd))
        rec["distance_to_gd"] = dist[i]
        rec["center_distance_to_gd"] = center_dist[i]
        if settings.save_params:
            rec["params"], rec["iterates"] = centers[i], iterates[i]
        records.append(rec)

    # -- divergence: the first row whose point or loss is not finite ---------------------
    new_procs = []
    for j, ps in enumerate(procs):
        i = 0 if j == 0 else j + 1
        bad = ~finite[i] | (ps.result != _OK)
        result = jnp.where(bad & (ps.result == _OK), _int(_DIVERGED), ps.result)
        at = jnp.where((ps.diverged_at < 0) & bad, k, ps.diverged_at)
        new_procs.append(ProcessState(ps.carry, ps.counts, result, at))
    records = {label: rec for label, rec in zip(labels, records, strict=True)}
    return RunState(k + 1, tuple(new_procs), tracks), records


@eqx.filter_jit
def run_chunk(
    settings: Settings,
    f: FlatLoss,
    state: RunState,
    opt: AbstractOptimiser,
    data: PyTree,
    eig_every: Int[Array, ""],
    n: Int[Array, ""],
    length: int,
    row0: Int[Array, ""] | None = None,
) -> tuple[RunState, dict[str, dict[str, Array]]]:
    """Rows state.row .. state.row + n − 1 (n ≤ length; `length` is static).

    Eigenvalues are observed at rows that are multiples of `eig_every` (traced).
    `row0` (= state.row) may be given apart: a sweep gives it unbatched, so that under
    `vmap` whether a row is observed stays a `cond` instead of a select that observes
    every row.
    """
    row0 = state.row if row0 is None else row0
    row = lambda s, k: _row(settings, f, s, opt, data, eig_every, k)
    shapes = jax.eval_shape(lambda s: row(s, row0)[1], state)

    def step(state, i):
        def skip(state, k):
            blank = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            return state, blank

        return lax.cond(i < n, row, skip, state, _int(row0 + i))

    return lax.scan(step, state, jnp.arange(length))


@eqx.filter_jit
def start_run(settings: Settings, f: FlatLoss, w0, opt, data) -> RunState:
    return start(settings, f, w0, opt, data)


# -- compile time, as JAX reports it ---------------------------------------------------

_compile = threading.local()


def _listen(event: str, duration: float, **kwargs):
    # Tracing nests (a jitted function traces the jitted functions it calls, each
    # reporting its own duration), so only the trace just before a lowering counts:
    # that is the outermost one, of the program being compiled.
    if not getattr(_compile, "active", False):
        return
    if event == "/jax/core/compile/jaxpr_trace_duration":
        _compile.last_trace = duration
    elif event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
        _compile.seconds += duration + getattr(_compile, "last_trace", 0.0)
        _compile.last_trace, _compile.lowered = 0.0, True
    elif event == "/jax/core/compile/backend_compile_duration":
        # Only the compile of a program just lowered: small eager computations compile
        # inside a trace, whose duration is already counted.
        if getattr(_compile, "lowered", False):
            _compile.seconds += duration
        _compile.lowered = False


jax.monitoring.register_event_duration_secs_listener(_listen)


PRECISIONS = ("highest", "high", "default")


def timed(fn, *args, precision: str = "highest") -> tuple[Any, float, float]:
    """(fn(*args) ready, wall seconds excluding compilation, compilation seconds).

    `fn` is traced under `jax.default_matmul_precision(precision)`, a scoped setting:
    "highest" keeps float32 matmuls in full float32 on GPUs and TPUs, whose default
    (TF32, bfloat16 passes) is too coarse for eigenvalues and the SDCP. CPUs compute in
    full precision whatever it says.
    """
    _compile.active, _compile.seconds, _compile.last_trace = True, 0.0, 0.0
    _compile.lowered = False
    try:
        start_time = time.perf_counter()
        with jax.default_matmul_precision(precision):
            out = jax.block_until_ready(fn(*args))
        wall = time.perf_counter() - start_time
    finally:
        _compile.active = False
    return out, max(wall - _compile.seconds, 0.0), _compile.seconds
