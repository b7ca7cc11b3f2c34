"""Abstract processes: discrete GD and the ODE flows that model it share one interface.

A process starts from (loss, w0, optimiser, data) and advances a *carry* (all it needs to go
on) one GD step at a time. The run program scans that step, observing every process
after it, so a run is one compiled program per chunk whatever its length, and the
carry is the checkpoint a run resumes from. Per state, a process says where its centre
is (the point it sits at), which GD iterate it predicts, and any predictions of its
own (`observables`).
"""

import abc
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar

from .. import _integrate
from .._codes import RESULTS
from .._integrate import SolverCarry
from .._spectral import FlatLoss, OracleCounts
from ..optimisers import GD, AbstractOptimiser

State = PyTree[Array]
Carry = PyTree[Array]


class AbstractProcess(eqx.Module):
    """A process run from w0, one GD step at a time; time is counted in GD steps.

    `start` gives the carry at step 0 (all the process needs to go on) and `advance`
    takes it from step k to k + 1. Both are pure and traced, so a run of any length is
    one `lax.scan`, and the carry is what a checkpoint holds.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def start(
        self, f: FlatLoss, w0: Float[Array, " n"], opt: AbstractOptimiser, data: PyTree
    ) -> tuple[Carry, OracleCounts]:
        """The carry at step 0, and the oracle calls spent on it."""

    @abc.abstractmethod
    def advance(
        self, f: FlatLoss, carry: Carry, opt: AbstractOptimiser, data: PyTree, k: Int[Array, ""]
    ) -> tuple[Carry, OracleCounts, RESULTS]:
        """The carry at step k + 1 from the carry at step k, oracle calls, result code."""

    def state(self, carry: Carry) -> State:
        """The state that `center`, `iterate` and `observables` read (default: the carry)."""
        return carry

    @abc.abstractmethod
    def center(self, state: State) -> Float[Array, " n"]:
        """The point the process sits at: its loss and sharpness are taken here."""

    def iterate(self, t: Scalar, state: State) -> Float[Array, " n"]:
        """The process's prediction of GD's iterate w_t (default: its centre)."""
        return self.center(state)

    def eigs(self, state: State, k: int) -> tuple[Float[Array, " k"], Float[Array, "n k"]] | None:
        """The top-k Hessian eigenpairs at the centre, if the process has them already
        (refined as well as the observer's one Rayleigh–Ritz step would); None (default)
        lets the observer find them."""
        return None

    def loss_and_grad(self, f: FlatLoss, carry: Carry, data: PyTree) -> tuple[Array, Array]:
        """L and ∇L at the centre (a process that has them already returns them)."""
        return jax.value_and_grad(f)(self.center(self.state(carry)), data)

    def observables(
        self,
        f: FlatLoss,
        t: Scalar,
        state: State,
        U: Float[Array, "n k"],
        opt: AbstractOptimiser,
        data: PyTree,
        w_gd: Float[Array, " n"],
    ) -> dict[str, Array]:
        """Per-step predictions (scalars or small arrays).

        `U`: top Hessian eigenvectors at the centre; `w_gd`: GD's iterate at this step.
        """
        return {"predicted_loss": f(self.center(state), data)}

    def run(
        self, f: FlatLoss, w0: Float[Array, " n"], opt: AbstractOptimiser, data: PyTree, steps: int
    ) -> tuple[Float[Array, "steps1 n"], OracleCounts, Int[Array, ""]]:
        """Centres at steps 0..steps, total oracle calls and the first failure's code.

        Dynamics only, no observation: what benchmarks time and tests check. `opt` may be
        a learning rate, for plain GD.
        """
        if not isinstance(opt, AbstractOptimiser):
            opt = GD(opt)
        opt = opt.astype(w0.dtype)
        carry, counts = self.start(f, w0, opt, data)

        def step(c, k):
            carry, counts, result = c
            carry, new, res = self.advance(f, carry, opt, data, k)
            counts = counts.plus(new)
            result = RESULTS.where(result == RESULTS.successful, res, result)
            return (carry, counts, result), self.center(self.state(carry))

        counts = OracleCounts(*(jnp.asarray(c, jnp.int32) for c in counts))
        (_, counts, result), centres = jax.lax.scan(
            step, (carry, counts, RESULTS.successful), jnp.arange(steps)
        )
        first = self.center(self.state(carry))
        return jnp.concatenate([first[None], centres]), counts, result._value

    def describe(self) -> dict[str, str]:
        """Solver settings recorded in the Dataset's attributes."""
        return {}

    def supports(self, opt: AbstractOptimiser) -> bool:
        """Whether this process models `opt` (default: plain GD, with any lr schedule)."""
        return isinstance(opt, GD)

    @property
    def models(self) -> str:
        """The optimisers `supports` accepts, in words, for the error that refuses another."""
        return "plain GD (with any lr schedule)"

    def optimiser_state(self, state: State) -> PyTree[Array]:
        """The optimiser's state (momentum, ν) at this state; () where it has none."""
        return ()


def plain_number(value):
    """A NumPy scalar option as the Python number it holds (anything else unchanged).

    Equinox traces NumPy scalars as arrays, and a traced floor cannot say whether it is 0
    (no floor) when the program is built; a Python number stays static.
    """
    if isinstance(value, np.generic) and np.ndim(value) == 0 and not isinstance(value, np.bool_):
        return value.item()
    return value


def relative_scale(y: PyTree[Array]) -> tuple[PyTree[Scalar], PyTree[bool]]:
    """Per leaf, the RMS of an array (atol relative to it, and rtol) and 1 for a scalar
    (held to atol + rtol): what a flow's tolerances are relative to.

    Tolerances then follow the state to any size (parameters at 1e-6 are resolved as well
    as at 1e3). A scalar such as a log-amplitude is held to atol + rtol whatever its size:
    its size says nothing about how accurately it is known, and its error is relative.
    """

    def leaf(x):
        if x.ndim == 0:
            return jnp.ones((), x.dtype)
        return jnp.maximum(jnp.sqrt(jnp.mean(x**2)), jnp.sqrt(jnp.finfo(x.dtype).tiny))

    return (
        jax.tree_util.tree_map(leaf, y),
        jax.tree_util.tree_map(lambda x: x.ndim > 0, y),
    )


def _tree_norm(y: State) -> Array:
    leaves = jax.tree_util.tree_leaves(y)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


class _Flat:
    """How the solver sees a flow's state: one vector when all its leaves share one
    floating dtype, else the pytree as it is.

    Each tree operation of a solver step (its stages' linear combinations, the error
    estimate and its norm, the controller's selects, the dense output) is then one array
    operation instead of one per leaf: rod flow on MLP-433 took 3.2-3.3× GD's wall time
    against 3.4-3.8× with its three leaves (alternating runs, 2 CPU cores). The error
    norm is the same RMS over all elements, so the steps are those of the pytree.
    """

    def __init__(self, template: State | None):
        leaves = [] if template is None else jax.tree_util.tree_leaves(template)
        dtypes = {jnp.result_type(x) for x in leaves}
        self.on = (
            len(leaves) > 1 and len(dtypes) == 1 and jnp.issubdtype(dtypes.pop(), jnp.floating)
        )
        if self.on:
            self.treedef = jax.tree_util.tree_structure(template)
            self.shapes = [jnp.shape(x) for x in leaves]
            self.sizes = [int(np.prod(s)) for s in self.shapes]

    def ravel(self, tree: State) -> PyTree[Array]:
        if not self.on:
            return tree
        return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])

    def unravel(self, y: PyTree[Array]) -> State:
        if not self.on:
            return y
        parts = jnp.split(y, np.cumsum(self.sizes)[:-1])
        leaves = [jnp.reshape(x, s) for x, s in zip(parts, self.shapes, strict=True)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def scales(self, out):
        """`AbstractFlow.error_scale`'s per-leaf (scales, relative) laid out as the state:
        per element, a scale and (as a NumPy mask) whether it is relative."""
        if out is None or not self.on:
            return out
        scales, relative = out
        s = [
            jnp.broadcast_to(x, shape).ravel()
            for x, shape in zip(jax.tree_util.tree_leaves(scales), self.shapes, strict=True)
        ]
        r = [
            np.full(size, bool(x))
            for x, size in zip(jax.tree_util.tree_leaves(relative), self.sizes, strict=True)
        ]
        return jnp.concatenate(s), np.concatenate(r)


class FlowCarry(eqx.Module):
    """An ODE flow's carry: its state at the current GD step, the solver's carry (which
    may be ahead of it), the blow-up bound and the solver steps taken so far."""

    y: PyTree[Array]
    solve: SolverCarry
    bound: Float[Array, ""]
    steps_taken: Int[Array, ""]  # solver steps so far, for the step budget


class AbstractFlow(AbstractProcess):
    """An ODE dy/dt = F(y) in GD-step time, integrated by a diffrax solver step by step.

    Subclasses give the state (`init`), the vector field and the centre. Each GD step
    advances the solve to k + 1 with the solver's and controller's state carried on, so
    adaptive steps stay as long as they were (they may span GD steps: the state at k + 1
    is then the solver's dense output) and results do not depend on chunking. The
    solve stops, without raising, once the state is non-finite or grows past `blowup`
    times its start (result `diverged`); the states after that are non-finite.
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
    def init(
        self, f: FlatLoss, w0: Float[Array, " n"], opt: AbstractOptimiser, data: PyTree
    ) -> State:
        """The flow's state at t = 0."""

    def restart(self, y: State) -> State:
        """The state a GD step starts from, given where the last one ended (default: y)."""
        return y

    @abc.abstractmethod
    def vector_field(
        self, f: FlatLoss, t: Scalar, y: State, opt: AbstractOptimiser, data: PyTree
    ) -> State:
        """dy/dt at time t (in GD steps)."""

    def error_scale(self, y: State) -> tuple[PyTree[Scalar], PyTree[bool]] | None:
        """Per leaf of the state, the scale atol is relative to and whether rtol applies
        (`_integrate.integrate`); None (default): diffrax's absolute atol."""
        return None

    def size(self, y: State) -> Scalar:
        """The norm that `blowup` bounds (default: of the whole state)."""
        return _tree_norm(y)

    def explain(self, y: State, result: RESULTS) -> RESULTS:
        """A more precise code for a failed step, from the state it failed in (default: as is)."""
        return result

    def init_counts(self, y0: State) -> OracleCounts:
        """Oracle calls that `init` spent beyond its vector-field evaluations."""
        return OracleCounts()

    def counts(self, y1: State, n_evals: Int[Array, ""], n_jvps: Int[Array, ""]) -> OracleCounts:
        """Oracle calls of one GD step that made n_evals evaluations and n_jvps JVPs."""
        return OracleCounts(
            n_grad=self.grads_per_eval * n_evals, n_hvp=self.hvps_per_jvp * n_jvps, n_third=0
        )

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

    def _term(self, f, k, first=None, flat=None):
        # Each GD step is solved in local time τ ∈ [0, 1], so time stays exact at any k.
        # The solver sees the state as `flat` lays it out (one vector where it can).
        flat = _Flat(None) if flat is None else flat

        def field(tau, y, args):
            return flat.ravel(self.vector_field(f, k + tau, flat.unravel(y), *args))

        if first is None:
            return diffrax.ODETerm(field)
        # `first`: the field at τ = 0, evaluated already (a constant step that divides 1
        # starts every GD step at τ = 0 exactly, from the state it was evaluated at).
        first = flat.ravel(first)
        return diffrax.ODETerm(
            lambda tau, y, args: lax.cond(tau == 0, lambda: first, lambda: field(tau, y, args))
        )

    def _check_tolerance(self, y0: State, dtype) -> None:
        """One sentence for tolerances the dtype cannot meet (relative tolerances only)."""
        ctrl = self.stepsize_controller
        if not isinstance(ctrl, diffrax.PIDController) or self.error_scale(y0) is None:
            return
        try:
            tol = float(ctrl.rtol) + float(ctrl.atol)
        except (TypeError, jax.errors.ConcretizationTypeError):  # traced: not checked
            return
        floor = 4 * float(jnp.finfo(dtype).eps)
        if tol < floor:
            raise ValueError(
                f"{type(self).__name__}: rtol + atol = {tol:.3g} is below what "
                f"{jnp.dtype(dtype).name} resolves (4 ulp, {floor:.3g}; the tolerances are "
                "relative to the state's scale), so the error estimate would be rounding "
                "noise and the steps would shrink to the step limit. Loosen the tolerances "
                "or run in float64."
            )

    def start(self, f, w0, opt, data):
        y0 = self.init(f, w0, opt, data)
        dtype = w0.dtype
        self._check_tolerance(y0, dtype)
        flat = _Flat(y0)
        term = self._term(f, jnp.zeros((), dtype), flat=flat)
        solve, stats = _integrate.start(
            self.solver,
            self.stepsize_controller,
            term,
            flat.ravel(self.restart(y0)),
            (opt, data),
            self.dt0,
        )
        solve = eqx.tree_at(lambda s: s.y, solve, flat.ravel(y0))
        bound = jnp.asarray(self.blowup * (1.0 + self.size(y0)), dtype)
        counts = self.counts(y0, stats.n_evals, stats.n_jvps)
        counts = counts.plus(self.init_counts(y0))
        return FlowCarry(y0, solve, bound, jnp.asarray(0, jnp.int32)), counts

    def advance(self, f, carry, opt, data, k, first=None):
        """As `AbstractProcess.advance`; `first` is the field at step k if known already."""
        dtype = carry.bound.dtype
        flat = _Flat(carry.y)
        restarted = flat.ravel(self.restart(flat.unravel(carry.solve.y)))
        solve = eqx.tree_at(lambda s: s.y, carry.solve, restarted)

        def failed(y):
            return self._failed(flat.unravel(y), carry.bound)

        solve, y, stats, result = _integrate.integrate(
            self.solver,
            self.stepsize_controller,
            self._term(f, jnp.asarray(k, dtype), first, flat),
            solve,
            1.0,
            (opt, data),
            max_steps=self._max_steps(k) - carry.steps_taken,
            failed=failed,
            scale=lambda y: flat.scales(self.error_scale(flat.unravel(y))),
        )
        end = flat.unravel(solve.y)
        result = self.explain(end, result)
        # Past a failure the state is not a solution: make it non-finite from here on.
        bad = result != RESULTS.successful
        nan = lambda tree: jax.tree_util.tree_map(lambda x: jnp.where(bad, jnp.nan, x), tree)
        y = nan(flat.unravel(y))
        solve = _integrate.shift(eqx.tree_at(lambda s: s.y, solve, nan(solve.y)), 1.0)
        counts = self.counts(end, stats.n_evals, stats.n_jvps)
        taken = carry.steps_taken + stats.n_steps
        return FlowCarry(y, solve, carry.bound, taken), counts, result

    def _failed(self, y: State, bound: Float[Array, ""]) -> Bool[Array, ""]:
        """Whether a state ends the solve: non-finite, or grown past the blow-up bound."""
        return jnp.logical_not(_integrate.all_finite(y)) | (self.size(y) > bound)

    def _max_steps(self, k: Int[Array, ""]) -> Int[Array, ""]:
        """The step budget up to GD step k + 1: on average `max_steps_per_gd_step`."""
        if isinstance(self.stepsize_controller, diffrax.ConstantStepSize) and self.dt0:
            return (k + 1) * (int(np.ceil(1.0 / self.dt0)) + 1)
        return (k + 1) * self.max_steps_per_gd_step + 1000

    def state(self, carry):
        return carry.y

    def describe(self):
        ctrl = self.stepsize_controller
        out = {"solver": type(self.solver).__name__, "controller": type(ctrl).__name__}
        for tol in ("rtol", "atol"):
            if hasattr(ctrl, tol):
                out[tol] = str(getattr(ctrl, tol))
        return out
