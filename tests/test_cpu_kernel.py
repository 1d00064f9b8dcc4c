"""The fused C++ CPU scan (backend "cpu") against the fp64 PyTorch reference.

Tolerances: the kernel computes in fp32, the reference here in fp64, so the comparison sees the
kernel's own rounding only. Errors are measured relative to the largest magnitude of each
quantity (outputs and gradients are sums over up to l tokens and n states, so relative error per
element is meaningless where terms cancel): 2e-5 for outputs and last states (observed ≤ 3e-7,
the error of a length-l fp32 recurrence), 1e-4 for gradients (observed ≤ 2e-6; they add a
reverse recurrence and sums over b, l or n of products of fp32 values).
"""

from __future__ import annotations

import pytest
import torch

from discbench import selective_scan
from discbench.methods import RK4_STABILITY_BOUND, all_methods, get_method
from discbench.scan import cpu

pytestmark = pytest.mark.skipif(
    cpu.unavailable_reason() is not None, reason=f"the CPU kernel cannot be built here: {cpu.unavailable_reason()}"
)

METHOD_KEYS = [m.key for m in all_methods()]
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "lam")
OUT_TOL, GRAD_TOL = 2e-5, 1e-4


def make_inputs(b=2, d=6, l=37, n=5, g=1, seed=0, with_D=True, with_z=True, with_bias=True, scale_a=3.0):
    gen = torch.Generator().manual_seed(seed)
    t = {
        "u": torch.randn(b, d, l, generator=gen),
        "delta": 0.5 * torch.randn(b, d, l, generator=gen) - 1.0,
        "A": -scale_a * torch.rand(d, n, generator=gen) - 0.1,
        "B": torch.randn(b, g, n, l, generator=gen),
        "C": torch.randn(b, g, n, l, generator=gen),
        "D": torch.randn(d, generator=gen) if with_D else None,
        "z": torch.randn(b, d, l, generator=gen) if with_z else None,
        "delta_bias": 0.3 * torch.randn(d, generator=gen) if with_bias else None,
        "lam": torch.sigmoid(torch.randn(b, d, l, generator=gen)),  # used only by methods taking λ
    }
    return t


def run(inputs, backend, method, dtype=torch.float64, softplus=True, grads=True, seed=7, last_grad=True):
    """out, last state and the gradients of every given input under a fixed random loss (λ is
    passed, and its gradient returned, only for a method that takes it)."""
    if not get_method(method).takes_lam:
        inputs = {**inputs, "lam": None}
    leaves = {k: (v.detach().clone().to(dtype).requires_grad_(grads) if v is not None else None)
              for k, v in inputs.items()}
    out, last = selective_scan(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"], z=leaves["z"],
        delta_bias=leaves["delta_bias"], delta_softplus=softplus, return_last_state=True,
        method=method, backend=backend, lam=leaves.get("lam"),
    )
    result = {"out": out.detach(), "last": last.detach()}
    if grads:
        gen = torch.Generator().manual_seed(seed)
        loss = (out * torch.randn(out.shape, generator=gen).to(dtype)).sum()
        if last_grad:
            loss = loss + (last * torch.randn(last.shape, generator=gen).to(dtype)).sum()
        loss.backward()
        for k, v in leaves.items():
            if v is not None:
                result["d" + k] = v.grad
    return result


def assert_matches(got, want, keys=None):
    for key in keys or want:
        g, w = got[key].double(), want[key].double()
        assert g.shape == w.shape, f"{key}: shape {tuple(g.shape)} != {tuple(w.shape)}"
        scale = w.abs().max().item() if w.numel() else 0.0
        tol = (OUT_TOL if key in ("out", "last") else GRAD_TOL) * max(scale, 1e-30)
        err = (g - w).abs().max().item() if w.numel() else 0.0
        assert err <= tol, f"{key}: max error {err:.3g} > {tol:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("method", METHOD_KEYS)
def test_parity_every_method_forward_and_all_gradients(method):
    inputs = make_inputs(l=70)  # crosses the 32-token checkpoints twice, not a multiple of 16
    want = run(inputs, "reference", method)
    got = run(inputs, "cpu", method, dtype=torch.float32)
    takes_lam = get_method(method).takes_lam
    assert set(got) == {"out", "last"} | {"d" + k for k in NAMES if k != "lam" or takes_lam}
    assert_matches(got, want)


