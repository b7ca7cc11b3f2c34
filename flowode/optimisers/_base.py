"""The optimiser axis: a discrete update rule, its state, its preconditioner, the ODE of
its state in GD-step time, and the stability threshold on its preconditioned sharpness.

Every process (the discrete run and each flow) takes an optimiser as a traced argument:
its hyper-parameters are arrays, so a new value never recompiles and a sweep can `vmap`
over them. The learning rate may instead be a schedule, a callable of the step (optax's
schedules work as given); a schedule is part of the compiled program, so a new one
recompiles. A schedule may reach 0 (warm-up from 0, decay to 0): a discrete step at lr 0
does not move, the flows (in GD-step time, with η(t) evaluated at real times) have a
vanishing vector field there, and λ₁(P⁻¹H) is 0, as P⁻¹ ∝ η; the threshold does not
depend on η. A negative or non-finite lr is refused before the run.
"""

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PyTree, Scalar

OptState = PyTree[Array]
Schedule = Callable[[Any], Any]


def hyper(value: Any) -> Any:
    """A number becomes an array (traced under jit); a schedule stays a callable."""
    if callable(value):
        return value
    return jnp.asarray(value)


def concrete(x: Any) -> np.ndarray | None:
    """x's values, or None where it is traced (checked by the caller's caller).

    A hyper-parameter is a number; a sequence of numbers (one axis) is a sweep's values,
    which `fo.sweep` takes and `simulate` refuses.
    """
    if isinstance(x, jax.core.Tracer) or callable(x):
        return None
    value = np.asarray(x, dtype=float)
    if value.ndim > 1:
        raise ValueError(
            f"a hyper-parameter must be a number, got an array of shape {value.shape}."
        )
    return value


def check_range(owner: str, name: str, value: Any, lo: float, hi: float | None, lo_open: bool):
    xs = concrete(value)
    if xs is None:
        return
    for x in np.atleast_1d(xs):
        low_ok = x > lo if lo_open else x >= lo
        high_ok = hi is None or x < hi
        if not (np.isfinite(x) and low_ok and high_ok):
            where = f"{'(' if lo_open else '['}{lo:g}, {'∞)' if hi is None else f'{hi:g})'}"
            raise ValueError(f"{owner}: {name} must be in {where}, got {float(x)!r}.")


def check_scalar(optimiser: "AbstractOptimiser"):
    """`simulate` runs one value of each hyper-parameter; sequences are for `fo.sweep`."""
    for field in dataclasses.fields(optimiser):
        value = getattr(optimiser, field.name)
        if not callable(value) and np.ndim(value) != 0:
            raise ValueError(
                f"{type(optimiser).__name__}: {field.name} is a sequence of values; "
                "simulate runs one value, fo.sweep runs a sequence."
            )


