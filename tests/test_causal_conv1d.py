"""The fused CPU depthwise causal conv1d (+ SiLU) against PyTorch's conv1d in fp64.

Tolerances as the scan kernel's tests: the kernel computes in fp32, the reference in fp64; errors
relative to the largest magnitude of each quantity (outputs 2e-6, weight/bias gradients, sums
over b·l products, 2e-5).
"""

from __future__ import annotations

import pytest
import torch

from discbench.causal_conv1d import causal_conv1d_fn, causal_conv1d_torch
from discbench.scan import cpu

pytestmark = pytest.mark.skipif(
    cpu.unavailable_reason() is not None, reason=f"the CPU kernel cannot be built here: {cpu.unavailable_reason()}"
)
ISAS = cpu.supported_isas() if cpu.unavailable_reason() is None else []


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def inputs(b=2, d=5, l=37, w=4, seed=0, with_bias=True, sliced=False):
    gen = torch.Generator().manual_seed(seed)
    # sliced: x is the first channel half of a token-major (b, l, 2d) tensor (Vim's x of xz), read in place.
    x = torch.randn(b, l, 2 * d, generator=gen)[..., :d].transpose(1, 2) if sliced else torch.randn(b, d, l, generator=gen)
    weight = 0.5 * torch.randn(d, w, generator=gen)
    bias = torch.randn(d, generator=gen) if with_bias else None
    return x, weight, bias


def run(fn, x, weight, bias, dtype, **kwargs):
    leaves = [t.detach().to(dtype).requires_grad_() if t is not None else None for t in (x, weight, bias)]
    out = fn(*leaves, **kwargs)
    gen = torch.Generator().manual_seed(3)
    (out * torch.randn(out.shape, generator=gen).to(dtype)).sum().backward()
    return out.detach(), [t.grad if t is not None else None for t in leaves]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("shape", [dict(l=37, w=4), dict(l=3, w=4), dict(l=1, w=2), dict(l=50, w=1),
                                   dict(l=17, w=4, with_bias=False), dict(l=33, w=3, sliced=True)])
def test_fused_conv_matches_pytorch_values_and_gradients(isa, reverse, activation, shape):
    x, weight, bias = inputs(**shape)
    want, want_grads = run(causal_conv1d_torch, x, weight, bias, torch.float64, activation=activation, reverse=reverse)
    with cpu.use_isa(isa):
        got, got_grads = run(causal_conv1d_fn, x, weight, bias, torch.float32, activation=activation,
                             reverse=reverse, path="cpu")
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert rel_err(got, want) < 2e-6
    for name, g, w in zip(("x", "weight", "bias"), got_grads, want_grads):
        if w is None:
            assert g is None
        else:
            assert rel_err(g, w) < 2e-5, name


def test_output_and_input_gradient_are_laid_out_like_x():
    x, weight, bias = inputs(l=21)
    # Dense layouts, so that autograd keeps the gradient's strides on the leaf.
    for x in (x.transpose(1, 2).contiguous().transpose(1, 2), x):
        leaf = x.detach().requires_grad_()
        out = causal_conv1d_fn(leaf, weight, bias, activation="silu", path="cpu")
        out.backward(torch.ones_like(out))
        assert out.stride(1) < out.stride(2) if x.stride(1) < x.stride(2) else out.is_contiguous()
        assert leaf.grad.stride() == out.stride()


def test_reverse_is_the_flipped_causal_conv():
    x, weight, bias = inputs(l=29)
    flipped = causal_conv1d_fn(x.flip(-1), weight, bias, activation="silu", path="cpu").flip(-1)
    assert torch.equal(causal_conv1d_fn(x, weight, bias, activation="silu", reverse=True, path="cpu"), flipped)


def test_causality_output_sees_only_the_last_width_tokens():
    x, weight, bias = inputs(l=20, w=4)
    base = causal_conv1d_fn(x, weight, bias, activation="silu", path="cpu")
    bumped = x.clone()
    bumped[:, :, 10] += 1.0
    moved = causal_conv1d_fn(bumped, weight, bias, activation="silu", path="cpu")
    changed = (moved != base).any(dim=(0, 1)).nonzero().flatten().tolist()
    assert changed == [10, 11, 12, 13]


def test_bf16_inputs_give_bf16_outputs_and_gradients_close_to_fp32():
    x, weight, bias = inputs(l=40)
    want, want_grads = run(causal_conv1d_torch, x, weight, bias, torch.float64, activation="silu")
    got, got_grads = run(causal_conv1d_fn, x, weight, bias, torch.bfloat16, activation="silu", path="cpu")
    assert got.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in got_grads)
    assert rel_err(got, want) < 2e-2
    for g, w in zip(got_grads, want_grads):
        assert rel_err(g, w) < 5e-2


def test_auto_uses_the_fused_kernel_on_cpu():
    x, weight, bias = inputs()
    out = causal_conv1d_fn(x.requires_grad_(), weight, bias, activation="silu")
    assert out.grad_fn is not None and "CausalConv1dCPU" in type(out.grad_fn).__name__


@pytest.mark.parametrize("bad, message", [
    (dict(activation="relu"), "activation='relu' is not valid"),
    (dict(path="gpu"), "path='gpu' is not valid"),
    (dict(weight=torch.zeros(4, 4)), "weight must be (d=5"),
    (dict(bias=torch.zeros(3)), "bias must be (d=5,)"),
    (dict(x=torch.zeros(5, 7)), "x must be (b, d, l)"),
])
def test_bad_arguments_name_the_problem(bad, message):
    x, weight, bias = inputs()
    args = {**dict(x=x, weight=weight, bias=bias), **bad}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        causal_conv1d_fn(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)
