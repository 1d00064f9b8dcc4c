"""Convergence order and stability of each discretization on the scalar test problem

    h'(t) = a h(t) + v(t),   h(0) = 0,   t in [0, T],   a < 0,

solved with the selective scan itself (d = n = 1, B = C = 1, A = a, constant Δ = T / steps), so
what is measured is the method as the backends run it, not a re-implementation.

Time grid. Token k's step runs from t_{k-1} to t_k with t_k = (k + 1)Δ, so h_{-1} = h(0) = 0,
v_k = v(t_k) and h(T) = h_{steps-1}. The spec sets v_k = 0 for k < 0; the drive below vanishes
with its first six derivatives at t = 0, so those zeros are the samples of a C⁶ extension of v
by 0 to t < 0 and do not cost a method any order.

Non-causal stencils (polynomial, canonical rk4) read v_{k+1}. The scan treats v past the end of
the sequence as 0, which at k = steps - 1 would be a wrong sample of v(T + Δ) and an O(1)
error in h(T). So the sequence carries a few real samples past T and h(T) is read at index
steps - 1, not at the end.

A method with a per-token λ (trapezoid/paper) is measured at the constant λ = NUMERICS_LAM, where
its stated order 1 holds (λ = ½ would be the canonical variant, of order 2).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import integrate

from .methods import METHODS, Method, all_methods, get_method
from .scan import resolve_backend, selective_scan

DEFAULT_POLE = -2.0
DEFAULT_HORIZON = 3.0
# Doubling step counts. At a = -2, T = 3 every method's local slope log2(e_n / e_2n) is within
# 0.05 of its limit from 80 steps on, which are the four points fitted_order uses; canonical
# rk4's error at 640 steps (~2.5e-12, relative ~2e-10) is still far above fp64 rounding.
DEFAULT_STEPS = (40, 80, 160, 320, 640)
# The constant per-token λ of methods that take one (METHODS.md: numerics use λ = 0.75).
NUMERICS_LAM = 0.75
# Errors below this (relative to |h(T)|) are rounding, not truncation, and carry no order.
ROUNDING_FLOOR = 1e-12


def drive(t: np.ndarray | float) -> np.ndarray | float:
    """The test input v(t) = t⁷ e^{-t} (1 + sin 3t) / 7!: smooth, O(1) on [0, 3], flat at 0.

    The t⁷ factor makes v and its first six derivatives vanish at t = 0 (see the module
    docstring); the oscillating factor keeps every method's leading error term from vanishing
    by symmetry.
    """
    t = np.asarray(t, dtype=np.float64)
    return t**7 * np.exp(-t) * (1.0 + np.sin(3.0 * t)) / math.factorial(7)


def exact_solution(a: float = DEFAULT_POLE, T: float = DEFAULT_HORIZON) -> float:
    """h(T) = ∫_0^T e^{a(T-s)} v(s) ds by adaptive Gauss–Kronrod quadrature (rel. tol 1e-13)."""
    value, abserr = integrate.quad(
        lambda s: math.exp(a * (T - s)) * float(drive(s)), 0.0, T,
        epsabs=0.0, epsrel=1e-13, limit=500,
    )
    if abserr > 1e-12 * max(abs(value), 1e-300):
        raise RuntimeError(f"quadrature of the exact solution did not converge (error estimate {abserr:g})")
    return value


def _as_method(method: str | Method) -> Method:
    return method if isinstance(method, Method) else get_method(method)


def solve(method: str | Method, steps: int, a: float = DEFAULT_POLE, T: float = DEFAULT_HORIZON,
          backend: str = "reference") -> float:
    """h(T) of the discretized test problem with `steps` uniform steps (fp64, d = n = 1)."""
    spec = _as_method(method)
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    dt = T / steps
    # Real samples past T for every tap that reads ahead (see the module docstring).
    lookahead = max(0, *spec.offsets)
    length = steps + lookahead
    t = dt * np.arange(1, length + 1, dtype=np.float64)
    u = torch.from_numpy(drive(t)).reshape(1, 1, length)
    delta = torch.full((1, 1, length), dt, dtype=torch.float64)
    A = torch.full((1, 1), a, dtype=torch.float64)
    ones = torch.ones((1, 1, length), dtype=torch.float64)
    lam = torch.full_like(delta, NUMERICS_LAM) if spec.takes_lam else None
    with torch.no_grad():
        if METHODS.get(spec.key) is spec:
            out = selective_scan(u, delta, A, ones, ones, method=spec.name, variant=spec.variant,
                                 backend=backend, lam=lam)
        else:
            # A Method built outside the registry (e.g. to try other weights): selective_scan
            # looks methods up by name, so call the same backend with the object itself.
            run = resolve_backend(backend, u.device, u.dtype).load()
            grouped = ones.unsqueeze(1)  # (b, g, n, l), as backends receive B and C
            out = run(u, delta, A, grouped, grouped, None, None, None, False, False, spec, lam)
    return float(out[0, 0, steps - 1])


def convergence(method_key: str | Method, steps: Iterable[int], a: float = DEFAULT_POLE,
                T: float = DEFAULT_HORIZON, backend: str = "reference") -> pd.DataFrame:
    """Global error at t = T against the step count.

    Returns one row per step count with columns method, variant, steps, dt (= T/steps, time
    units of the problem) and error (= |h_{steps-1} - h(T)|, absolute).
    """
    spec = _as_method(method_key)
    reference = exact_solution(a, T)
    rows = []
    for n in steps:
        approx = solve(spec, int(n), a, T, backend)
        rows.append({"method": spec.name, "variant": spec.variant, "steps": int(n),
                     "dt": T / int(n), "error": abs(approx - reference)})
    return pd.DataFrame(rows, columns=["method", "variant", "steps", "dt", "error"])


def fitted_order(df: pd.DataFrame, points: int = 4) -> float:
    """Least-squares slope of log(error) against log(dt) over the asymptotic points.

    The asymptotic points are the `points` smallest dt whose error is above the rounding
    floor (ROUNDING_FLOOR, relative to the largest error); callers choose step counts in the
    asymptotic regime (DEFAULT_STEPS are). A method that does not converge gives ≈ 0.
    """
    ordered = df.sort_values("dt")
    usable = ordered[ordered["error"] > ROUNDING_FLOOR * ordered["error"].max()]
    usable = usable[usable["error"] > 0].head(points)
    if len(usable) < 2:
        raise ValueError(f"need ≥ 2 errors above the rounding floor to fit an order, got {len(usable)}")
    slope, _ = np.polyfit(np.log(usable["dt"].to_numpy()), np.log(usable["error"].to_numpy()), 1)
    return float(slope)


def _violates(method: Method, z: np.ndarray) -> np.ndarray:
    """|Ā(z)| > 1 elementwise, evaluated in fp64."""
    transition = method.transition(torch.tensor(np.ascontiguousarray(z, dtype=np.float64)))
    return (transition.abs() > 1.0).numpy()


def stability_bound(method: str | Method, z_min: float = -1e4, grid_points: int = 200_001) -> float:
    """The most negative z such that |Ā(z)| ≤ 1 on all of [z, 0]; -inf if that holds on [z_min, 0].

    A dense grid (uniform on [z_min, 0] merged with a geometric one reaching 1e-10 so that
    small |z| is covered) finds the first violation going down from 0; bisection then places
    the boundary to fp64 resolution.
    """
    spec = _as_method(method)
    if not z_min < 0:
        raise ValueError(f"z_min must be negative, got {z_min}")
    uniform = np.linspace(z_min, 0.0, grid_points)
    geometric = -np.geomspace(1e-10, -z_min, grid_points)
    grid = np.unique(np.concatenate([uniform, geometric, [0.0]]))[::-1]  # 0 first, descending
    bad = _violates(spec, grid)
    if not bad.any():
        return -math.inf
    first_bad = int(np.argmax(bad))
    if first_bad == 0:
        return 0.0
    good_z, bad_z = float(grid[first_bad - 1]), float(grid[first_bad])
    for _ in range(200):
        mid = 0.5 * (good_z + bad_z)
        if mid in (good_z, bad_z):
            break
        if _violates(spec, np.array([mid]))[0]:
            bad_z = mid
        else:
            good_z = mid
    return good_z


__all__ = ["drive", "exact_solution", "solve", "convergence", "fitted_order", "stability_bound",
           "DEFAULT_STEPS", "DEFAULT_POLE", "DEFAULT_HORIZON", "NUMERICS_LAM"]
