"""`sweep`: the same processes for a grid of seeds and of one hyper-parameter, in one
compiled program.

The run program (`_runner.run_chunk`) is pure, so a sweep is that program mapped over
members (seed × value). Each member keeps its own solver and controller state, result
code and `diverged_at`. With several devices the member axis is sharded across them
(`jax.sharding.Mesh` + `NamedSharding`, and `jax.shard_map` runs each device's shard).
On each device the members are vmapped on accelerators, where batched work is nearly
free up to the device's width (a vmapped adaptive loop runs until its slowest member is
done, the others masked), and run one after another (`lax.map`) on CPUs, where the cost
is then the sum of their work.
"""

import dataclasses
import os
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _runner, _store
from ._problem import Problem
from ._simulate import (
    EIG_TOL,
    EIGS_AT,
    FALLBACK_TOL,
    GUARDS,
    _attributes,
    _check_eigs_at,
    _check_out,
    _check_positive_int,
    _check_precision,
    _check_same_run,
    _from_file,
    _in_memory,
    _optimiser,
    _records,
    _report,
    _resolve,
    _restore,
    _rows_per_chunk,
    _write_chunk,
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
    """fn over the members' axis of its first `n_members` arguments, in parallel (vmap).
    Loops inside run in lock-step."""
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


def _members(fn, n_members: int, parallel: bool, mesh: Mesh | None):
    """fn over the members' axis: vmapped (`parallel`) or one after another, and with a
    `mesh`, each device doing so for its own shard of the members (`jax.shard_map`)."""
    local = (_vmapped if parallel else _mapped)(fn, n_members)
    if mesh is None:
        return local

    def call(*args):
        dynamic, static = eqx.partition(args[:n_members], eqx.is_array)
        rest = args[n_members:]
        static_out = []  # the outputs' non-array leaves (fixed when traced)

        def shard(d, *rest):
            out, out_static = eqx.partition(local(*eqx.combine(d, static), *rest), eqx.is_array)
            static_out.append(out_static)
            return out

        specs = (jax.tree_util.tree_map(lambda _: PartitionSpec("member"), dynamic),)
        specs += (PartitionSpec(),) * len(rest)
        out = jax.shard_map(
            shard, mesh=mesh, in_specs=specs, out_specs=PartitionSpec("member"), check_vma=False
        )(dynamic, *rest)
        return eqx.combine(out, static_out[-1])

    return call


@eqx.filter_jit
def _start_members(settings, parallel: bool, mesh, f, w0, opt, data):
    one = lambda f, w, o, d: _runner.start(settings, f, w, o, d)
    return _members(one, 4, parallel, mesh)(f, w0, opt, data)


@eqx.filter_jit
def _run_members(settings, parallel: bool, mesh, length: int, f, state, opt, data, every, n, row0):
    """`run_chunk` for every member; compiled once per settings, shapes and `length`.
    Every member is at the same row, `row0`, given unbatched."""

    def one(f, s, o, d, every, n, row0):
        return _runner.run_chunk.__wrapped__(settings, f, s, o, d, every, n, length, row0)

    return _members(one, 4, parallel, mesh)(f, state, opt, data, every, n, row0)


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
    eigs_at: str = EIGS_AT[0],
    eig_tol: float = EIG_TOL,
    save_params: bool = False,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    chunk: int = 1000,
    devices: Sequence[jax.Device] | None = None,
    vmap: bool | None = None,
    precision: str = "highest",
    throw: bool = False,
) -> xr.Dataset:
    """Run `simulate`'s processes for every seed and every value of one hyper-parameter.

    `make_problem(seed)` gives each seed's problem (same shapes for every seed). The
    swept hyper-parameter is given as a sequence: `lr=[...]` for GD, or one field of an
    optimiser, e.g. `optimizer=fo.Adam(lr=[1e-3, 3e-3], beta2=0.99)`. Returns
    `simulate`'s Dataset with two more dims, `seed` and the swept name; every variable
    keeps its meaning per member. A member that fails does not stop the others. All
    members run in one program per chunk, sharded over several `devices` (default: all).
    On each device they are vmapped (`vmap=True`: every oracle call one batched call) or
    run one after another (`vmap=False`: the sum of the members' work, instead of
    members × the slowest, since vmapped solver loops run in lock-step). None (default):
    vmapped on accelerators, one after another on CPUs, where vmapping measured 4.5×
    slower at 4 members and 7× at 64 (benchmarks/README.md).

    `out`: a folder (made if missing) that receives one run file per member,
    `seed{seed}_{name}{index}.nc`, each a `simulate(out=...)` file appended after every
    chunk with its checkpoint; `resume=True` continues all of them from the last step
    every member completed, bit-identical to an uninterrupted sweep. `eigs_at`,
    `eig_tol` and `precision`: as
    `simulate`'s.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("sweep needs at least one seed.")
    name, values, make_opt = _swept(lr, optimizer)
    for key, value in (("steps", steps), ("eig_k", eig_k), ("eig_every", eig_every)):
        _check_positive_int(key, value)
    _check_positive_int("chunk", chunk)
    _check_out(out, resume, "the folder of the sweep's run files")
    _check_precision(precision)
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
    _check_eigs_at(eigs_at, eig_tol)
    settings = _runner.Settings(
        tuple(processes),
        int(eig_k),
        bool(save_params),
        tol=float(eig_tol),
        fallback_tol=FALLBACK_TOL,
        guards=GUARDS,
        eigs_at=eigs_at,
    )
    labels = settings.labels

    # Members: seed-major grid (seed, value), flattened.
    S, V = len(seeds), len(values)
    s_idx, v_idx = np.repeat(np.arange(S), V), np.tile(np.arange(V), S)
    attrs = [
        _attributes(problems[i], processes, opts[j], steps, eig_k, eig_every, chunk, settings)
        for i, j in zip(s_idx, v_idx, strict=True)
    ]
    paths = None
    if out is not None:
        os.makedirs(out, exist_ok=True)
        paths = [
            os.path.join(out, f"seed{seeds[i]}_{name}{j}.nc")
            for i, j in zip(s_idx, v_idx, strict=True)
        ]
    devices = list(jax.devices() if devices is None else devices)
    # Sharded, the member axis is padded to a multiple of the devices with copies of the
    # last member; their results are dropped.
    pad = (-len(s_idx)) % len(devices) if len(devices) > 1 else 0
    s_pad = np.concatenate([s_idx, np.full(pad, s_idx[-1])])
    v_pad = np.concatenate([v_idx, np.full(pad, v_idx[-1])])
    f = _pick(_stack([p.flat_loss for p in problems]), s_pad)
    w0 = _pick(_stack([p.flat_w0 for p in problems]), s_pad)
    data = _pick(_stack([p.data for p in problems]), s_pad)
    opt = _pick(_stack([o.astype(dtype) for o in opts]), v_pad)
    members = (f, w0, opt, data)
    # vmapped on accelerators (batched work is nearly free up to the device's width), one
    # after another on CPUs (where vmap's lock-step loops and selects cost more)
    parallel = devices[0].platform != "cpu" if vmap is None else bool(vmap)
    sharding = mesh = None
    if len(devices) > 1:
        mesh = Mesh(np.array(devices), ("member",))
        sharding = NamedSharding(mesh, PartitionSpec("member"))
        members = _put(members, sharding)
    f, w0, opt, data = members

    length = _rows_per_chunk(chunk, steps)
    start = lambda *args: _start_members(settings, parallel, mesh, *args)
    run = lambda *args: _run_members(settings, parallel, mesh, length, *args)
    if resume:
        like = jax.eval_shape(lambda: _start_members(settings, parallel, mesh, f, w0, opt, data))
        state, done, wall = _resume_members(paths, attrs, like, s_pad, v_pad, steps)
        compile_seconds = 0.0
        if sharding is not None:
            state = _put(state, sharding)
    else:
        (state, _, compile_seconds) = _runner.timed(start, f, w0, opt, data, precision=precision)
        wall, done = 0.0, -1
    chunks = []
    while done < steps:
        n = min(length if done < 0 else length - 1, steps - done)
        (state, rows), seconds, compiled = _runner.timed(
            run,
            f,
            state,
            opt,
            data,
            jnp.asarray(eig_every, jnp.int32),
            jnp.asarray(n, jnp.int32),
            jnp.asarray(done + 1, jnp.int32),
            precision=precision,
        )
        wall, compile_seconds = wall + seconds, compile_seconds + compiled
        rows = jax.tree_util.tree_map(lambda x, n=n: np.asarray(x)[:, :n], _to_host(rows))
        new_steps = np.arange(done + 1, done + 1 + n)
        if paths is None:
            chunks.append(rows)
        else:
            host_state = _to_host(state)  # (a collective: every process takes part)
            for m, path in enumerate(paths if jax.process_index() == 0 else []):
                member_state = _pick(host_state, m)
                records = _records(_pick(rows, m), labels, member_state, wall, compile_seconds)
                _write_chunk(path, new_steps, records, member_state, labels, attrs[m], steps, wall)
        done = int(new_steps[-1])

    host_state = _to_host(state)
    if paths is not None and jax.process_count() > 1:
        multihost_utils.sync_global_devices("flowode.sweep: member files written")
    datasets = []
    for m in range(S * V):
        if paths is None:
            member_state = _pick(host_state, m)
            recs = [
                _records(_pick(c, m), labels, member_state, wall, compile_seconds) for c in chunks
            ]
            datasets.append(_in_memory(recs, labels, member_state, attrs[m], done))
        else:
            datasets.append(_from_file(paths[m]))
    grid = [datasets[i * V : (i + 1) * V] for i in range(S)]
    result = xr.combine_nested(grid, concat_dim=["seed", name], combine_attrs="drop_conflicts")
    result = result.assign_coords(seed=seeds, **{name: values}).transpose("seed", name, "flow", ...)
    result.attrs.update(swept=name, members=S * V, devices=len(devices), padded_members=pad)
    for key in ("fingerprint", "lr", "problem"):
        result.attrs.pop(key, None)  # they differ between members
    for ds in datasets:
        _report(processes, ds, throw=throw)
    return result


def _to_host(tree):
    """Every member's values as NumPy arrays on this host: with several hosts
    (`jax.distributed`), the members sharded to other processes are gathered first."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def _pick(tree, idx):
    """Member(s) `idx` of every array in `tree` (the leading axis)."""
    return jax.tree_util.tree_map(lambda x: x[idx] if eqx.is_array(x) else x, tree)


