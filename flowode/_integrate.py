"""An ODE solved one GD step at a time, with diffrax's solver and controller state carried.

`diffeqsolve` starts every solve afresh: a new first step size, a new FSAL evaluation,
a controller with no history. A run that is observed after every GD step and written
after every chunk must not depend on where it is cut, so flowode drives diffrax's own
`solver.step` and `controller.adapt_step_size` in a loop of its own and keeps all they
need to go on in `SolverCarry`. Steps are as long as the controller allows, also across
GD steps; the state at each integer time comes from the solver's dense output. The
solution at step k therefore does not depend on how the run is chunked.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar

from ._codes import RESULTS
from ._rkc import RKCState


class LastStep(eqx.Module):
    """The last accepted step, for dense output at times it spans."""

    t0: Float[Array, ""]
    t1: Float[Array, ""]
    dense_info: PyTree[Array]


class SolverCarry(eqx.Module):
    """Everything an ODE solve needs to continue: state, solver and controller state.

    Times are local to the current GD step (it starts at 0): the solver may have stepped
    past its end, and `last` interpolates the state there.
    """

    t: Float[Array, ""]
    y: PyTree[Array]
    solver_state: PyTree
    controller_state: PyTree
    dt: Float[Array, ""]  # the step size to try next
    made_jump: Bool[Array, ""]
    last: LastStep


class StepStats(eqx.Module):
    """Work done over one interval: vector-field evaluations and JVPs, accepted steps."""

    n_evals: Int[Array, ""]
    n_jvps: Int[Array, ""]
    n_steps: Int[Array, ""]
    n_rejected: Int[Array, ""]


def _evals_per_step(solver) -> int:
    if hasattr(solver, "evaluations_per_step"):  # flowode's own fixed-stage solvers
        return solver.evaluations_per_step
    tableau = getattr(solver, "tableau", None)
    if tableau is None:
        return 1
    stages = len(tableau.c) + 1
    return stages - 1 if getattr(tableau, "fsal", False) else stages


def start(
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
    term: diffrax.AbstractTerm,
    y0: PyTree[Array],
    args: PyTree,
    dt0: float | None,
) -> tuple[SolverCarry, StepStats]:
    """The carry at time 0 (first step size `dt0`, or the controller's) and the work spent."""
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(y0))
    t0 = jnp.zeros((), dtype)
    dt = None if dt0 is None else jnp.asarray(dt0, dtype)
    error_order = solver.error_order(term)
    # t1 = ∞: the solve goes on GD step after GD step (a constant step is then dt0 each).
    tnext, controller_state = controller.init(
        term, t0, jnp.asarray(jnp.inf, dtype), y0, dt, args, solver.func, error_order
    )
    dt = jnp.asarray(tnext - t0, dtype)
    solver_state = solver.init(term, t0, dt, y0, args)
    adaptive = not isinstance(controller, diffrax.ConstantStepSize)
    n_evals = 2 if (dt0 is None and adaptive) else 0  # diffrax's initial step selection
    n_jvps = 0
    if hasattr(solver_state, "n_evals"):
        n_evals, n_jvps = n_evals + solver_state.n_evals, solver_state.n_jvps
    elif getattr(getattr(solver, "tableau", None), "fsal", False):
        n_evals += 1  # the first-same-as-last evaluation
    zero = jnp.asarray(0, jnp.int32)
    stats = StepStats(jnp.asarray(n_evals, jnp.int32), jnp.asarray(n_jvps, jnp.int32), zero, zero)
    dense_shape = jax.eval_shape(
        lambda: solver.step(term, t0, t0 + dt, y0, args, solver_state, False)[2]
    )
    dense = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), dense_shape)
    last = LastStep(t0, t0, dense)
    carry = SolverCarry(t0, y0, solver_state, controller_state, dt, jnp.asarray(False), last)
    return carry, stats