# The kernel evaluates a token's weights by the series alone when |Δ| max|a| < 1 (Mamba's usual
# case), else by the general path (exponential, series or closed form per lane): each regime on
# its own, and both mixed along the sequence.
REGIMES = {
    "series only (Mamba-like steps, |z| < 0.05)": (-6.0, 3.0),
    "general only (mostly 1 <= |z| < 2.6)": (1.0, None),
    "mixed along the sequence": (-1.0, 3.0),
}


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("method", METHOD_KEYS)
def test_parity_in_each_regime_of_the_weights(method, regime):
    delta_shift, scale_a = REGIMES[regime]
    inputs = make_inputs(l=45, seed=3)
    inputs["delta"] = 0.3 * torch.randn(inputs["delta"].shape, generator=torch.Generator().manual_seed(4)) + delta_shift
    inputs["delta_bias"] = None
    if scale_a is None:  # softplus(1 ± 0.9) ∈ [0.75, 2.0], |a| ∈ [1, 1.3]: |z| ∈ [0.75, 2.6] mostly ≥ 1
        inputs["A"] = -1.0 - 0.3 * torch.rand(inputs["A"].shape, generator=torch.Generator().manual_seed(5))
    else:
        inputs["A"] = -scale_a * torch.rand(inputs["A"].shape, generator=torch.Generator().manual_seed(5)) - 0.1
    want = run(inputs, "reference", method)
    got = run(inputs, "cpu", method, dtype=torch.float32)
    assert_matches(got, want)


@pytest.mark.parametrize("isa", ["avx2", "scalar"])
@pytest.mark.parametrize("method", ["rk4/canonical", "polynomial/paper", "zoh/canonical", "trapezoid/paper"])
def test_parity_of_the_narrower_instruction_sets(isa, method):
    if isa not in cpu.supported_isas():
        pytest.skip(f"this CPU does not run {isa}")
    inputs = make_inputs(l=40, n=19)
    want = run(inputs, "reference", method)
    with cpu.use_isa(isa):
        got = run(inputs, "cpu", method, dtype=torch.float32)
    assert_matches(got, want)


@pytest.mark.parametrize(
    "shape",
    [
        dict(l=1, n=4),
        dict(l=17, n=1),  # l not a multiple of the vector width, one state
        dict(l=33, n=16),  # one token past a checkpoint
        dict(l=9, n=64),  # several state blocks
        dict(d=6, g=2, l=21, n=4),  # groups of B and C
        dict(d=4, g=4, l=12, n=3),  # one channel per group
        dict(b=3, d=5, l=64, n=16),  # l a multiple of the checkpoint interval
    ],
    ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()),
)
@pytest.mark.parametrize("method", ["rk4/canonical", "highorder/canonical", "polynomial/canonical", "foh/paper",
                                    "trapezoid/paper"])
def test_parity_odd_shapes_and_groups(shape, method):
    inputs = make_inputs(**shape)
    assert_matches(run(inputs, "cpu", method, dtype=torch.float32), run(inputs, "reference", method))


@pytest.mark.parametrize("with_D", [True, False])
@pytest.mark.parametrize("with_z", [True, False])
@pytest.mark.parametrize("with_bias,softplus", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("method", ["zoh/paper", "polynomial/canonical"])
def test_parity_with_and_without_D_gate_bias_softplus(with_D, with_z, with_bias, softplus, method):
    inputs = make_inputs(l=19, with_D=with_D, with_z=with_z, with_bias=with_bias)
    if not softplus:
        inputs["delta"] = inputs["delta"].abs() + 0.05  # Δ must be positive without the softplus
    want = run(inputs, "reference", method, softplus=softplus)
    assert_matches(run(inputs, "cpu", method, dtype=torch.float32, softplus=softplus), want)


def test_gradients_without_a_last_state_gradient_and_without_return_last_state():
    inputs = make_inputs(l=23)
    want = run(inputs, "reference", "foh/canonical", last_grad=False)
    assert_matches(run(inputs, "cpu", "foh/canonical", dtype=torch.float32, last_grad=False), want)
    t = {k: v for k, v in inputs.items()}
    out = selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"],
                         delta_bias=t["delta_bias"], delta_softplus=True, method="foh", backend="cpu")
    assert isinstance(out, torch.Tensor) and out.shape == t["u"].shape


