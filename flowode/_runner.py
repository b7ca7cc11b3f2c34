"""Chunked execution: every process advanced and observed a chunk of GD steps at a time.

A chunk is one compiled program per process (advance, then observe), with the start
step and the chunk's length as traced arguments, so a run of any length compiles once.
Between chunks the runner holds each process's carry, eigen-solver warm start and cost
totals: that is its checkpoint, from which a run resumes bit-identically.
"""

import time
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._observe import observe
from ._spectral import initial_basis
from .flows import AbstractProcess, GradientDescent, Midpoint

# Compiled programs, keyed by process, loss, settings and argument shapes.
_PROGRAMS: dict[Any, Any] = {}

COUNTS = ("n_grad", "n_hvp", "n_third")


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))


def compiled(key, fn, *args):
    """AOT-compile `fn(*args)` once per key; returns (executable, compile seconds)."""
    key = (key, _signature(args))
    try:
        hit = _PROGRAMS.get(key)
    except TypeError:  # an unhashable setting: compile every time
        key, hit = None, None
    if hit is not None:
        return hit, 0.0
    start = time.perf_counter()
    program = jax.jit(fn).lower(*args).compile()
    elapsed = time.perf_counter() - start
    if key is not None:
        _PROGRAMS[key] = program
    return program, elapsed


def _timed(program, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(program(*args))
    return out, time.perf_counter() - start


def _first_nonfinite(*arrays) -> int:
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        a = np.asarray(a).reshape(len(a), -1)
        bad |= ~np.all(np.isfinite(a), axis=1)
    return int(np.argmax(bad)) if bad.any() else -1


class Runner:
    """Runs `processes` (GD first) on one problem, chunk by chunk, from step `done`."""

    def __init__(self, processes, f, w0, lr, data, *, length, eig_k, eig_every, save_params):
        self.processes: list[AbstractProcess] = processes
        self.f, self.w0, self.lr, self.data = f, w0, lr, data
        self.length, self.eig_k, self.eig_every = length, eig_k, eig_every
        self.save_params = save_params
        self.labels = ["gd", "midpoint"]
        self.labels += [p.name for p in processes if not isinstance(p, GradientDescent)]
        U0 = initial_basis(w0.shape[0], eig_k, w0.dtype)
        self.bases = dict.fromkeys(self.labels, U0)  # eigen-solver warm starts
        self.costs = {label: self._zero_costs() for label in self.labels}
        self.statuses: dict[str, str] = {}
        self.carries: dict[str, Any] = {}
        self.shapes: dict[str, dict[str, tuple]] = {}  # of each label's observations
        self.done = 0

    @staticmethod
    def _zero_costs():
        return {
            **dict.fromkeys(COUNTS, 0),
            "wall_time": 0.0,
            "compile_time": 0.0,
            "diverged_at": -1,
        }

    def _start_fn(self, process):
        return lambda w, lr, d: process.start(self.f, w, lr, d)

    def start(self):
        for process in self.processes:
            fn = self._start_fn(process)
            program, seconds = compiled(("start", process, self.f), fn, self.w0, self.lr, self.data)
            self.carries[process.name] = program(self.w0, self.lr, self.data)
            self.costs[process.name]["compile_time"] += seconds

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self) -> dict[str, np.ndarray]:
        """Every array the runner needs to go on, by name (costs and statuses aside)."""
        out = {f"{label}__U": np.asarray(U) for label, U in self.bases.items()}
        for name, carry in self.carries.items():
            for i, leaf in enumerate(jax.tree_util.tree_leaves(carry)):
                out[f"{name}__carry_{i}"] = np.asarray(leaf)
        return out

    def restore(self, done: int, arrays: dict, costs: dict, statuses: dict[str, str]):
        """Continue from a checkpoint written after step `done`."""
        for process in self.processes:
            shape = jax.eval_shape(self._start_fn(process), self.w0, self.lr, self.data)
            leaves, treedef = jax.tree_util.tree_flatten(shape)
            names = [f"{process.name}__carry_{i}" for i in range(len(leaves))]
            self.carries[process.name] = jax.tree_util.tree_unflatten(
                treedef, [jnp.asarray(arrays[name]) for name in names]
            )
        self.bases = {label: jnp.asarray(arrays[f"{label}__U"]) for label in self.labels}
        self.costs = costs
        self.statuses = statuses
        self.done = done

    # -- one chunk -----------------------------------------------------------------------

    def chunk(self, n: int) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
        """Advance every process by n ≤ length steps; returns the new steps and records.

        Records hold, per label, the per-step variables of the new steps and the cost
        totals so far. A process that diverged in an earlier chunk is not run again.
        """
        t0, n_arr = jnp.asarray(self.done, jnp.int32), jnp.asarray(n, jnp.int32)
        observed: dict[str, dict[str, np.ndarray]] = {}
        gd_iterates = None
        for process in self.processes:
            label = process.name
            gd = isinstance(process, GradientDescent)
            if self.costs[label]["diverged_at"] >= 0:  # nothing left to compute
                for lab in (label, "midpoint") if gd else (label,):
                    if lab not in self.shapes:  # a resumed run: nothing observed yet
                        self.shapes[lab] = self._observation_shapes(process, lab)
                    observed[lab] = _blank(self.shapes[lab], n)
                continue
            states = self._advance(process, t0, n_arr)
            if gd:  # its states carry the midpoint process too
                observed[label] = self._observe(process, label, states, None, t0, n_arr)
                gd_iterates = jnp.asarray(observed[label]["center"])
                observed["midpoint"] = self._observe(
                    Midpoint(), "midpoint", states, gd_iterates, t0, n_arr
                )
                mid = self.costs["midpoint"]
                mid.update({k: v for k, v in self.costs[label].items() if k != "diverged_at"})
                mid["n_grad"] += 1  # it needs one step beyond the last
            else:
                observed[label] = self._observe(process, label, states, gd_iterates, t0, n_arr)

        rows = slice(0 if self.done == 0 else 1, n + 1)  # a chunk's first step is old
        steps = np.arange(self.done + rows.start, self.done + n + 1)
        records = {
            label: self._derive(label, obs, observed, rows, steps[0])
            for label, obs in observed.items()
        }
        self.done += n
        for label, rec in records.items():
            rec.update(self.costs[label])
        return steps, records

    def _advance(self, process, t0, n):
        label, length = process.name, self.length

        def fn(c, lr, d, t, m):
            return process.advance(self.f, c, lr, d, t, m, length)

        args = (self.carries[label], self.lr, self.data, t0, n)
        program, seconds = compiled(("advance", process, self.f, length), fn, *args)
        (states, carry, counts, result), wall = _timed(program, *args)
        self.carries[label] = carry
        c = self.costs[label]
        for name in COUNTS:
            c[name] += int(getattr(counts, name))
        c["wall_time"] += wall
        c["compile_time"] += seconds
        if result is not None and self.statuses.get(label, "successful") == "successful":
            self.statuses[label] = status(result)
        return states

    def _observe(self, process, label, states, w_gd, t0, n):
        """The process's diagnostics on one chunk's states, advancing its warm start."""
        eig_k, eig_every = self.eig_k, self.eig_every

        def fn(s, lr, d, g, U, t0, n):
            return observe(
                process, self.f, s, lr, d, g, eig_k=eig_k, eig_every=eig_every, U0=U, t0=t0, n=n
            )

        args = (states, self.lr, self.data, w_gd, self.bases[label], t0, n)
        key = ("observe", process, self.f, self.length, eig_k, eig_every)
        program, seconds = compiled(key, fn, *args)
        self.costs["gd" if label == "midpoint" else label]["compile_time"] += seconds
        out, self.bases[label] = program(*args)
        out = jax.device_get(out)
        out.pop("observe_hvps")
        self.shapes.setdefault(label, {k: np.shape(v)[1:] for k, v in out.items()})
        return out

    def _observation_shapes(self, process, label) -> dict[str, tuple]:
        """Per-step shapes of a label's observations, traced but not run."""
        t = jnp.asarray(0, jnp.int32)
        carry = self.carries[process.name]
        states = jax.eval_shape(
            lambda c: process.advance(self.f, c, self.lr, self.data, t, t, self.length)[0], carry
        )
        n = self.w0.shape[0]
        w_gd = None if label == "gd" else jax.ShapeDtypeStruct((self.length + 1, n), self.w0.dtype)
        observed = Midpoint() if label == "midpoint" else process

        def fn(s, g, U):
            kw = dict(eig_k=self.eig_k, eig_every=self.eig_every, U0=U, t0=t, n=t)
            return observe(observed, self.f, s, self.lr, self.data, g, **kw)[0]

        out = jax.eval_shape(fn, states, w_gd, self.bases[label])
        out.pop("observe_hvps")
        return {name: v.shape[1:] for name, v in out.items()}

    def _derive(self, label, obs, observed, rows, first_step) -> dict[str, np.ndarray]:
        """Distances to GD (iterates) and to its midpoint process (centres); new rows only."""
        gd, gd_mid = observed["gd"]["center"], observed["midpoint"]["center"]
        rec = dict(obs)
        center, iterate = rec.pop("center"), rec.pop("iterate")
        with np.errstate(all="ignore"):  # diverged processes give inf - inf
            rec["distance_to_gd"] = np.linalg.norm(iterate - gd, axis=-1)
            rec["center_distance_to_gd"] = np.linalg.norm(center - gd_mid, axis=-1)
        rec["sharpness"] = rec["eigs"][:, 0]
        if self.save_params:
            rec["params"], rec["iterates"] = center, iterate
        rec = {name: value[rows] for name, value in rec.items()}
        if self.costs[label]["diverged_at"] < 0:
            bad = _first_nonfinite(center[rows], rec["loss"])
            if bad >= 0:
                self.costs[label]["diverged_at"] = int(first_step) + bad
        return rec