def _put(tree, sharding):
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, sharding) if eqx.is_array(x) else x, tree
    )


def _resume_members(paths, attrs, like, s_pad, v_pad, steps):
    """(stacked state, completed step, wall seconds) from the members' run files.

    Every member resumes from the last step all of them completed: a sweep killed while
    it wrote a chunk has some members one chunk ahead, and their other checkpoint slot
    holds that step; they are rewound to it, and their later rows are written again.
    """
    saved = [_store.read(path)[0] for path in paths]
    for path, s, a in zip(paths, saved, attrs, strict=True):
        _check_same_run(path, s, a)
    done = min(int(s["completed_steps"]) for s in saved)
    if done > steps:
        raise ValueError(f"cannot resume the sweep to {steps} steps: it already has {done}.")
    one = jax.tree_util.tree_map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape[1:], x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x
        ),
        like,
    )
    states = []
    for path, s in zip(paths, saved, strict=True):
        _, _, arrays = _store.read(path, at=done)
        if int(s["completed_steps"]) != done:
            _store.rewind(path, done)
        states.append(_restore(one, arrays))
    # The padding members are copies of the last member, as when the sweep started.
    states += [states[-1]] * (len(s_pad) - len(paths))
    wall = max(float(s.get("wall_time_total", 0.0)) for s in saved)
    return _stack(states), done, wall
