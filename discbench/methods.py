"""The discretization methods × variants of docs/METHODS.md, as data: the one registry.

Every method is the recurrence

    h_k = Ā(z_k) · h_{k-1} + Δ_k · Σ_{j ∈ S} w_j(z_k, a, Δ_k, λ_k) · v_{k+j},    z_k = a · Δ_k

so a method is its transition Ā(z) and its taps (offset j, weight w_j). Everything reads this
registry: the PyTorch backends evaluate these very functions; the compiled kernels hold their own
copy of each method's math (csrc/ds_methods.h, scan/triton_methods.py) but take the list of
methods, their ids, stencils and what their weights read from here (scan/cpu.py generates the
C++ list at build time), and the tests hold them to these functions. Adding a method is one
`Method` in `_CANONICAL` or `_PAPER` below (plus its kernel math; a backend without it refuses
the method with a message saying what to add where); `register` adds one at run time.

Weight functions take (z, a, delta, lam), broadcastable tensors of one dtype. Canonical weights
depend on z only; the paper's formulas also depend on Δ alone (they are not functions of aΔ).
`lam` is the per-token λ_k of a method with `takes_lam` (Mamba-3's trapezoid as its paper
states it: the scan's `lam` argument, (b, d, l)); every other method is given None and
ignores it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch

from .phi import phi

Tensor = torch.Tensor
WeightFn = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], Tensor]

VARIANTS = ("canonical", "paper")
# The arguments of a weight function, in its order; Method.weights_read names the ones it reads.
WEIGHT_INPUTS = ("z", "a", "delta", "lam")
# A method name is an identifier: the compiled kernels name their code after it.
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
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
    # The weight functions' arguments (of WEIGHT_INPUTS) the weights depend on, z counted as an
    # argument of its own: the C++ kernel differentiates the weights only along these
    # (tests/test_methods.py checks this against autograd). "lam": the weights read a per-token
    # λ_k, so selective_scan requires its `lam` argument, (b, d, l) like delta, and returns its
    # gradient; every other method refuses it.
    weights_read: frozenset[str] = frozenset({"z"})

    def __post_init__(self) -> None:
        where = f"method {self.name!r}/{self.variant!r}"
        if not isinstance(self.name, str) or not _NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"{where}: the name must match {_NAME_PATTERN.pattern} (the kernels name code after it)")
        if self.variant not in VARIANTS:
            raise ValueError(f"{where}: unknown variant; valid variants: {', '.join(VARIANTS)}")
        if not self.taps or list(self.offsets) != sorted(set(self.offsets)):
            raise ValueError(f"{where}: taps must be given in increasing offset order, each offset once; "
                             f"got offsets {list(self.offsets)}")
        unknown = set(self.weights_read) - set(WEIGHT_INPUTS)
        if unknown:
            raise ValueError(f"{where}: weights_read has {sorted(unknown)}; allowed: {', '.join(WEIGHT_INPUTS)}")
        object.__setattr__(self, "weights_read", frozenset(self.weights_read))

    @property
    def key(self) -> str:
        return f"{self.name}/{self.variant}"

    @property
    def takes_lam(self) -> bool:
        """Whether the weights read the per-token λ_k (the scan's `lam` argument)."""
        return "lam" in self.weights_read

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(t.offset for t in self.taps)

    @property
    def a_stable(self) -> bool:
        return math.isinf(self.stability_bound)


# The transitions Ā(z). A kernel backend may find its own code for a method's transition by the
# function's name (scan/triton_methods.py does), so a method reuses them rather than copying one.
def exponential(z: Tensor) -> Tensor:
    return torch.exp(z)


def tustin(z: Tensor) -> Tensor:
    return (1 + z / 2) / (1 - z / 2)


def taylor4(z: Tensor) -> Tensor:
    """The degree-4 Taylor polynomial of e^z (classical RK4's transition)."""
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
        "zoh", "canonical", exponential,
        (Tap(0, lambda z, a, d, lam: phi(z, 1)),),
        order=1, stability_bound=_A_STABLE,
        summary="exact integral with v held at v_k over the step",
    ),
    Method(
        "foh", "canonical", exponential,
        (Tap(-1, lambda z, a, d, lam: phi(z, 1) - phi(z, 2)), Tap(0, lambda z, a, d, lam: phi(z, 2))),
        order=2, stability_bound=_A_STABLE,
        summary="exact integral with v linear from v_{k-1} to v_k",
    ),
    Method(
        "bilinear", "canonical", tustin,
        (Tap(-1, lambda z, a, d, lam: 0.5 / (1 - z / 2)), Tap(0, lambda z, a, d, lam: 0.5 / (1 - z / 2))),
        order=2, stability_bound=_A_STABLE,
        summary="trapezoidal rule (Tustin)",
    ),
    Method(
        "polynomial", "canonical", exponential,
        (
            Tap(-1, lambda z, a, d, lam: phi(z, 3) - 1.5 * phi(z, 2) + phi(z, 1)),
            Tap(0, lambda z, a, d, lam: 2 * phi(z, 2) - 2 * phi(z, 3)),
            Tap(1, lambda z, a, d, lam: phi(z, 3) - 0.5 * phi(z, 2)),
        ),
        order=3, stability_bound=_A_STABLE,
        summary="exact integral of the quadratic through v_{k-1}, v_k, v_{k+1} (non-causal)",
    ),
    Method(
        "highorder", "canonical", exponential,
        (
            Tap(-2, lambda z, a, d, lam: phi(z, 3) - 0.5 * phi(z, 2)),
            Tap(-1, lambda z, a, d, lam: phi(z, 1) - 2 * phi(z, 3)),
            Tap(0, lambda z, a, d, lam: phi(z, 3) + 0.5 * phi(z, 2)),
        ),
        order=3, stability_bound=_A_STABLE,
        summary="exact integral of the quadratic through v_{k-2}, v_{k-1}, v_k (causal)",
    ),
    Method(
        "rk4", "canonical", taylor4,
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
        "trapezoid", "canonical", exponential, _exp_trapezoid(lambda z, lam: torch.full_like(z, 0.5)),
        order=2, stability_bound=_A_STABLE,
        summary="exponential-trapezoidal rule, λ = ½: trapezoidal quadrature of the exact integral",
    ),
]

