"""The processes flowode runs: discrete GD and the ODE flows that model it."""

from ._base import AbstractFlow as AbstractFlow, AbstractProcess as AbstractProcess
from .central_flow import CentralFlow as CentralFlow, CentralTerms as CentralTerms
from .edge_flow import EdgeFlow as EdgeFlow
from .global_error import GlobalErrorEstimate as GlobalErrorEstimate
from .gradient_descent import (
    GradientDescent as GradientDescent,
    midpoints as midpoints,
)
from .gradient_flow import GradientFlow as GradientFlow
from .rod_flow import RodFlow as RodFlow