def _blank(shapes: dict[str, tuple], n: int) -> dict[str, np.ndarray]:
    """NaN observations for a process that diverged in an earlier chunk."""
    return {name: np.full((n + 1, *shape), np.nan) for name, shape in shapes.items()}


def status(result) -> str:
    """diffrax's result code as a sentence that says what to change."""
    R = diffrax.RESULTS
    if result == R.successful:
        return "successful"
    if result == R.event_occurred:
        return "stopped: the state diverged (non-finite or past the blow-up bound)"
    if result == R.max_steps_reached:
        return (
            "failed: the solver reached its step limit (max_steps_per_gd_step x steps); the "
            "flow is stiffer than this solver handles at this tolerance. Raise "
            "max_steps_per_gd_step, loosen rtol/atol, or use a stabilised solver (fo.RKC2)."
        )
    if result == R.dt_min_reached:
        return (
            "failed: the step size fell below the controller's dtmin. Loosen rtol/atol, "
            "lower dtmin, or use a stiffness-aware solver (fo.RKC2)."
        )
    if result == R.max_steps_rejected:
        return (
            "failed: too many rejected steps in a row. Loosen rtol/atol or give the "
            "controller a smaller dt0."
        )
    return f"failed: {R[result]} Try a smaller step (dt0), looser tolerances or another solver."
