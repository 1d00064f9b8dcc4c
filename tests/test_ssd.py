"""`ssd_scan`: Mamba-2's SSD with every discretization.

Held to mamba_ssm's `ssd_minimal_discrete` (zoh/paper), to its own token loop (chunked form,
every method), and to `selective_scan` through the head-to-channel mapping (one recurrence).
"""

from __future__ import annotations

import math

import pytest
import torch

import discbench
from discbench import methods as registry
from discbench import all_methods, selective_scan, ssd_scan
from discbench.scan import NonFiniteInputError
from discbench.scan.ssd import SSD_BACKENDS

ALL_KEYS = [m.key for m in all_methods()]


def make_inputs(b=2, l=11, h=4, p=3, g=2, n=5, dtype=torch.float64, seed=0, d_per_channel=False,
                method=None, z_scale=1.0) -> dict:
    """Random ssd_scan arguments: dt through dt_bias + softplus, z = aΔ mostly in [-8, 0], so
    bilinear's Ā is negative and rk4's |Ā| > 1 for some tokens."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    args = {
        "x": rand(b, l, h, p),
        "dt": rand(b, l, h),
        "A": (-torch.linspace(0.5, 4.0, h, dtype=torch.float64) * z_scale).to(dtype),
        "B": rand(b, l, g, n),
        "C": rand(b, l, g, n),
        "D": rand(h, p) if d_per_channel else rand(h),
        "z": rand(b, l, h, p),
        "dt_bias": rand(h) * 0.3,
        "dt_softplus": True,
    }
    if method is not None and method.takes_lam:
        args["lam"] = torch.sigmoid(rand(b, l, h))
    return args


def method_args(key: str) -> dict:
    name, variant = key.split("/")
    return {"method": name, "variant": variant}


@pytest.fixture(scope="module")
def ssd_minimal_discrete(selective_scan_ref):
    """mamba_ssm's `ssd_minimal_discrete` (Listing 1 of the Mamba-2 paper).

    Importing selective_scan_ref first (tests/conftest.py) imports the mamba_ssm package
    without its CUDA extension; the module itself needs only Triton's Python package."""
    module = pytest.importorskip("mamba_ssm.modules.ssd_minimal", reason="mamba_ssm's ssd_minimal is not importable")
    return module.ssd_minimal_discrete


@pytest.mark.parametrize("backend", list(SSD_BACKENDS))
def test_zoh_paper_equals_mamba_ssd_minimal(ssd_minimal_discrete, backend):
    b, l, h, p, n, chunk = 2, 12, 3, 4, 5, 4
    args = make_inputs(b=b, l=l, h=h, p=p, g=1, n=n)
    dt = torch.nn.functional.softplus(args["dt"])
    B_heads, C_heads = args["B"].expand(b, l, h, n), args["C"].expand(b, l, h, n)
    expected, expected_final = ssd_minimal_discrete(args["x"] * dt[..., None], args["A"] * dt, B_heads, C_heads, chunk)
    out, final = ssd_scan(args["x"], dt, args["A"], args["B"], args["C"], chunk, method="zoh", variant="paper",
                          return_final_states=True, backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, expected_final, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", list(SSD_BACKENDS))
def test_gate_skip_groups_and_bias_as_mamba_chunk_scan_combined_ref(selective_scan_ref, backend):
    """mamba_ssm's PyTorch reference of mamba_chunk_scan_combined, with z, D (h, p), groups,
    dt_bias and softplus: out = (y + D ⊙ x) · silu(z). It computes Δ in fp32 whatever the input."""
    module = pytest.importorskip("mamba_ssm.ops.triton.ssd_combined",
                                 reason="mamba_ssm's ssd_combined is not importable")
    args = make_inputs(l=12, d_per_channel=True)
    expected = module.ssd_chunk_scan_combined_ref(args["x"], args["dt"], args["A"], args["B"], args["C"], 4,
                                                  D=args["D"], z=args["z"], dt_bias=args["dt_bias"], dt_softplus=True)
    out = ssd_scan(**args, chunk_size=4, method="zoh", variant="paper", backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _both(key: str, args: dict, chunk_size: int, **extra):
    return [ssd_scan(**args, chunk_size=chunk_size, **method_args(key), backend=backend, return_final_states=True,
                     **extra) for backend in ("reference", "chunked")]


@pytest.mark.parametrize("key", ALL_KEYS)
def test_chunked_equals_reference_for_every_method(key):
    args = make_inputs(method=registry.METHODS[key], d_per_channel=True)
    (ref, ref_final), (out, final) = _both(key, args, chunk_size=4)  # 11 tokens: chunks of 4, 4, 3
    scale = ref.abs().max()
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-12 * scale)
    torch.testing.assert_close(final, ref_final, rtol=1e-11, atol=1e-12 * ref_final.abs().max())


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 11, 64])
@pytest.mark.parametrize("key", ["foh/canonical", "rk4/canonical", "bilinear/canonical", "polynomial/canonical"])
def test_chunk_boundaries_do_not_change_the_result(key, chunk_size):
    """Stencils reaching across chunk boundaries, chunk sizes that do not divide l, one chunk."""
    args = make_inputs(l=11, method=registry.METHODS[key])
    (ref, ref_final), (out, final) = _both(key, args, chunk_size=chunk_size)
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-12 * ref.abs().max())
    torch.testing.assert_close(final, ref_final, rtol=1e-11, atol=1e-12 * ref_final.abs().max())


