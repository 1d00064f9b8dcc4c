"""The φ-functions of exponential integrators, finite and accurate for z in [-1e4, 0].

    φ_0(z) = e^z,   φ_{p+1}(z) = (φ_p(z) - 1/p!) / z,   φ_p(0) = 1/p!

The closed forms cancel catastrophically near z = 0, so |z| < 1 uses the Taylor series
φ_p(z) = Σ_{m≥0} z^m / (m+p)!; elsewhere the recursion loses at most a few bits.
Both branches are differentiable; the unused branch is fed a harmless value so that
autograd never multiplies an infinite derivative by zero.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar

import torch

SERIES_RADIUS = 1.0
# Terms of the series for |z| < 1: the first omitted term 1/(N+p)! is below the dtype's
# rounding (1/(20+p)! < 1e-18 for fp64; 1/(12+p)! < 3e-9 for fp32 and narrower types).
SERIES_TERMS = {torch.float64: 20}
SERIES_TERMS_DEFAULT = 12

# Within `shared_phi()`, φ_p of one tensor is computed once and reused by every tap weight
# (a quadratic stencil asks for φ_1, φ_2, φ_3 several times each).
_shared: ContextVar[dict | None] = ContextVar("discbench_shared_phi", default=None)


@contextmanager
def shared_phi():
    """Reuse φ_p(z) for the same tensor z inside this block (autograd-safe: same graph node)."""
    token = _shared.set({})
    try:
        yield
    finally:
        _shared.reset(token)


def _series(z: torch.Tensor, p: int) -> torch.Tensor:
    """Horner evaluation of Σ_{m<N} z^m/(m+p)!, N from SERIES_TERMS by dtype."""
    terms = SERIES_TERMS.get(z.dtype, SERIES_TERMS_DEFAULT)
    out = torch.full_like(z, 1.0 / math.factorial(terms - 1 + p))
    for m in range(terms - 2, -1, -1):
        out = out * z + 1.0 / math.factorial(m + p)
    return out


def phi(z: torch.Tensor, p: int) -> torch.Tensor:
    """φ_p(z) elementwise, same shape and dtype as z (p ≥ 0)."""
    cache = _shared.get()
    if cache is None:
        return _phi(z, p)
    key = (id(z), p)
    hit = cache.get(key)
    if hit is None or hit[0] is not z:
        hit = cache[key] = (z, _phi(z, p))  # holding z keeps its id from being reused
    return hit[1]


def _phi(z: torch.Tensor, p: int) -> torch.Tensor:
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
