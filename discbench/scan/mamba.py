"""Backend "mamba": mamba_ssm's fused CUDA selective scan, for `zoh/paper` only.

mamba_ssm's kernel (`selective_scan_fn`) computes Mamba's discretization, which is this
registry's `zoh/paper` (Ā = e^z, B̄ = Δ·B); it knows no other method. It is the speed anchor
the Triton kernels are measured against (`discbench bench scan` on CUDA) and a second,
independent implementation for the parity tests. It needs the compiled extension
`selective_scan_cuda` from discbench's `cuda` extra (see the README).
"""

from __future__ import annotations

import importlib

import torch

from ..methods import Method

Tensor = torch.Tensor

# The one method mamba_ssm's kernel implements.
ANCHOR_METHOD = "zoh/paper"


def unavailable_reason() -> str | None:
    """None when mamba_ssm's CUDA kernel can run here, else why not."""
    if not torch.cuda.is_available():
        return "mamba_ssm's selective scan is a CUDA kernel and no CUDA GPU is visible"
    try:
        importlib.import_module("selective_scan_cuda")
    except ImportError as exc:
        return (f"mamba_ssm's CUDA extension selective_scan_cuda is not importable ({exc}); "
                "install discbench's cuda extra on a CUDA machine (README: CUDA install)")
    return None


def missing_method_reason(method: Method) -> str | None:
    """None for zoh/paper; any other method is not mamba_ssm's to compute (nothing to add here)."""
    if method.key == ANCHOR_METHOD:
        return None
    return (f"backend 'mamba' has no code for method {method.key}: it is mamba_ssm's own kernel, which "
            f"computes only {ANCHOR_METHOD}, so nothing can be added to it; use backend 'triton', 'cpu' or "
            "'torch' for this method")


def selective_scan_mamba(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                         method: Method, lam=None):
    """The backend entry point (see discbench.scan): out (b, d, l) in u's dtype, and with
    return_last_state the final state (b, d, n) in u's dtype. B, C: (b, g, n, l). `lam` is
    always None here (zoh/paper takes no λ).

    mamba_ssm's kernel takes A, D and delta_bias in fp32 and delta, B, C, z in u's dtype; the
    casts here are differentiable, so gradients return in each input's own dtype. Its backward
    ignores the final state's gradient, so the returned final state is detached.
    """
    why = missing_method_reason(method)
    if why is not None:
        raise ValueError(why)
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    dtype = u.dtype
    result = selective_scan_fn(
        u, delta.to(dtype), A.float(), B.to(dtype), C.to(dtype),
        None if D is None else D.float(), None if z is None else z.to(dtype),
        None if delta_bias is None else delta_bias.float(), bool(delta_softplus),
        return_last_state,
    )
    if return_last_state:
        out, last_state = result
        return out.to(dtype), last_state.detach().to(dtype)
    return result.to(dtype)
