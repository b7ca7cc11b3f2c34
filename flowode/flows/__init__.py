"""The processes flowode runs: discrete GD and the ODE flows that model it."""

from ._base import AbstractFlow as AbstractFlow
from ._base import AbstractProcess as AbstractProcess
from .gradient_descent import (
    GradientDescent as GradientDescent,
)
from .gradient_descent import (
    Midpoint as Midpoint,
)
from .gradient_descent import (
    midpoints as midpoints,
)
from .gradient_flow import GradientFlow as GradientFlow
from .rod_flow import RodFlow as RodFlow
