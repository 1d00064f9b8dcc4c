"""The plain PyTorch selective scan: a loop over tokens, exact gradients through autograd.

This is the executable form of METHODS.md that every other backend is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..methods import Method
from ..phi import shared_phi

Tensor = torch.Tensor


def shift_tokens(x: Tensor, offset: int, dim: int = 2) -> Tensor:
    """out[..., k, ...] = x[..., k + offset, ...] along `dim`, zero outside [0, L)."""
    if offset == 0:
        return x
    length = x.shape[dim]
    if abs(offset) >= length:
        return torch.zeros_like(x)
    if offset > 0:
        body = x.narrow(dim, offset, length - offset)
        pad = torch.zeros_like(x.narrow(dim, 0, offset))
        return torch.cat([body, pad], dim=dim)
    body = x.narrow(dim, 0, length + offset)
    pad = torch.zeros_like(x.narrow(dim, 0, -offset))
    return torch.cat([pad, body], dim=dim)


def discretize(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, method: Method, lam: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Transition Ā and drive x_k = Δ_k Σ_j w_j v_{k+j}, both (b, d, l, n), in the compute dtype.

    u, delta: (b, d, l) with delta already biased and activated; A: (d, n); B: (b, d, n, l)
    (groups already expanded to channels); lam: (b, d, l), the per-token λ of a method that
    takes one, else None.
    """
    a = A[None, :, None, :]  # (1, d, 1, n)
    dt = delta.unsqueeze(-1)  # (b, d, l, 1)
    lam_k = None if lam is None else lam.unsqueeze(-1)  # (b, d, l, 1)
    z = dt * a  # (b, d, l, n)
    transition = method.transition(z)
    v = B.permute(0, 1, 3, 2) * u.unsqueeze(-1)  # (b, d, l, n)
    drive = torch.zeros_like(z)
    with shared_phi():
        for tap in method.taps:
            drive = drive + tap.weight(z, a, dt, lam_k) * shift_tokens(v, tap.offset)
    return transition, drive * dt


def prepare(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """Δ after the optional bias (d,) and softplus, as in mamba_ssm."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def expand_groups(B: Tensor, channels: int) -> Tensor:
    """(b, g, n, l) -> (b, d, n, l), each group shared by d/g consecutive channels."""
    groups = B.shape[1]
    return B.repeat_interleave(channels // groups, dim=1)


def finish(
    y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, out_dtype: torch.dtype
) -> Tensor:
    """y + D·u, then the silu gate; y, u, z: (b, d, l)."""
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y.to(out_dtype)


def recurrence_loop(transition: Tensor, drive: Tensor) -> Tensor:
    """All states h_k = Ā_k h_{k-1} + x_k along dim 2; (b, d, l, n) -> (b, d, l, n)."""
    h = torch.zeros_like(drive[:, :, 0])
    states = []
    for k in range(drive.shape[2]):
        h = transition[:, :, k] * h + drive[:, :, k]
        states.append(h)
    return torch.stack(states, dim=2)


def scan_with(recurrence):
    """Build a backend from a recurrence solver: the rest of the scan is shared."""

    def backend(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, method, lam=None):
        out_dtype = u.dtype
        compute = torch.float64 if u.dtype == torch.float64 else torch.float32
        u_c, delta_c, A_c = u.to(compute), delta.to(compute), A.to(compute)
        bias = None if delta_bias is None else delta_bias.to(compute)
        delta_c = prepare(delta_c, bias, delta_softplus)
        channels = u.shape[1]
        B_c = expand_groups(B.to(compute), channels)
        C_c = expand_groups(C.to(compute), channels)
        lam_c = None if lam is None else lam.to(compute)
        transition, drive = discretize(u_c, delta_c, A_c, B_c, method, lam_c)
        if u.shape[2] == 0:
            states = drive
        else:
            states = recurrence(transition, drive)
        y = torch.einsum("bdln,bdnl->bdl", states, C_c)
        out = finish(
            y, u_c, None if D is None else D.to(compute), None if z is None else z.to(compute), out_dtype
        )
        if return_last_state:
            if u.shape[2] == 0:
                last = torch.zeros(u.shape[0], channels, A.shape[1], dtype=out_dtype, device=u.device)
            else:
                last = states[:, :, -1].to(out_dtype)
            return out, last
        return out

    return backend


selective_scan_reference = scan_with(recurrence_loop)
