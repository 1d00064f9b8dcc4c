"""discbench: controlled studies of SSM discretization in Vision Mamba."""

from .methods import METHOD_NAMES, METHODS, VARIANTS, Method, all_methods, get_method
from .scan import selective_scan

__version__ = "0.1.0"

__all__ = ["selective_scan", "get_method", "all_methods", "METHODS", "METHOD_NAMES", "VARIANTS",
           "Method", "__version__"]