def test_b_and_c_given_without_a_group_dimension():
    inputs = make_inputs(l=15)
    inputs["B"], inputs["C"] = inputs["B"][:, 0], inputs["C"][:, 0]  # (b, n, l)
    want = run(inputs, "reference", "highorder/canonical")
    got = run(inputs, "cpu", "highorder/canonical", dtype=torch.float32)
    assert got["dB"].shape == inputs["B"].shape
    assert_matches(got, want)


def test_non_contiguous_inputs():
    base = make_inputs(l=29, n=6)
    nc = dict(base)
    nc["u"] = base["u"].transpose(1, 2).contiguous().transpose(1, 2)
    nc["delta"] = base["delta"].transpose(0, 1).contiguous().transpose(0, 1)
    nc["B"] = base["B"].transpose(2, 3).contiguous().transpose(2, 3)
    nc["C"] = torch.stack([base["C"], base["C"]], dim=-1)[..., 0]
    nc["A"] = base["A"].t().contiguous().t()
    nc["z"] = base["z"].permute(2, 0, 1).contiguous().permute(1, 2, 0)
    assert not any(nc[k].is_contiguous() for k in ("u", "delta", "B", "C", "A", "z"))
    want = run(base, "reference", "rk4/canonical")
    assert_matches(run(nc, "cpu", "rk4/canonical", dtype=torch.float32), want)


@pytest.mark.parametrize("method", ["polynomial/canonical", "trapezoid/paper"])
@pytest.mark.parametrize("b,l", [(0, 7), (2, 0)])
def test_empty_batch_or_sequence(b, l, method):
    inputs = make_inputs(b=b, l=l)
    got = run(inputs, "cpu", method, dtype=torch.float32)
    want = run(inputs, "reference", method)
    assert got["out"].shape == (b, 6, l) and got["last"].shape == (b, 6, 5)
    assert_matches(got, want)


@pytest.mark.parametrize("method", ["foh/canonical", "trapezoid/paper"])
def test_bfloat16_inputs_compute_in_fp32_and_return_bfloat16(method):
    inputs = {k: (v.to(torch.bfloat16) if v is not None else None) for k, v in make_inputs(l=21).items()}
    got = run(inputs, "cpu", method, dtype=torch.bfloat16)
    want = run(inputs, "reference", method, dtype=torch.float64)  # same bf16 values, fp64 math
    assert got["out"].dtype == torch.bfloat16 and got["du"].dtype == torch.bfloat16
    keys = ("out", "last", "du", "dA", "dB") + (("dlam",) if "dlam" in want else ())
    assert ("dlam" in got) == ("dlam" in want) == (method == "trapezoid/paper")
    if "dlam" in got:
        assert got["dlam"].dtype == torch.bfloat16
    for key in keys:
        scale = want[key].abs().max().item()
        # bf16 keeps 8 bits: the result is the fp32 result rounded once (relative 2^-8).
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-2, atol=1e-2 * scale)


def test_float64_is_refused_with_a_clear_error():
    t = make_inputs(l=5)
    args = [t[k].double() for k in ("u", "delta", "A", "B", "C")]
    with pytest.raises(ValueError, match="backend 'cpu' takes float32, bfloat16, got float64"):
        selective_scan(*args, backend="cpu")
    with pytest.raises(RuntimeError, match="u must be float32 or bfloat16, got Double"):
        cpu.extension().forward(*args, None, None, None, None, None, False, "zoh/canonical", False, False, False,
                                "auto")


def test_direct_kernel_calls_check_shapes_devices_methods_and_isas():
    t = make_inputs(l=5)
    ext = cpu.extension()
    base = [t[k] for k in ("u", "delta", "A", "B", "C")]

    def call(*args, method="zoh/canonical", isa="auto", lam=None):
        return ext.forward(*args, None, None, None, lam, None, False, method, False, False, False, isa)

    with pytest.raises(RuntimeError, match=r"delta must have shape \[2, 6, 5\]"):
        call(base[0], base[1][:, :, :4], *base[2:])
    with pytest.raises(RuntimeError, match=r"A must be \(d=6, n\)"):
        call(*base[:2], base[2][:5], *base[3:])
    with pytest.raises(RuntimeError, match="B has 4 groups, which must divide d=6"):
        call(*base[:3], torch.zeros(2, 4, 5, 5), torch.zeros(2, 4, 5, 5))
    with pytest.raises(RuntimeError, match="u must be a CPU tensor, got meta"):
        call(base[0].to("meta"), *base[1:])
    with pytest.raises(RuntimeError, match="unknown method 'zoh/exact'; valid: zoh/canonical, foh/canonical"):
        call(*base, method="zoh/exact")
    with pytest.raises(RuntimeError, match="unknown isa 'sse9'"):
        call(*base, isa="sse9")
    with pytest.raises(RuntimeError, match="method 'trapezoid/paper' needs lam"):
        call(*base, method="trapezoid/paper")
    with pytest.raises(RuntimeError, match="method 'zoh/canonical' takes no lam"):
        call(*base, lam=t["lam"])
    with pytest.raises(RuntimeError, match=r"lam must have shape \[2, 6, 5\]"):
        call(*base, method="trapezoid/paper", lam=t["lam"][:, :, :4])


