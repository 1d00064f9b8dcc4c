"""GPU paths: the compiled Triton kernels and mamba_ssm's kernel (backend "mamba").

The GPU tests skip without CUDA ("needs CUDA") and, for mamba_ssm's kernel, without its
compiled extension (the `cuda` extra). The checks of the mamba backend's argument handling run
everywhere.
"""

from __future__ import annotations

import pytest
import torch

from discbench.methods import all_methods, get_method
from discbench.scan import BACKENDS, resolve_backend, selective_scan
from discbench.scan.mamba import ANCHOR_METHOD, selective_scan_mamba, unavailable_reason

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_mamba_kernel = pytest.mark.skipif(
    BACKENDS["mamba"].unavailable_reason() is not None,
    reason="needs CUDA and mamba_ssm's CUDA extension (pip install -e .[cuda])")

METHOD_KEYS = [m.key for m in all_methods()]
# Vision Mamba Tiny: d_model 192, expand 2 -> 384 channels, 16 states, 14×14 patches + class token
VIM_TINY = dict(batch=2, channels=384, state=16, length=197)


def _vim_inputs(dtype: torch.dtype, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Vim-Tiny-shaped inputs as Vim feeds them: B, C (b, n, l); A, D, delta_bias fp32."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    b, d, n, l = (VIM_TINY[k] for k in ("batch", "channels", "state", "length"))

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(device)

    # Mamba's initialisation: A = -(1..n) per channel, Δ = softplus(raw + bias) in [1e-3, 0.1]
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1).to(device)
    return dict(
        u=randn(b, d, l).to(dtype), delta=randn(b, d, l, scale=0.5).to(dtype), A=A,
        B=randn(b, n, l).to(dtype), C=randn(b, n, l).to(dtype), D=randn(d),
        z=randn(b, d, l).to(dtype), delta_bias=(torch.rand(d, generator=gen) * -4.0 - 2.0).to(device),
    )


def _with_lam(inputs: dict[str, torch.Tensor], method: str) -> dict[str, torch.Tensor]:
    """`inputs` plus, for a method that takes λ, lam (b, 1, l) in (0, 1): one per token,
    shared by the channels as a model passes it (the scan gets it expanded to (b, d, l))."""
    if not get_method(method).takes_lam:
        return inputs
    u = inputs["u"]
    lam = torch.sigmoid(torch.randn(u.shape[0], 1, u.shape[2], generator=torch.Generator().manual_seed(2)))
    return {**inputs, "lam": lam.to(device=u.device, dtype=u.dtype)}


def _forward_backward(inputs, method: str, backend: str, compute: torch.dtype | None = None):
    """out and every gradient; inputs cast to `compute` first when given (for the reference)."""
    leaves = {k: (v if compute is None else v.to(compute)).detach().clone().requires_grad_()
              for k, v in _with_lam(inputs, method).items()}
    lam = leaves["lam"].expand_as(leaves["u"]) if "lam" in leaves else None
    out = selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                         D=leaves["D"], z=leaves["z"], delta_bias=leaves["delta_bias"],
                         delta_softplus=True, method=method, backend=backend, lam=lam)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    (out.double() * weight.double()).sum().backward()
    return out.double(), {k: v.grad.double() for k, v in leaves.items()}


def _assert_close(what: str, got: torch.Tensor, ref: torch.Tensor, rel: float,
                  scale: float | None = None):
    """max |got - ref| ≤ rel · scale, scale = max(1, max |ref|) unless given."""
    if scale is None:
        scale = max(1.0, ref.abs().max().item())
    err = (got - ref).abs().max().item()
    assert err <= rel * scale, f"{what}: max error {err:.3e} > {rel:.0e} × scale {scale:.3e}"


def _assert_grads_close(what: str, grads: dict, grads_ref: dict, rel: float):
    """Every gradient; d(delta_bias) = Σ_{b,l} d(delta) is held to the size of those terms."""
    for name in grads_ref:
        scale = None
        if name == "delta_bias":
            scale = max(1.0, grads_ref["delta"].abs().sum(dim=(0, 2)).max().item())
        _assert_close(f"{what} d{name}", grads[name], grads_ref[name], rel, scale)


# ----------------------------------------------------------------------------- everywhere


def test_mamba_backend_takes_only_zoh_paper():
    x = torch.zeros(1, 2, 3)
    B = torch.zeros(1, 1, 4, 3)
    with pytest.raises(ValueError, match="zoh/paper"):
        selective_scan_mamba(x, x, -torch.ones(2, 4), B, B, None, None, None, False, False,
                             get_method("foh", "canonical"))


def test_mamba_backend_explains_when_unavailable():
    reason = unavailable_reason()
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA (checks the explanation given there)")
    assert reason is not None and "CUDA" in reason


# ----------------------------------------------------------------------------- GPU only


@needs_cuda
@pytest.mark.cuda
def test_auto_uses_triton_on_cuda():
    assert resolve_backend("auto", torch.device("cuda"), torch.float32).name == "triton"


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("key", METHOD_KEYS)
def test_triton_matches_reference_at_vim_tiny_shape(key):
    """Compiled kernel (fp32) vs the fp64 reference loop, forward and every gradient."""
    inputs = _vim_inputs(torch.float32, "cuda")
    out_ref, grads_ref = _forward_backward(inputs, key, "reference", compute=torch.float64)
    out, grads = _forward_backward(inputs, key, "triton")
    _assert_close(f"{key} out", out, out_ref, 1e-4)
    _assert_grads_close(key, grads, grads_ref, 1e-4)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("key", ["zoh/paper", "foh/canonical", "rk4/canonical", "trapezoid/paper"])
def test_triton_bf16_at_vim_tiny_shape(key):
    inputs = _vim_inputs(torch.bfloat16, "cuda")
    out_ref, grads_ref = _forward_backward(inputs, key, "reference", compute=torch.float64)
    out, grads = _forward_backward(inputs, key, "triton")
    _assert_close(f"{key} out", out, out_ref, 2e-2)
    _assert_grads_close(key, grads, grads_ref, 2e-2)


@needs_mamba_kernel
@pytest.mark.cuda
@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_zoh_paper_matches_mamba_selective_scan_fn(dtype, rel):
    """Triton zoh/paper against mamba_ssm's own kernel, and the mamba backend against the
    reference, at Vim-Tiny shape."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    inputs = _vim_inputs(dtype, "cuda")
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out_mamba = selective_scan_fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"],
                                  leaves["C"], leaves["D"], leaves["z"], leaves["delta_bias"],
                                  delta_softplus=True)
    weight = torch.randn(out_mamba.shape, generator=torch.Generator().manual_seed(1)).cuda()
    (out_mamba.double() * weight.double()).sum().backward()
    grads_mamba = {k: v.grad.double() for k, v in leaves.items()}

    out, grads = _forward_backward(inputs, ANCHOR_METHOD, "triton")
    _assert_close("out", out, out_mamba.double(), rel)
    _assert_grads_close("triton vs mamba_ssm", grads, grads_mamba, rel)

    out_backend, grads_backend = _forward_backward(inputs, ANCHOR_METHOD, "mamba")
    out_ref, grads_ref = _forward_backward(inputs, ANCHOR_METHOD, "reference", compute=torch.float64)
    _assert_close("mamba backend out", out_backend, out_ref, rel)
    _assert_grads_close("mamba backend", grads_backend, grads_ref, rel)
