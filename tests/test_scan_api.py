"""`selective_scan`: agreement with mamba_ssm, backend parity, gradients, and input errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from discbench import all_methods, get_method, selective_scan
from discbench import scan as scan_module

ALL_KEYS = [m.key for m in all_methods()]
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "lam")


@dataclass(frozen=True)
class Case:
    """One input configuration; groups=None passes B and C as (b, n, l)."""

    b: int
    d: int
    l: int
    n: int
    groups: int | None = None
    with_D: bool = True
    with_z: bool = True
    with_bias: bool = True
    softplus: bool = True
    last_state: bool = False

    def __str__(self) -> str:
        flags = "".join(k for k, on in (("D", self.with_D), ("z", self.with_z), ("b", self.with_bias),
                                         ("s", self.softplus), ("L", self.last_state)) if on)
        return f"b{self.b}d{self.d}l{self.l}n{self.n}g{self.groups}-{flags or 'plain'}"


def make_inputs(case: Case, dtype: torch.dtype, seed: int = 0, method: str | None = None) -> dict:
    """Random selective-scan arguments for `case`: Δ moderate (z mostly in [-3, 0]), A < 0; with
    `lam` (λ in (0, 1), per token and channel) when `method` takes one."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    bc_shape = (case.b, case.n, case.l) if case.groups is None else (case.b, case.groups, case.n, case.l)
    if case.softplus:
        delta = rand(case.b, case.d, case.l) * 0.5 - 0.5
    else:  # Δ used as given: keep it positive
        delta = torch.rand(case.b, case.d, case.l, generator=gen, dtype=torch.float64).to(dtype) + 0.05
    x = {
        "u": rand(case.b, case.d, case.l),
        "delta": delta,
        "A": -torch.exp(rand(case.d, case.n) * 0.5),
        "B": rand(*bc_shape),
        "C": rand(*bc_shape),
        "D": rand(case.d) if case.with_D else None,
        "z": rand(case.b, case.d, case.l) if case.with_z else None,
        "delta_bias": rand(case.d) * 0.3 if case.with_bias else None,
        "delta_softplus": case.softplus,
        "return_last_state": case.last_state,
    }
    if method is not None and get_method(method).takes_lam:
        x["lam"] = torch.sigmoid(rand(case.b, case.d, case.l))
    return x


