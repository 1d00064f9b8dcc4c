"""The depthwise causal conv1d (+ SiLU) of a Mamba block, with the interface of causal-conv1d's
`causal_conv1d_fn(x, weight, bias, activation="silu")`, fused in C++ on the CPU.

Paths: on CPU tensors (fp32, bf16) the kernel of csrc/ds_conv_kernel.h (forward and backward, built
with the scan kernel, see discbench.scan.cpu); on CUDA tensors causal-conv1d's kernel when it is
installed; elsewhere (and as the reference the fused paths are tested against) PyTorch's conv1d.
`reverse=True` is the conv of the backward direction of a bidirectional block without flipping:
token t sees tokens t … t + w − 1, i.e. flip(causal_conv1d_fn(flip(x))) along l.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from .scan import cpu as cpu_kernel

Tensor = torch.Tensor
ACTIVATIONS = (None, "silu", "swish")  # causal-conv1d's names; "swish" is SiLU
PATHS = ("auto", "cpu", "torch")


def causal_conv1d_torch(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
                        reverse: bool = False) -> Tensor:
    """The PyTorch path: x (b, d, l), weight (d, w), bias (d,) -> (b, d, l); autograd gives gradients."""
    width = weight.shape[-1]
    if reverse:
        x = x.flip(-1)
    out = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    if activation is not None:
        out = F.silu(out)
    return out.flip(-1) if reverse else out


class CausalConv1dCPU(torch.autograd.Function):
    """The fused CPU kernel; backward recomputes the pre-activation from the saved x."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu, reverse, isa):
        ctx.save_for_backward(x, weight, bias)
        ctx.config = (silu, reverse, isa)
        return cpu_kernel.extension().conv_forward(x, weight, bias, silu, reverse, isa)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        silu, reverse, isa = ctx.config
        dx, dweight, dbias = cpu_kernel.extension().conv_backward(x, weight, bias, silu, reverse, dout, isa)
        return dx, dweight, dbias if bias is not None else None, None, None, None


@functools.lru_cache(maxsize=1)
def _cuda_causal_conv1d() -> Callable | None:
    """causal-conv1d's fused CUDA function, or None when the package or its extension is absent."""
    try:
        from causal_conv1d import causal_conv1d_fn as fused
    except (ImportError, OSError):  # not installed, or its compiled extension cannot load
        return None
    return fused


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None, path: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not valid; choose one of: None, silu, swish")
    if path not in PATHS:
        raise ValueError(f"path={path!r} is not valid; choose one of: {', '.join(PATHS)}")
    if x.dim() != 3:
        raise ValueError(f"x must be (b, d, l), got shape {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[0] != x.shape[1] or weight.shape[1] < 1:
        raise ValueError(f"weight must be (d={x.shape[1]}, width ≥ 1), got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"bias must be (d={x.shape[1]},), got shape {tuple(bias.shape)}")


def causal_conv1d_fn(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
                     reverse: bool = False, path: str = "auto") -> Tensor:
    """act(bias + depthwise causal conv1d(x)): output token t sees input tokens t − w + 1 … t
    (with `reverse`: t … t + w − 1). x (b, d, l); weight (d, w) (nn.Conv1d's (d, 1, w) squeezed);
    bias (d,) or None; activation None or "silu"/"swish". Returns (b, d, l) in x's dtype.

    path "auto": the fused CPU kernel for CPU fp32/bf16 tensors when it builds, causal-conv1d's
    kernel on CUDA when installed, else PyTorch; "cpu" forces the fused kernel; "torch" PyTorch.
    """
    _check(x, weight, bias, activation, path)
    silu = activation is not None
    if path == "torch":
        return causal_conv1d_torch(x, weight, bias, activation, reverse)
    on_cpu = x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
    if path == "cpu" or (on_cpu and cpu_kernel.unavailable_reason() is None):
        return CausalConv1dCPU.apply(x, weight, bias, silu, reverse, cpu_kernel.current_isa())
    fused = _cuda_causal_conv1d() if x.is_cuda else None
    if fused is not None:
        if reverse:
            return fused(x.flip(-1), weight, bias, activation=activation).flip(-1)
        return fused(x, weight, bias, activation=activation)
    return causal_conv1d_torch(x, weight, bias, activation, reverse)