_PAPER = [
    Method(
        "zoh", "paper", exponential, (Tap(0, lambda z, a, d, lam: torch.ones_like(z)),),
        order=1, stability_bound=_A_STABLE,
        summary="Mamba's ZOH: exp for A, Euler for B (B̄ = Δ)", weights_read=frozenset(),
    ),
    Method(
        "foh", "paper", exponential,
        (Tap(0, _poly_in_delta(_const(0.0), _const(1 / 2), lambda a: a / 6,
                               lambda a: a**2 / 24, lambda a: a**3 / 120)),),
        order=0, stability_bound=_A_STABLE,
        summary="B̄ = Δ²/2 + aΔ³/6 + a²Δ⁴/24 + a³Δ⁵/120",
        weights_read=frozenset({"a", "delta"}),
    ),
    Method(
        "bilinear", "paper", tustin, (Tap(0, lambda z, a, d, lam: 1 / (1 - z / 2)),),
        order=1, stability_bound=_A_STABLE,
        summary="Tustin Ā, B̄ = Δ/(1 - z/2) on the current sample only (S4)",
    ),
    Method(
        "polynomial", "paper", exponential,
        (Tap(0, _poly_in_delta(_const(1.0), lambda a: a / 2 + 1 / 4,
                               lambda a: a**2 / 6 + a / 12, lambda a: a**3 / 24 + a**2 / 48)),),
        order=1, stability_bound=_A_STABLE,
        summary="B̄ = Δ + (a/2 + 1/4)Δ² + (a²/6 + a/12)Δ³ + (a³/24 + a²/48)Δ⁴",
        weights_read=frozenset({"a", "delta"}),
    ),
    Method(
        "highorder", "paper", exponential,
        (Tap(0, _poly_in_delta(_const(1.0), lambda a: a / 2 + 1 / 2,
                               lambda a: a**2 / 6 + a / 6 + 1 / 12,
                               lambda a: a**3 / 24 + a**2 / 24 + a / 48)),),
        order=1, stability_bound=_A_STABLE,
        summary="B̄ = Δ + (a/2 + 1/2)Δ² + (a²/6 + a/6 + 1/12)Δ³ + (a³/24 + a²/24 + a/48)Δ⁴",
        weights_read=frozenset({"a", "delta"}),
    ),
    Method(
        "rk4", "paper", exponential,
        (Tap(0, lambda z, a, d, lam: 1 + z / 2 + z * z / 6 + z**3 / 24),),
        order=1, stability_bound=_A_STABLE,
        summary="B̄ = Δ + aΔ²/2 + a²Δ³/6 + a³Δ⁴/24 (per state, no mixing)",
    ),
    Method(
        "trapezoid", "paper", exponential, _exp_trapezoid(lambda z, lam: lam),
        order=1, stability_bound=_A_STABLE,
        summary="Mamba-3's exponential-trapezoidal rule with a per-token λ_k (the scan's `lam`)",
        weights_read=frozenset({"z", "lam"}),
    ),
]

# The registry, in a fixed order (a method's id is its position). Read it live: `register` and
# `unregister` change it at run time.
METHODS: dict[str, Method] = {m.key: m for m in _CANONICAL + _PAPER}


class _RegisteredNames(Sequence):
    """The registry's method names in registry order, read at each use (so a method registered
    at run time is listed, accepted and reported like the others)."""

    def __getitem__(self, index):
        return tuple(dict.fromkeys(m.name for m in METHODS.values()))[index]

    def __len__(self) -> int:
        return len(set(m.name for m in METHODS.values()))

    def __repr__(self) -> str:
        return repr(tuple(self))


METHOD_NAMES: Sequence[str] = _RegisteredNames()


def register(*methods: Method) -> None:
    """Add methods to the registry at run time (after the built-in ones, so ids do not move)."""
    for method in methods:
        if not isinstance(method, Method):
            raise TypeError(f"register takes Method objects, got {type(method).__name__}")
        if method.key in METHODS:
            raise ValueError(f"method {method.key} is already registered")
    for method in methods:
        METHODS[method.key] = method


def unregister(*keys: str) -> None:
    """Remove methods ("name/variant" keys) that `register` added."""
    for key in keys:
        if key not in METHODS:
            raise ValueError(f"method {key!r} is not registered; registered: {', '.join(METHODS)}")
        del METHODS[key]


def method_ids() -> dict[str, int]:
    """Each method's id, its position in the registry: the number the compiled kernels switch on."""
    return {key: index for index, key in enumerate(METHODS)}


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