def test_auto_picks_the_kernel_on_cpu_without_a_warning(recwarn):
    t = make_inputs(l=11)
    args = [t[k] for k in ("u", "delta", "A", "B", "C")]
    auto = selective_scan(*args, D=t["D"], method="bilinear", backend="auto")
    assert torch.equal(auto, selective_scan(*args, D=t["D"], method="bilinear", backend="cpu"))
    assert not [w for w in recwarn if "discbench" in str(w.message)]


def _bits(result):
    """Each tensor's bit pattern (int32 view): equal means bit-identical, nan and −0 included."""
    return {k: v.contiguous().view(torch.int32) for k, v in result.items()}


def _scan_block(inputs, method, reverse=False, delta_proj=None):
    """selective_scan_block's outputs and every input gradient, fp32 (the model's fast path)."""
    spec = get_method(method)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()
              if v is not None and (k != "lam" or spec.takes_lam)}
    if delta_proj is not None:
        leaves["delta_proj"] = delta_proj.detach().clone().requires_grad_(True)
    out, last = cpu.selective_scan_block(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"], z=leaves["z"],
        delta_bias=leaves["delta_bias"], delta_softplus=True, return_last_state=True, method=method,
        lam=leaves.get("lam"), delta_proj=leaves.get("delta_proj"), reverse=reverse)
    gen = torch.Generator().manual_seed(3)
    ((out * torch.randn(out.shape, generator=gen)).sum() + (last * torch.randn(last.shape, generator=gen)).sum()).backward()
    return {"out": out.detach(), "last": last.detach(), **{"d" + k: v.grad for k, v in leaves.items()}}


@pytest.mark.parametrize("method", METHOD_KEYS)
def test_every_instruction_set_and_thread_count_gives_the_same_bits(method):
    """Results do not depend on the machine's vector width or the number of threads: forward and
    every gradient bit-identical across the builds this CPU runs (avx512, avx2, scalar) and 1 or 2
    threads. Δ in both regimes of the weights (series and closed form, some tokens each), a
    length that is not a multiple of any width, two groups of 16 states (n = 20), both scan
    directions and Δ formed inside the kernel."""
    isas = cpu.supported_isas()
    inputs = make_inputs(b=3, d=5, l=37, n=20, seed=4)
    inputs["delta"] = inputs["delta"] + torch.linspace(-3.0, 2.5, 37)  # |Δa| from ≪ 1 to ≫ 1
    gen = torch.Generator().manual_seed(5)
    proj = torch.randn(5, 3, generator=gen)
    projected = {**inputs, "delta": torch.randn(3, 3, 37, generator=gen) - 1.0}
    threads = torch.get_num_threads()
    runs = {}
    try:
        for isa in isas:
            for n_threads in (1, 2):
                torch.set_num_threads(n_threads)
                with cpu.use_isa(isa):
                    runs[isa, n_threads] = [_bits(_scan_block(inputs, method)),
                                            _bits(_scan_block(inputs, method, reverse=True)),
                                            _bits(_scan_block(projected, method, delta_proj=proj))]
    finally:
        torch.set_num_threads(threads)
    (first_key, first), *others = runs.items()
    for key, got in others:
        for case, (want_case, got_case) in enumerate(zip(first, got)):
            differ = [k for k in want_case if not torch.equal(want_case[k], got_case[k])]
            assert not differ, f"{method} case {case}: {key} differs from {first_key} in {differ}"


