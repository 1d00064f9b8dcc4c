"""The method registry against METHODS.md: formulas, stencils, convergence order, stability."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import mpmath  # a dependency of sympy, which torch requires
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate

from discbench import numerics, selective_scan
from discbench.methods import (METHOD_NAMES, METHODS, RK4_STABILITY_BOUND, VARIANTS, WEIGHT_INPUTS, Method, Tap,
                               all_methods, exponential, get_method, method_ids, parse_method, register,
                               unregister)
from discbench.phi import phi

ALL_KEYS = [m.key for m in all_methods()]
CANONICAL = [m for m in all_methods() if m.variant == "canonical"]
# METHODS.md's tables of the six methods of the discretization paper; trapezoid (Mamba-3) has
# its own section, with other weight-sum and one-tap statements.
PAPER_TABLE = ("zoh", "foh", "bilinear", "polynomial", "highorder", "rk4")
CANONICAL_TABLE = [m for m in CANONICAL if m.name in PAPER_TABLE]

SPEC = Path(__file__).resolve().parents[1] / "docs" / "METHODS.md"


def _stated_offsets() -> dict[str, tuple[int, ...]]:
    """The stencil offsets docs/METHODS.md states, per method and variant: the w_j its table row
    names, or the paper table's single tap w_0 (B̄ = Δ · w_0) where the row names none."""
    stated = {}
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| `([a-z0-9_]+/[a-z]+)` \|", line)
        if row:
            subscripts = re.findall(r"w_(?:\{([−+]?\d)\}|(\d))", line)
            offsets = {int((braced or bare).replace("−", "-")) for braced, bare in subscripts}
            stated[row.group(1)] = tuple(sorted(offsets)) or (0,)
    return stated


STATED_OFFSETS = _stated_offsets()


