"""`sweep`: the same processes for a grid of seeds and of one hyper-parameter, in one
compiled program.

The run program (`_runner.run_chunk`) is pure, so a sweep is that program mapped over
members (seed × value). Each member keeps its own solver and controller state, result
code and `diverged_at`. With several devices the members are vmapped and the member
axis is sharded across them (`jax.sharding.Mesh` + `NamedSharding`; XLA partitions the
program); a vmapped adaptive loop runs until its slowest member is done, the others
masked. On one device the members run one after another in the same program
(`lax.map`), so the cost is the sum of their work.
"""

import dataclasses
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _runner
from ._problem import Problem
from ._results import build_dataset
from ._simulate import (
    FALLBACK_TOL,
    _attributes,
    _check_positive_int,
    _merge,
    _optimiser,
    _records,
    _report,
    _resolve,
    _rows_per_chunk,
    _statuses,
)
from .flows import AbstractProcess
from .optimisers import AbstractOptimiser, check_schedule


def _swept(lr, optimizer) -> tuple[str, list[float], Callable[[float], AbstractOptimiser]]:
    """(name, values, value ↦ optimiser) of the swept hyper-parameter."""
    if optimizer is None:
        if lr is None or np.ndim(lr) != 1:
            raise ValueError("sweep needs lr=[...] (a sequence of learning rates for GD).")
        return "lr", [float(v) for v in lr], lambda v: _optimiser(v, None)
    if lr is not None:
        raise ValueError("give lr=[...] (for GD) or optimizer=..., not both.")
    if not isinstance(optimizer, AbstractOptimiser):
        raise TypeError(f"optimizer must be a flowode optimiser, got {optimizer!r}.")
    swept = [
        f.name
        for f in dataclasses.fields(optimizer)
        if not callable(getattr(optimizer, f.name)) and np.ndim(getattr(optimizer, f.name)) == 1
    ]
    if len(swept) != 1:
        raise ValueError(
            "sweep: give exactly one hyper-parameter of the optimiser as a sequence, e.g. "
            f"fo.Adam(lr=[1e-3, 3e-3]); got {len(swept)} ({', '.join(swept) or 'none'})."
        )
    name = swept[0]
    values = [float(v) for v in np.asarray(getattr(optimizer, name))]
    fields = {f.name: getattr(optimizer, f.name) for f in dataclasses.fields(optimizer)}
    return name, values, lambda v: type(optimizer)(**{**fields, name: v})


def _stack(trees):
    """Arrays stacked along a new leading axis; every other leaf must be the same."""

    def one(*xs):
        if eqx.is_array(xs[0]):
            if any(x.shape != xs[0].shape or x.dtype != xs[0].dtype for x in xs):
                raise ValueError(f"shapes {sorted({x.shape for x in xs})}")
            return jnp.stack(xs)
        if any(x is not xs[0] and x != xs[0] for x in xs):
            raise ValueError(f"{xs[0]!r} differs")
        return xs[0]

    try:
        return jax.tree_util.tree_map(one, *trees)
    except ValueError as e:
        raise ValueError(
            "sweep: every seed's problem must have the same loss function, parameter "
            f"structure and data shapes ({e})."
        ) from None


def _vmapped(fn, n_members: int):
    """fn over the members' axis of its first `n_members` arguments, in parallel (vmap):
    for members sharded across devices. Loops inside run in lock-step."""
    in_axes = (eqx.if_array(0),) * n_members
    return lambda *args: eqx.filter_vmap(fn, in_axes=in_axes + (None,) * (len(args) - n_members))(
        *args
    )


def _mapped(fn, n_members: int):
    """fn over the members' axis one member after another (`lax.map`), in one program:
    on one device this costs the sum of the members' work, where vmap's lock-step loops
    cost members × the slowest member."""

    def call(*args):
        dynamic, static = eqx.partition(args[:n_members], eqx.is_array)
        rest = args[n_members:]
        return jax.lax.map(lambda d: fn(*eqx.combine(d, static), *rest), dynamic)

    return call


@eqx.filter_jit
def _start_members(settings, parallel: bool, f, w0, opt, data):
    one = lambda f, w, o, d: _runner.start(settings, f, w, o, d)
    return (_vmapped if parallel else _mapped)(one, 4)(f, w0, opt, data)


@eqx.filter_jit
def _run_members(settings, parallel: bool, length: int, f, state, opt, data, every, n):
    """`run_chunk` for every member; compiled once per settings, shapes and `length`."""

    def one(f, s, o, d, every, n):
        return _runner.run_chunk.__wrapped__(settings, f, s, o, d, every, n, length)

    return (_vmapped if parallel else _mapped)(one, 4)(f, state, opt, data, every, n)


