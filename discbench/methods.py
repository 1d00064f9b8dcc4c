"""The seven discretization methods × two variants of docs/METHODS.md, as data.

Every method is the recurrence

    h_k = Ā(z_k) · h_{k-1} + Δ_k · Σ_{j ∈ S} w_j(z_k, a, Δ_k, λ_k) · v_{k+j},    z_k = a · Δ_k

so a method is its transition Ā(z) and its taps (offset j, weight w_j). Backends read this
registry; the PyTorch backends evaluate these very functions, the compiled kernels hold their
own copies and the tests hold them to these.

Weight functions take (z, a, delta, lam), broadcastable tensors of one dtype. Canonical weights
depend on z only; the paper's formulas also depend on Δ alone (they are not functions of aΔ).
`lam` is the per-token λ_k of a method with `takes_lam` (Mamba-3's trapezoid as its paper
states it: the scan's `lam` argument, (b, d, l)); every other method is given None and
ignores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .phi import phi

Tensor = torch.Tensor
WeightFn = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], Tensor]

METHOD_NAMES = ("zoh", "foh", "bilinear", "polynomial", "highorder", "rk4", "trapezoid")
VARIANTS = ("canonical", "paper")
# The most negative z for which canonical rk4 keeps |Ā| ≤ 1 (root of |R(z)| = 1, R the
# degree-4 Taylor polynomial of e^z).
RK4_STABILITY_BOUND = -2.785293563405282


@dataclass(frozen=True)
class Tap:
    """One stencil tap: the drive sample v_{k+offset}, weighted by weight(z, a, delta, lam)."""

    offset: int
    weight: WeightFn


@dataclass(frozen=True)
class Method:
    """A discretization: Ā(z) and the stencil taps; plus the facts METHODS.md states."""

    name: str
    variant: str
    transition: Callable[[Tensor], Tensor]
    taps: tuple[Tap, ...]
    order: int  # stated global order on h' = a h + v(t); 0 means it does not converge
    stability_bound: float  # most negative z with |Ā(z)| ≤ 1 (-inf: A-stable)
    summary: str
    # True when the weights read a per-token λ_k: selective_scan then requires its `lam`
    # argument, (b, d, l) like delta, and returns its gradient; every other method refuses it.
    takes_lam: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}/{self.variant}"

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(t.offset for t in self.taps)

    @property
    def a_stable(self) -> bool:
        return math.isinf(self.stability_bound)


def _exp(z: Tensor) -> Tensor:
    return torch.exp(z)


def _tustin(z: Tensor) -> Tensor:
    return (1 + z / 2) / (1 - z / 2)


def _taylor4(z: Tensor) -> Tensor:
    return 1 + z * (1 + z * (1 / 2 + z * (1 / 6 + z / 24)))


def _poly_in_delta(*coefficients: Callable[[Tensor], Tensor]) -> WeightFn:
    """w(z, a, Δ) = Σ_i c_i(a) Δ^i, the shape of every paper formula (B̄ = Δ · w)."""

    def weight(z: Tensor, a: Tensor, delta: Tensor, lam: Tensor | None) -> Tensor:
        out = coefficients[-1](a) * torch.ones_like(delta)
        for c in reversed(coefficients[:-1]):
            out = out * delta + c(a)
        return out

    return weight


def _const(value: float) -> Callable[[Tensor], Tensor]:
    return lambda a: torch.full_like(a, value)


def _rk4_cs(z: Tensor) -> Tensor:
    return 1 + z + z * z / 2 + z**3 / 4


def _rk4_cm(z: Tensor) -> Tensor:
    return 4 + 2 * z + z * z / 2


def _exp_trapezoid(lam_of: Callable[[Tensor, "Tensor | None"], Tensor]) -> tuple[Tap, ...]:
    """Mamba-3's exponential-trapezoidal taps: w_{-1} = (1 − λ) e^z, w_0 = λ, λ = lam_of(z, lam).

    The trapezoidal quadrature (weight λ on the step's end, 1 − λ on its start) of the exact
    variation-of-constants integral ∫_0^Δ e^{a(Δ−s)} v(t_{k−1} + s) ds.
    """
    return (
        Tap(-1, lambda z, a, d, lam: (1 - lam_of(z, lam)) * torch.exp(z)),
        Tap(0, lambda z, a, d, lam: lam_of(z, lam) * torch.ones_like(z)),
    )


_A_STABLE = -math.inf

_CANONICAL = [
    Method(
        "zoh", "canonical", _exp,
        (Tap(0, lambda z, a, d, lam: phi(z, 1)),),
        order=1, stability_bound=_A_STABLE,
        summary="exact integral with v held at v_k over the step",
    ),
    Method(
        "foh", "canonical", _exp,
        (Tap(-1, lambda z, a, d, lam: phi(z, 1) - phi(z, 2)), Tap(0, lambda z, a, d, lam: phi(z, 2))),
        order=2, stability_bound=_A_STABLE,
        summary="exact integral with v linear from v_{k-1} to v_k",
    ),
    Method(
        "bilinear", "canonical", _tustin,
        (Tap(-1, lambda z, a, d, lam: 0.5 / (1 - z / 2)), Tap(0, lambda z, a, d, lam: 0.5 / (1 - z / 2))),
        order=2, stability_bound=_A_STABLE,
        summary="trapezoidal rule (Tustin)",
    ),
    Method(
        "polynomial", "canonical", _exp,
        (
            Tap(-1, lambda z, a, d, lam: phi(z, 3) - 1.5 * phi(z, 2) + phi(z, 1)),
            Tap(0, lambda z, a, d, lam: 2 * phi(z, 2) - 2 * phi(z, 3)),
            Tap(1, lambda z, a, d, lam: phi(z, 3) - 0.5 * phi(z, 2)),
        ),
        order=3, stability_bound=_A_STABLE,
        summary="exact integral of the quadratic through v_{k-1}, v_k, v_{k+1} (non-causal)",
    ),
    Method(
        "highorder", "canonical", _exp,
        (
            Tap(-2, lambda z, a, d, lam: phi(z, 3) - 0.5 * phi(z, 2)),
            Tap(-1, lambda z, a, d, lam: phi(z, 1) - 2 * phi(z, 3)),
            Tap(0, lambda z, a, d, lam: phi(z, 3) + 0.5 * phi(z, 2)),
        ),
        order=3, stability_bound=_A_STABLE,
        summary="exact integral of the quadratic through v_{k-2}, v_{k-1}, v_k (causal)",
    ),
    Method(
        "rk4", "canonical", _taylor4,
        (
            Tap(-2, lambda z, a, d, lam: -_rk4_cm(z) / 96),
            Tap(-1, lambda z, a, d, lam: (_rk4_cs(z) + 9 * _rk4_cm(z) / 16) / 6),
            Tap(0, lambda z, a, d, lam: (1 + 9 * _rk4_cm(z) / 16) / 6),
            Tap(1, lambda z, a, d, lam: -_rk4_cm(z) / 96),
        ),
        order=4, stability_bound=RK4_STABILITY_BOUND,
        summary="classical RK4, midpoint drive by 4-point cubic interpolation",
    ),
    Method(
        "trapezoid", "canonical", _exp, _exp_trapezoid(lambda z, lam: torch.full_like(z, 0.5)),
        order=2, stability_bound=_A_STABLE,
        summary="exponential-trapezoidal rule, λ = ½: trapezoidal quadrature of the exact integral",
    ),
]

_PAPER = [
    Method(
        "zoh", "paper", _exp, (Tap(0, lambda z, a, d, lam: torch.ones_like(z)),),
        order=1, stability_bound=_A_STABLE,
        summary="Mamba's ZOH: exp for A, Euler for B (B̄ = Δ)",
    ),
    Method(
        "foh", "paper", _exp,
        (Tap(0, _poly_in_delta(_const(0.0), _const(1 / 2), lambda a: a / 6,
                               lambda a: a**2 / 24, lambda a: a**3 / 120)),),
        order=0, stability_bound=_A_STABLE,
        summary="B̄ = Δ²/2 + aΔ³/6 + a²Δ⁴/24 + a³Δ⁵/120",
    ),
    Method(
        "bilinear", "paper", _tustin, (Tap(0, lambda z, a, d, lam: 1 / (1 - z / 2)),),
        order=1, stability_bound=_A_STABLE,
        summary="Tustin Ā, B̄ = Δ/(1 - z/2) on the current sample only (S4)",
    ),
    Method(
        "polynomial", "paper", _exp,
        (Tap(0, _poly_in_delta(_const(1.0), lambda a: a / 2 + 1 / 4,
                               lambda a: a**2 / 6 + a / 12, lambda a: a**3 / 24 + a**2 / 48)),),
        order=1, stability_bound=_A_STABLE,
        summary="B̄ = Δ + (a/2 + 1/4)Δ² + (a²/6 + a/12)Δ³ + (a³/24 + a²/48)Δ⁴",
    ),
    Method(
        "highorder", "paper", _exp,
        (Tap(0, _poly_in_delta(_const(1.0), lambda a: a / 2 + 1 / 2,
                               lambda a: a**2 / 6 + a / 6 + 1 / 12,
                               lambda a: a**3 / 24 + a**2 / 24 + a / 48)),),
        order=1, stability_bound=_A_STABLE,
        summary="B̄ = Δ + (a/2 + 1/2)Δ² + (a²/6 + a/6 + 1/12)Δ³ + (a³/24 + a²/24 + a/48)Δ⁴",
    ),
    Method(
        "rk4", "paper", _exp,
        (Tap(0, lambda z, a, d, lam: 1 + z / 2 + z * z / 6 + z**3 / 24),),
        order=1, stability_bound=_A_STABLE,
        summary="B̄ = Δ + aΔ²/2 + a²Δ³/6 + a³Δ⁴/24 (per state, no mixing)",
    ),
    Method(
        "trapezoid", "paper", _exp, _exp_trapezoid(lambda z, lam: lam),
        order=1, stability_bound=_A_STABLE,
        summary="Mamba-3's exponential-trapezoidal rule with a per-token λ_k (the scan's `lam`)",
        takes_lam=True,
    ),
]

METHODS: dict[str, Method] = {m.key: m for m in _CANONICAL + _PAPER}


def parse_method(spec: str, variant: str | None = None) -> tuple[str, str]:
    """'foh' or 'foh/paper' (with an optional separate variant) -> ('foh', 'paper')."""
    if not isinstance(spec, str):
        raise TypeError(f"method must be a str such as 'zoh' or 'foh/paper', got {type(spec).__name__}")
    name, _, suffix = spec.partition("/")
    if suffix and variant and suffix != variant:
        raise ValueError(f"method {spec!r} names variant {suffix!r} but variant={variant!r} was given")
    return name, suffix or variant or "canonical"


def get_method(method: str, variant: str | None = None) -> Method:
    """Look up a method by name and variant; errors list the valid choices."""
    name, var = parse_method(method, variant)
    return METHODS[f"{check_method_name(name)}/{check_variant(var)}"]


def method_of_call(method: str, variant: str) -> Method:
    """The method of a call with `variant=` defaulted: a "name/variant" `method` takes precedence
    over `variant` (so selective_scan(method="foh/paper") needs no variant=)."""
    return get_method(method, None if isinstance(method, str) and "/" in method else variant)


def check_method_name(name: str) -> str:
    """`name` if it is one of METHOD_NAMES, else an error listing them."""
    if name not in METHOD_NAMES:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHOD_NAMES)}")
    return name


def check_variant(variant: str) -> str:
    """`variant` if it is one of VARIANTS, else an error listing them."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    return variant


def all_methods() -> list[Method]:
    return list(METHODS.values())
