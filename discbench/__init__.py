"""discbench: controlled studies of SSM discretization in Vision Mamba."""

import os

# Parallel trials share few cores; OpenMP's default spin-waiting makes each fused scan wait
# for the other trial's time slices (measured 10× slower at load 2 on 2 cores). Only takes
# effect when discbench is imported before torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .methods import METHOD_NAMES, METHODS, VARIANTS, Method, all_methods, get_method
from .scan import selective_scan
from .scan.ssd import ssd_scan

__version__ = "0.1.0"

__all__ = ["selective_scan", "ssd_scan", "get_method", "all_methods", "METHODS", "METHOD_NAMES", "VARIANTS",
           "Method", "__version__"]