@pytest.mark.parametrize("token_major", [False, True])
def test_causal_conv1d_gives_the_same_bits_on_every_instruction_set(token_major):
    from discbench.causal_conv1d import causal_conv1d_fn

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 37, 21, generator=gen).transpose(1, 2) if token_major else torch.randn(3, 21, 37, generator=gen)
    weight, bias = torch.randn(21, 4, generator=gen), torch.randn(21, generator=gen)
    dout = torch.randn(3, 21, 37, generator=gen)
    runs = {}
    for isa in cpu.supported_isas():
        leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias)]
        with cpu.use_isa(isa):
            out = causal_conv1d_fn(*leaves, activation="silu")
        out.backward(dout)
        runs[isa] = _bits({"out": out.detach(), "dx": leaves[0].grad, "dweight": leaves[1].grad,
                           "dbias": leaves[2].grad})
    (first_isa, first), *others = runs.items()
    for isa, got in others:
        differ = [k for k in first if not torch.equal(first[k], got[k])]
        assert not differ, f"{isa} differs from {first_isa} in {differ}"


def test_backward_is_deterministic():
    inputs = make_inputs(b=3, d=8, g=2, l=45)
    first = run(inputs, "cpu", "rk4/canonical", dtype=torch.float32)
    second = run(inputs, "cpu", "rk4/canonical", dtype=torch.float32)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_phi_methods_stay_finite_for_very_stiff_poles():
    # z = aΔ down to about −1e4: the φ closed forms must neither overflow nor lose the limit.
    inputs = make_inputs(l=12, n=4, with_bias=False)
    inputs["A"] = -torch.logspace(-4, 4, 24).reshape(6, 4)
    inputs["delta"] = torch.full_like(inputs["delta"], 1.0)
    for method in ("polynomial/canonical", "highorder/canonical", "foh/canonical", "zoh/canonical"):
        got = run(inputs, "cpu", method, dtype=torch.float32, softplus=False)
        assert all(torch.isfinite(v).all() for v in got.values()), method
        assert_matches(got, run(inputs, "reference", method, softplus=False))


def test_rk4_beyond_its_stability_bound_matches_the_reference():
    inputs = make_inputs(l=40, n=3, with_bias=False, with_z=False)
    inputs["delta"] = torch.full_like(inputs["delta"], 1.0)
    # Mildly unstable (|Ā| a little above 1): large but finite values, same as the reference.
    inputs["A"] = torch.full_like(inputs["A"], 1.1 * RK4_STABILITY_BOUND)
    got = run(inputs, "cpu", "rk4/canonical", dtype=torch.float32, softplus=False)
    want = run(inputs, "reference", "rk4/canonical", softplus=False)
    assert want["out"].abs().max() > 1e3
    assert_matches(got, want, keys=["out", "last", "du", "dA"])
    # Far beyond: the state overflows to inf / nan exactly where the fp32 reference's does.
    inputs["A"] = torch.full_like(inputs["A"], -40.0)
    got = run(inputs, "cpu", "rk4/canonical", dtype=torch.float32, softplus=False, grads=False)
    want32 = run(inputs, "reference", "rk4/canonical", dtype=torch.float32, softplus=False, grads=False)
    assert not torch.isfinite(want32["out"]).all()
    assert torch.equal(torch.isfinite(got["out"]), torch.isfinite(want32["out"]))
    assert torch.equal(torch.isnan(got["out"]), torch.isnan(want32["out"]))


def test_zoh_paper_equals_mamba_selective_scan_ref():
    from discbench.bench import mamba_selective_scan_ref

    ref = mamba_selective_scan_ref()
    if ref is None:
        pytest.skip("mamba_ssm is not installed")
    t = make_inputs(l=26, n=7, g=2)
    want = ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True)
    got = selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"],
                         delta_bias=t["delta_bias"], delta_softplus=True, method="zoh", variant="paper",
                         backend="cpu")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    """cpu.py's loader state reset and pointed at tmp_path as csrc/ (the real build is untouched)."""
    monkeypatch.setattr(cpu, "_extension", None)
    monkeypatch.setattr(cpu, "_load_error", None)
    monkeypatch.setattr(cpu, "CSRC", tmp_path)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    return tmp_path


def test_each_checkout_builds_the_kernel_in_its_own_folder(monkeypatch, tmp_path):
    """Two checkouts sharing one build folder would rebuild it under each other's workers."""
    import shutil

    here = cpu._source_hash()
    copy = tmp_path / "other_checkout" / "csrc"
    shutil.copytree(cpu.CSRC, copy)
    monkeypatch.setattr(cpu, "CSRC", copy)
    copied = cpu._source_hash()
    assert copied != here and cpu._source_hash() == copied  # same files elsewhere: its own, stable key
    (copy / cpu.SOURCES[0]).write_text((copy / cpu.SOURCES[0]).read_text() + "\n// edited\n")
    assert cpu._source_hash() not in (here, copied)  # an edit still rebuilds


