"""φ-functions: accurate and finite in fp32 and fp64 on [-1e4, 0], with correct gradients."""

from __future__ import annotations

import math

import mpmath  # a dependency of sympy, which torch requires
import numpy as np
import pytest
import torch

from discbench.phi import SERIES_RADIUS, phi, phis

P_VALUES = range(5)  # the methods use p ≤ 3; the derivative identity needs p + 1
# Measured worst cases: fp64 8e-16 (p = 4 just past the series switch), fp32 1.3e-6 (same
# place); the tolerances leave a few ulps of headroom and still catch a lost digit.
RTOL = {torch.float64: 4e-15, torch.float32: 4e-6}


def _switch_neighbourhood() -> list[float]:
    """z just inside, at and just outside the series/closed-form switch |z| = SERIES_RADIUS."""
    edge = -SERIES_RADIUS
    return [edge, np.nextafter(edge, 0.0), np.nextafter(edge, -2.0), edge * 0.999, edge * 1.001,
            edge * (1 - 1e-7), edge * (1 + 1e-7)]


def z_grid() -> np.ndarray:
    """Dense on [-1e4, 0] (log-spaced), plus 0, tiny |z| and the switch neighbourhood."""
    tiny = [0.0, -1e-30, -1e-20, -1e-12, -1e-9, -1e-7, -5e-7, -1e-6, -2e-6]
    dense = list(-np.logspace(-8, 4, 300))
    return np.array(tiny + _switch_neighbourhood() + dense + [-1e4])


def reference_phi(z: float, p: int) -> float:
    """φ_p(z) with 50 significant digits: the series for |z| < 1, the recursion otherwise."""
    with mpmath.workdps(50):
        x = mpmath.mpf(z)
        if abs(x) < 1:
            return float(mpmath.nsum(lambda m: x**m / mpmath.factorial(m + p), [0, mpmath.inf]))
        value = mpmath.exp(x)
        for q in range(p):
            value = (value - mpmath.mpf(1) / mpmath.factorial(q)) / x
        return float(value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("p", P_VALUES)
def test_phi_matches_high_precision_reference(dtype, p):
    z = torch.tensor(z_grid(), dtype=dtype)
    got = phi(z, p)
    assert got.dtype == dtype and got.shape == z.shape
    assert torch.isfinite(got).all()
    # Compare at the z the dtype actually holds, so only phi's own error is measured.
    expected = np.array([reference_phi(x, p) for x in z.double().numpy()])
    error = np.abs(got.double().numpy() - expected)
    # e^z underflows below the smallest normal number; there only an absolute bound is meaningful.
    allowed = RTOL[dtype] * np.abs(expected) + torch.finfo(dtype).tiny
    worst = int(np.argmax(error / allowed))
    assert (error <= allowed).all(), (
        f"φ_{p} at z = {z[worst].item()!r}: got {got[worst].item()!r}, expected {expected[worst]!r}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_phi_at_zero_is_inverse_factorial(dtype):
    z = torch.zeros(3, dtype=dtype)
    for p in P_VALUES:
        assert torch.equal(phi(z, p), torch.full_like(z, 1.0 / math.factorial(p)))


def test_phis_lists_orders_zero_to_p_max():
    z = torch.linspace(-50.0, 0.0, 11, dtype=torch.float64)
    values = phis(z, 3)
    assert len(values) == 4
    for p, value in enumerate(values):
        assert torch.equal(value, phi(z, p))


def test_phi_recursion_holds_away_from_zero():
    """φ_{p+1}(z) = (φ_p(z) - 1/p!) / z, the definition, on both branches."""
    z = torch.tensor([-1e4, -30.0, -3.0, -1.5, -0.9, -0.3, -0.05], dtype=torch.float64)
    for p in range(4):
        lhs = phi(z, p + 1)
        rhs = (phi(z, p) - 1.0 / math.factorial(p)) / z
        # The right side itself cancels for small |z|: compare with a tolerance scaled to it.
        scale = 1e-15 * (phi(z, p).abs() + 1.0 / math.factorial(p)) / z.abs()
        assert (lhs - rhs).abs().le(4 * scale + 1e-300).all(), p


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("p", range(4))
def test_phi_gradient_is_finite_and_obeys_derivative_identity(dtype, p):
    """d/dz φ_p = φ_p - p·φ_{p+1} (p ≥ 1), d/dz φ_0 = φ_0; finite everywhere incl. z = 0 and the switch."""
    z = torch.tensor(z_grid(), dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(phi(z, p).sum(), z)
    assert torch.isfinite(grad).all()
    with torch.no_grad():
        zd = z.double()
        identity = phi(zd, p) - p * phi(zd, p + 1) if p else phi(zd, 0)
        # The derivative is the difference of two O(1/|z|) terms, so its error scales with them.
        scale = phi(zd, p).abs() + p * phi(zd, p + 1).abs()
    tol = {torch.float64: 1e-13, torch.float32: 2e-5}[dtype]
    error = (grad.double() - identity).abs()
    allowed = tol * scale + torch.finfo(dtype).tiny
    worst = int(torch.argmax(error / allowed))
    assert (error <= allowed).all(), (
        f"dφ_{p}/dz at z = {zd[worst].item()!r}: autograd {grad[worst].item()!r}, "
        f"identity {identity[worst].item()!r}")


def test_derivative_identity_against_high_precision_reference():
    """The identity itself, checked against mpmath's numerical derivative at a few points."""
    for x in (-1e-7, -0.4, -1.0, -1.2, -7.5, -300.0):
        for p in range(1, 4):
            with mpmath.workdps(50):
                exact = float(mpmath.diff(lambda s: _mp_phi(s, p), mpmath.mpf(x)))
            z = torch.tensor([x], dtype=torch.float64, requires_grad=True)
            (grad,) = torch.autograd.grad(phi(z, p).sum(), z)
            assert grad.item() == pytest.approx(exact, rel=1e-12, abs=1e-300), (x, p)


def _mp_phi(x, p: int):
    """φ_p in mpmath through its integral form ∫_0^1 e^{(1-θ)x} θ^{p-1}/(p-1)! dθ."""
    return mpmath.quad(lambda t: mpmath.exp((1 - t) * x) * t ** (p - 1), [0, 1]) / mpmath.factorial(p - 1)


def test_phi_second_derivative_finite_at_switch_and_zero():
    """Double backward (used by gradcheck of the scans) stays finite on both branches."""
    z = torch.tensor([0.0, -1e-8, -SERIES_RADIUS, -1.0000001, -1e4], dtype=torch.float64, requires_grad=True)
    for p in range(1, 4):
        (g,) = torch.autograd.grad(phi(z, p).sum(), z, create_graph=True)
        (gg,) = torch.autograd.grad(g.sum(), z)
        assert torch.isfinite(gg).all(), p