def sweep(
    make_problem: Callable[[int], Problem],
    *,
    seeds: Sequence[int],
    lr: Sequence[float] | None = None,
    optimizer: AbstractOptimiser | None = None,
    steps: int,
    flows: Sequence[str | AbstractProcess] = ("gd", "gradient"),
    eig_k: int = 1,
    eig_every: int = 1,
    save_params: bool = False,
    chunk: int = 1000,
    devices: Sequence[jax.Device] | None = None,
    throw: bool = False,
) -> xr.Dataset:
    """Run `simulate`'s processes for every seed and every value of one hyper-parameter.

        `make_problem(seed)` gives each seed's problem (same shapes for every seed). The
        swept hyper-parameter is given as a sequence: `lr=[...]` for GD, or one field of an
        optimiser, e.g. `optimizer=fo.Adam(lr=[1e-3, 3e-3], beta2=0.99)`. Returns
        `simulate`'s Dataset with two more dims, `seed` and the swept name; every variable
        keeps its meaning per member. A member that fails does not stop the others. All
        members run in one program per chunk: over several `devices` (default: all) vmapped and
    sharded, on one device one member after another (`lax.map`), which costs the sum of the
    members' work instead of members × the slowest (vmapped solver loops run in lock-step).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("sweep needs at least one seed.")
    name, values, make_opt = _swept(lr, optimizer)
    for key, value in (("steps", steps), ("eig_k", eig_k), ("eig_every", eig_every)):
        _check_positive_int(key, value)
    _check_positive_int("chunk", chunk)
    problems = [make_problem(s) for s in seeds]
    for p in problems:
        if not isinstance(p, Problem):
            raise TypeError(f"make_problem must return a flowode.Problem, got {type(p).__name__}.")
    if eig_k > problems[0].n_params:
        raise ValueError(f"eig_k = {eig_k} is more than the problem's {problems[0].n_params}.")
    opts = [make_opt(v) for v in values]  # each checked as a single optimiser
    dtype = problems[0].flat_w0.dtype
    for opt in opts:
        check_schedule(opt, int(steps), dtype)
    processes = _resolve(flows, opts[0])
    settings = _runner.Settings(
        tuple(processes), int(eig_k), bool(save_params), fallback_tol=FALLBACK_TOL
    )
    labels = settings.labels

    # Members: seed-major grid (seed, value), flattened.
    S, V = len(seeds), len(values)
    s_idx, v_idx = np.repeat(np.arange(S), V), np.tile(np.arange(V), S)
    devices = list(jax.devices() if devices is None else devices)
    # Sharded, the member axis is padded to a multiple of the devices with copies of the
    # last member; their results are dropped.
    pad = (-len(s_idx)) % len(devices) if len(devices) > 1 else 0
    s_idx = np.concatenate([s_idx, np.full(pad, s_idx[-1])])
    v_idx = np.concatenate([v_idx, np.full(pad, v_idx[-1])])
    pick = lambda tree, idx: jax.tree_util.tree_map(
        lambda x: x[idx] if eqx.is_array(x) else x, tree
    )
    f = pick(_stack([p.flat_loss for p in problems]), s_idx)
    w0 = pick(_stack([p.flat_w0 for p in problems]), s_idx)
    data = pick(_stack([p.data for p in problems]), s_idx)
    opt = pick(_stack([o.astype(dtype) for o in opts]), v_idx)
    members = (f, w0, opt, data)

    if len(devices) > 1:
        mesh = Mesh(np.array(devices), ("member",))
        sharding = NamedSharding(mesh, PartitionSpec("member"))
        members = jax.tree_util.tree_map(
            lambda x: jax.device_put(x, sharding) if eqx.is_array(x) else x, members
        )
    f, w0, opt, data = members

    length = _rows_per_chunk(chunk, steps)
    parallel = len(devices) > 1
    start = lambda *args: _start_members(settings, parallel, *args)
    run = lambda *args: _run_members(settings, parallel, length, *args)
    (state, _, compile_seconds) = _runner.timed(start, f, w0, opt, data)
    wall, done, chunks = 0.0, -1, []
    while done < steps:
        n = min(length if done < 0 else length - 1, steps - done)
        (state, rows), seconds, compiled = _runner.timed(
            run, f, state, opt, data, jnp.asarray(eig_every, jnp.int32), jnp.asarray(n, jnp.int32)
        )
        wall, compile_seconds = wall + seconds, compile_seconds + compiled
        rows = jax.tree_util.tree_map(lambda x, n=n: np.asarray(x)[:, :n], jax.device_get(rows))
        chunks.append(rows)
        done += n

    host_state = jax.device_get(state)
    grid = []
    for i in range(S):
        row = []
        for j in range(V):
            m = i * V + j
            member_state = pick(host_state, m)
            recs = [
                _records(pick(c, m), labels, member_state, wall, compile_seconds) for c in chunks
            ]
            merged = _merge(recs, labels)
            attrs = _attributes(problems[i], processes, opts[j], steps, eig_k, eig_every, chunk)
            attrs.update({f"{k}_status": v for k, v in _statuses(member_state, labels).items()})
            attrs["completed_steps"] = done
            ds = build_dataset(merged, attrs)
            row.append(ds)
        grid.append(row)
    out = xr.combine_nested(grid, concat_dim=["seed", name], combine_attrs="drop_conflicts")
    out = out.assign_coords(seed=seeds, **{name: values}).transpose("seed", name, "flow", ...)
    out.attrs.update(swept=name, members=S * V, devices=len(devices), padded_members=pad)
    for key in ("fingerprint", "lr", "problem"):
        out.attrs.pop(key, None)  # they differ between members
    for i in range(S):
        for j in range(V):
            _report(processes, grid[i][j], throw=throw)
    return out