def test_missing_sources_are_reported(fresh_loader):
    reason = cpu.unavailable_reason()
    assert reason.startswith("the kernel sources are missing:") and "scan_cpu.cpp" in reason
    assert reason.endswith(cpu.FALLBACK_NOTE)  # what the fallback costs and how to fix it


def test_a_compile_error_is_summarised_and_auto_falls_back_once_with_the_reason(fresh_loader, capfd):
    from discbench.scan import _warned

    for name in cpu.SOURCES:
        (fresh_loader / name).write_text("int broken = ;\n")
    reason = cpu.unavailable_reason()
    assert reason.startswith(f"compiling {fresh_loader} failed:") and "error:" in reason
    assert "compiling the CPU scan kernel (first use" in capfd.readouterr().err
    t = make_inputs(l=6)
    args = [t[k] for k in ("u", "delta", "A", "B", "C")]
    _warned.clear()
    with pytest.warns(RuntimeWarning, match="backend 'cpu' not used on cpu: compiling .* failed"):
        out = selective_scan(*args, backend="auto")
    torch.testing.assert_close(out, selective_scan(*args, backend="torch"))
    with pytest.raises(RuntimeError, match="backend 'cpu' is not available: compiling"):
        selective_scan(*args, backend="cpu")


def _flip_tokens(inputs):
    out = dict(inputs)
    for key in ("u", "delta", "z", "B", "C", "lam"):
        if out[key] is not None:
            out[key] = out[key].flip(-1)
    return out


@pytest.mark.parametrize("method", ["rk4/canonical", "polynomial/canonical", "highorder/paper", "zoh/paper",
                                    "trapezoid/paper"])
@pytest.mark.parametrize("l", [37, 48])
def test_reversed_scan_equals_the_scan_of_flipped_tokens(method, l):
    inputs = make_inputs(l=l, g=2)
    if not get_method(method).takes_lam:
        inputs["lam"] = None
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    out, last = cpu.selective_scan_block(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"], z=leaves["z"],
        delta_bias=leaves["delta_bias"], delta_softplus=True, return_last_state=True, method=method,
        lam=leaves["lam"], reverse=True,
    )
    gen = torch.Generator().manual_seed(3)
    gout, glast = torch.randn(out.shape, generator=gen), torch.randn(last.shape, generator=gen)
    ((out * gout).sum() + (last * glast).sum()).backward()
    got = {"out": out.detach(), "last": last.detach(),
           **{"d" + k: v.grad for k, v in leaves.items() if v is not None}}

    flipped = {k: (v.double().requires_grad_() if v is not None else None) for k, v in _flip_tokens(inputs).items()}
    ref_out, ref_last = selective_scan(
        flipped["u"], flipped["delta"], flipped["A"], flipped["B"], flipped["C"], D=flipped["D"], z=flipped["z"],
        delta_bias=flipped["delta_bias"], delta_softplus=True, return_last_state=True, method=method,
        backend="reference", lam=flipped["lam"],
    )
    ((ref_out * gout.double().flip(-1)).sum() + (ref_last * glast.double()).sum()).backward()
    want = {"out": ref_out.detach().flip(-1), "last": ref_last.detach()}
    for key, v in flipped.items():
        if v is not None:
            want["d" + key] = v.grad.flip(-1) if key in ("u", "delta", "z", "B", "C", "lam") else v.grad
    assert_matches(got, want)