def all_finite(tree: PyTree[Array]) -> Bool[Array, ""]:
    """Whether every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def integrate(
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
    term: diffrax.AbstractTerm,
    carry: SolverCarry,
    t1: Scalar,
    args: PyTree,
    *,
    max_steps: Int[Array, ""] | int,
    failed=None,
    scale=None,
) -> tuple[SolverCarry, PyTree[Array], StepStats, RESULTS]:
    """Step `carry` until its time reaches t1; (carry, y(t1), work, result).

    Steps are as long as the controller allows; the last one may end past t1, and y(t1)
    comes from the solver's dense output. A step that would end within 100 ulp of t1
    ends at t1 (so a constant step that divides 1 lands on every GD step).
    `failed(y) -> bool` stops the solve after an accepted step (result `diverged`); at
    most `max_steps` steps are tried (result `max_steps_reached`). `scale(y)` is None
    or (scales, relative): per leaf of y a positive scalar that divides the leaf and its
    error estimate before the controller sees them, so that atol is relative to it (a
    tolerance that follows the state to any size instead of ceasing to resolve it), and
    a bool, False for a leaf held to atol + rtol whatever its size (a log-amplitude,
    whose size says nothing about its accuracy, and whose error is a relative one).
    """
    dtype = carry.dt.dtype
    t1 = jnp.asarray(t1, dtype)
    error_order = solver.error_order(term)
    per_step = _evals_per_step(solver)
    counts_state = hasattr(carry.solver_state, "n_evals")  # flowode's RKC2 counts exactly
    adaptive = not isinstance(controller, diffrax.ConstantStepSize)
    snap = 100 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(t1), 1)

    def cond(state):
        c, stats, result = state
        return (c.t < t1) & (result == RESULTS.successful) & (stats.n_steps < max_steps)

    def body(state):
        c, stats, result = state
        t = c.t
        t_next = jnp.where(jnp.abs(t + c.dt - t1) <= snap, t1, t + c.dt)
        y1, y_err, dense, solver_state, solver_result = solver.step(
            term, t, t_next, c.y, args, c.solver_state, c.made_jump
        )
        scales = None if scale is None else scale(c.y)
        if scales is None:
            y0_s, y1_s, err_s = c.y, y1, y_err
        else:
            s, relative = scales

            # A leaf that is not relative is seen as of size 1: held to atol + rtol.
            # `relative` is a bool per leaf, or a NumPy mask per element of one.
            def view(x, d, r):
                if np.ndim(r) == 0:
                    return x / d if r else jnp.ones_like(x)
                return jnp.where(r, x / d, 1)

            y0_s, y1_s = (jax.tree_util.tree_map(view, y, s, relative) for y in (c.y, y1))
            err_s = jax.tree_util.tree_map(lambda x, d: x / d, y_err, s)
        keep, next_t0, next_t1, made_jump, controller_state, ctrl_result = (
            controller.adapt_step_size(
                t, t_next, y0_s, y1_s, args, err_s, error_order, c.controller_state
            )
        )
        dt = (next_t1 - next_t0).astype(dtype)
        if adaptive:
            # A trial step that overflowed (an unstable step: too long for the stiffness it
            # met) has no error estimate for the controller to scale by; its NaN would
            # become the next step size and every later one. Reject it and retry a quarter
            # as long. (A constant step keeps it: `failed` then reports the divergence.)
            finite = all_finite((y1, y_err))
            keep = keep & finite
            dt = jnp.where(finite, dt, c.dt / 4)
            # (Only its floating-point leaves: diffrax's `at_dtmin` is passed through as
            # given, a Python False at the start; a `where` would make it an array, and the
            # run's carry would change type after its first chunk and compile it again.)
            controller_state = jax.tree_util.tree_map(
                lambda x, z: jnp.where(finite, x, z) if eqx.is_inexact_array(x) else x,
                controller_state,
                c.controller_state,
            )
        # A step snapped to t1 says nothing about the step size the solution allows.
        snapped = t_next < t + c.dt
        dt = jnp.where(keep & snapped, jnp.maximum(dt, c.dt), dt)
        if counts_state:
            evals = solver_state.n_evals - c.solver_state.n_evals
            jvps = solver_state.n_jvps - c.solver_state.n_jvps
        else:
            evals, jvps = jnp.asarray(per_step, jnp.int32), jnp.asarray(0, jnp.int32)
        keep_tree = lambda a, b: jax.tree_util.tree_map(lambda x, z: jnp.where(keep, x, z), a, b)
        y = keep_tree(y1, c.y)
        rolled_back = c.solver_state
        if isinstance(rolled_back, RKCState):  # its retry re-estimates ρ, as RKC does
            rolled_back = rolled_back.after_rejection()
        new = SolverCarry(
            jnp.where(keep, t_next, t).astype(dtype),
            y,
            keep_tree(solver_state, rolled_back),
            controller_state,
            dt,
            jnp.where(keep, jnp.asarray(made_jump), c.made_jump),
            keep_tree(LastStep(t, t_next, dense), c.last),
        )
        stats = StepStats(
            stats.n_evals + evals,
            stats.n_jvps + jvps,
            stats.n_steps + 1,
            stats.n_rejected + jnp.where(keep, 0, 1),
        )
        solver_result, ctrl_result = RESULTS.promote(solver_result), RESULTS.promote(ctrl_result)
        result = RESULTS.where(solver_result == RESULTS.successful, ctrl_result, solver_result)
        if failed is not None:
            result = RESULTS.where(
                keep & failed(y) & (result == RESULTS.successful), RESULTS.diverged, result
            )
        return new, stats, result

    zero = jnp.asarray(0, jnp.int32)
    init = (carry, StepStats(zero, zero, zero, zero), RESULTS.successful)
    carry, stats, result = lax.while_loop(cond, body, init)
    result = RESULTS.where(
        (carry.t < t1) & (result == RESULTS.successful), RESULTS.max_steps_reached, result
    )
    last = carry.last

    def interpolate(_):
        return solver.interpolation_cls(t0=last.t0, t1=last.t1, **last.dense_info).evaluate(t1)

    past = carry.t > t1
    y_at = lax.cond(past, interpolate, lambda _: carry.y, None)
    return carry, y_at, stats, result


def shift(carry: SolverCarry, by: Scalar) -> SolverCarry:
    """The same carry with local time moved back by `by` (the next GD step starts at 0)."""
    last = LastStep(carry.last.t0 - by, carry.last.t1 - by, carry.last.dense_info)
    return eqx.tree_at(lambda c: (c.t, c.last), carry, (carry.t - by, last))
