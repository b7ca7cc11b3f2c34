"""flowode: ODE models of gradient descent at the edge of stability.

`simulate` runs an optimiser (GD, heavy-ball, Nesterov, RMSProp, Adam) and its flows
(gradient, central, rod, edge) side by side on any JAX loss and returns every trajectory
as one xarray Dataset; `sweep` runs a grid of seeds and one hyper-parameter at once.
"""

from . import plot as plot, problems as problems
from ._codes import RESULTS as RESULTS
from ._pinned_heun import PinnedHeun as PinnedHeun
from ._problem import Problem as Problem
from ._results import load as load, save as save
from ._rkc import RKC2 as RKC2
from ._sdcp import (
    SDCPInfo as SDCPInfo,
    solve_sdcp as solve_sdcp,
    solve_sdcp_with_info as solve_sdcp_with_info,
)
from ._simulate import FLOWS as FLOWS, simulate as simulate
from ._spectral import hvp as hvp, third_contraction as third_contraction, top_eigs as top_eigs
from ._sweep import sweep as sweep
from ._version import __version__ as __version__
from .flows import (
    AbstractFlow as AbstractFlow,
    AbstractProcess as AbstractProcess,
    CentralFlow as CentralFlow,
    EdgeFlow as EdgeFlow,
    GlobalErrorEstimate as GlobalErrorEstimate,
    GradientDescent as GradientDescent,
    GradientFlow as GradientFlow,
    RodFlow as RodFlow,
)
from .optimisers import (
    GD as GD,
    AbstractOptimiser as AbstractOptimiser,
    Adam as Adam,
    HeavyBall as HeavyBall,
    Nesterov as Nesterov,
    RMSProp as RMSProp,
)
