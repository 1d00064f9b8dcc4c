"""The method math of the Triton backend: Ā(z), the stencil tap weights and their derivatives.

This is the one place where the Triton kernels learn what a method computes (the contract is
docs/METHODS.md; which methods exist, their stencils and λ come from the registry,
discbench.methods). A method's code is found by name, so there is no list of methods here:

- its taps: the @triton.jit function named after its key ("foh/paper" -> `foh_paper`),
  `fn(z, a, delta, lam, TAP: tl.constexpr)` -> (w, ∂w/∂a, ∂w/∂Δ, ∂w/∂λ) of the registry's tap
  number TAP (`method.taps[TAP]`, offset `method.offsets[TAP]`);
- its transition: `transition_<name>` for the registry's transition function of that name
  (discbench.methods.exponential -> `transition_exponential`), `fn(z)` -> (Ā, dĀ/dz), shared by
  every method with that transition.

`kernel_math(method)` returns the two; the kernels take them as constexpr arguments and call
them, so a compiled kernel holds only the chosen method's arithmetic. Each weight is written
once, as coefficients of building blocks (φ-functions, polynomials in z, polynomials in Δ and a)
whose helpers return the value with its derivatives. tests/test_triton.py holds every function
to the registry's weights and to autograd's derivatives of them.

All arithmetic is fp32 on tensors of any shape (the kernels pass (chunk, channels, states)
tiles); z = a·Δ, a < 0 the pole, Δ > 0 the step, λ the token's λ for a method that takes one.
"""

from __future__ import annotations

import sys

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from ..methods import Method


def kernel_math(method: Method) -> tuple:
    """(transition, taps): the @triton.jit functions of the method (see the module docstring);
    ValueError naming what to add here when one is missing."""
    module = sys.modules[__name__]  # looked up at each call: the functions may be re-decorated
    why = missing_method_reason(method)
    if why is not None:
        raise ValueError(why)
    return (getattr(module, _transition_name(method)), getattr(module, _taps_name(method)))


def _taps_name(method: Method) -> str:
    return method.key.replace("/", "_")


def _transition_name(method: Method) -> str:
    return "transition_" + getattr(method.transition, "__name__", "")


def _defined(name: str) -> bool:
    return isinstance(getattr(sys.modules[__name__], name, None), (JITFunction, InterpretedFunction))


def missing_method_reason(method: Method) -> str | None:
    """None when this module has the method's math, else what to add (the backend's refusal)."""
    missing = []
    if not _defined(_taps_name(method)):
        missing.append(f"a @triton.jit function `{_taps_name(method)}(z, a, delta, lam, TAP: tl.constexpr)` "
                       "returning (w, ∂w/∂a, ∂w/∂Δ, ∂w/∂λ) of tap TAP")
    if not _defined(_transition_name(method)):
        name = getattr(method.transition, "__name__", "?")
        missing.append(f"a @triton.jit function `transition_{name}(z)` returning (Ā, dĀ/dz) for the registry's "
                       f"transition `{name}` (or give the method one of the transitions already there: "
                       "discbench.methods.exponential, tustin, taylor4)")
    if not missing:
        return None
    return (f"backend 'triton' has no code for method {method.key}: add " + " and ".join(missing)
            + f" to {__file__}. Backends 'torch' and 'reference' run it as it is")


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


# ----------------------------------------------------------------------------- building blocks


@triton.jit
def _of_z(w, dw_dz, a, delta):
    """A weight that depends on z = aΔ only: (w, ∂w/∂a, ∂w/∂Δ, ∂w/∂λ = 0) by the chain rule."""
    return w, dw_dz * delta, dw_dz * a, w * 0.0


@triton.jit
def _phis(z, a, delta, c1, c2, c3):
    """The weight c1 φ_1 + c2 φ_2 + c3 φ_3 of z, with d/dz φ_p = φ_p − p φ_{p+1}."""
    f1, f2, f3, f4 = phi_1_to_4(z)
    return _of_z(c1 * f1 + c2 * f2 + c3 * f3,
                 c1 * (f1 - f2) + c2 * (f2 - 2.0 * f3) + c3 * (f3 - 3.0 * f4), a, delta)


@triton.jit
def _poly_z(z, c0, c1, c2, c3, c4):
    """(p, dp/dz) of p = c0 + c1 z + c2 z² + c3 z³ + c4 z⁴ (Horner)."""
    p = (((c4 * z + c3) * z + c2) * z + c1) * z + c0
    dp = ((4.0 * c4 * z + 3.0 * c3) * z + 2.0 * c2) * z + c1
    return p, dp


