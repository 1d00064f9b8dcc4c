"""The φ-functions of exponential integrators, finite and accurate for z in [-1e4, 0].

    φ_0(z) = e^z,   φ_{p+1}(z) = (φ_p(z) - 1/p!) / z,   φ_p(0) = 1/p!

The closed forms cancel catastrophically near z = 0, so |z| < 1 uses the Taylor series
φ_p(z) = Σ_{m≥0} z^m / (m+p)!; elsewhere the recursion loses at most a few bits.
Both branches are differentiable; the unused branch is fed a harmless value so that
autograd never multiplies an infinite derivative by zero.
"""

from __future__ import annotations

import math

import torch

SERIES_RADIUS = 1.0
# 1/(20+p)! < 1e-18: the series is exact to fp64 rounding for |z| < 1.
SERIES_TERMS = 20


def _series(z: torch.Tensor, p: int) -> torch.Tensor:
    """Horner evaluation of Σ_{m<SERIES_TERMS} z^m/(m+p)!."""
    out = torch.full_like(z, 1.0 / math.factorial(SERIES_TERMS - 1 + p))
    for m in range(SERIES_TERMS - 2, -1, -1):
        out = out * z + 1.0 / math.factorial(m + p)
    return out


def phi(z: torch.Tensor, p: int) -> torch.Tensor:
    """φ_p(z) elementwise, same shape and dtype as z (p ≥ 0)."""
    if p == 0:
        return torch.exp(z)
    small = z.abs() < SERIES_RADIUS
    z_series = torch.where(small, z, torch.zeros_like(z))
    z_closed = torch.where(small, torch.full_like(z, -SERIES_RADIUS), z)
    closed = torch.exp(z_closed)
    for q in range(p):
        closed = (closed - 1.0 / math.factorial(q)) / z_closed
    return torch.where(small, _series(z_series, p), closed)


def phis(z: torch.Tensor, p_max: int) -> list[torch.Tensor]:
    """[φ_0(z), …, φ_{p_max}(z)]."""
    return [phi(z, p) for p in range(p_max + 1)]