@pytest.mark.parametrize("key", ["zoh/paper", "highorder/canonical", "rk4/canonical"])
def test_one_token(key):
    args = make_inputs(l=1, method=registry.METHODS[key])
    (ref, ref_final), (out, final) = _both(key, args, chunk_size=4)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=1e-12, atol=1e-12)
    # One token: h_0 = Δ_0 w_0 x_0 ⊗ B_0 (every other tap reads outside the sequence).
    assert torch.count_nonzero(ref_final) > 0


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_groups_serve_consecutive_heads(groups):
    args = make_inputs(h=4, g=groups)
    (ref, _), (out, _) = _both("foh/canonical", args, chunk_size=4)
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-11)
    expanded = dict(args, B=args["B"].repeat_interleave(4 // groups, dim=2),
                    C=args["C"].repeat_interleave(4 // groups, dim=2))
    torch.testing.assert_close(ssd_scan(**expanded, chunk_size=4, method="foh"), out, rtol=1e-12, atol=1e-12)


def heads_to_channels(x, dt, A, B, C, D, z, dt_bias, n, lam=None) -> dict:
    """ssd_scan's arguments as selective_scan's: head h's p inputs are channels h·p … h·p + p − 1."""
    b, l, h, p = x.shape
    channels = {
        "u": x.reshape(b, l, h * p).transpose(1, 2),
        "delta": dt.repeat_interleave(p, dim=2).transpose(1, 2),
        "A": A.repeat_interleave(p)[:, None].expand(h * p, n),
        "B": B.permute(0, 2, 3, 1),
        "C": C.permute(0, 2, 3, 1),
        "D": D.repeat_interleave(p) if D.dim() == 1 else D.reshape(h * p),
        "z": z.reshape(b, l, h * p).transpose(1, 2),
        "delta_bias": dt_bias.repeat_interleave(p),
    }
    if lam is not None:  # selective_scan takes lam (b, d, l) for a method that reads one
        channels["lam"] = lam.repeat_interleave(p, dim=2).transpose(1, 2)
    return channels


@pytest.mark.parametrize("key", ALL_KEYS)
def test_reference_equals_selective_scan_through_heads_to_channels(key):
    """Mamba-2's per-head scan and Mamba-1's per-channel scan compute one recurrence."""
    b, l, h, p, n = 2, 9, 4, 3, 5
    args = make_inputs(b=b, l=l, h=h, p=p, g=2, n=n, method=registry.METHODS[key])
    out, final = ssd_scan(**args, chunk_size=4, **method_args(key), backend="reference", return_final_states=True)
    channel_args = heads_to_channels(args["x"], args["dt"], args["A"], args["B"], args["C"], args["D"], args["z"],
                                     args["dt_bias"], n, args.get("lam"))
    expected, expected_last = selective_scan(**channel_args, delta_softplus=True, return_last_state=True,
                                             **method_args(key), backend="reference")
    torch.testing.assert_close(out, expected.transpose(1, 2).reshape(b, l, h, p), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, expected_last.reshape(b, h, p, n), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_chunked_gradients_pass_gradcheck(key):
    method = registry.METHODS[key]
    args = make_inputs(b=1, l=5, h=2, p=2, g=1, n=2, method=method, z_scale=0.5)
    names = [k for k, v in args.items() if isinstance(v, torch.Tensor)]
    for k in names:
        args[k] = args[k].clone().requires_grad_()

    def run(*tensors):
        given = dict(args, **dict(zip(names, tensors)))
        out, final = ssd_scan(**given, chunk_size=2, **method_args(key), backend="chunked", return_final_states=True)
        return out, final

    assert torch.autograd.gradcheck(run, [args[k] for k in names], eps=1e-6, atol=1e-6, rtol=1e-5)


def test_extreme_steps_match_the_loop_with_finite_gradients():
    """e^z underflowing to 0 and bilinear's Ā = 0 at z = −2 exactly: the chunked products stand
    in log(tiny) for log 0, which changes nothing the loop computes, and the gradients stay finite.
    The one stated difference: at an Ā below the smallest normal number, dĀ/dz is dropped (the
    loop keeps bilinear's, nonzero at z = −2; e^z's is itself below tiny), so A's gradient there
    is compared for the exponential methods only."""
    args = make_inputs(b=1, l=9, h=2, p=2, g=1, n=3, z_scale=1.0)
    args.update(dt_softplus=False, dt_bias=None)
    args["A"] = torch.tensor([-2.0, -1.0], dtype=torch.float64)
    dt = torch.full((1, 9, 2), 0.3, dtype=torch.float64)
    dt[0, 3, 0] = 600.0  # z = −1200: e^z = 0 in fp64
    dt[0, 5, 1] = 2.0  # z = −2: Tustin's Ā = 0
    args["dt"] = dt
    for key, compared in (("zoh/paper", ("x", "B", "A")), ("foh/canonical", ("x", "B", "A")),
                          ("bilinear/canonical", ("x", "B"))):
        outs, grads = [], []
        for backend in ("reference", "chunked"):
            given = {k: (v.clone().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
            out = ssd_scan(**given, chunk_size=4, **method_args(key), backend=backend)
            out.square().sum().backward()
            outs.append(out.detach())
            grads.append({name: given[name].grad for name in ("x", "B", "C", "A", "dt")})
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
        assert all(torch.isfinite(g).all() for g in grads[1].values())
        for name in compared:
            torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-10, atol=1e-10)


def test_unstable_rk4_grows_as_the_loop_does():
    """Canonical rk4 beyond its stability bound: |Ā| > 1 is a positive log, not an error."""
    args = make_inputs(l=16, z_scale=3.0, method=registry.METHODS["rk4/canonical"])
    (ref, _), (out, _) = _both("rk4/canonical", args, chunk_size=5)
    assert ref.abs().max() > 1e6  # the loop diverges on these inputs
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12 * ref.abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_compute_in_fp32_and_return_their_dtype(dtype):
    args = make_inputs(dtype=dtype, l=10)
    (ref, ref_final), (out, final) = _both("polynomial/canonical", args, chunk_size=4)
    assert out.dtype == dtype and final.dtype == dtype
    exact = ssd_scan(**make_inputs(l=10), chunk_size=4, method="polynomial")
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.double(), ref.double(), rtol=tolerance, atol=tolerance * ref.double().abs().max())
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), exact, rtol=1e-4, atol=1e-4 * exact.abs().max())


def test_gate_and_skip_follow_mamba_chunk_scan_combined():
    """out = (y + D ⊙ x) · silu(z), with D per head or per head and channel."""
    args = make_inputs()
    plain = ssd_scan(**dict(args, D=None, z=None), chunk_size=4)
    D_hp = args["D"][:, None].expand(4, 3)
    gated = ssd_scan(**dict(args, D=D_hp), chunk_size=4)
    expected = (plain + args["x"] * args["D"][:, None]) * torch.nn.functional.silu(args["z"])
    torch.testing.assert_close(gated, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ssd_scan(**args, chunk_size=4), gated, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", [m for m in all_methods() if m.takes_lam], ids=lambda m: m.key)
def test_lam_reaches_the_weights_and_gets_a_gradient(method):
    """Both backends agree, λ = 1 gives Mamba's step, and λ receives a gradient."""
    args = make_inputs(method=method)
    lam = args["lam"].clone().requires_grad_()
    (ref, _), (out, _) = _both(method.key, dict(args, lam=lam), chunk_size=4)
    torch.testing.assert_close(out, ref, rtol=1e-11, atol=1e-11)
    out.square().sum().backward()
    assert lam.grad is not None and lam.grad.abs().sum() > 0
    if method.key == "trapezoid/paper":
        ones = torch.ones_like(args["lam"])
        torch.testing.assert_close(ssd_scan(**dict(args, lam=ones), chunk_size=4, method=method.key),
                                   ssd_scan(**dict(args, lam=None), chunk_size=4, method="zoh/paper"))
    with pytest.raises(ValueError, match=f"method {method.key} needs lam"):
        ssd_scan(**dict(args, lam=None), chunk_size=4, method=method.key)
    with pytest.raises(ValueError, match=f"lam is taken only by .*{method.key}.*zoh/canonical does not use it"):
        ssd_scan(**args, chunk_size=4, method="zoh")


def _bad(**changes):
    args = make_inputs(l=6)
    args.update(changes)
    return args


@pytest.mark.parametrize("args, error, message", [
    (_bad(x=torch.zeros(2, 6, 4)), ValueError, r"x must be a \(b, l, h, p\) tensor, got \(2, 6, 4\)"),
    (_bad(x=torch.zeros(2, 0, 4, 3, dtype=torch.float64), dt=torch.zeros(2, 0, 4, dtype=torch.float64)),
     ValueError, "x has no tokens"),
    (_bad(dt=torch.zeros(2, 6, 3, dtype=torch.float64)), ValueError,
     r"dt must have shape \(2, 6, 4\), got \(2, 6, 3\)"),
    (_bad(A=torch.zeros(4, 5, dtype=torch.float64)), ValueError, r"A must have shape \(4,\), got \(4, 5\)"),
    (_bad(B=torch.zeros(2, 6, 3, 5, dtype=torch.float64), C=torch.zeros(2, 6, 3, 5, dtype=torch.float64)),
     ValueError, "B has 3 groups, which must divide the 4 heads of x"),
    (_bad(C=torch.zeros(2, 6, 2, 4, dtype=torch.float64)), ValueError, r"C must have shape \(2, 6, 2, 5\)"),
    (_bad(D=torch.zeros(3, dtype=torch.float64)), ValueError, r"D must have shape \(4,\) or \(4, 3\), got \(3,\)"),
    (_bad(z=torch.zeros(2, 6, 4, 2, dtype=torch.float64)), ValueError, r"z must have shape \(2, 6, 4, 3\)"),
    (_bad(dt_bias=torch.zeros(2, dtype=torch.float64)), ValueError, r"dt_bias must have shape \(4,\)"),
    (_bad(B=torch.zeros(2, 6, 2, 5, dtype=torch.int64)), TypeError, "B must be a floating-point tensor"),
    (_bad(chunk_size=0), ValueError, "chunk_size must be a positive int, got 0"),
    (_bad(chunk_size=4.0), ValueError, "chunk_size must be a positive int, got 4.0"),
    (_bad(dt=torch.full((2, 6, 4), math.nan, dtype=torch.float64)), NonFiniteInputError, "dt has non-finite values"),
    (_bad(method="euler"), ValueError, "unknown method 'euler'; valid methods: zoh, foh"),
    (_bad(variant="textbook"), ValueError, "unknown variant 'textbook'"),
    (_bad(backend="loop"), ValueError, "unknown ssd backend 'loop'; valid backends: auto, reference, chunked"),
    (_bad(lam=torch.full((2, 6, 4), 0.5, dtype=torch.float64)), ValueError, "zoh/canonical does not use it"),
])
def test_input_errors_name_the_argument(args, error, message):
    args.setdefault("chunk_size", 4)
    with pytest.raises(error, match=message):
        ssd_scan(**args)


def test_exported_from_the_package():
    assert discbench.ssd_scan is ssd_scan