@triton.jit
def _tustin_r(z):
    """(r, dr/dz) of r = 1/(1 − z/2)."""
    r = 1.0 / (1.0 - 0.5 * z)
    return r, 0.5 * r * r


@triton.jit
def _poly_a(a, k0, k1, k2, k3):
    """(c, dc/da) of the coefficient c(a) = k0 + k1 a + k2 a² + k3 a³."""
    return _poly_z(a, k0, k1, k2, k3, 0.0)


@triton.jit
def _poly_in_delta(a, delta, c0, c1, c2, c3, c4):
    """The paper's weights w = Σ_i c_i(a) Δ^i, each c_i = (c, dc/da) from _poly_a:
    (w, ∂w/∂a, ∂w/∂Δ, ∂w/∂λ = 0)."""
    w = (((c4[0] * delta + c3[0]) * delta + c2[0]) * delta + c1[0]) * delta + c0[0]
    dw_da = (((c4[1] * delta + c3[1]) * delta + c2[1]) * delta + c1[1]) * delta + c0[1]
    dw_ddelta = ((4.0 * c4[0] * delta + 3.0 * c3[0]) * delta + 2.0 * c2[0]) * delta + c1[0]
    return w, dw_da, dw_ddelta, delta * 0.0


@triton.jit
def _const(value, z):
    """A weight that is a constant."""
    zero = z * 0.0
    return zero + value, zero, zero, zero


# ----------------------------------------------------------------------------- transitions


@triton.jit
def transition_exponential(z):
    e = tl.exp(z)
    return e, e


@triton.jit
def transition_tustin(z):
    r = 1.0 / (1.0 - 0.5 * z)
    return (1.0 + 0.5 * z) * r, r * r


@triton.jit
def transition_taylor4(z):
    return _poly_z(z, 1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0)


# ----------------------------------------------------------------------------- canonical taps


@triton.jit
def zoh_canonical(z, a, delta, lam, TAP: tl.constexpr):
    return _phis(z, a, delta, 1.0, 0.0, 0.0)  # φ_1


@triton.jit
def foh_canonical(z, a, delta, lam, TAP: tl.constexpr):
    if TAP == 0:  # offset -1: φ_1 − φ_2
        return _phis(z, a, delta, 1.0, -1.0, 0.0)
    else:  # offset 0: φ_2
        return _phis(z, a, delta, 0.0, 1.0, 0.0)


@triton.jit
def bilinear_canonical(z, a, delta, lam, TAP: tl.constexpr):  # both taps ½ r
    r, dr = _tustin_r(z)
    return _of_z(0.5 * r, 0.5 * dr, a, delta)


@triton.jit
def polynomial_canonical(z, a, delta, lam, TAP: tl.constexpr):
    if TAP == 0:  # offset -1: φ_3 − 1.5 φ_2 + φ_1
        return _phis(z, a, delta, 1.0, -1.5, 1.0)
    elif TAP == 1:  # offset 0: 2 φ_2 − 2 φ_3
        return _phis(z, a, delta, 0.0, 2.0, -2.0)
    else:  # offset +1: φ_3 − 0.5 φ_2
        return _phis(z, a, delta, 0.0, -0.5, 1.0)


@triton.jit
def highorder_canonical(z, a, delta, lam, TAP: tl.constexpr):
    if TAP == 0:  # offset -2: φ_3 − 0.5 φ_2
        return _phis(z, a, delta, 0.0, -0.5, 1.0)
    elif TAP == 1:  # offset -1: φ_1 − 2 φ_3
        return _phis(z, a, delta, 1.0, 0.0, -2.0)
    else:  # offset 0: φ_3 + 0.5 φ_2
        return _phis(z, a, delta, 0.0, 0.5, 1.0)


