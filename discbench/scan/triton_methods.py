"""The method math of the Triton backend: Ā(z), the stencil tap weights and their derivatives.

This is the one place where the Triton kernels learn what a method computes (the contract is
docs/METHODS.md, the host-side data is discbench.methods). A method is selected by a
constexpr id (`METHOD_IDS[method.key]`); each function branches on it at compile time, so the
compiled kernel holds only the chosen method's arithmetic. Tap `t` here is the registry's
`method.taps[t]` (same order, offset `method.offsets[t]`); tests/test_triton.py holds every
function to the registry's weights and to autograd's derivatives of them.

All arithmetic is fp32 on tensors of any shape (the kernels pass (chunk, channels, states)
tiles); z = a·Δ, a < 0 the pole, Δ > 0 the step, λ the token's λ for a method that takes one
(trapezoid/paper; ignored by the others).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..methods import METHODS, Method

# Method ids: compile-time constants the kernels branch on.
ZOH_CANONICAL = tl.constexpr(0)
FOH_CANONICAL = tl.constexpr(1)
BILINEAR_CANONICAL = tl.constexpr(2)
POLYNOMIAL_CANONICAL = tl.constexpr(3)
HIGHORDER_CANONICAL = tl.constexpr(4)
RK4_CANONICAL = tl.constexpr(5)
ZOH_PAPER = tl.constexpr(6)
FOH_PAPER = tl.constexpr(7)
BILINEAR_PAPER = tl.constexpr(8)
POLYNOMIAL_PAPER = tl.constexpr(9)
HIGHORDER_PAPER = tl.constexpr(10)
RK4_PAPER = tl.constexpr(11)
TRAPEZOID_CANONICAL = tl.constexpr(12)
TRAPEZOID_PAPER = tl.constexpr(13)

METHOD_IDS: dict[str, int] = {
    "zoh/canonical": ZOH_CANONICAL.value,
    "foh/canonical": FOH_CANONICAL.value,
    "bilinear/canonical": BILINEAR_CANONICAL.value,
    "polynomial/canonical": POLYNOMIAL_CANONICAL.value,
    "highorder/canonical": HIGHORDER_CANONICAL.value,
    "rk4/canonical": RK4_CANONICAL.value,
    "zoh/paper": ZOH_PAPER.value,
    "foh/paper": FOH_PAPER.value,
    "bilinear/paper": BILINEAR_PAPER.value,
    "polynomial/paper": POLYNOMIAL_PAPER.value,
    "highorder/paper": HIGHORDER_PAPER.value,
    "rk4/paper": RK4_PAPER.value,
    "trapezoid/canonical": TRAPEZOID_CANONICAL.value,
    "trapezoid/paper": TRAPEZOID_PAPER.value,
}

assert set(METHOD_IDS) == set(METHODS), "every registry method needs a Triton method id"


def method_id(method: Method) -> int:
    """The constexpr id of a registry method."""
    return METHOD_IDS[method.key]


# φ_p(z) = Σ_{m≥0} z^m/(m+p)!: with |z| < 1 the terms up to m = 13 (1/17! ≈ 3e-15) are far below
# fp32 rounding for p = 4; φ_1…φ_3 then follow from φ_p = 1/p! + z·φ_{p+1}, which adds, never cancels.
PHI_SERIES_RADIUS = tl.constexpr(1.0)


@triton.jit
def phi_1_to_4(z):
    """(φ_1, φ_2, φ_3, φ_4)(z), finite for z in [-1e4, 0]: series for |z| < 1, closed form else."""
    small = tl.abs(z) < PHI_SERIES_RADIUS
    zs = tl.where(small, z, 0.0)
    # Horner for φ_4 = Σ_{m=0}^{10} z^m / (m+4)!
    p4 = 1.0 / 355687428096000.0  # 1/17!
    p4 = p4 * zs + 1.0 / 20922789888000.0  # 1/16!
    p4 = p4 * zs + 1.0 / 1307674368000.0
    p4 = p4 * zs + 1.0 / 87178291200.0
    p4 = p4 * zs + 1.0 / 6227020800.0
    p4 = p4 * zs + 1.0 / 479001600.0
    p4 = p4 * zs + 1.0 / 39916800.0
    p4 = p4 * zs + 1.0 / 3628800.0
    p4 = p4 * zs + 1.0 / 362880.0
    p4 = p4 * zs + 1.0 / 40320.0
    p4 = p4 * zs + 1.0 / 5040.0
    p4 = p4 * zs + 1.0 / 720.0
    p4 = p4 * zs + 1.0 / 120.0
    p4 = p4 * zs + 1.0 / 24.0
    s3 = 1.0 / 6.0 + zs * p4
    s2 = 0.5 + zs * s3
    s1 = 1.0 + zs * s2
    # The closed form is fed -1 where the series is used, so it never divides by zero.
    zc = tl.where(small, -1.0, z)
    c1 = (tl.exp(zc) - 1.0) / zc
    c2 = (c1 - 1.0) / zc
    c3 = (c2 - 0.5) / zc
    c4 = (c3 - 1.0 / 6.0) / zc
    return (tl.where(small, s1, c1), tl.where(small, s2, c2),
            tl.where(small, s3, c3), tl.where(small, p4, c4))


@triton.jit
def transition(z, METHOD: tl.constexpr):
    """(Ā(z), dĀ/dz) of the method."""
    if METHOD == BILINEAR_CANONICAL or METHOD == BILINEAR_PAPER:
        r = 1.0 / (1.0 - 0.5 * z)
        a_bar = (1.0 + 0.5 * z) * r
        da_bar = r * r
    elif METHOD == RK4_CANONICAL:
        a_bar = 1.0 + z * (1.0 + z * (0.5 + z * (1.0 / 6.0 + z * (1.0 / 24.0))))
        da_bar = 1.0 + z * (1.0 + z * (0.5 + z * (1.0 / 6.0)))
    else:
        a_bar = tl.exp(z)
        da_bar = a_bar
    return a_bar, da_bar


@triton.jit
def _of_z(w, dw_dz, a, delta):
    """A weight that depends on z = aΔ only: (w, ∂w/∂a, ∂w/∂Δ) by the chain rule."""
    return w, dw_dz * delta, dw_dz * a


@triton.jit
def _poly_in_delta(delta, c0, c1, c2, c3, c4, dc0, dc1, dc2, dc3, dc4):
    """w = Σ_i c_i(a) Δ^i with the coefficients c_i and their a-derivatives dc_i given:
    (w, ∂w/∂a, ∂w/∂Δ)."""
    w = (((c4 * delta + c3) * delta + c2) * delta + c1) * delta + c0
    dw_da = (((dc4 * delta + dc3) * delta + dc2) * delta + dc1) * delta + dc0
    dw_ddelta = ((4.0 * c4 * delta + 3.0 * c3) * delta + 2.0 * c2) * delta + c1
    return w, dw_da, dw_ddelta


@triton.jit
def tap_weight(z, a, delta, lam, METHOD: tl.constexpr, TAP: tl.constexpr):
    """(w_TAP, ∂w_TAP/∂a, ∂w_TAP/∂Δ, ∂w_TAP/∂λ) of the method's tap number TAP (registry order).

    z, a, delta, lam broadcast to one shape. ∂/∂a holds Δ fixed and ∂/∂Δ holds a fixed;
    canonical weights are functions of z alone, the paper's are polynomials in Δ with
    a-dependent coefficients; only trapezoid/paper reads λ (∂w/∂λ is 0 for every other method).
    """
    zero = z * 0.0
    dw_dl = zero
    if METHOD == ZOH_CANONICAL:
        f1, f2, f3, f4 = phi_1_to_4(z)
        w, dw_da, dw_dd = _of_z(f1, f1 - f2, a, delta)
    elif METHOD == FOH_CANONICAL:
        f1, f2, f3, f4 = phi_1_to_4(z)
        if TAP == 0:  # offset -1
            w, dw_da, dw_dd = _of_z(f1 - f2, (f1 - f2) - (f2 - 2.0 * f3), a, delta)
        else:  # offset 0
            w, dw_da, dw_dd = _of_z(f2, f2 - 2.0 * f3, a, delta)
    elif METHOD == BILINEAR_CANONICAL:
        r = 1.0 / (1.0 - 0.5 * z)
        w, dw_da, dw_dd = _of_z(0.5 * r, 0.25 * r * r, a, delta)
    elif METHOD == POLYNOMIAL_CANONICAL:
        f1, f2, f3, f4 = phi_1_to_4(z)
        d1 = f1 - f2
        d2 = f2 - 2.0 * f3
        d3 = f3 - 3.0 * f4
        if TAP == 0:  # offset -1
            w, dw_da, dw_dd = _of_z(f3 - 1.5 * f2 + f1, d3 - 1.5 * d2 + d1, a, delta)
        elif TAP == 1:  # offset 0
            w, dw_da, dw_dd = _of_z(2.0 * f2 - 2.0 * f3, 2.0 * d2 - 2.0 * d3, a, delta)
        else:  # offset +1
            w, dw_da, dw_dd = _of_z(f3 - 0.5 * f2, d3 - 0.5 * d2, a, delta)
    elif METHOD == HIGHORDER_CANONICAL:
        f1, f2, f3, f4 = phi_1_to_4(z)
        d1 = f1 - f2
        d2 = f2 - 2.0 * f3
        d3 = f3 - 3.0 * f4
        if TAP == 0:  # offset -2
            w, dw_da, dw_dd = _of_z(f3 - 0.5 * f2, d3 - 0.5 * d2, a, delta)
        elif TAP == 1:  # offset -1
            w, dw_da, dw_dd = _of_z(f1 - 2.0 * f3, d1 - 2.0 * d3, a, delta)
        else:  # offset 0
            w, dw_da, dw_dd = _of_z(f3 + 0.5 * f2, d3 + 0.5 * d2, a, delta)
    elif METHOD == RK4_CANONICAL:
        # c_s = 1 + z + z²/2 + z³/4 (stage sum), c_m = 4 + 2z + z²/2 (midpoint coefficient)
        c_s = 1.0 + z * (1.0 + z * (0.5 + 0.25 * z))
        dc_s = 1.0 + z * (1.0 + 0.75 * z)
        c_m = 4.0 + z * (2.0 + 0.5 * z)
        dc_m = 2.0 + z
        if TAP == 0 or TAP == 3:  # offsets -2 and +1
            w, dw_da, dw_dd = _of_z(-c_m / 96.0, -dc_m / 96.0, a, delta)
        elif TAP == 1:  # offset -1
            w, dw_da, dw_dd = _of_z((c_s + 9.0 * c_m / 16.0) / 6.0,
                                    (dc_s + 9.0 * dc_m / 16.0) / 6.0, a, delta)
        else:  # offset 0
            w, dw_da, dw_dd = _of_z((1.0 + 9.0 * c_m / 16.0) / 6.0, (9.0 * dc_m / 16.0) / 6.0,
                                    a, delta)
    elif METHOD == ZOH_PAPER:
        w, dw_da, dw_dd = zero + 1.0, zero, zero
    elif METHOD == FOH_PAPER:
        # Δ/2 + aΔ²/6 + a²Δ³/24 + a³Δ⁴/120
        w, dw_da, dw_dd = _poly_in_delta(
            delta, zero, zero + 0.5, a / 6.0, a * a / 24.0, a * a * a / 120.0,
            zero, zero, zero + 1.0 / 6.0, a / 12.0, a * a / 40.0)
    elif METHOD == BILINEAR_PAPER:
        r = 1.0 / (1.0 - 0.5 * z)
        w, dw_da, dw_dd = _of_z(r, 0.5 * r * r, a, delta)
    elif METHOD == POLYNOMIAL_PAPER:
        # 1 + (a/2 + 1/4)Δ + (a²/6 + a/12)Δ² + (a³/24 + a²/48)Δ³
        w, dw_da, dw_dd = _poly_in_delta(
            delta, zero + 1.0, a / 2.0 + 0.25, a * a / 6.0 + a / 12.0,
            a * a * a / 24.0 + a * a / 48.0, zero,
            zero, zero + 0.5, a / 3.0 + 1.0 / 12.0, a * a / 8.0 + a / 24.0, zero)
    elif METHOD == HIGHORDER_PAPER:
        # 1 + (a/2 + 1/2)Δ + (a²/6 + a/6 + 1/12)Δ² + (a³/24 + a²/24 + a/48)Δ³
        w, dw_da, dw_dd = _poly_in_delta(
            delta, zero + 1.0, a / 2.0 + 0.5, a * a / 6.0 + a / 6.0 + 1.0 / 12.0,
            a * a * a / 24.0 + a * a / 24.0 + a / 48.0, zero,
            zero, zero + 0.5, a / 3.0 + 1.0 / 6.0, a * a / 8.0 + a / 12.0 + 1.0 / 48.0, zero)
    elif METHOD == RK4_PAPER:  # 1 + z/2 + z²/6 + z³/24
        w, dw_da, dw_dd = _of_z(1.0 + z * (0.5 + z * (1.0 / 6.0 + z / 24.0)),
                                0.5 + z * (1.0 / 3.0 + z / 8.0), a, delta)
    elif METHOD == TRAPEZOID_CANONICAL:  # w_{-1} = e^z / 2, w_0 = 1/2
        if TAP == 0:  # offset -1
            half_e = 0.5 * tl.exp(z)
            w, dw_da, dw_dd = _of_z(half_e, half_e, a, delta)
        else:  # offset 0
            w, dw_da, dw_dd = zero + 0.5, zero, zero
    else:  # w_{-1} = (1 − λ) e^z, w_0 = λ
        tl.static_assert(METHOD == TRAPEZOID_PAPER, "unknown method id")
        if TAP == 0:  # offset -1
            e = tl.exp(z)
            w, dw_da, dw_dd = _of_z((1.0 - lam) * e, (1.0 - lam) * e, a, delta)
            dw_dl = -e
        else:  # offset 0
            w, dw_da, dw_dd = lam + zero, zero, zero
            dw_dl = zero + 1.0
    return w, dw_da, dw_dd, dw_dl
