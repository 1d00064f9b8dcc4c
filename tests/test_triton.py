"""The Triton backend, run on the CPU through Triton's interpreter (TRITON_INTERPRET=1).

Forward and every gradient of every method × variant against the reference loop, on tiny
shapes that cross chunk boundaries (several chunks, a ragged last chunk, a single token), with
B/C groups, D, the gate, delta_bias and softplus; and the kernels' method math against the
registry. Run alone with `pytest -m triton`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import pytest
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.interpreter import InterpretedFunction

from discbench.methods import all_methods, get_method, METHODS
from discbench.scan import selective_scan
from discbench.scan import triton as triton_backend
from discbench.scan import triton_methods as tm

pytestmark = pytest.mark.triton

METHOD_KEYS = [m.key for m in all_methods()]


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    """TRITON_INTERPRET=1 for this module only (triton itself may already be imported: the
    backend's kernels follow the setting, see match_interpreter_setting)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        yield
    triton_backend.match_interpreter_setting()


@pytest.fixture(autouse=True)
def kernels_follow_the_setting():
    """Each test starts with the kernels in the mode its environment asks for (the compile
    tests switch to the compiler for their duration)."""
    triton_backend.match_interpreter_setting()


# ----------------------------------------------------------------------------- method math


def _method_math_kernel(a_ptr, delta_ptr, lam_ptr, out_ptr, size,
                        TRANSITION: tl.constexpr, TAPS: tl.constexpr, N_TAPS: tl.constexpr,
                        BLOCK: tl.constexpr):
    """Rows of out: Ā, dĀ/dz, then per tap w, ∂w/∂a, ∂w/∂Δ, ∂w/∂λ; one column per (a, Δ, λ)."""
    idx = tl.arange(0, BLOCK)
    mask = idx < size
    a = tl.load(a_ptr + idx, mask=mask, other=-1.0)
    delta = tl.load(delta_ptr + idx, mask=mask, other=1.0)
    lam = tl.load(lam_ptr + idx, mask=mask, other=0.5)
    z = a * delta
    a_bar, da_bar = TRANSITION(z)
    tl.store(out_ptr + idx, a_bar, mask=mask)
    tl.store(out_ptr + size + idx, da_bar, mask=mask)
    for t in tl.static_range(N_TAPS):
        w, w_da, w_ddelta, w_dlam = TAPS(z, a, delta, lam, t)
        tl.store(out_ptr + (2 + 4 * t) * size + idx, w, mask=mask)
        tl.store(out_ptr + (3 + 4 * t) * size + idx, w_da, mask=mask)
        tl.store(out_ptr + (4 + 4 * t) * size + idx, w_ddelta, mask=mask)
        tl.store(out_ptr + (5 + 4 * t) * size + idx, w_dlam, mask=mask)


def _registry_math(method, a, delta, lam):
    """The same rows from the registry in fp64, derivatives by autograd (∂w/∂λ is 0 for a
    method that takes no λ: the registry hands it None)."""
    a = a.clone().requires_grad_()
    delta = delta.clone().requires_grad_()
    lam = lam.clone().requires_grad_()
    z = (a * delta).detach().requires_grad_()
    a_bar = method.transition(z)
    (da_bar,) = torch.autograd.grad(a_bar.sum(), z)
    rows = [a_bar.detach(), da_bar]
    for tap in method.taps:
        # + 0·(a + Δ + λ) keeps constant weights (paper zoh) in the graph
        w = tap.weight(a * delta, a, delta, lam if method.takes_lam else None) + 0 * (a + delta + lam)
        w_da, w_ddelta, w_dlam = torch.autograd.grad(w.sum(), (a, delta, lam))
        rows += [w.detach(), w_da, w_ddelta, w_dlam]
    return torch.stack(rows)


def _math_constexprs(method):
    transition, taps = tm.kernel_math(method)
    return dict(TRANSITION=transition, TAPS=taps)


def test_every_registry_method_has_triton_math():
    assert [k for k in METHODS if tm.missing_method_reason(METHODS[k]) is not None] == []


@pytest.mark.parametrize("key", METHOD_KEYS)
def test_kernel_method_math_matches_registry(key):
    """Ā, every tap weight and its ∂/∂a, ∂/∂Δ, ∂/∂λ, for z = aΔ from -5e-6 down to -1e4 and
    λ in [0, 1].

    Tolerance: 2e-5 relative plus 2e-6 of the size of the terms being combined (Σ|w| + |Ā|,
    times Δ for ∂/∂a and |a| for ∂/∂Δ): at z = -1e4 the canonical weights are differences of
    φ-values ~1e-4 that cancel to ~1e-9, which fp32 resolves only to the terms' rounding.
    """
    method = get_method(key)
    poles = torch.tensor([-0.05, -0.7, -1.3, -4.0, -16.0], dtype=torch.float64)
    steps = torch.tensor([1e-4, 1e-3, 0.01, 0.1, 0.5, 0.7, 0.77, 1.0, 1.3, 3.0, 10.0, 100.0, 625.0],
                         dtype=torch.float64)
    a, delta = (t.flatten() for t in torch.meshgrid(poles, steps, indexing="ij"))
    lam = torch.linspace(0.0, 1.0, a.numel(), dtype=torch.float64)
    rows = 2 + 4 * len(method.taps)
    out = torch.full((rows, a.numel()), float("nan"), dtype=torch.float32)
    kernel = triton.jit(_method_math_kernel)
    kernel[(1,)](a.float(), delta.float(), lam.float(), out, a.numel(), **_math_constexprs(method),
                 N_TAPS=len(method.taps), BLOCK=triton.next_power_of_2(a.numel()))
    ref = _registry_math(method, a, delta, lam)
    assert torch.isfinite(out).all()
    size = ref[0].abs() + sum(ref[2 + 4 * t].abs() for t in range(len(method.taps)))
    for row in range(rows):
        kind = (row - 2) % 4 if row >= 2 else None  # 0: w, 1: ∂w/∂a, 2: ∂w/∂Δ, 3: ∂w/∂λ
        scale = size * delta if kind == 1 else size * a.abs() if kind == 2 else size
        err = (out[row].double() - ref[row]).abs()
        bound = 2e-5 * ref[row].abs() + 2e-6 * scale
        worst = int((err / bound).argmax())
        assert bool((err <= bound).all()), (
            f"{key} row {row}: at a={a[worst].item()}, Δ={delta[worst].item()} got "
            f"{out[row, worst].item():.6e}, registry {ref[row, worst].item():.6e}")


# ----------------------------------------------------------------------------- scan parity


@dataclass(frozen=True)
class Case:
    """One input configuration: shapes and which optional inputs are present."""

    name: str
    batch: int
    channels: int
    state: int
    length: int
    groups: int
    skip: bool  # D
    gate: bool  # z
    bias: bool  # delta_bias
    softplus: bool
    last_state_grad: bool
    max_block_channels: int


CASES = [
    # 3 chunks of 16 with a ragged last one; 3 channels per group in a block of 4 and 3 states in
    # a block of 4 (masked lanes); the final state's gradient flows back too.
    Case("ragged", 2, 6, 3, 37, 2, True, True, True, True, True, 8),
    # a single token in a single ragged chunk; batch 1 (Triton specialises integer 1)
    Case("one_token", 1, 4, 4, 1, 1, False, False, False, False, False, 8),
    # 2 full chunks; 4 channel blocks per group, so dB and dC sum partials across blocks
    Case("two_chunks_four_blocks", 2, 8, 2, 32, 1, True, False, True, False, False, 2),
]


def _inputs(case: Case, seed: int, key: str = "zoh/canonical") -> dict[str, torch.Tensor | None]:
    """Inputs of `case`, with λ in (0, 1) per token and channel when method `key` takes one."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    b, d, n, l, g = case.batch, case.channels, case.state, case.length, case.groups
    if case.softplus:
        delta = 0.7 * randn(b, d, l) - 1.0
    else:  # Δ used as given: positive steps
        delta = 0.05 + 0.6 * torch.rand(b, d, l, generator=gen, dtype=torch.float64)
    return dict(
        u=randn(b, d, l), delta=delta,
        A=-(0.1 + 2.0 * torch.rand(d, n, generator=gen, dtype=torch.float64)),
        B=randn(b, g, n, l), C=randn(b, g, n, l),
        D=randn(d) if case.skip else None, z=randn(b, d, l) if case.gate else None,
        delta_bias=0.3 * randn(d) if case.bias else None,
        lam=torch.sigmoid(randn(b, d, l)) if get_method(key).takes_lam else None,
    )


LOW_PRECISION_INPUTS = ("u", "delta", "B", "C", "z", "lam")


def _run(inputs, case: Case, key: str, backend: str, dtype_of=lambda name: torch.float64):
    """Forward + backward with each input cast to dtype_of(name); returns out, last_state and
    {name: gradient}, all in fp64 for comparison."""
    leaves = {name: t.detach().to(dtype_of(name), copy=True).requires_grad_()
              for name, t in inputs.items() if t is not None}
    out, last = selective_scan(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves.get("D"),
        z=leaves.get("z"), delta_bias=leaves.get("delta_bias"), delta_softplus=case.softplus,
        return_last_state=True, method=key, backend=backend, lam=leaves.get("lam"))
    gen = torch.Generator().manual_seed(7)
    loss = (out.double() * torch.randn(out.shape, generator=gen, dtype=torch.float64)).sum()
    if case.last_state_grad:
        loss = loss + (last.double() * torch.randn(last.shape, generator=gen, dtype=torch.float64)).sum()
    loss.backward()
    for name, leaf in leaves.items():
        assert leaf.grad.dtype == leaf.dtype, f"grad of {name} is {leaf.grad.dtype}, input {leaf.dtype}"
    return out.double(), last.double(), {name: leaf.grad.double() for name, leaf in leaves.items()}


def _bias_scale(grads_ref) -> float:
    """d(delta_bias)[d] = Σ_{b,l} d(delta)[b, d, l]: fp32 resolves it only to the size of those
    terms, which may cancel to a much smaller sum."""
    return max(1.0, grads_ref["delta"].abs().sum(dim=(0, 2)).max().item())


def _fp32(name: str) -> torch.dtype:
    return torch.float32


def _assert_close(what: str, got: torch.Tensor, ref: torch.Tensor, rel: float,
                  scale: float | None = None):
    """max |got - ref| ≤ rel · scale, scale = max(1, max |ref|) unless given."""
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    if scale is None:
        scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    err = (got - ref).abs().max().item() if ref.numel() else 0.0
    assert err <= rel * scale, f"{what}: max error {err:.3e} > {rel:.0e} × scale {scale:.3e}"


@pytest.mark.parametrize("key", METHOD_KEYS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_triton_matches_reference(key, case, monkeypatch):
    """fp32 kernel vs fp64 reference loop: output, final state, every gradient (measured worst
    error over all methods and cases 1.3e-6 of the largest value; bound 2e-5)."""
    monkeypatch.setattr(triton_backend, "MAX_BLOCK_CHANNELS", case.max_block_channels)
    inputs = _inputs(case, seed=zlib.crc32(f"{key} {case.name}".encode()), key=key)
    out_ref, last_ref, grads_ref = _run(inputs, case, key, "reference")
    out, last, grads = _run(inputs, case, key, "triton", _fp32)
    assert isinstance(triton_backend._scan_fwd_kernel, InterpretedFunction)
    _assert_close(f"{key} out", out, out_ref, 2e-5)
    _assert_close(f"{key} last_state", last, last_ref, 2e-5)
    assert set(grads) == set(grads_ref)
    for name in grads_ref:
        _assert_close(f"{key} d{name}", grads[name], grads_ref[name], 2e-5,
                      scale=_bias_scale(grads_ref) if name == "delta_bias" else None)


# measured worst: fp16 7.9e-4, bf16 5.5e-3 (of the largest value)
@pytest.mark.parametrize("dtype,rel", [(torch.float16, 4e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("key", ["polynomial/canonical", "highorder/paper", "trapezoid/paper"])
def test_triton_low_precision_inputs(key, dtype, rel):
    """u, delta, B, C, z (and λ) in fp16/bf16 with A, D, delta_bias in fp32 (as in Vim); state
    in fp32, so the error is the rounding of inputs already rounded plus that of the outputs."""
    case = CASES[0]
    inputs = _inputs(case, seed=11, key=key)
    def dtype_of(name: str) -> torch.dtype:
        return dtype if name in LOW_PRECISION_INPUTS else torch.float32

    rounded = {k: None if v is None else v.to(dtype_of(k)).double() for k, v in inputs.items()}
    out_ref, last_ref, grads_ref = _run(rounded, case, key, "reference")
    out, last, grads = _run(rounded, case, key, "triton", dtype_of)
    _assert_close(f"{key} {dtype} out", out, out_ref, rel)
    _assert_close(f"{key} {dtype} last_state", last, last_ref, rel)
    for name in grads_ref:
        _assert_close(f"{key} {dtype} d{name}", grads[name], grads_ref[name], rel,
                      scale=_bias_scale(grads_ref) if name == "delta_bias" else None)


def test_triton_reads_a_lam_shared_by_the_channels_in_place():
    """λ as a model passes it, one per token for every channel (an expanded view, stride 0
    along d): the same output and gradients as the materialised tensor."""
    case = CASES[0]
    inputs = _inputs(case, seed=5, key="trapezoid/paper")
    lam_bl = inputs["lam"][:, 0, :]
    results = []
    for materialise in (False, True):
        leaf = lam_bl.float().clone().requires_grad_()
        lam = leaf[:, None, :].expand(-1, case.channels, -1)
        lam = lam.contiguous() if materialise else lam
        out, last = selective_scan(
            inputs["u"].float(), inputs["delta"].float(), inputs["A"].float(), inputs["B"].float(),
            inputs["C"].float(), D=inputs["D"].float(), z=inputs["z"].float(),
            delta_bias=inputs["delta_bias"].float(), delta_softplus=True, return_last_state=True,
            method="trapezoid/paper", backend="triton", lam=lam)
        (out.square().sum() + last.sum()).backward()
        results.append((out.detach(), last.detach(), leaf.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_triton_backward_is_deterministic():
    case = CASES[0]
    inputs = _inputs(case, seed=3)
    first = _run(inputs, case, "rk4/canonical", "triton", _fp32)[2]
    second = _run(inputs, case, "rk4/canonical", "triton", _fp32)[2]
    for name in first:
        assert torch.equal(first[name], second[name]), f"d{name} differs between two runs"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(1, 2, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        selective_scan(x, x.abs(), -torch.ones(2, 4), torch.randn(1, 4, 3), torch.randn(1, 4, 3),
                       backend="triton")


# ----------------------------------------------------------------------------- compiles for CUDA


def _compile_for_sm80(kernel, constexprs: dict, pointer_types: dict[str, str]):
    """Compile a kernel to a cubin for sm_80 (no GPU needed: Triton ships ptxas). Arguments
    named *_ptr are pointers (fp32 unless pointer_types says otherwise), other non-constexpr
    arguments int32."""
    signature, values = {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            values[(index,)] = constexprs[name]
        elif name.endswith("_ptr"):
            signature[name] = pointer_types.get(name, "*fp32")
        else:
            signature[name] = "i32"
    return triton.compile(ASTSource(kernel, signature, values), target=GPUTarget("cuda", 80, 32))


@pytest.fixture
def compiler(monkeypatch):
    """The backend's kernels as compiled (not interpreted) Triton functions."""
    if isinstance(tl.standard._sum_combine, InterpretedFunction):
        pytest.skip("needs triton imported without TRITON_INTERPRET=1 (it was, in this process, "
                    "so triton.language's own helpers exist only for the interpreter)")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    triton_backend.match_interpreter_setting()
    assert not isinstance(triton_backend._scan_fwd_kernel, InterpretedFunction)


def test_method_math_compiles_for_cuda_for_every_method(compiler):
    kernel = triton.jit(_method_math_kernel)
    for method in all_methods():
        compiled = _compile_for_sm80(kernel, dict(**_math_constexprs(method),
                                                  N_TAPS=len(method.taps), BLOCK=64), {})
        assert "cubin" in compiled.asm, method.key


LOW_PRECISION_POINTERS = {name: "*bf16" for name in (
    "u_ptr", "delta_ptr", "B_ptr", "C_ptr", "gate_ptr", "out_ptr", "dout_ptr", "dlast_ptr")}


@pytest.mark.parametrize("key,options,pointers", [
    # every Ā kind and tap structure, all optional inputs, bf16 activations
    ("rk4/canonical", dict(HAS_D=True, HAS_GATE=True, HAS_BIAS=True, SOFTPLUS=True, HAS_DLAST=True,
                           HAS_LAM=False), LOW_PRECISION_POINTERS),
    ("polynomial/canonical", dict(HAS_D=True, HAS_GATE=True, HAS_BIAS=True, SOFTPLUS=True,
                                  HAS_DLAST=False, HAS_LAM=False), LOW_PRECISION_POINTERS),
    ("bilinear/paper", dict(HAS_D=True, HAS_GATE=True, HAS_BIAS=True, SOFTPLUS=True,
                            HAS_DLAST=False, HAS_LAM=False), LOW_PRECISION_POINTERS),
    ("highorder/paper", dict(HAS_D=True, HAS_GATE=True, HAS_BIAS=True, SOFTPLUS=True,
                             HAS_DLAST=False, HAS_LAM=False), LOW_PRECISION_POINTERS),
    # a per-token λ, bf16 like the activations
    ("trapezoid/paper", dict(HAS_D=True, HAS_GATE=True, HAS_BIAS=True, SOFTPLUS=True,
                             HAS_DLAST=True, HAS_LAM=True), {**LOW_PRECISION_POINTERS, "lam_ptr": "*bf16"}),
    # no optional inputs, fp32
    ("zoh/paper", dict(HAS_D=False, HAS_GATE=False, HAS_BIAS=False, SOFTPLUS=False,
                       HAS_DLAST=False, HAS_LAM=False), {}),
])
def test_scan_kernels_compile_for_cuda(compiler, key, options, pointers):
    """The forward and backward kernels go through Triton's whole CUDA pipeline (TTIR → PTX →
    cubin), which the interpreter never exercises (constexpr branches, tuples, layouts)."""
    method = get_method(key)
    constexprs = dict(**triton_backend._method_constexprs(method),
                      BLOCK_L=triton_backend.CHUNK_TOKENS,
                      BLOCK_D=triton_backend.MAX_BLOCK_CHANNELS, BLOCK_N=16, **options)
    forward = {k: v for k, v in constexprs.items() if k != "HAS_DLAST"}
    assert "cubin" in _compile_for_sm80(triton_backend._scan_fwd_kernel, forward, pointers).asm
    assert "cubin" in _compile_for_sm80(triton_backend._scan_bwd_kernel, constexprs, pointers).asm
