"""Result codes of a run: diffrax's, and flowode's own, each with what to change."""

import diffrax


class RESULTS(diffrax.RESULTS):  # pyright: ignore
    """diffrax's result codes, extended by those of flowode's processes.

    Inside a compiled run they stay codes; `simulate` turns them into warnings (or raises
    with `throw=True`) and records them per flow in the Dataset.
    """

    diverged = (
        "the state diverged (non-finite, or past the flow's blow-up bound). Values stop "
        "where it did (see diverged_at); a smaller lr or a float64 run may help."
    )
    sdcp_not_converged = (
        "central flow's SDCP solve did not converge at some steps (see sdcp_residual), so "
        "Sigma is approximate there. Float64 or a smaller dt0 usually helps."
    )
    sdcp_no_solution = (
        "central flow's SDCP has no solution: a critical eigenvalue is above 2/lr but the "
        "sharpness does not depend on w along the flow (grad of lambda = 0, e.g. a "
        "quadratic). Central flow cannot hold it at 2/lr; use a smaller lr."
    )
    diverged_low_precision = (
        "central flow diverged in a low-precision dtype (float32 or below). With several "
        "critical directions its SDCP and third-derivative terms need more digits than "
        "float32 holds (it diverged at k = 8 where k <= 6 ran). Run it in float64: "
        "jax.config.update('jax_enable_x64', True) and the problem in float64."
    )
    basis_saturated = (
        "central flow: every tracked eigenvalue rose above track_threshold, so a further "
        "one may turn critical unseen. Use CentralFlow(max_k=...) with a larger max_k."
    )


# diffrax's own failures, said as what to change; {other} is a solver to try instead of
# the one used (`_other_solver`).
_ADVICE = {
    "max_steps_reached": (
        "the solver reached its step limit (max_steps_per_gd_step in one GD step); the "
        "flow is stiffer than this solver handles at this tolerance. Raise "
        "max_steps_per_gd_step, loosen rtol/atol, or use {other}."
    ),
    "dt_min_reached": (
        "the step size fell below the controller's dtmin. Loosen rtol/atol, lower dtmin, "
        "or use {other}."
    ),
    "max_steps_rejected": (
        "too many rejected steps in a row. Loosen rtol/atol or give the controller a smaller dt0."
    ),
}


def _other_solver(solver: str | None) -> str:
    """A solver to suggest, never the one that failed."""
    if solver == "RKC2":
        # RKC2's stability region is a thin band about the negative real axis: stiff
        # eigenvalues off the axis (momentum, the rod at scale) fall outside it.
        return (
            "another solver: the flow used fo.RKC2, whose stability region is a thin band "
            "about the negative real axis; where the stiff eigenvalues are complex (a "
            "momentum optimiser's flow, the rod at scale), solver=diffrax.Tsit5() can take "
            "longer steps"
        )
    used = f" (the flow used {solver})" if solver else ""
    return f"a stabilised solver, fo.RKC2(){used}"


def code(item) -> int:
    """The integer value of a result item (as stored in a Dataset)."""
    return int(item._value)


def name(value: int) -> str:
    """The short name of an integer result code ('successful', 'diverged', ...)."""
    for key, item in RESULTS._name_to_item.items():
        if code(item) == int(value):
            return key
    return f"code {int(value)}"


def message(value: int, solver: str | None = None) -> str:
    """What an integer result code means, and what to change (`solver`: the name of the
    solver that was used, so that the advice names another)."""
    key = name(value)
    if key in _ADVICE:
        return _ADVICE[key].format(other=_other_solver(solver))
    if key in RESULTS._name_to_item:
        return RESULTS[RESULTS._name_to_item[key]]
    return f"unknown result code {int(value)}."