def as_tuple(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


# ---------------------------------------------------------------- zoh/paper == mamba_ssm

MAMBA_CASES = [
    Case(1, 1, 1, 1),
    Case(2, 4, 17, 3),
    Case(2, 4, 16, 8, groups=2, last_state=True),
    Case(1, 6, 33, 4, groups=3, last_state=True),
    Case(3, 2, 5, 16, groups=1),
    Case(2, 3, 9, 2, with_D=False, with_z=False, with_bias=False, softplus=False, last_state=True),
]


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("case", MAMBA_CASES, ids=str)
def test_zoh_paper_equals_mamba_selective_scan_ref(case, backend, selective_scan_ref):
    x = make_inputs(case, torch.float32, seed=7)
    expected = as_tuple(selective_scan_ref(**x))
    got = as_tuple(selective_scan(**x, method="zoh", variant="paper", backend=backend))
    assert len(got) == len(expected) == (2 if case.last_state else 1)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype == torch.float32
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_zoh_paper_equals_mamba_in_bfloat16(selective_scan_ref):
    """Both compute in fp32 and round the output to the input's dtype."""
    x = make_inputs(Case(2, 4, 12, 4, groups=2), torch.bfloat16, seed=3)
    x["A"], x["D"], x["delta_bias"] = x["A"].float(), x["D"].float(), x["delta_bias"].float()
    expected = selective_scan_ref(**x)
    got = selective_scan(**x, method="zoh/paper", backend="reference")
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------- gradients

GRADCHECK_CASES = [
    Case(1, 2, 4, 2, groups=1, last_state=True),
    Case(2, 2, 3, 1, with_z=False, with_bias=False, softplus=False),
]


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("key", ALL_KEYS)
def test_gradcheck_fp64(key, backend):
    for case in GRADCHECK_CASES:
        x = make_inputs(case, torch.float64, seed=11, method=key)
        names = [n for n in GRAD_NAMES if x.get(n) is not None]
        leaves = [x[n].detach().requires_grad_() for n in names]
        flags = {k: x[k] for k in ("delta_softplus", "return_last_state")}

        def scan(*tensors):
            return selective_scan(**dict(zip(names, tensors)), **flags, method=key, backend=backend)

        assert torch.autograd.gradcheck(scan, leaves, eps=1e-6, atol=1e-7, rtol=1e-6), (key, str(case))


# ---------------------------------------------------------------- backend "torch" == "reference"

PARITY_CASES = [
    Case(1, 1, 1, 1),
    Case(2, 3, 2, 1, groups=1, last_state=True),
    Case(2, 4, 17, 1, groups=2, last_state=True),
    Case(1, 4, 17, 3, with_D=False, with_z=False, with_bias=False, softplus=False),
    Case(2, 6, 17, 2, groups=3, with_z=False, softplus=False, last_state=True),
    Case(1, 2, 33, 4, with_D=False, with_bias=False),
]
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def _assert_scaled_close(got: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """Relative to the tensor's scale: summation order differs, so tiny entries differ absolutely."""
    scale = expected.abs().max().clamp_min(1.0)
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * scale.item(), msg=what)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("key", ALL_KEYS)
def test_torch_backend_matches_reference(key, dtype):
    for case in PARITY_CASES:
        x = make_inputs(case, dtype, seed=5, method=key)
        names = [n for n in GRAD_NAMES if x.get(n) is not None]
        results, grads = {}, {}
        for backend in ("reference", "torch"):
            leaves = {n: x[n].detach().clone().requires_grad_() for n in names}
            args = {**x, **leaves}
            outs = as_tuple(selective_scan(**args, method=key, backend=backend))
            cotangents = [torch.randn(o.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
                          for o in outs]
            # With l = 1 the state starts at 0, so A does not reach zoh/paper's output at all.
            grads[backend] = torch.autograd.grad(outs, [leaves[n] for n in names], cotangents,
                                                 allow_unused=True, materialize_grads=True)
            results[backend] = [o.detach() for o in outs]
        assert len(results["torch"]) == (2 if case.last_state else 1)
        for i, (got, expected) in enumerate(zip(results["torch"], results["reference"])):
            assert got.dtype == dtype and got.shape == expected.shape
            assert torch.isfinite(expected).all()
            _assert_scaled_close(got, expected, TOL[dtype], f"{key} {case} output {i}")
        for name, got, expected in zip(names, grads["torch"], grads["reference"]):
            assert torch.isfinite(expected).all()
            _assert_scaled_close(got, expected, 5 * TOL[dtype], f"{key} {case} d/d{name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_torch_backend_matches_reference_when_rk4_diverges(dtype):
    """Canonical rk4 beyond its stability bound (z = -10, |Ā| ≈ 291): a diverging run must be
    reported as the loop computes it. Tokens before the first non-zero drive are exactly 0,
    and every value the loop gives as finite must come out the same."""
    length, first_drive = 40, 30
    u = torch.zeros(1, 1, length, dtype=dtype)
    u[0, 0, first_drive:] = 1.0
    delta = torch.ones(1, 1, length, dtype=dtype)
    A = torch.full((1, 1), -10.0, dtype=dtype)
    ones = torch.ones(1, 1, length, dtype=dtype)
    expected = selective_scan(u, delta, A, ones, ones, method="rk4", backend="reference")
    got = selective_scan(u, delta, A, ones, ones, method="rk4", backend="torch")
    assert torch.equal(expected[..., :first_drive - 1], torch.zeros(1, 1, first_drive - 1, dtype=dtype))
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(got), finite)
    torch.testing.assert_close(got[finite], expected[finite], rtol=TOL[dtype], atol=0)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_empty_sequence_gives_empty_output_and_zero_state(backend):
    x = make_inputs(Case(2, 3, 0, 4, groups=1, last_state=True), torch.float32)
    out, last = selective_scan(**x, method="rk4", backend=backend)
    assert out.shape == (2, 3, 0)
    assert torch.equal(last, torch.zeros(2, 3, 4))


def test_method_argument_accepts_name_slash_variant():
    x = make_inputs(Case(1, 2, 6, 3), torch.float64)
    a = selective_scan(**x, method="foh/paper", backend="reference")
    b = selective_scan(**x, method="foh", variant="paper", backend="reference")
    c = selective_scan(**x, method="foh", backend="reference")
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


# ---------------------------------------------------------------- clear errors for bad input


def _valid() -> dict:
    """Valid arguments, b=2, d=4, l=5, n=3, B and C in 2 groups."""
    x = make_inputs(Case(2, 4, 5, 3, groups=2), torch.float32)
    x.pop("return_last_state")
    return x


def test_unknown_method_lists_valid_methods():
    with pytest.raises(ValueError, match=r"unknown method 'euler'; valid methods: zoh, foh, bilinear, "
                                         r"polynomial, highorder, rk4, trapezoid"):
        selective_scan(**_valid(), method="euler")


def test_unknown_variant_lists_valid_variants():
    with pytest.raises(ValueError, match=r"unknown variant 'mamba'; valid variants: canonical, paper"):
        selective_scan(**_valid(), variant="mamba")
    with pytest.raises(ValueError, match=r"unknown variant 'mamba'"):
        selective_scan(**_valid(), method="zoh/mamba")


@pytest.mark.parametrize("bad", [None, 3, ("zoh", "paper")])
def test_non_string_method_names_the_argument(bad):
    with pytest.raises(TypeError, match=r"method must be a str.*got " + type(bad).__name__):
        selective_scan(**_valid(), method=bad)


def test_unknown_backend_lists_valid_backends():
    with pytest.raises(ValueError, match=r"unknown backend 'cuda'; valid backends: auto, reference, torch"):
        selective_scan(**_valid(), backend="cuda")


@pytest.mark.parametrize("name, bad_shape, message", [
    ("u", (2, 4), r"u must be \(b, d, l\), got shape \(2, 4\)"),
    ("delta", (2, 4, 6), r"delta must have shape \(2, 4, 5\), got \(2, 4, 6\)"),
    ("A", (3, 3), r"A must be \(d=4, n\), got \(3, 3\)"),
    ("A", (4,), r"A must be \(d=4, n\), got \(4,\)"),
    ("B", (2, 2, 3, 6), r"B must be \(b=2, \[g,\] n=3, l=5\), got \(2, 2, 3, 6\)"),
    ("B", (2, 2, 2, 3, 5), r"B must be \(b, n, l\) or \(b, g, n, l\), got \(2, 2, 2, 3, 5\)"),
    # The message must show the shape the caller passed, not the (b, 1, n, l) view made of it.
    ("C", (2, 4, 5), r"C must be \(b=2, \[g,\] n=3, l=5\), got \(2, 4, 5\)"),
    ("D", (3,), r"D must have shape \(4,\), got \(3,\)"),
    ("z", (2, 4, 4), r"z must have shape \(2, 4, 5\), got \(2, 4, 4\)"),
    ("delta_bias", (4, 1), r"delta_bias must have shape \(4,\), got \(4, 1\)"),
])
def test_mismatched_shape_names_the_argument(name, bad_shape, message):
    x = _valid()
    x[name] = torch.randn(*bad_shape)
    with pytest.raises(ValueError, match=message):
        selective_scan(**x)


@pytest.mark.parametrize("name", ["B", "C"])
def test_group_count_must_divide_channels(name):
    x = _valid()
    x[name] = torch.randn(2, 3, 3, 5)
    with pytest.raises(ValueError, match=rf"{name} has 3 groups, which must divide the 4 channels of u"):
        selective_scan(**x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_delta_is_rejected(bad):
    x = _valid()
    x["delta"][1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"delta has non-finite values \(nan or inf\)"):
        selective_scan(**x)


@pytest.mark.parametrize("backend", ["reference", "torch", "cpu"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_delta_without_the_check_gives_a_non_finite_output(bad, backend, monkeypatch):
    """Where Δ is not checked (a GPU: the check would sync), the output carries the nan/inf on
    to the loss, which a training run reports as divergence."""
    if backend == "cpu" and scan_module.BACKENDS["cpu"].unavailable_reason() is not None:
        pytest.skip("the CPU kernel cannot be built here")
    monkeypatch.setattr(scan_module, "FINITE_DELTA_CHECK_DEVICES", ())
    x = _valid()
    x["delta"][1, 2, 3] = bad
    out = selective_scan(**x, method="foh", backend=backend)
    assert not torch.isfinite(out[1, 2]).all()


# ---------------------------------------------------------------- lam (trapezoid/paper's λ)


def _valid_with_lam() -> dict:
    x = _valid()
    x["lam"] = torch.sigmoid(torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(1)))
    return x


def test_lam_is_required_by_trapezoid_paper():
    with pytest.raises(ValueError, match=r"method trapezoid/paper needs lam, the per-token λ as a \(b, d, l\) tensor"):
        selective_scan(**_valid(), method="trapezoid", variant="paper")


@pytest.mark.parametrize("key", [k for k in ALL_KEYS if k != "trapezoid/paper"])
def test_lam_is_refused_by_every_other_method(key):
    with pytest.raises(ValueError, match=rf"lam is taken only by trapezoid/paper; method {key} does not use it"):
        selective_scan(**_valid_with_lam(), method=key)


@pytest.mark.parametrize("bad, error, message", [
    (torch.rand(2, 4, 6), ValueError, r"lam must have shape \(2, 4, 5\), got \(2, 4, 6\)"),
    (torch.rand(2, 1, 5), ValueError, r"lam must have shape \(2, 4, 5\), got \(2, 1, 5\)"),
    (torch.rand(2, 4, 5).to("meta"), ValueError, r"lam is on meta but u is on cpu"),
    (torch.ones(2, 4, 5, dtype=torch.int64), TypeError, r"lam must be a floating-point tensor, got torch.int64"),
    (0.5, TypeError, r"lam must be a torch.Tensor or None, got float"),
])
def test_bad_lam_names_the_argument(bad, error, message):
    x = _valid_with_lam()
    x["lam"] = bad
    with pytest.raises(error, match=message):
        selective_scan(**x, method="trapezoid/paper")


@pytest.mark.parametrize("backend", ["reference", "torch", "cpu"])
def test_lam_shared_by_the_channels_may_be_an_expanded_view(backend):
    """A model passes one λ per token for all channels, lam_bl[:, None, :].expand(b, d, l): the
    result and every gradient equal those of the same values materialised."""
    if backend == "cpu" and scan_module.BACKENDS["cpu"].unavailable_reason() is not None:
        pytest.skip("the CPU kernel cannot be built here")
    x = make_inputs(Case(2, 4, 19, 3, groups=2, last_state=True), torch.float32, seed=4)
    lam_bl = torch.sigmoid(torch.randn(2, 19, generator=torch.Generator().manual_seed(8)))
    results = []
    for materialise in (False, True):
        leaf = lam_bl.clone().requires_grad_()
        lam = leaf[:, None, :].expand(2, 4, 19)
        if materialise:
            lam = lam.contiguous()
        else:
            assert lam.stride(1) == 0
        u = x["u"].clone().requires_grad_()
        out, last = selective_scan(**{**x, "u": u}, method="trapezoid/paper", backend=backend, lam=lam)
        ((out * out).sum() + last.sum()).backward()
        results.append((out.detach(), last.detach(), leaf.grad, u.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert results[0][2].abs().sum() > 0


@pytest.mark.parametrize("name", ["u", "delta", "A", "B", "C"])
def test_non_tensor_input_names_the_argument(name):
    x = _valid()
    x[name] = x[name].tolist()
    with pytest.raises(TypeError, match=rf"{name} must be a torch.Tensor, got list"):
        selective_scan(**x)


@pytest.mark.parametrize("name", ["D", "z", "delta_bias"])
def test_non_tensor_optional_input_names_the_argument(name):
    x = _valid()
    x[name] = x[name].tolist()
    with pytest.raises(TypeError, match=rf"{name} must be a torch.Tensor or None, got list"):
        selective_scan(**x)


@pytest.mark.parametrize("name", ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"])
def test_integer_dtype_names_the_argument(name):
    x = _valid()
    x[name] = x[name].round().to(torch.int64)
    with pytest.raises(TypeError, match=rf"{name} must be a floating-point tensor, got torch.int64"):
        selective_scan(**x)


@pytest.mark.parametrize("name", ["delta", "A", "B", "C", "D", "z", "delta_bias"])
def test_device_mismatch_names_the_argument(name):
    """The meta device stands in for a second device, so this runs without a GPU."""
    x = _valid()
    x[name] = x[name].to("meta")
    with pytest.raises(ValueError, match=rf"{name} is on meta but u is on cpu; put all inputs on one device"):
        selective_scan(**x)


def test_backend_rejects_dtype_it_does_not_take():
    x = _valid()
    x = {k: (v.to(torch.float64) if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    with pytest.raises(ValueError, match=r"backend 'cpu' takes float32, bfloat16, got float64"):
        selective_scan(**x, backend="cpu")