def weights(method, z: torch.Tensor, a: torch.Tensor, dt: torch.Tensor,
            lam: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """{offset: w_offset(z, a, Δ, λ)} for one method (λ only for a method that takes one)."""
    return {tap.offset: tap.weight(z, a, dt, lam) * torch.ones_like(z) for tap in method.taps}


def grid_a_dt() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Poles a in [-20, -0.01] and steps Δ in [1e-3, 5], all pairs, fp64; z = aΔ."""
    a = -torch.logspace(-2, math.log10(20), 13, dtype=torch.float64)
    dt = torch.logspace(-3, math.log10(5), 11, dtype=torch.float64)
    a, dt = torch.meshgrid(a, dt, indexing="ij")
    return a.flatten(), dt.flatten(), a.flatten() * dt.flatten()


# ---------------------------------------------------------------- registry and lookup


def test_registry_holds_every_method_in_both_variants():
    assert set(METHODS) == {f"{n}/{v}" for n in METHOD_NAMES for v in VARIANTS} == set(STATED_OFFSETS)
    assert [m.key for m in all_methods() if m.takes_lam] == ["trapezoid/paper"]
    for key, method in METHODS.items():
        assert method.key == key
        assert get_method(method.name, method.variant) is method
        assert get_method(key) is method


@pytest.mark.parametrize("key", ALL_KEYS)
def test_weights_read_exactly_the_inputs_declared(key):
    """Method.weights_read (what the compiled kernels differentiate along) against autograd, with
    z, a, Δ and λ as independent inputs: a declared input moves some weight, an undeclared one none."""
    method = METHODS[key]
    a, dt, z = grid_a_dt()
    inputs = {"z": z, "a": a, "delta": dt, "lam": torch.linspace(0.1, 0.9, z.numel(), dtype=torch.float64)}
    inputs = {name: t.clone().requires_grad_() for name, t in inputs.items()}
    lam = inputs["lam"] if method.takes_lam else None
    total = sum(tap.weight(inputs["z"], inputs["a"], inputs["delta"], lam).sum() for tap in method.taps)
    total = total + 0 * sum(t.sum() for t in inputs.values())  # in the graph even when constant (zoh/paper)
    grads = torch.autograd.grad(total, list(inputs.values()), allow_unused=True)
    read = {name for name, g in zip(inputs, grads) if g is not None and bool((g != 0).any())}
    assert read == set(method.weights_read)


def test_register_adds_a_method_everywhere_it_is_read_and_unregister_removes_it():
    before = list(METHODS)
    extra = Method("extra", "canonical", exponential, (Tap(0, lambda z, a, d, lam: torch.ones_like(z)),),
                   order=1, stability_bound=-math.inf, summary="test only")
    register(extra)
    try:
        assert get_method("extra") is extra and "extra" in METHOD_NAMES and METHOD_NAMES[-1] == "extra"
        assert method_ids()["extra/canonical"] == len(before)  # after the others: no id moves
        with pytest.raises(ValueError, match="method extra/canonical is already registered"):
            register(extra)
    finally:
        unregister("extra/canonical")
    assert list(METHODS) == before and "extra" not in METHOD_NAMES
    with pytest.raises(ValueError, match="unknown method 'extra'"):
        get_method("extra")
    with pytest.raises(ValueError, match="method 'extra/canonical' is not registered"):
        unregister("extra/canonical")


@pytest.mark.parametrize("change,message", [
    (dict(name="Bad-Name"), "the name must match"),
    (dict(variant="textbook"), "unknown variant; valid variants: canonical, paper"),
    (dict(taps=(Tap(0, None), Tap(-1, None))), r"increasing offset order, each offset once; got offsets \[0, -1\]"),
    (dict(weights_read=frozenset({"z", "t"})), r"weights_read has \['t'\]; allowed: " + ", ".join(WEIGHT_INPUTS)),
])
def test_a_malformed_method_is_refused_when_defined(change, message):
    fields = dict(name="extra", variant="canonical", transition=exponential, taps=(Tap(0, None),), order=1,
                  stability_bound=-math.inf, summary="test only")
    with pytest.raises(ValueError, match=message):
        Method(**{**fields, **change})


@pytest.mark.parametrize("key", ALL_KEYS)
def test_stencil_offsets_as_stated(key):
    assert METHODS[key].offsets == STATED_OFFSETS[key]


def test_get_method_defaults_to_canonical_and_parses_slash_form():
    assert get_method("foh").key == "foh/canonical"
    assert parse_method("rk4/paper") == ("rk4", "paper")
    assert get_method("rk4/paper", "paper").key == "rk4/paper"


def test_get_method_errors_list_valid_choices():
    with pytest.raises(ValueError, match=r"unknown method 'euler'; valid methods: zoh, foh, bilinear, "
                                         r"polynomial, highorder, rk4, trapezoid$"):
        get_method("euler")
    with pytest.raises(ValueError, match=r"unknown variant 'textbook'; valid variants: canonical, paper"):
        get_method("zoh", "textbook")
    with pytest.raises(ValueError, match=r"method 'foh/paper' names variant 'paper' but variant='canonical'"):
        get_method("foh/paper", "canonical")


# ---------------------------------------------------------------- formulas


def test_transitions_as_stated():
    z = torch.cat([-torch.logspace(-8, 4, 200, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    tustin = (1 + z / 2) / (1 - z / 2)
    taylor4 = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
    for method in all_methods():
        if method.name == "bilinear":
            expected = tustin
        elif method.key == "rk4/canonical":
            expected = taylor4
        else:
            expected = torch.exp(z)
        torch.testing.assert_close(method.transition(z), expected, rtol=1e-14, atol=0, msg=method.key)


def test_canonical_weights_sum_to_steady_state_gain():
    """Σ_j w_j(z) = (Ā(z) - 1)/z for every canonical method.

    This is what "constant input reaches the exact steady state" means: with v ≡ c the
    recurrence's fixed point h = Δ c Σw / (1 - Ā) equals -c/a. METHODS.md words it as "the
    weights sum to φ_1(z) (rk4: its 3rd-order Taylor polynomial)", which is this statement for
    Ā = e^z and Ā = Taylor4 but not for bilinear, whose weights sum to 1/(1 - z/2) ≠ φ_1(z).
    """
    z = -torch.logspace(-3, 4, 300, dtype=torch.float64)
    a = torch.full_like(z, -1.0)
    for method in CANONICAL_TABLE:
        total = sum(weights(method, z, a, z / a).values())
        gain = (method.transition(z) - 1) / z
        torch.testing.assert_close(total, gain, rtol=1e-12, atol=0, msg=method.key)
        # At z = 0 the gain's limit is 1 (Ā'(0) = 1 for all of them).
        zero = torch.zeros(1, dtype=torch.float64)
        total0 = sum(weights(method, zero, -torch.ones(1, dtype=torch.float64), zero).values())
        torch.testing.assert_close(total0, torch.ones(1, dtype=torch.float64), rtol=1e-15, atol=0)


def test_weight_sum_statement_in_spec_holds_except_bilinear():
    """The spec's own wording, checked where it is right and shown wrong for bilinear."""
    z = -torch.logspace(-3, 3, 50, dtype=torch.float64)
    a = torch.full_like(z, -1.0)
    for method in CANONICAL_TABLE:
        total = sum(weights(method, z, a, z / a).values())
        if method.name == "rk4":
            expected = 1 + z / 2 + z**2 / 6 + z**3 / 24  # Taylor polynomial of φ_1, degree 3
        else:
            expected = phi(z, 1)
        matches = torch.allclose(total, expected, rtol=1e-12, atol=0)
        assert matches == (method.name != "bilinear"), method.key


def _lagrange(nodes: list[float], j: int):
    """The Lagrange basis polynomial of nodes[j] as a function of θ."""
    def basis(theta: float) -> float:
        value = 1.0
        for i, node in enumerate(nodes):
            if i != j:
                value *= (theta - node) / (nodes[j] - node)
        return value
    return basis


@pytest.mark.parametrize("name", ["zoh", "foh", "polynomial", "highorder"])
def test_canonical_weights_are_exact_integrals_of_lagrange_interpolants(name):
    """w_j(z) = ∫_0^1 e^{z(1-θ)} L_j(θ) dθ, θ the step fraction; v_{k+j} sits at θ = 1 + j."""
    method = get_method(name, "canonical")
    nodes = [1.0 + offset for offset in method.offsets]
    for zv in (-1e-4, -0.3, -1.0, -2.5, -20.0):
        z = torch.tensor([zv], dtype=torch.float64)
        got = weights(method, z, torch.tensor([-1.0], dtype=torch.float64), -z)
        for j, offset in enumerate(method.offsets):
            basis = _lagrange(nodes, j)
            exact, _ = integrate.quad(lambda th: math.exp(zv * (1 - th)) * basis(th), 0.0, 1.0,
                                      epsabs=1e-15, epsrel=1e-13)
            assert got[offset].item() == pytest.approx(exact, rel=1e-11, abs=1e-15), (name, zv, offset)


def test_bilinear_canonical_is_the_trapezoidal_rule():
    """(h_k - h_{k-1})/Δ = a (h_k + h_{k-1})/2 + (v_k + v_{k-1})/2, solved for h_k."""
    gen = torch.Generator().manual_seed(0)
    a, dt, z = grid_a_dt()
    h, v_prev, v_now = (torch.randn(z.shape, generator=gen, dtype=torch.float64) for _ in range(3))
    method = get_method("bilinear", "canonical")
    w = weights(method, z, a, dt)
    step = method.transition(z) * h + dt * (w[-1] * v_prev + w[0] * v_now)
    trapezoid = (h * (1 + z / 2) + dt / 2 * (v_prev + v_now)) / (1 - z / 2)
    torch.testing.assert_close(step, trapezoid, rtol=1e-13, atol=1e-13)


def test_rk4_canonical_is_one_classical_rk4_step():
    """Ā h + Δ Σ w_j v_{k+j} equals the four RK4 stages with v at the step's midpoint from the
    4-point cubic (-v_{k-2} + 9 v_{k-1} + 9 v_k - v_{k+1}) / 16."""
    gen = torch.Generator().manual_seed(1)
    a, dt, z = grid_a_dt()
    h = torch.randn(z.shape, generator=gen, dtype=torch.float64)
    v = {j: torch.randn(z.shape, generator=gen, dtype=torch.float64) for j in (-2, -1, 0, 1)}
    v_mid = (-v[-2] + 9 * v[-1] + 9 * v[0] - v[1]) / 16
    k1 = a * h + v[-1]
    k2 = a * (h + dt / 2 * k1) + v_mid
    k3 = a * (h + dt / 2 * k2) + v_mid
    k4 = a * (h + dt * k3) + v[0]
    rk4 = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    method = get_method("rk4", "canonical")
    w = weights(method, z, a, dt)
    step = method.transition(z) * h + dt * sum(w[j] * v[j] for j in w)
    torch.testing.assert_close(step, rk4, rtol=1e-12, atol=1e-12)


def _paper_b_bar(name: str, a: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """B̄ of the paper variant, typed in from METHODS.md's table."""
    return {
        "zoh": dt,
        "foh": dt**2 / 2 + a * dt**3 / 6 + a**2 * dt**4 / 24 + a**3 * dt**5 / 120,
        "bilinear": dt / (1 - a * dt / 2),
        "polynomial": dt + (a / 2 + 0.25) * dt**2 + (a**2 / 6 + a / 12) * dt**3
        + (a**3 / 24 + a**2 / 48) * dt**4,
        "highorder": dt + (a / 2 + 0.5) * dt**2 + (a**2 / 6 + a / 6 + 1 / 12) * dt**3
        + (a**3 / 24 + a**2 / 24 + a / 48) * dt**4,
        "rk4": dt + a * dt**2 / 2 + a**2 * dt**3 / 6 + a**3 * dt**4 / 24,
    }[name]


@pytest.mark.parametrize("name", PAPER_TABLE)
def test_paper_b_bar_as_stated(name):
    a, dt, z = grid_a_dt()
    method = get_method(name, "paper")
    w = weights(method, z, a, dt)
    assert set(w) == {0}
    torch.testing.assert_close(dt * w[0], _paper_b_bar(name, a, dt), rtol=1e-13, atol=1e-300)


def _mamba3_step(h, v_prev, v_now, a, dt, lam):
    """Mamba-3's SISO reference step as its paper states it: α = e^{aΔ}, β = (1 − λ)Δα, γ = λΔ."""
    alpha = torch.exp(a * dt)
    return alpha * h + (1 - lam) * dt * alpha * v_prev + lam * dt * v_now


@pytest.mark.parametrize("variant", VARIANTS)
def test_trapezoid_is_mamba3s_exponential_trapezoidal_step(variant):
    gen = torch.Generator().manual_seed(2)
    a, dt, z = grid_a_dt()
    h, v_prev, v_now = (torch.randn(z.shape, generator=gen, dtype=torch.float64) for _ in range(3))
    lam = torch.rand(z.shape, generator=gen, dtype=torch.float64) if variant == "paper" else None
    method = get_method("trapezoid", variant)
    w = weights(method, z, a, dt, lam)
    step = method.transition(z) * h + dt * (w[-1] * v_prev + w[0] * v_now)
    expected = _mamba3_step(h, v_prev, v_now, a, dt, torch.full_like(z, 0.5) if lam is None else lam)
    torch.testing.assert_close(step, expected, rtol=1e-13, atol=1e-13)


def test_trapezoid_paper_at_one_half_is_canonical_and_at_one_is_mambas_zoh():
    a, dt, z = grid_a_dt()
    paper, canonical, zoh = (get_method(k) for k in ("trapezoid/paper", "trapezoid/canonical", "zoh/paper"))
    at_half = weights(paper, z, a, dt, torch.full_like(z, 0.5))
    assert at_half.keys() == weights(canonical, z, a, dt).keys()
    for offset, w in weights(canonical, z, a, dt).items():
        torch.testing.assert_close(at_half[offset], w, rtol=0, atol=0)
    at_one = weights(paper, z, a, dt, torch.ones_like(z))
    torch.testing.assert_close(at_one[-1], torch.zeros_like(z), rtol=0, atol=0)
    torch.testing.assert_close(at_one[0], weights(zoh, z, a, dt)[0], rtol=0, atol=0)


def test_trapezoid_weights_sum_and_steady_state_as_stated():
    """Σw = (1 − λ)e^z + λ, not (e^z − 1)/z: the constant-input fixed point Δ c Σw / (1 − e^z)
    misses −c/a by the factor r(z) = −z Σw / (1 − e^z) = 1 + (½ − λ) z + O(z²), exact only as Δ → 0."""
    z = -torch.logspace(-4, 1, 60, dtype=torch.float64)
    a = torch.full_like(z, -1.0)
    for lam_value in (0.5, 0.75, 0.2):
        lam = torch.full_like(z, lam_value)
        method = get_method("trapezoid", "canonical" if lam_value == 0.5 else "paper")
        total = sum(weights(method, z, a, z / a, None if lam_value == 0.5 else lam).values())
        torch.testing.assert_close(total, (1 - lam) * torch.exp(z) + lam, rtol=1e-14, atol=0)
        ratio = -z * total / (1 - torch.exp(z))
        assert not torch.allclose(ratio, torch.ones_like(z), rtol=1e-3, atol=0)
        small = z.abs() < 1e-3
        expected_gap = (0.5 - lam_value) * z[small] if lam_value != 0.5 else z[small] ** 2 / 12
        torch.testing.assert_close(ratio[small] - 1, expected_gap, rtol=1e-2, atol=1e-12)


# ---------------------------------------------------------------- convergence order


@pytest.fixture(scope="module")
def convergence_runs() -> dict[str, pd.DataFrame]:
    return {key: numerics.convergence(key, numerics.DEFAULT_STEPS) for key in ALL_KEYS}


def test_exact_solution_matches_high_precision_quadrature():
    a, T = numerics.DEFAULT_POLE, numerics.DEFAULT_HORIZON
    with mpmath.workdps(30):
        exact = mpmath.quad(lambda s: mpmath.exp(a * (T - s)) * s**7 * mpmath.exp(-s)
                            * (1 + mpmath.sin(3 * s)) / 5040, [0, T / 2, T])
    assert numerics.exact_solution(a, T) == pytest.approx(float(exact), rel=1e-13)


def test_drive_vanishes_smoothly_at_zero():
    """v and its first six derivatives vanish at 0, so v_k = 0 for k < 0 is a consistent sample."""
    with mpmath.workdps(30):
        f = lambda s: s**7 * mpmath.exp(-s) * (1 + mpmath.sin(3 * s)) / 5040  # noqa: E731
        for order in range(7):
            assert abs(mpmath.diff(f, 0, order)) < 1e-25, order
    assert numerics.drive(np.linspace(0.0, 3.0, 7))[0] == 0.0
    assert float(numerics.drive(1.0)) == pytest.approx(math.exp(-1) * (1 + math.sin(3)) / 5040)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_convergence_order_as_stated(key, convergence_runs):
    method = METHODS[key]
    df = convergence_runs[key]
    assert list(df.columns) == ["method", "variant", "steps", "dt", "error"]
    assert (df["method"] == method.name).all() and (df["variant"] == method.variant).all()
    measured = numerics.fitted_order(df)
    assert abs(measured - method.order) <= 0.25, f"{key}: stated order {method.order}, measured {measured:.3f}"
    finest = df.sort_values("dt")["error"].iloc[0]
    if method.order == 0:
        # paper foh: its input scale is O(Δ²), so h(T) -> 0 and the error -> |h(T)|.
        assert finest > 0.5 * abs(numerics.exact_solution())
    else:
        assert finest < 1e-2 * abs(numerics.exact_solution())


def test_lookahead_samples_keep_noncausal_stencils_accurate():
    """Without real samples past T, the zero padding at v_{steps} costs polynomial an O(Δ) term."""
    method = get_method("polynomial", "canonical")
    steps, T = 160, numerics.DEFAULT_HORIZON
    dt = T / steps
    t = dt * np.arange(1, steps + 1)
    u = torch.from_numpy(numerics.drive(t)).reshape(1, 1, steps)
    ones = torch.ones_like(u)
    truncated = selective_scan(u, torch.full_like(u, dt), torch.full((1, 1), numerics.DEFAULT_POLE,
                               dtype=torch.float64), ones, ones, method="polynomial",
                               backend="reference")[0, 0, -1].item()
    padded = numerics.solve(method, steps)
    exact = numerics.exact_solution()
    assert abs(padded - exact) < 1e-6
    assert abs(truncated - exact) > 100 * abs(padded - exact)


def test_torch_backend_gives_the_same_convergence_errors():
    for key in ("zoh/canonical", "polynomial/canonical", "rk4/canonical", "foh/paper"):
        ref = numerics.convergence(key, [40, 160], backend="reference")
        par = numerics.convergence(key, [40, 160], backend="torch")
        np.testing.assert_allclose(par["error"], ref["error"], rtol=1e-6, atol=1e-15)


def test_fitted_order_recovers_a_known_slope_and_ignores_rounding():
    dt = 3.0 / np.array([10, 20, 40, 80, 160, 320])
    error = 0.7 * dt**2.5
    error[-1] = 1e-18  # a rounding-dominated point must not enter the fit
    df = pd.DataFrame({"dt": dt, "error": error})
    assert numerics.fitted_order(df) == pytest.approx(2.5, abs=1e-12)
    with pytest.raises(ValueError, match="need ≥ 2 errors"):
        numerics.fitted_order(df.iloc[-1:])


# ---------------------------------------------------------------- stability


def _dense_z(dtype: torch.dtype, start: float = -1e4) -> torch.Tensor:
    return torch.cat([
        torch.linspace(start, 0.0, 200_001, dtype=torch.float64),
        -torch.logspace(-12, math.log10(-start), 20_001, dtype=torch.float64),
    ]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("key", [k for k in ALL_KEYS if k != "rk4/canonical"])
def test_a_stable_methods_keep_transition_in_unit_disc(key, dtype):
    method = METHODS[key]
    assert method.a_stable and method.stability_bound == -math.inf
    z = _dense_z(dtype)
    magnitude = method.transition(z).abs()
    worst = int(torch.argmax(magnitude))
    assert magnitude.max() <= 1.0, f"{key}: |Ā({z[worst].item()})| = {magnitude[worst].item()}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_rk4_canonical_stable_exactly_down_to_its_bound(dtype):
    method = get_method("rk4", "canonical")
    bound = method.stability_bound
    assert bound == RK4_STABILITY_BOUND
    margin = 1e-9 if dtype == torch.float64 else 1e-4
    inside = _dense_z(dtype, start=bound + margin)
    assert method.transition(inside).abs().max() <= 1.0
    below = torch.tensor([bound - margin, bound - 0.1, -3.0, -10.0, -1e4], dtype=dtype)
    assert (method.transition(below).abs() > 1.0).all()


def test_rk4_bound_is_the_root_of_the_stability_polynomial():
    """R(z) = 1 + z + z²/2 + z³/6 + z⁴/24 meets |R| = 1 (R > 0 everywhere) at the stated bound."""
    with mpmath.workdps(40):
        root = mpmath.findroot(lambda x: x + x**2 / 2 + x**3 / 6 + x**4 / 24, -2.8)
    assert RK4_STABILITY_BOUND == pytest.approx(float(root), abs=1e-14)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_measured_stability_bound_equals_stated(key):
    method = METHODS[key]
    measured = numerics.stability_bound(method)
    if method.a_stable:
        assert measured == -math.inf
    else:
        assert measured == pytest.approx(method.stability_bound, abs=1e-12)


def test_convergence_check_detects_a_wrong_stencil():
    """The order test can fail: rk4 with a consistent but lopsided midpoint interpolant
    (9 v_{k-1} + 9 v_k - 2 v_{k+1})/16 keeps its weight sum and drops to order 1."""
    rk4 = get_method("rk4", "canonical")
    lopsided = dataclasses.replace(rk4, taps=(
        rk4.taps[1], rk4.taps[2], Tap(1, lambda z, a, d, lam: -(4 + 2 * z + z * z / 2) / 48)))
    measured = numerics.fitted_order(numerics.convergence(lopsided, numerics.DEFAULT_STEPS))
    assert abs(measured - 1.0) < 0.1
    assert sum(t.weight(torch.tensor(-0.3), None, None, None) for t in lopsided.taps) == pytest.approx(
        sum(t.weight(torch.tensor(-0.3), None, None, None) for t in rk4.taps))
