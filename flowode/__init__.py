"""flowode: ODE models of gradient descent at the edge of stability.

`simulate` runs GD and its flows (gradient, central, rod) side by side on any JAX
loss and returns every trajectory as one xarray Dataset.
"""

from . import plot as plot, problems as problems
from ._problem import Problem as Problem
from ._results import load as load
from ._results import save as save
from ._rkc import RKC2 as RKC2
from ._sdcp import (
    SDCPInfo as SDCPInfo,
)
from ._sdcp import (
    solve_sdcp as solve_sdcp,
)
from ._sdcp import (
    solve_sdcp_with_info as solve_sdcp_with_info,
)
from ._simulate import FLOWS as FLOWS
from ._simulate import simulate as simulate
from ._spectral import hvp as hvp
from ._spectral import third_contraction as third_contraction
from ._spectral import top_eigs as top_eigs
from ._version import __version__ as __version__
from .flows import (
    AbstractFlow as AbstractFlow,
)
from .flows import (
    AbstractProcess as AbstractProcess,
)
from .flows import (
    GradientDescent as GradientDescent,
)
from .flows import (
    GradientFlow as GradientFlow,
)
from .flows import (
    RodFlow as RodFlow,
)
