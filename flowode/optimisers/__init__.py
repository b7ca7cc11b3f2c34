"""Optimisers: each a discrete update, its state, preconditioner, stable flow and threshold."""

from ._base import (
    AbstractOptimiser as AbstractOptimiser,
    check_scalar as check_scalar,
    check_schedule as check_schedule,
    threshold_value as threshold_value,
)
from .adam import Adam as Adam
from .gd import GD as GD
from .heavy_ball import HeavyBall as HeavyBall
from .nesterov import Nesterov as Nesterov
from .rmsprop import RMSProp as RMSProp
