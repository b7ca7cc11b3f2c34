"""One GD step of an ODE at a time, with diffrax's solver and controller state carried.

`diffeqsolve` starts every solve afresh: a new first step size, a new FSAL evaluation,
a controller with no history. A run that is cut into GD steps (observed after each)
and chunks (written after each) must not depend on where it is cut, so flowode drives
diffrax's own `solver.step` and `controller.adapt_step_size` in a loop of its own and
keeps everything they need to go on in `SolverCarry`. Steps are clipped at every
integer time, so the solution at step k does not depend on how the run is chunked.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar

from ._codes import RESULTS


class SolverCarry(eqx.Module):
    """Everything an ODE solve needs to continue: state, solver and controller state."""

    y: PyTree[Array]
    solver_state: PyTree
    controller_state: PyTree
    dt: Float[Array, ""]  # the step size to try next
    made_jump: Bool[Array, ""]


class StepStats(eqx.Module):
    """Work done over one interval: vector-field evaluations and JVPs, accepted steps."""

    n_evals: Int[Array, ""]
    n_jvps: Int[Array, ""]
    n_steps: Int[Array, ""]
    n_rejected: Int[Array, ""]


def _evals_per_step(solver) -> int:
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
    return SolverCarry(y0, solver_state, controller_state, dt, jnp.asarray(False)), stats


def integrate(
    solver: diffrax.AbstractSolver,
    controller: diffrax.AbstractStepSizeController,
    term: diffrax.AbstractTerm,
    carry: SolverCarry,
    t0: Scalar,
    t1: Scalar,
    args: PyTree,
    *,
    max_steps: int,
    failed=None,
) -> tuple[SolverCarry, StepStats, RESULTS]:
    """Advance `carry` from t0 to t1 with adaptive (or constant) steps clipped at t1.

    `failed(y) -> bool` stops the solve after an accepted step (result `diverged`).
    At most `max_steps` steps are tried; then the result is `max_steps_reached`.
    """
    dtype = carry.dt.dtype
    t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)
    error_order = solver.error_order(term)
    per_step = _evals_per_step(solver)
    counts_state = hasattr(carry.solver_state, "n_evals")  # flowode's RKC2 counts exactly
    clip_floor = t1 - 100 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(t1), 1)

    def cond(state):
        t, c, stats, result = state
        return (t < t1) & (result == RESULTS.successful) & (stats.n_steps < max_steps)

    def body(state):
        t, c, stats, result = state
        t_next = jnp.where(t + c.dt >= clip_floor, t1, t + c.dt)
        y1, y_err, _, solver_state, solver_result = solver.step(
            term, t, t_next, c.y, args, c.solver_state, c.made_jump
        )
        keep, next_t0, next_t1, made_jump, controller_state, ctrl_result = (
            controller.adapt_step_size(
                t, t_next, c.y, y1, args, y_err, error_order, c.controller_state
            )
        )
        proposal = (next_t1 - next_t0).astype(dtype)
        # A step clipped at t1 says nothing about the step size the solution allows.
        clipped = t_next < t + c.dt
        dt = jnp.where(keep & clipped, jnp.maximum(proposal, c.dt), proposal)
        if counts_state:
            evals = solver_state.n_evals - c.solver_state.n_evals
            jvps = solver_state.n_jvps - c.solver_state.n_jvps
        else:
            evals, jvps = jnp.asarray(per_step, jnp.int32), jnp.asarray(0, jnp.int32)
        keep_tree = lambda a, b: jax.tree_util.tree_map(lambda x, z: jnp.where(keep, x, z), a, b)
        y = keep_tree(y1, c.y)
        new = SolverCarry(
            y,
            keep_tree(solver_state, c.solver_state),
            controller_state,
            dt,
            jnp.where(keep, jnp.asarray(made_jump), c.made_jump),
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
        return jnp.where(keep, next_t0, t).astype(dtype), new, stats, result

    zero = jnp.asarray(0, jnp.int32)
    init = (t0, carry, StepStats(zero, zero, zero, zero), RESULTS.successful)
    t, carry, stats, result = lax.while_loop(cond, body, init)
    result = RESULTS.where(
        (t < t1) & (result == RESULTS.successful), RESULTS.max_steps_reached, result
    )
    return carry, stats, result
