"""Abstract processes: discrete GD and the ODE flows that model it share one interface.

A process starts from (loss, w0, lr, data) and advances a *carry* (all it needs to go
on) by a number of GD steps at a time, returning its states at every step. `simulate`
runs long trajectories as a sequence of such chunks, which is what makes results
stream to disk and runs resumable. Per saved state, a process says where its centre
is (the point it sits at), which GD iterate it predicts, and any predictions of its
own (`observables`).
"""

import abc
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree, Scalar

from .._spectral import FlatLoss, OracleCounts

State = PyTree[Array]
Carry = PyTree[Array]


class AbstractProcess(eqx.Module):
    """A process run from w0 for a number of GD steps; time is counted in GD steps."""

    name: ClassVar[str]

    @abc.abstractmethod
    def start(self, f: FlatLoss, w0: Float[Array, " n"], lr: Scalar, data: PyTree) -> Carry:
        """The carry at step 0."""

    @abc.abstractmethod
    def advance(
        self,
        f: FlatLoss,
        carry: Carry,
        lr: Scalar,
        data: PyTree,
        t0: Int[Array, ""],
        n: Int[Array, ""],
        length: int,
    ) -> tuple[State, Carry, OracleCounts, Any]:
        """Advance the carry from step t0 by n ≤ length steps (t0, n traced; length static).

        Returns the states at t0..t0+length (leading axis length+1; those past t0+n
        repeat the last), the carry at t0+n, the oracle calls spent and a status code.
        """

    def run(
        self, f: FlatLoss, w0: Float[Array, " n"], lr: Scalar, data: PyTree, steps: int
    ) -> tuple[State, OracleCounts, Any]:
        """States at steps 0..steps (leading axis steps+1), oracle counts, status code."""
        t0, n = jnp.asarray(0, jnp.int32), jnp.asarray(steps, jnp.int32)
        states, _, counts, result = self.advance(
            f, self.start(f, w0, lr, data), lr, data, t0, n, steps
        )
        return states, counts, result

    @abc.abstractmethod
    def center(self, state: State) -> Float[Array, " n"]:
        """The point the process sits at: its loss and sharpness are taken here."""

    def iterate(self, t: Scalar, state: State) -> Float[Array, " n"]:
        """The process's prediction of GD's iterate w_t (default: its centre)."""
        return self.center(state)

    def observables(
        self,
        f: FlatLoss,
        t: Scalar,
        state: State,
        U: Float[Array, "n k"],
        lr: Scalar,
        data: PyTree,
        w_gd: Float[Array, " n"],
    ) -> dict[str, Array]:
        """Per-step predictions (scalars or small arrays).

        `U`: top Hessian eigenvectors at the centre; `w_gd`: GD's iterate at this step.
        """
        return {"predicted_loss": f(self.center(state), data)}

    def describe(self) -> dict[str, str]:
        """Solver settings recorded in the Dataset's attributes."""
        return {}


def _is_finite_tree(y: State) -> Array:
    leaves = jax.tree_util.tree_leaves(y)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _tree_norm(y: State) -> Array:
    leaves = jax.tree_util.tree_leaves(y)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