@triton.jit
def rk4_canonical(z, a, delta, lam, TAP: tl.constexpr):
    """w = k0 + ks c_s + km c_m with c_s = 1 + z + z²/2 + z³/4 (stage sum) and
    c_m = 4 + 2z + z²/2 (midpoint coefficient)."""
    c_s, dc_s = _poly_z(z, 1.0, 1.0, 0.5, 0.25, 0.0)
    c_m, dc_m = _poly_z(z, 4.0, 2.0, 0.5, 0.0, 0.0)
    if TAP == 0 or TAP == 3:  # offsets -2 and +1: −c_m/96
        k0, ks, km = 0.0, 0.0, -1.0 / 96.0
    elif TAP == 1:  # offset -1: (c_s + 9 c_m/16)/6
        k0, ks, km = 0.0, 1.0 / 6.0, 9.0 / 96.0
    else:  # offset 0: (1 + 9 c_m/16)/6
        k0, ks, km = 1.0 / 6.0, 0.0, 9.0 / 96.0
    return _of_z(k0 + ks * c_s + km * c_m, ks * dc_s + km * dc_m, a, delta)


@triton.jit
def _exp_trapezoid(z, a, delta, lam, TAP: tl.constexpr):
    """Mamba-3's taps: w_{-1} = (1 − λ) e^z, w_0 = λ."""
    if TAP == 0:  # offset -1
        e = tl.exp(z)
        w, dw_da, dw_dd, _ = _of_z((1.0 - lam) * e, (1.0 - lam) * e, a, delta)
        return w, dw_da, dw_dd, -e
    else:  # offset 0
        zero = z * 0.0
        return lam + zero, zero, zero, zero + 1.0


@triton.jit
def trapezoid_canonical(z, a, delta, lam, TAP: tl.constexpr):  # λ = ½
    w, dw_da, dw_dd, _ = _exp_trapezoid(z, a, delta, z * 0.0 + 0.5, TAP)
    return w, dw_da, dw_dd, z * 0.0


# ----------------------------------------------------------------------------- paper taps


@triton.jit
def zoh_paper(z, a, delta, lam, TAP: tl.constexpr):  # 1
    return _const(1.0, z)


@triton.jit
def bilinear_paper(z, a, delta, lam, TAP: tl.constexpr):  # r = 1/(1 − z/2)
    r, dr = _tustin_r(z)
    return _of_z(r, dr, a, delta)


@triton.jit
def rk4_paper(z, a, delta, lam, TAP: tl.constexpr):  # 1 + z/2 + z²/6 + z³/24
    w, dw_dz = _poly_z(z, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 0.0)
    return _of_z(w, dw_dz, a, delta)


@triton.jit
def foh_paper(z, a, delta, lam, TAP: tl.constexpr):  # Δ/2 + aΔ²/6 + a²Δ³/24 + a³Δ⁴/120
    return _poly_in_delta(a, delta, _poly_a(a, 0.0, 0.0, 0.0, 0.0), _poly_a(a, 0.5, 0.0, 0.0, 0.0),
                          _poly_a(a, 0.0, 1.0 / 6.0, 0.0, 0.0), _poly_a(a, 0.0, 0.0, 1.0 / 24.0, 0.0),
                          _poly_a(a, 0.0, 0.0, 0.0, 1.0 / 120.0))


@triton.jit
def polynomial_paper(z, a, delta, lam, TAP: tl.constexpr):
    # 1 + (a/2 + 1/4)Δ + (a²/6 + a/12)Δ² + (a³/24 + a²/48)Δ³
    return _poly_in_delta(a, delta, _poly_a(a, 1.0, 0.0, 0.0, 0.0), _poly_a(a, 0.25, 0.5, 0.0, 0.0),
                          _poly_a(a, 0.0, 1.0 / 12.0, 1.0 / 6.0, 0.0),
                          _poly_a(a, 0.0, 0.0, 1.0 / 48.0, 1.0 / 24.0), _poly_a(a, 0.0, 0.0, 0.0, 0.0))


@triton.jit
def highorder_paper(z, a, delta, lam, TAP: tl.constexpr):
    # 1 + (a/2 + 1/2)Δ + (a²/6 + a/6 + 1/12)Δ² + (a³/24 + a²/24 + a/48)Δ³
    return _poly_in_delta(a, delta, _poly_a(a, 1.0, 0.0, 0.0, 0.0), _poly_a(a, 0.5, 0.5, 0.0, 0.0),
                          _poly_a(a, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 6.0, 0.0),
                          _poly_a(a, 0.0, 1.0 / 48.0, 1.0 / 24.0, 1.0 / 24.0), _poly_a(a, 0.0, 0.0, 0.0, 0.0))


@triton.jit
def trapezoid_paper(z, a, delta, lam, TAP: tl.constexpr):  # the caller's per-token λ
    return _exp_trapezoid(z, a, delta, lam, TAP)