class AbstractOptimiser(eqx.Module):
    """An update rule w_{k+1} = w_k − (its step), with a state (momentum, ν) of its own.

    Subclasses give `init`, the discrete `step`, the stable `flow` (the first-order ODE
    of w and the state in GD-step time) and `threshold`: λ₁(P⁻¹H) above it makes the
    linearised map flip (an eigenvalue below −1), which is the edge of stability.
    `inverse_preconditioner` is P⁻¹, a scalar or a diagonal: for GD it is η, so the
    preconditioned sharpness is ηS and its threshold 2.
    """

    name: ClassVar[str]
    lr: eqx.AbstractVar[Any]  # an array, or a schedule of the step

    def learning_rate(self, t: Scalar, dtype=None) -> Scalar:
        """η at step t, in `dtype` (default: t's, a float time). The discrete process gives
        an integer t, as optax gives its schedules, so that both evaluate them alike."""
        value = self.lr(t) if callable(self.lr) else self.lr
        return jnp.asarray(value, dtype=jnp.result_type(t) if dtype is None else dtype)

    @abc.abstractmethod
    def init(self, w0: Float[Array, " n"], g0: Float[Array, " n"]) -> OptState:
        """The state at step 0, from w₀ and ∇L(w₀)."""

    def flow_init(self, w0: Float[Array, " n"], g0: Float[Array, " n"]) -> OptState:
        """The stable flow's state at t = 0. Default: `init`. An optimiser whose flow
        carries post-update moments that start at 0 (Adam, RMSProp from ν₀ = 0) starts
        them after the first update instead, so that P⁻¹ is not η/ε at t = 0."""
        return self.init(w0, g0)

    @abc.abstractmethod
    def step(
        self, w: Float[Array, " n"], state: OptState, g: Float[Array, " n"], t: Scalar
    ) -> tuple[Float[Array, " n"], OptState]:
        """(w_{k+1}, state_{k+1}) from w_k, state_k and g = ∇L(w_k), at step t = k (an
        integer array)."""

    def increment(
        self, state: OptState, g: Float[Array, " n"], t: Scalar
    ) -> tuple[Float[Array, " n"], OptState]:
        """(w_{k+1} − w_k, state_{k+1}), the increment formed without w: every rule here
        adds its increment to w, so `step` from w = 0 gives it with no cancellation (a
        difference w_{k+1} − w_k loses the digits of a step much smaller than w)."""
        return self.step(jnp.zeros_like(g), state, g, t)

    def oscillating(self, state: OptState) -> PyTree[bool]:
        """Per state leaf, whether it oscillates with w at the edge of stability (a
        momentum: rod flow splits it into a centre and a half-length) or is smooth (a
        second moment ν, an average of g² over many steps: carried as a centre only).
        Default: every leaf oscillates."""
        return jax.tree_util.tree_map(lambda _: True, state)

    @abc.abstractmethod
    def flow(
        self, t: Scalar, w: Float[Array, " n"], state: OptState, g: Float[Array, " n"]
    ) -> tuple[Float[Array, " n"], OptState]:
        """(dw/dt, dstate/dt): the stable flow, in GD-step time, with g = ∇L(w)."""

    def inverse_preconditioner(self, state: OptState, t: Scalar) -> Array:
        """P⁻¹ at this state: a scalar, or the diagonal (n,). Default: η(t)."""
        return self.learning_rate(t)

    @property
    @abc.abstractmethod
    def threshold(self) -> Scalar:
        """The edge of stability of λ₁(P⁻¹H)."""

    @abc.abstractmethod
    def to_optax(self) -> optax.GradientTransformation:
        """The same update as an optax transformation (for users, and to check ours)."""

    @property
    def has_state(self) -> bool:
        return True

    def hyperparameters(self) -> dict[str, Any]:
        """Name and value of every hyper-parameter, for a Dataset's attributes."""
        out = {}
        for field in dataclasses.fields(self):
            field, value = field.name, getattr(self, field.name)
            if callable(value):
                name = getattr(value, "__qualname__", type(value).__name__)
                out[field] = f"schedule {name.split('.<locals>')[0]}"  # e.g. linear_schedule
            elif isinstance(value, bool | str):
                out[field] = str(value)
            else:
                out[field] = float(_shortest(value))
        return out

    def astype(self, dtype) -> "AbstractOptimiser":
        """The same optimiser with its float hyper-parameters in `dtype`."""

        def cast(x):
            if isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(x.dtype, jnp.floating):
                return jnp.asarray(x, dtype)
            return x

        return jax.tree_util.tree_map(cast, self)


def relax(beta: Array, target: Array, x: Array) -> tuple[Array, Array]:
    """(x to use, dx/dt) for a post-update EMA x_k = βx_{k−1} + (1 − β)·target.

    x relaxes to the target at rate (1 − β)/β; at β = 0 it is the target itself
    (an infinitely fast relaxation), so it is replaced by it and does not move.
    """
    fast = beta == 0
    rate = (1 - beta) / jnp.where(fast, 1, beta)
    return jnp.where(fast, target, x), jnp.where(fast, 0, rate * (target - x))


def _shortest(x: Any) -> Any:
    """A float hyper-parameter as the float64 of its shortest decimal (0.99, not 0.9900000095)."""
    if isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(x.dtype, jnp.floating):
        return np.float64(np.format_float_positional(np.asarray(x)[()], unique=True))
    return x


def threshold_value(optimiser: AbstractOptimiser) -> float:
    """The threshold as a Python float, from the hyper-parameters as the user wrote them."""
    return float(jax.tree_util.tree_map(_shortest, optimiser).threshold)


def check_lr(owner: str, lr: Any):
    if callable(lr):
        return
    check_range(owner, "lr", lr, 0.0, None, lo_open=True)


def check_schedule(optimiser: AbstractOptimiser, steps: int, dtype):
    """A schedule must give a finite lr ≥ 0 at every step of the run: checked once, before
    the run, so that nothing fails halfway through it. A step at lr 0 does not move
    (warm-up from 0, decay to 0)."""
    if not callable(optimiser.lr):
        return
    k = jnp.arange(steps + 1)
    try:
        values = np.asarray(jax.vmap(lambda k: optimiser.learning_rate(k, dtype))(k))
    except Exception as e:  # a schedule that cannot take a traced step
        raise ValueError(
            f"{type(optimiser).__name__}: the lr schedule failed at a traced step: {e}"
        ) from None
    bad = ~(np.isfinite(values) & (values >= 0))
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(
            f"{type(optimiser).__name__}: the lr schedule gives {float(values[k])!r} at step {k}; "
            "it must be finite and at least 0 at every step of the run."
        )