class AbstractFlow(AbstractProcess):
    """An ODE dy/dt = F(y) in GD-step time, integrated by diffrax and saved at integer steps.

    Subclasses give the state (`init`), the vector field and the centre. The solve stops
    early, without raising, once the state is non-finite or grows past `blowup` times its
    start: the states after that are saved as non-finite, which `simulate` reports as
    divergence.
    """

    solver: eqx.AbstractVar[diffrax.AbstractSolver]
    stepsize_controller: eqx.AbstractVar[diffrax.AbstractStepSizeController]
    dt0: eqx.AbstractVar[float | None]
    max_steps_per_gd_step: eqx.AbstractVar[int]
    blowup: eqx.AbstractVar[float]

    # How many gradients and HVPs one evaluation / one JVP of the vector field costs.
    grads_per_eval: ClassVar[int] = 1
    hvps_per_jvp: ClassVar[int] = 1

    @abc.abstractmethod
    def init(self, f: FlatLoss, w0: Float[Array, " n"], lr: Scalar, data: PyTree) -> State:
        """The flow's state at t = 0."""

    def restart(self, y: State) -> State:
        """The state a new chunk starts from, given where the last one ended (default: y)."""
        return y

    @abc.abstractmethod
    def vector_field(self, f: FlatLoss, t: Scalar, y: State, lr: Scalar, data: PyTree) -> State:
        """dy/dt at time t (in GD steps)."""

    def size(self, y: State) -> Scalar:
        """The norm that `blowup` bounds (default: of the whole state)."""
        return _tree_norm(y)

    def __check_init__(self):
        name = type(self).__name__
        if not isinstance(self.solver, diffrax.AbstractSolver):
            raise TypeError(f"{name}: solver must be a diffrax solver, got {self.solver!r}.")
        if not isinstance(self.stepsize_controller, diffrax.AbstractStepSizeController):
            raise TypeError(
                f"{name}: stepsize_controller must be a diffrax step-size controller, "
                f"got {self.stepsize_controller!r}."
            )
        if self.dt0 is not None and not (isinstance(self.dt0, int | float) and self.dt0 > 0):
            raise ValueError(f"{name}: dt0 must be a positive number or None, got {self.dt0!r}.")
        if isinstance(self.stepsize_controller, diffrax.ConstantStepSize) and self.dt0 is None:
            raise ValueError(f"{name}: a ConstantStepSize controller needs dt0 (in GD steps).")
        steps = self.max_steps_per_gd_step
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"{name}: max_steps_per_gd_step must be an integer >= 1, got {steps!r}."
            )
        if not (isinstance(self.blowup, int | float) and self.blowup > 0):
            raise ValueError(f"{name}: blowup must be a positive number, got {self.blowup!r}.")

    def _max_steps(self, steps: int) -> int:
        if isinstance(self.stepsize_controller, diffrax.ConstantStepSize) and self.dt0:
            return int(np.ceil(steps / self.dt0)) + 1
        return self.max_steps_per_gd_step * steps + 1000

    def start(self, f, w0, lr, data):
        y0 = self.init(f, w0, lr, data)
        return y0, self.blowup * (1.0 + self.size(y0))  # the state, and the blow-up bound

    def advance(self, f, carry, lr, data, t0, n, length):
        y0, scale = carry
        y0 = self.restart(y0)

        def diverged(t, y, args, **kwargs):
            return jnp.logical_not(_is_finite_tree(y)) | (self.size(y) > scale)

        dtype = jax.tree_util.tree_leaves(y0)[0].dtype
        t0 = jnp.asarray(t0, dtype)
        t1 = t0 + jnp.asarray(n, dtype)
        ts = jnp.minimum(t0 + jnp.arange(length + 1, dtype=dtype), t1)  # repeats past t1
        term = diffrax.ODETerm(lambda t, y, args: self.vector_field(f, t, y, *args))
        sol = diffrax.diffeqsolve(
            term,
            self.solver,
            t0=t0,
            t1=t1,
            dt0=self.dt0,
            y0=y0,
            args=(lr, data),
            saveat=diffrax.SaveAt(ts=ts, solver_state=True),
            stepsize_controller=self.stepsize_controller,
            event=diffrax.Event(diverged),
            max_steps=self._max_steps(length),
            throw=False,
        )
        y1 = jax.tree_util.tree_map(lambda x: x[-1], sol.ys)
        return sol.ys, (y1, scale), self._counts(sol), sol.result

    def _counts(self, sol: diffrax.Solution) -> OracleCounts:
        """Gradient and HVP counts from the solver's own counters, or from its tableau."""
        state = sol.solver_state
        if hasattr(state, "n_evals"):  # flowode's RKC2 counts its accepted steps exactly
            # diffrax rolls the solver state back on a rejected step: charge each one
            # the stages of the last step (an estimate).
            rejected = sol.stats["num_rejected_steps"] * state.num_stages
            n_eval, n_jvp = state.n_evals + rejected, state.n_jvps
        else:
            tableau = getattr(self.solver, "tableau", None)
            stages = len(tableau.c) + 1 if tableau is not None else 1
            if tableau is not None and getattr(tableau, "fsal", False):
                stages -= 1
            n_eval, n_jvp = 1 + stages * sol.stats["num_steps"], 0
        return OracleCounts(
            n_grad=self.grads_per_eval * n_eval, n_hvp=self.hvps_per_jvp * n_jvp, n_third=0
        )

    def describe(self):
        ctrl = self.stepsize_controller
        out = {"solver": type(self.solver).__name__, "controller": type(ctrl).__name__}
        for tol in ("rtol", "atol"):
            if hasattr(ctrl, tol):
                out[tol] = str(getattr(ctrl, tol))
        return out
