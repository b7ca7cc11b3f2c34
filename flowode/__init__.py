"""flowode: ODE models of gradient descent at the edge of stability."""

__version__ = "0.1.0"
