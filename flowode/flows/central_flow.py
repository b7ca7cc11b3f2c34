"""Central flow (Cohen, Damian et al. 2025): GD's time-averaged path at the edge of stability.

    dw/dt = −η [∇L(w) + ½ ∇_w⟨H(w), Σ⟩],   Σ = U X Uᵀ,

U holds the critical Hessian eigenvectors (ηλ above `sdcp_threshold`) and X ⪰ 0 (k×k)
solves SDCP(α, β) with P_ij = u_iᵀHu_j and ∇P_ij = ∇³L[u_i, u_j, ·]:

    α_ij = κ(2/η δ_ij − P_ij) + η⟨∇P_ij, ∇L⟩,    β[X]_ij = (η/2) Σ_kl ⟨∇P_ij, ∇P_kl⟩ X_kl.

At complementarity each critical eigenvalue obeys dP/dt = κ(2/η − P), so κ pins ηλ at 2.
The eigenbasis is part of the ODE state: it relaxes towards the Ritz basis, refined by
one block Rayleigh–Ritz step (2k HVPs) once per GD step; between, Euler ¼'s substeps take
the Ritz pairs within the carried basis (k HVPs). PinnedHeun's two stages both evaluate
the critical block of the basis refined one step before, whose HVPs come with its third
derivatives; the predictor refines the basis for the next step from them.
"""

from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from .._codes import RESULTS
from .._pinned_heun import PinnedHeun, Stage, StiffBlock, exponential_step
from .._sdcp import _solve as _solve_sdcp
from .._spectral import (
    OracleCounts,
    initial_basis,
    orthonormal,
    refine_eigs,
    refine_from,
    ritz_pairs,
    third_with_primals,
    top_eigs,
    use_dense,
)
from ..optimisers import GD, RMSProp
from ._base import AbstractFlow, FlowCarry, _Flat


class CentralTerms(NamedTuple):
    """Everything central flow computes at one point (k = the basis width `max_k`)."""

    loss: Float[Array, ""]
    grad: Float[Array, " n"]
    theta: Float[Array, " k"]  # Ritz values, descending
    U: Float[Array, "n k"]  # Ritz vectors
    HU: Float[Array, "n k"]
    P: Float[Array, "k k"]  # UᵀHU, symmetrised
    n_critical: Int[Array, ""]  # the critical set is the first n_critical columns of U
    gradP: Float[Array, "k k n"]  # ∇P_ij, zero outside the critical block
    X: Float[Array, "k k"]  # SDCP solution, zero outside the critical block
    sdcp_residual: Float[Array, ""]  # scale-free natural residual of the SDCP
    velocity: Float[Array, " n"]  # dw/dt
    n_hvp: Int[Array, ""]
    n_third: Int[Array, ""]
    ritz: "Ritz"  # the refined Ritz pairs at this point (U's own, unless `predictor_terms`)


class Ritz(NamedTuple):
    """The top Ritz pairs refined at a point: the basis's next warm start, the stiff block
    and the critical set of the evaluations that follow."""

    theta: Float[Array, " k"]  # descending; −∞ outside the refined width
    U: Float[Array, "n k"]
    n_critical: Int[Array, ""]


class CentralCache(eqx.Module):
    """Central flow's evaluation at the current integer time, kept in its carry.

    With a constant step that divides a GD step (the default Euler ¼), every GD step
    starts with an evaluation at the integer time, the costly one that refines the
    basis. Taken at the end of the step before and kept, it is that step's first stage
    and this step's observables, so observing costs nothing more.
    """

    field: tuple  # dy/dt: the first stage of the next GD step
    loss: Float[Array, ""]
    grad: Float[Array, " n"]  # ∇L(w)
    observed: dict[str, Array]  # the observables that do not need GD's iterate
    V: Float[Array, "n k"]  # Σ's eigenvectors, divided by s (RMSProp), for gd_deviation
    theta: Float[Array, " k"] | None  # the refined top Hessian eigenpairs (GD only: with
    U: Float[Array, "n k"] | None  # RMSProp they are those of P⁻¹H)
    n_hvp: Int[Array, ""]  # oracle calls of this evaluation
    n_third: Int[Array, ""]
    stiff: StiffBlock | None = None  # exponential PinnedHeun: the top Ritz pairs' block


class CentralCarry(eqx.Module):
    """Central flow's carry: the ODE's (`FlowCarry`) and the evaluation at its state."""

    flow: FlowCarry
    cache: CentralCache | None


class CentralState(NamedTuple):
    y: tuple  # (w, U, counters) or (w, U, counters, ν)
    cache: CentralCache | None