@pytest.mark.parametrize("method", ["zoh/canonical", "rk4/paper", "trapezoid/paper"])
@pytest.mark.parametrize("reverse", [False, True])
def test_inputs_are_read_with_their_strides_as_a_model_lays_them_out(method, reverse):
    """u, delta, z as channel slices of token-major (b, l, ·) tensors and B, C as (b, l, n) slices
    of one (b, l, r + 2n) projection (Vim's layouts) give exactly what contiguous copies give."""
    b, d, l, n, r = 2, 6, 37, 5, 3
    gen = torch.Generator().manual_seed(5)
    wide = torch.randn(b, l, 3 * d, generator=gen)
    proj = torch.randn(b, l, r + 2 * n, generator=gen)
    strided = {"u": wide[..., :d].transpose(1, 2), "delta": 0.5 * wide[..., d:2 * d].transpose(1, 2) - 1.0,
               "z": wide[..., 2 * d:].transpose(1, 2), "B": proj[..., r:r + n].transpose(1, 2),
               "C": proj[..., r + n:].transpose(1, 2), "A": -3.0 * torch.rand(d, n, generator=gen) - 0.1,
               "D": torch.randn(d, generator=gen), "delta_bias": 0.3 * torch.randn(d, generator=gen),
               "lam": torch.sigmoid(torch.randn(b, 1, l, generator=gen)).expand(b, d, l)}
    assert strided["u"].stride(2) != 1 and strided["B"].stride(2) != 1
    if not get_method(method).takes_lam:
        strided["lam"] = None

    def scan(tensors):
        leaves = {k: (v.detach().requires_grad_() if v is not None else None) for k, v in tensors.items()}
        fn = cpu.selective_scan_block if reverse else selective_scan
        kwargs = {"reverse": True} if reverse else {"backend": "cpu"}
        out = fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"], z=leaves["z"],
                 delta_bias=leaves["delta_bias"], delta_softplus=True, method=method, lam=leaves["lam"], **kwargs)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        return out.detach(), {k: v.grad for k, v in leaves.items() if v is not None}

    got_out, got_grads = scan(strided)
    want_out, want_grads = scan({k: (v.contiguous() if v is not None else None) for k, v in strided.items()})
    assert torch.equal(got_out, want_out)
    for key, grad in want_grads.items():
        assert torch.equal(got_grads[key], grad), key


@pytest.mark.parametrize("method", ["zoh/canonical", "polynomial/paper", "rk4/canonical", "trapezoid/paper"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("l", [37, 300])  # 300: two of the kernel's 256-token chunks of Δ, the last partial
def test_delta_projection_inside_the_kernel_equals_the_projected_delta(method, reverse, l):
    """delta_proj (d, r) with delta (b, r, l) gives what Δ = delta_proj · delta passed whole gives
    (float64 reference backend on flipped tokens for the reverse scan), outputs and gradients of
    every input, the projection's weight and its input included."""
    b, d, n, r = 2, 6, 5, 3
    inputs = make_inputs(l=l, g=2)
    if not get_method(method).takes_lam:
        inputs["lam"] = None
    gen = torch.Generator().manual_seed(8)
    inputs["low"] = 0.5 * torch.randn(b, r, l, generator=gen)
    inputs["proj"] = torch.randn(d, r, generator=gen) / r
    del inputs["delta"]
    weights = torch.linspace(-1, 1, b * d * l).view(b, d, l)

    def run(tensors, dtype, fused):
        leaves = {k: (v.detach().to(dtype).requires_grad_() if v is not None else None) for k, v in tensors.items()}
        common = dict(D=leaves["D"], z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=True,
                      method=method, lam=leaves["lam"])
        if fused:
            out = cpu.selective_scan_block(leaves["u"], leaves["low"], leaves["A"], leaves["B"], leaves["C"],
                                           delta_proj=leaves["proj"], reverse=reverse, **common)
        else:
            flip = (lambda t: t.flip(-1)) if reverse else (lambda t: t)
            delta = torch.matmul(leaves["proj"], leaves["low"])
            common.update(z=flip(leaves["z"]), lam=None if leaves["lam"] is None else flip(leaves["lam"]))
            out = flip(selective_scan(flip(leaves["u"]), flip(delta), leaves["A"], flip(leaves["B"]),
                                      flip(leaves["C"]), backend="reference", **common))
        (out * weights.to(dtype)).sum().backward()
        return {"out": out.detach(), **{"d" + k: v.grad for k, v in leaves.items() if v is not None}}

    got = run(inputs, torch.float32, fused=True)
    want = run(inputs, torch.float64, fused=False)
    assert set(got) == set(want)
    assert_matches(got, want)


def test_delta_projection_shapes_are_checked():
    t = make_inputs(l=5)
    with pytest.raises(ValueError, match=r"with delta_proj \(d, r\), delta must be \(b, r, l\)"):
        cpu.selective_scan_block(t["u"], torch.randn(2, 3, 5), t["A"], t["B"], t["C"], delta_proj=torch.randn(6, 4))