def _gradP(f, w, U, data, j, with_hvp=False):
    """∇P_ab = ∇³L[u_a, u_b, ·] for a ≤ b < j (j traced), as a symmetric (k, k, n) tensor.

    One contraction per pair, j(j+1)/2 in all, in a loop whose length is the number of
    critical directions: nothing is spent before the edge of stability. Each is the
    derivative of w ↦ H(w)u_b along u_a (`third_contraction`), whose primal is an HVP:
    `with_hvp=True` also returns HU (n, k), H u_b for b < j and 0 beyond, and ∇L (0 when
    j = 0), at no extra oracle cost.
    """
    k, n = U.shape[1], w.shape[0]
    a, b = (jnp.asarray(i, jnp.int32) for i in np.triu_indices(k))  # pairs, in order of b
    order = np.argsort(np.triu_indices(k)[1], kind="stable")
    a, b = a[order], b[order]  # the first j(j+1)/2 pairs are those with b < j

    def body(p, carry):
        G, HU, _ = carry
        g, Hu, row = third_with_primals(f, w, U[:, a[p]], U[:, b[p]], data)
        G = G.at[a[p], b[p]].set(row).at[b[p], a[p]].set(row)
        return G, HU.at[:, b[p]].set(Hu), g

    zeros = (jnp.zeros((k, k, n), w.dtype), jnp.zeros((n, k), w.dtype), jnp.zeros_like(w))
    G, HU, g = lax.fori_loop(0, j * (j + 1) // 2, body, zeros)
    return (G, HU, g) if with_hvp else G


# Exponential PinnedHeun's predictor in the carried basis (`predictor_terms`); False:
# refined first (`terms`), as before 2026-12-01. Read when a run is traced (benchmarks).
_CARRIED_PREDICTOR = True

_MIN_WIDTH = 2  # the narrowest refined block: one critical direction and one to watch


def _refine_prefix(f, w, U, data, width, iters, step):
    """`refine_eigs` on the first `width` columns of U (traced: `_MIN_WIDTH` or all k).

    The rest keep their vectors, with θ = −∞ and HU = 0 there, so that they are never
    critical: k HVPs become width HVPs (2·width with the Ritz step). Also returns
    (L(w), ∇L(w)), the first HVPs' primals. Two branches, each
    a fixed-size solve; one branch per width (2, 3, ..., k) compiled 4.5 s more on
    MLP-433 (17.2 s against 12.7 s) for no gain there (`bench_central.py`).
    """

    def branch(j):
        def go(_):
            theta, V, HV, n_hvp, lg = refine_eigs(
                f, w, U[:, :j], data, iters=iters, step=step, value=True
            )
            return (*_padded(theta, V, HV, U), jnp.asarray(n_hvp, jnp.int32), lg)

        return go

    return lax.cond(width > _MIN_WIDTH, branch(U.shape[1]), branch(_MIN_WIDTH), None)


def _refine_prefix_from(f, w, U, HU, data, width, iters, step):
    """`_refine_prefix` from HU of U's first `width` columns (U orthonormal): the Ritz
    pairs of their span, then the Ritz step(s). HVPs: `width` per step."""

    def branch(j):
        def go(_):
            theta, V, HV = ritz_pairs(U[:, :j], HU[:, :j])
            theta, V, HV, n_hvp = refine_from(f, w, theta, V, HV, data, iters=iters, step=step)
            return (*_padded(theta, V, HV, U), jnp.asarray(n_hvp, jnp.int32) - j)

        return go

    return lax.cond(width > _MIN_WIDTH, branch(U.shape[1]), branch(_MIN_WIDTH), None)


def _padded(theta, V, HV, U):
    """(θ, V, HV) of U's first columns, padded to U's width: the others keep their
    vectors, with θ = −∞ and HU = 0, so that they are never critical."""
    pad = U.shape[1] - V.shape[1]
    theta = jnp.concatenate([theta, jnp.full((pad,), -jnp.inf, theta.dtype)])
    V = jnp.concatenate([V, U[:, V.shape[1] :]], axis=1)
    HV = jnp.concatenate([HV, jnp.zeros((U.shape[0], pad), U.dtype)], axis=1)
    return theta, V, HV


def _hvps_from(f, w, U, HU, g, start, stop, data):
    """H u_b for start ≤ b < stop (traced) into HU, one plain HVP each, with L(w) and
    ∇L(w) as their primals (NaN and `g` when the range is empty)."""

    def body(b, carry):
        HU, _, _ = carry
        value_and_grad = lambda x: jax.value_and_grad(f)(x, data)  # noqa: E731
        (loss, g), (_, Hu) = jax.jvp(value_and_grad, (w,), (U[:, b],))
        return HU.at[:, b].set(Hu), loss, g

    start, stop = (jnp.asarray(i, jnp.int32) for i in (start, stop))
    return lax.fori_loop(start, stop, body, (HU, jnp.full((), jnp.nan, w.dtype), g))


def _sdcp_on_prefix(
    alpha: Float[Array, "k k"], beta: Float[Array, "k k k k"], crit: Bool[Array, " k"], n_crit
) -> tuple[Float[Array, "k k"], Float[Array, ""]]:
    """X solving the SDCP restricted to the critical block (X = 0 elsewhere), and its residual.

    One fixed-size solve serves every critical-set size: outside the block α is replaced
    by a positive multiple of the identity and β by zero, which forces X = 0 there.
    """
    dtype = alpha.dtype
    zero = jnp.zeros((), dtype)

    def none(_):
        return jnp.zeros_like(alpha), zero

    def one(_):  # X₁₁ = max(0, −α₁₁/β₁₁₁₁)
        a, b = alpha[0, 0], beta[0, 0, 0, 0]
        x = jnp.where(
            b > 0, jnp.maximum(0, -a / jnp.where(b > 0, b, 1)), jnp.where(a < 0, jnp.inf, 0)
        )
        return jnp.zeros_like(alpha).at[0, 0].set(x), zero

    def many(_):
        mask = crit[:, None] & crit[None, :]
        a_act = jnp.where(mask, alpha, 0)
        fill = jnp.linalg.norm(a_act) + jnp.finfo(dtype).tiny
        alpha_m = a_act + jnp.diag(jnp.where(crit, 0, fill))
        beta_m = beta * (mask[:, :, None, None] & mask[None, None])
        X, info = _solve_sdcp(alpha_m, beta_m, None, 50)
        return jnp.where(mask, X, 0), info.rel_residual

    return lax.switch(jnp.minimum(n_crit, 2), (none, one, many), None)


class CentralFlow(AbstractFlow):
    """Central flow with k ≤ `max_k` critical directions, solved by diffrax.

    State: (w, U, counters). U (n, max_k) tracks the top Hessian eigenvectors: the
    evaluation at each integer time refines it by one Rayleigh–Ritz step (2·max_k HVPs;
    `refine="evaluation"` does so at every evaluation), the others take the Ritz pairs
    within span(U) (max_k HVPs; adaptive steps, which need not meet integer times, refine
    at every evaluation), and the state relaxes to that basis at `basis_rate`
    (default 1/dt0, so Euler replaces it at every step). With `adaptive_width=True`
    only the first 2 columns are refined and cost HVPs while at most one eigenvalue is
    tracked (ηλ ≥ `track_threshold`): it and one more to watch the next rise; once a
    second is tracked, all max_k are. The width is carried in the state and follows the
    tracked count at every evaluation; the columns past it wait, unchanged, until a rise
    brings them in. Eigenvalues
    with ηλ above `sdcp_threshold` form the critical set; `track_threshold` flags when
    every slot is above it, i.e. when `max_k` may be too small to see the next one rise.

    With `fo.RMSProp` it is the RMSProp central flow: the same construction in the
    coordinates z = w/√P⁻¹ where RMSProp (ν frozen) is GD with η = 1, so the critical set is
    where λ(P⁻¹H) > `sdcp_threshold` (generalised eigenvectors Hu = λPu); the state gains ν,
    with dν/dt = ((1 − β₂)/β₂)(E[g²] − ν) and E[g²] = g² + diag(HΣH) (DESIGN §2.3). `sigma`
    and `gd_deviation` are then in z's coordinates.

    The default scheme is `PinnedHeun` at one step per GD step (dt0 = 1), second order
    at two evaluations per GD step: κ per stage (0 above 2/η and 1/dt below at the
    predictor, 2/dt at the corrector: deadbeat on the constraint from above; from below
    the gap halves per step) and the top Ritz block integrated exponentially
    (`_pinned_heun.py`). On MLP-433 its path is 17× closer to a converged one than the
    published scheme's, Euler at 4 substeps (`solver=diffrax.Euler(), dt0=0.25,
    adaptive_width=False`; there `kappa`, None: 1/dt0, is the SDCP's relaxation rate),
    at about 21× GD's wall time against 54× (benchmarks/README.md, "Central flow: integration
    scheme").

    Cost per evaluation: one gradient, max_k HVPs (2·max_k at integer times), and
    j(j+1)/2 third-derivative contractions for j critical directions; exponential
    PinnedHeun's corrector spends no HVP (`corrector_terms`), and its predictor none
    for the critical columns (`predictor_terms`), nor a gradient past the onset: the
    thirds' primals are H u and ∇L, as the Ritz start's are ∇L and L. With PinnedHeun or
    Euler at a constant step that divides a GD step, the evaluation at each integer time
    is taken at the end of the step before and kept in the carry (`CentralCache`): it is
    the next step's first stage and this step's observables, so observing central flow
    costs no evaluation of its own. The HVPs are per refined column: with one tracked
    direction and max_k = 4, `adaptive_width=True` (the default) halves them; it compiles
    a second refinement (2.5 s more on MLP-433), and where two or more eigenvalues are
    tracked, as on the digits MLP, it saves nothing. With PinnedHeun the exponential
    block is the refined columns, so the width changes the path slightly (within the
    scheme's error).
    """

    name: ClassVar[str] = "central"
    kappa: float | None = None
    max_k: int = 4
    track_threshold: float = 1.5
    sdcp_threshold: float = 1.95
    ritz_iters: int = 1
    refine: str = "gd_step"
    adaptive_width: bool = True
    basis_rate: float | None = None
    solver: diffrax.AbstractSolver = PinnedHeun()
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.ConstantStepSize()
    dt0: float | None = 1.0
    max_steps_per_gd_step: int = 8
    blowup: float = 1e6

    def __check_init__(self):
        if not isinstance(self.stepsize_controller, diffrax.AbstractStepSizeController):
            return  # `AbstractFlow.__check_init__` names it
        if self.kappa is not None and not self.kappa > 0:
            raise ValueError(f"CentralFlow: kappa must be positive, got {self.kappa}.")
        if self.kappa is None and self.dt0 is None and not isinstance(self.solver, PinnedHeun):
            raise ValueError("CentralFlow: give kappa when dt0 is None.")
        if isinstance(self.solver, PinnedHeun) and self.kappa is not None:
            raise ValueError(
                "CentralFlow: PinnedHeun (the default solver) sets κ at each stage (0, then "
                "2/dt0); leave kappa unset, or choose another solver (the published scheme: "
                "solver=diffrax.Euler(), dt0=0.25)."
            )
        if isinstance(self.solver, PinnedHeun) and not isinstance(
            self.stepsize_controller, diffrax.ConstantStepSize
        ):
            raise ValueError(
                "CentralFlow: PinnedHeun's κ follows its step, so it takes a constant step "
                "(ConstantStepSize with dt0)."
            )
        if self._exponential and not self.caches:
            raise ValueError(
                "CentralFlow: PinnedHeun(exponential=True) takes dt0 = 1/m for a whole "
                f"number m of steps per GD step, got dt0 = {self.dt0}."
            )
        if isinstance(self.max_k, bool) or not isinstance(self.max_k, int) or self.max_k < 1:
            raise ValueError(f"CentralFlow: max_k must be a positive integer, got {self.max_k}.")
        if not 0 < self.track_threshold <= self.sdcp_threshold <= 2:
            raise ValueError(
                "CentralFlow: need 0 < track_threshold <= sdcp_threshold <= 2, got "
                f"{self.track_threshold} and {self.sdcp_threshold}."
            )
        if not (isinstance(self.ritz_iters, int) and self.ritz_iters >= 1):
            raise ValueError(f"CentralFlow: ritz_iters must be >= 1, got {self.ritz_iters}.")
        if self.refine not in ("evaluation", "gd_step"):
            raise ValueError(
                f"CentralFlow: refine must be 'evaluation' or 'gd_step', got {self.refine!r}."
            )
        if self.dt0 is None and self.basis_rate is None:
            raise ValueError("CentralFlow: give basis_rate when dt0 is None.")
        if not isinstance(self.adaptive_width, bool):
            raise TypeError(
                f"CentralFlow: adaptive_width must be True or False, got {self.adaptive_width!r}."
            )

    def terms(
        self, f, w, U, lr, data, drift=None, refine=True, width=None, kappa=None
    ) -> CentralTerms:
        """Gradient, refined eigenbasis, ∇P, X and the velocity at w (basis warm start U).

        `drift(U, HU) -> (α', β')`: a change of P that does not come from w's motion (an
        adaptive preconditioner's), added to the SDCP as dP/dt = −(α' + β'[X]).
        `refine` (a bool, may be traced): take the Ritz step(s) from U (2k HVPs for one
        step), or only the Ritz pairs within span(U) (k HVPs). `width` (traced, or None
        for all k): refine only U's first `width` columns (`_refine_prefix`). `kappa`:
        the relaxation rate (None: `self.relaxation`), or a pair (κ above 2/η, κ below)
        applied per Ritz value (P is diagonal in the Ritz basis, up to rounding).
        """
        # L and ∇L are the primals of the Ritz start's HVPs: no gradient of their own.
        if width is None:
            theta, U, HU, n_hvp, (loss, g) = refine_eigs(
                f, w, U, data, iters=self.ritz_iters, step=refine, value=True
            )
        else:
            theta, U, HU, n_hvp, (loss, g) = _refine_prefix(
                f, w, U, data, width, self.ritz_iters, refine
            )
        crit = lr * theta > self.sdcp_threshold  # a prefix: θ is sorted
        n_crit = jnp.sum(crit)
        G = _gradP(f, w, U, data, n_crit)
        P = U.T @ HU  # (k, k), ≈ diag(θ)
        P = 0.5 * (P + P.T)
        if width is not None:  # 0 outside the refined block, rows and columns alike
            live = jnp.isfinite(theta)
            P = jnp.where(live[:, None] & live[None, :], P, 0)
        n_hvp = jnp.int32(n_hvp)
        return self._constrained(loss, g, theta, U, HU, P, crit, G, n_hvp, lr, drift, kappa)

    def corrector_terms(self, f, w, U, n_crit, lr, data, drift=None, kappa=None) -> CentralTerms:
        """The terms at w in a given basis whose first `n_crit` columns (traced) are the
        critical set: PinnedHeun's corrector, in the predictor's refined basis.

        P_ab = u_aᵀH(w)u_b on the critical block, whose H u_b and ∇L come with ∇P's third
        derivatives (`_gradP`): n_crit(n_crit + 1)/2 thirds, and no HVP or gradient (one
        gradient before the edge of stability, n_crit = 0). The basis is not
        re-diagonalised: P is a full block, as the SDCP takes it. The loss is not computed
        (NaN).
        """
        k = U.shape[1]
        crit = jnp.arange(k) < n_crit
        G, HU, g = _gradP(f, w, U, data, n_crit, with_hvp=True)
        # The loss is not needed here; the gradient only before the edge of stability.
        g = lax.cond(n_crit > 0, lambda: g, lambda: jax.grad(f)(w, data))
        loss = jnp.full((), jnp.nan, w.dtype)
        P = U.T @ HU
        P = jnp.where(crit[:, None] & crit[None, :], 0.5 * (P + P.T), 0)
        theta = jnp.where(crit, jnp.diagonal(P), -jnp.inf)  # only for the κ per column
        n_hvp = jnp.int32(0)
        return self._constrained(loss, g, theta, U, HU, P, crit, G, n_hvp, lr, drift, kappa)

    def predictor_terms(
        self, f, w, U, n_crit, width, lr, data, drift=None, kappa=None, refine=True
    ) -> CentralTerms:
        """The terms at w in the carried basis U (refined one step before), whose first
        `n_crit` columns (traced) were the critical set there: PinnedHeun's predictor.

        As in `corrector_terms`, the critical block's HU and ∇L come with ∇P's thirds and
        P is a full block; the other columns of the refined `width` take one HVP each
        (their primals give L and ∇L before the edge of stability). The Ritz step from
        these HU refines the basis at w for the evaluations that follow (`ritz`): the
        critical columns' HVPs are not spent twice, and the SDCP sees the basis one step
        old, as the corrector does. HVPs: width − n_crit + width.
        """
        k = U.shape[1]
        U = orthonormal(U)  # the columns past the width may have drifted from the rest
        n_crit = jnp.minimum(n_crit, width)
        G, HU, g = _gradP(f, w, U, data, n_crit, with_hvp=True)
        HU, loss, g = _hvps_from(f, w, U, HU, g, n_crit, width, data)
        # Every refined column critical: the loss alone, a forward pass.
        loss = lax.cond(n_crit >= width, lambda: f(w, data), lambda: loss)
        crit = jnp.arange(k) < n_crit
        P = U.T @ HU
        P = jnp.where(crit[:, None] & crit[None, :], 0.5 * (P + P.T), 0)
        theta = jnp.where(crit, jnp.diagonal(P), -jnp.inf)  # only for the κ per column
        r_theta, r_U, _, n_step = _refine_prefix_from(
            f, w, U, HU, data, width, self.ritz_iters, refine
        )
        ritz = Ritz(r_theta, r_U, jnp.sum(lr * r_theta > self.sdcp_threshold))
        n_hvp = (width - n_crit + n_step).astype(jnp.int32)
        return self._constrained(loss, g, theta, U, HU, P, crit, G, n_hvp, lr, drift, kappa, ritz)

    def _constrained(self, loss, g, theta, U, HU, P, crit, G, n_hvp, lr, drift, kappa, ritz=None):
        """X from the SDCP on the critical block, and the velocity (`terms`). `ritz`:
        the refined pairs at this point, None for U's own."""
        n_crit = jnp.sum(crit)
        n_third = n_crit * (n_crit + 1) // 2
        k = theta.shape[0]
        eye = jnp.eye(k, dtype=g.dtype)
        kappa = self.relaxation if kappa is None else kappa
        gap = 2 / lr * eye - P
        if isinstance(kappa, tuple):  # (above, below): √κ_i gap_ij √κ_j, symmetric
            above, below = kappa
            root = jnp.sqrt(jnp.where(lr * theta > 2, above, below)).astype(P.dtype)
            relax = root[:, None] * gap * root[None, :]
        else:
            relax = kappa * gap
        alpha = relax + lr * jnp.einsum("ijn,n->ij", G, g)
        beta = 0.5 * lr * jnp.einsum("ijn,kln->ijkl", G, G)
        if drift is not None:
            d_alpha, d_beta = drift(U, HU)
            alpha, beta = alpha + d_alpha, beta + d_beta
        X, residual = _sdcp_on_prefix(alpha, beta, crit, n_crit)
        velocity = -lr * (g + 0.5 * jnp.einsum("ij,ijn->n", X, G))
        ritz = Ritz(theta, U, n_crit) if ritz is None else ritz
        return CentralTerms(
            loss, g, theta, U, HU, P, n_crit, G, X, residual, velocity, n_hvp, n_third, ritz
        )

    def supports(self, opt):
        return isinstance(opt, GD | RMSProp)

    @property
    def models(self):
        return "GD (with any lr schedule) and RMSProp"

    def _geometry(self, f, opt, w, nu, t):
        """(loss, point, s, η) in the coordinates where the optimiser is GD.

        GD: w itself, at its learning rate. RMSProp: z = w/s with s = √P⁻¹, where the
        loss z ↦ L(s ⊙ z) has Hessian sHs, whose eigenvalues are λ(P⁻¹H), and the
        optimiser (ν frozen) is GD with η = 1; s is None for GD.
        """
        if nu is None:
            return f, w, None, opt.learning_rate(t)
        s = jnp.sqrt(opt.inverse_preconditioner(nu, t))  # (n,), or a scalar
        return (lambda z, d: f(s * z, d)), w / s, s, jnp.ones((), w.dtype)

    def _drift(self, f_s, z, s, opt, nu, t, data):
        """RMSProp: how P̃ = Ũᵀ(sHs)Ũ moves as ν does, for the SDCP (None for GD).

        With δ = d ln s/dt = q(E[g²] − ν) per coordinate, q = −r/(4c√ν̂(√ν̂ + ε)) (r =
        (1 − β₂)/β₂, c the bias factor), dP̃_ij/dt = δᵀ m_ij with m_ij = ũ_i⊙H̃ũ_j +
        H̃ũ_i⊙ũ_j. E[g²] = g² + diag(HΣH) is linear in X, so this adds to α (the g² − ν
        part) and to β (the X part, symmetrised, as the SDCP solver takes a symmetric β;
        at complementarity H̃ũ = 2ũ and it is symmetric already).
        """
        if nu is None:
            return None
        beta2 = opt.beta2
        c = (1 - beta2 ** (t + 1)) if opt.bias_correction else jnp.ones((), z.dtype)
        root = jnp.sqrt(nu / c)
        # At ν = 0 (a coordinate the loss does not see, e.g. a dead input) s does not move.
        live = root > 0
        q = jnp.where(live, -(1 - beta2) / beta2, 0) / (
            4 * c * jnp.where(live, root * (root + opt.eps), 1)
        )
        g_w = jax.grad(f_s)(z, data) / s
        avg = (lambda v: jnp.mean(v, axis=0)) if opt.scalar else (lambda v: v)

        def drift(U, HU):  # (n, k) each, in z's coordinates
            m = U[:, :, None] * HU[:, None, :]
            m = m + jnp.swapaxes(m, 1, 2)  # (n, k, k): m_ij
            HU_w = HU / (jnp.reshape(s, (-1, 1)) if jnp.ndim(s) else s)
            M = avg(HU_w[:, :, None] * HU_w[:, None, :])  # (n, k, k) or (k, k): HU_k⊙HU_l
            delta0 = q * (avg(g_w**2) - nu)  # (n,) or scalar
            d_alpha = -jnp.einsum("n,nij->ij", jnp.broadcast_to(delta0, z.shape), m)
            qM = (q[:, None, None] * M) if jnp.ndim(q) else q * M
            qM = jnp.broadcast_to(qM, m.shape)
            d_beta = -jnp.einsum("nij,nkl->ijkl", m, qM)
            d_beta = 0.5 * (d_beta + jnp.transpose(d_beta, (2, 3, 0, 1)))
            return d_alpha, d_beta

        return drift

    def init(self, f, w0, opt, data):
        n = w0.shape[0]
        k = min(self.max_k, n)
        nu = opt.init(w0, jax.grad(f)(w0, data)) if isinstance(opt, RMSProp) else None
        f_s, z0, _, _ = self._geometry(f, opt, w0, nu, jnp.zeros((), w0.dtype))
        theta, U, n_hvp = top_eigs(f_s, z0, initial_basis(n, k, w0.dtype), data, maxiter=200)
        # [HVP rate, third rate, init HVPs, time without an SDCP solution, refined width]
        lr0 = opt.learning_rate(jnp.zeros((), w0.dtype)) if nu is None else 1.0
        width = self._next_width(lr0 * theta, k)
        counters = jnp.zeros(5, w0.dtype).at[2].set(n_hvp).at[4].set(width)
        return (w0, U, counters) if nu is None else (w0, U, counters, nu)

    def _adaptive(self, n: int, k: int) -> bool:
        """Whether the refined block follows the tracked count (not on the dense path,
        where every eigenpair comes from one dense solve, nor below `_MIN_WIDTH` + 1)."""
        return self.adaptive_width and k > _MIN_WIDTH and not use_dense(n, 2 * k)

    def _next_width(self, scaled_theta, k):
        """2 while at most one eigenvalue is tracked (ηλ ≥ `track_threshold`): it and one
        to watch; else all k."""
        tracked = jnp.sum(scaled_theta >= self.track_threshold)
        return jnp.where(tracked + 1 <= _MIN_WIDTH, min(_MIN_WIDTH, k), k)

    def vector_field(self, f, t, y, opt, data, stage: Stage | None = None):
        """dy/dt at time t; `stage`: what `PinnedHeun` asks of this evaluation (its κ,
        and whether it is a step's first stage), None for any other solver."""
        return self._evaluate(f, t, y, opt, data, stage)[0]

    @property
    def relaxation(self) -> float:
        """κ for solvers that do not set their own: `kappa`, or 1/dt0 (deadbeat for Euler)."""
        return self.kappa if self.kappa is not None else 1.0 / self.dt0

    def _evaluate(self, f, t, y, opt, data, stage=None, n_crit=None, carried=None):
        """(dy/dt, the terms, s) at time t: s is RMSProp's √P⁻¹, None for GD. `n_crit`
        (exponential PinnedHeun's corrector): y's basis is the predictor's refined one and
        its first n_crit columns the critical set (`corrector_terms`); it stays put.
        `carried` (its predictor): the critical count where y's basis was refined, one
        step before (`predictor_terms`)."""
        w, U, counters = y[:3]
        nu = y[3] if len(y) == 4 else None
        f_s, z, s, lr = self._geometry(f, opt, w, nu, t)
        refine = True
        constant = isinstance(self.stepsize_controller, diffrax.ConstantStepSize)
        if self.refine == "gd_step" and constant:  # at integer times only: once per GD step
            frac = t - jnp.floor(t)
            refine = (frac < 1e-3) | (frac > 1 - 1e-3)
            if stage is not None:  # PinnedHeun's corrector, at k + 1, is not a step's start
                refine = refine & stage.first
        kappa = None if stage is None else (stage.above, stage.below)
        drift = self._drift(f_s, z, s, opt, nu, t, data)
        n, k = U.shape
        rate = self.basis_rate if self.basis_rate is not None else 1.0 / self.dt0
        if n_crit is not None:
            c = self.corrector_terms(f_s, z, U, n_crit, lr, data, drift, kappa)
            d_width = 0
        elif carried is not None and not use_dense(n, 2 * k):
            if self._adaptive(n, k):
                width = jnp.clip(jnp.round(counters[4]), _MIN_WIDTH, k).astype(jnp.int32)
            else:
                width = jnp.int32(k)
            c = self.predictor_terms(f_s, z, U, carried, width, lr, data, drift, kappa, refine)
            d_width = rate * (self._next_width(lr * c.ritz.theta, k) - counters[4])
            if not self._adaptive(n, k):
                d_width = 0
        elif self._adaptive(n, k):
            width = jnp.clip(jnp.round(counters[4]), _MIN_WIDTH, k).astype(jnp.int32)
            c = self.terms(f_s, z, U, lr, data, drift, refine, width, kappa)
            # The width relaxes to the new tracked count as U does (Euler: replaced).
            d_width = rate * (self._next_width(lr * c.ritz.theta, k) - counters[4])
        else:
            c = self.terms(f_s, z, U, lr, data, drift, refine, kappa=kappa)
            d_width = 0
        if n_crit is None:
            sign = jnp.where(jnp.sum(c.ritz.U * U, axis=0) < 0, -1, 1).astype(U.dtype)
            d_U = rate * (c.ritz.U * sign - U)
        else:  # the corrector keeps the predictor's basis
            d_U = jnp.zeros_like(U)
        no_solution = ~jnp.all(jnp.isfinite(c.X))
        d_counters = jnp.stack([c.n_hvp, c.n_third, 0, no_solution, d_width])
        d_counters = d_counters.astype(counters.dtype)
        if nu is None:
            return (c.velocity, d_U, d_counters), c, s
        # RMSProp: dw/dt = s ⊙ dz/dt; ν follows E[g²] = g² + diag(HΣH), with ∇L = ∇_z/s
        # and HΣH = (HU)X(HU)ᵀ in w's coordinates, HU = (sHs)Ũ/s for Σ = sŨXŨᵀs.
        HU = c.HU / jnp.reshape(s, (-1, 1)) if jnp.ndim(s) else c.HU / s  # (n, k)
        g2 = (c.grad / s) ** 2 + jnp.sum((HU @ c.X) * HU, axis=1)
        dy = (s * c.velocity, d_U, d_counters, opt.nu_flow(g2, nu))
        return dy, c, s

    def size(self, y):
        return jnp.linalg.norm(y[0])

    def restart(self, y):
        # The counters integrate oracle calls per unit time over one GD step; the refined
        # width is state, kept.
        return (y[0], y[1], jnp.zeros_like(y[2]).at[4].set(y[2][4]), *y[3:])

    def init_counts(self, y0):
        return OracleCounts(n_hvp=jnp.round(y0[2][2]).astype(jnp.int32))

    def counts(self, y1, n_evals, n_jvps):
        # Over one GD step (unit time) the counters integrate the per-evaluation counts;
        # times the evaluations per unit time this is exact for a fixed step and one
        # stage per step (the default Euler scheme).
        c = y1[2]
        return OracleCounts(
            n_grad=n_evals,
            n_hvp=jnp.round(c[0] * n_evals).astype(jnp.int32),
            n_third=jnp.round(c[1] * n_evals).astype(jnp.int32),
        )

    def explain(self, y, result):
        # A critical eigenvalue above 2/η with ∇λ = 0 has no SDCP solution (X = ∞).
        no_solution = (result == RESULTS.diverged) & (y[2][3] > 0)
        result_ = RESULTS.where(no_solution, RESULTS.sdcp_no_solution, result)
        if jnp.finfo(y[0].dtype).eps > 1e-10:  # float32 or below: say to use float64
            low = result_ == RESULTS.diverged
            result_ = RESULTS.where(low, RESULTS.diverged_low_precision, result_)
        return result_

    @property
    def caches(self) -> bool:
        """Whether the carry keeps the evaluation at each integer time (`CentralCache`):
        Euler or `PinnedHeun` with a constant step that divides a GD step, whose every GD
        step starts with an evaluation there."""
        if not isinstance(self.solver, diffrax.Euler | PinnedHeun) or self.dt0 is None:
            return False
        if not isinstance(self.stepsize_controller, diffrax.ConstantStepSize):
            return False
        per_step = 1.0 / self.dt0
        return abs(per_step - round(per_step)) < 1e-9

    def _cache(self, f, t, y, opt, data, carried=None) -> CentralCache:
        stage = None
        if isinstance(self.solver, PinnedHeun):  # the next step's predictor
            stage = PinnedHeun.first_stage(jnp.asarray(self.dt0, jnp.result_type(y[0])))
        dy, c, s = self._evaluate(f, t, y, opt, data, stage, carried=carried)
        lr = opt.learning_rate(t) if s is None else jnp.ones((), c.grad.dtype)
        sigma, Q = jnp.linalg.eigh(c.X)
        sigma, Q = sigma[::-1], Q[:, ::-1]
        V = c.U @ Q  # (n, k): Σ's eigenvectors (in z = w/s for RMSProp)
        grad, HU = c.grad, c.HU
        if s is not None:  # back to w's coordinates
            s_col = jnp.reshape(s, (-1, 1)) if jnp.ndim(s) else s
            grad, HU, V = grad / s, HU / s_col, V / s_col
        observed = {
            "predicted_loss": c.loss + 0.5 * jnp.sum(c.P * c.X),
            "predicted_grad_norm": jnp.sqrt(jnp.sum(grad**2) + jnp.sum((HU.T @ HU) * c.X)),
            "sigma": sigma,
            "n_critical": c.ritz.n_critical,
            "n_tracked": jnp.sum(lr * c.ritz.theta >= self.track_threshold),
            "sdcp_residual": c.sdcp_residual,
        }
        theta, U = (c.ritz.theta, c.ritz.U) if s is None else (None, None)
        stiff = self._stiff_block(c, s, lr) if self._exponential else None
        return CentralCache(dy, c.loss, grad, observed, V, theta, U, c.n_hvp, c.n_third, stiff)

    @property
    def _exponential(self) -> bool:
        return isinstance(self.solver, PinnedHeun) and self.solver.exponential

    @staticmethod
    def _stiff_block(c: CentralTerms, s, lr) -> StiffBlock:
        """dw/dt's linear part along the refined Ritz vectors: rate ηθ each (RMSProp: θ
        of sHs in z = w/s, η = 1); columns outside the refined block are inert."""
        theta, U = c.ritz.theta, c.ritz.U
        rates = jnp.where(jnp.isfinite(theta), lr * theta, 0).astype(U.dtype)
        return StiffBlock(U, rates, s)

    def _exponential_advance(self, f, carry, opt, data, k):
        """One GD step of exponential PinnedHeun (`_pinned_heun.exponential_step`), m =
        1/dt0 steps, the first from the kept evaluation; the state as the diffrax path
        leaves it (failure checks, non-finite past a failure)."""
        flow = carry.flow
        flat = _Flat(flow.y)
        dtype = flow.bound.dtype
        y = self.restart(flat.unravel(flow.solve.y))
        m = round(1.0 / self.dt0)
        dt = jnp.asarray(self.dt0, dtype)
        f0, block = carry.cache.field, carry.cache.stiff
        n_crit = carry.cache.observed["n_critical"]
        for i in range(m):
            t = jnp.asarray(k, dtype) + i * dt
            if i > 0:  # a predictor between integer times: evaluated here
                f0, c, s = self._evaluate(
                    f, t, y, opt, data, PinnedHeun.first_stage(dt), carried=n_crit
                )
                lr = opt.learning_rate(t) if s is None else jnp.ones((), dtype)
                block, n_crit = self._stiff_block(c, s, lr), c.ritz.n_critical
            # The corrector works in the predictor's refined basis, on its critical set.
            field = lambda z, stage, t=t, j=n_crit: self._evaluate(
                f, t + dt, z, opt, data, stage, j
            )[0]
            y, pred, _ = exponential_step(field, y, f0, block, dt)
            # The basis and the refined width are a warm start, not a path: they take the
            # predictor's (relaxed at rate 1/dt), not Heun's average of two.
            y = (y[0], pred[1], y[2].at[4].set(pred[2][4]), *y[3:])
        result = RESULTS.where(self._failed(y, flow.bound), RESULTS.diverged, RESULTS.successful)
        result = self.explain(y, result)
        bad = result != RESULTS.successful
        y = jax.tree_util.tree_map(lambda x: jnp.where(bad, jnp.nan, x), y)
        solve = eqx.tree_at(lambda sv: sv.y, flow.solve, flat.ravel(y))
        counts = self.counts(y, jnp.asarray(2 * m, jnp.int32), jnp.asarray(0, jnp.int32))
        flow = FlowCarry(y, solve, flow.bound, flow.steps_taken + m)
        return flow, counts, result

    def start(self, f, w0, opt, data):
        flow, counts = super().start(f, w0, opt, data)
        if not self.caches:
            return CentralCarry(flow, None), counts
        cache = self._cache(f, jnp.zeros((), w0.dtype), flow.y, opt, data)
        counts = OracleCounts(
            counts.n_grad + 1, counts.n_hvp + cache.n_hvp, counts.n_third + cache.n_third
        )
        return CentralCarry(flow, cache), counts

    def advance(self, f, carry, opt, data, k):
        if carry.cache is None:
            flow, counts, result = super().advance(f, carry.flow, opt, data, k)
            return CentralCarry(flow, None), counts, result
        # The step's first stage is the kept evaluation; the one at k + 1 is taken here and
        # kept. Each step counts its stages (4 for Euler ¼, 2 for PinnedHeun at dt0 = 1),
        # the kept one among them, and `start` counts one more: the totals are the
        # evaluations made, 1 + 4N or 1 + 2N (the last one is only observed).
        if self._exponential:
            flow, counts, result = self._exponential_advance(f, carry, opt, data, k)
        else:
            flow, counts, result = super().advance(f, carry.flow, opt, data, k, carry.cache.field)
        t1 = jnp.asarray(k + 1, flow.bound.dtype)
        # Exponential PinnedHeun's next predictor works in the basis carried from here.
        carried = None
        if self._exponential and _CARRIED_PREDICTOR:
            carried = carry.cache.observed["n_critical"]
        cache = self._cache(f, t1, flow.y, opt, data, carried)
        return CentralCarry(flow, cache), counts, result

    def state(self, carry):
        return CentralState(carry.flow.y, carry.cache)

    def center(self, state):
        return state.y[0]

    def optimiser_state(self, state):
        return state.y[3] if len(state.y) == 4 else ()

    def eigs(self, state, k):
        cache = state.cache
        if cache is None or cache.theta is None or k > self.max_k:
            return None
        n, max_k = cache.U.shape
        if self._adaptive(n, max_k) and k > _MIN_WIDTH:  # columns past the width are stale
            return None
        return cache.theta[:k], cache.U[:, :k]

    def loss_and_grad(self, f, carry, data):
        if carry.cache is None:
            return jax.value_and_grad(f)(carry.flow.y[0], data)
        return carry.cache.loss, carry.cache.grad

    def observables(self, f, t, state, U, opt, data, w_gd):
        cache = state.cache
        if cache is None:  # another scheme: one evaluation more, here
            cache = self._cache(f, t, state.y, opt, data)
        deviation = w_gd - state.y[0]
        return {**cache.observed, "gd_deviation": (cache.V.T @ deviation) ** 2}

    def describe(self):
        out = super().describe()
        out.update(
            kappa="PinnedHeun: 0 above 2/η and 1/dt0 below, then 2/dt0"
            if isinstance(self.solver, PinnedHeun)
            else str(self.relaxation),
            max_k=str(self.max_k),
            dt0=str(self.dt0),
            thresholds=f"track {self.track_threshold}, sdcp {self.sdcp_threshold}",
        )
        return out
