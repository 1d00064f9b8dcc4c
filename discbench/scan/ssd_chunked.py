"""Backend `chunked` of ssd_scan: SSD's chunked matrix-product form, any method of the registry.

Split the tokens into chunks of Q. Within a chunk the outputs are one masked matrix product
(the "diagonal blocks"); across chunks only the (p × n) state at each chunk boundary is carried.

The stencil folds in before chunking: with coefficients c_{k,j} = Δ_k w_j(z_k) the drive of
token k is Σ_j (c_{k,j} x_{k+j}) ⊗ B_{k+j}, so each tap j contributes the sequence-level shifted
pair (c_{·,j} x_{·+j}, B_{·+j}) (zero beyond the ends, whatever the chunking). A token then
carries |S| (x, B) pairs instead of one, and the chunk products contract over
(source token, tap) — Q·|S| terms — instead of Q.

The transition enters as products Π_{t=s+1..k} Ā_t, computed as sign · exp(Σ log|Ā_t|):
- log|Ā| is the registry's Ā(z), not z: bilinear's and rk4's Ā are not e^z.
- Ā < 0 (bilinear for z < −2) gives each product the sign (−1)^(number of negative factors), a
  parity from an integer cumulative count (exact), so no restriction on z is needed.
- |Ā| > 1 (rk4 beyond its stability bound) is a positive log: the products grow as the loop's.
- |Ā| below the dtype's smallest normal number (e^z underflowing to 0, bilinear at z = −2)
  enters as log(tiny) with zero gradient: its products are below tiny instead of exactly 0,
  and the gradient is the loop's, 0 for an underflowed e^z.
Segment sums within a chunk are cumulative sums of masked copies, never differences of
cumulative sums, so a large |log Ā| does not cancel catastrophically.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..methods import Method
from .reference import shift_tokens
from .ssd import tap_coefficients

Tensor = torch.Tensor


def segment_sums(values: Tensor) -> Tensor:
    """(..., Q) -> (..., Q, Q): out[..., k, s] = Σ_{t=s+1..k} values[t] for s ≤ k, -inf above.

    out[k, k] = 0 (the empty product is 1). Summed along k as a cumulative sum of a masked copy.
    """
    length = values.shape[-1]
    upper = torch.ones(length, length, dtype=torch.bool, device=values.device)
    rows = values.unsqueeze(-1).expand(*values.shape, length)  # [t, s] = values[t]
    summed = rows.masked_fill(~upper.tril(-1), 0).cumsum(dim=-2)  # keep t > s
    return summed.masked_fill(~upper.tril(0), float("-inf"))


def _chunks(t: Tensor, chunk_size: int, pad_value: float = 0.0) -> Tensor:
    """(b, l, ...) -> (b, c, Q, ...), the last chunk padded with `pad_value`."""
    length = t.shape[1]
    pad = -length % chunk_size
    if pad:
        widths = [0, 0] * (t.dim() - 2) + [0, pad]
        t = F.pad(t, widths, value=pad_value)
    return t.reshape(t.shape[0], -1, chunk_size, *t.shape[2:])


def ssd_chunked(x, dt, A, B, C, chunk_size, method: Method, lam):
    """The SSD scan in chunks; arguments and result as ssd.ssd_reference.

    x: (b, l, h, p); dt: (b, l, h); A: (h,); B, C: (b, l, g, n); lam: (b, l, h) or None.
    Returns y (b, l, h, p) before D and the gate, and the final state (b, h, p, n).
    """
    batch, length, heads, headdim = x.shape
    groups, state = B.shape[2], B.shape[3]
    per_group = heads // groups
    Q = min(chunk_size, length)
    transition, coefficients = tap_coefficients(method, dt, A, lam)  # (b, l, h), (b, l, h, S)

    tiny = torch.finfo(transition.dtype).tiny
    magnitude = transition.abs()
    normal = magnitude >= tiny
    log_abs = torch.where(normal, torch.log(torch.where(normal, magnitude, 1.0)), math.log(tiny))
    negative = (transition < 0).to(transition.dtype)

    # Per tap: the scaled, shifted inputs (b, l, h, S, p) and the shifted B (b, l, g, S, n).
    x_taps = torch.stack([coefficients[..., i, None] * shift_tokens(x, j, dim=1)
                          for i, j in enumerate(method.offsets)], dim=3)
    B_taps = torch.stack([shift_tokens(B, j, dim=1) for j in method.offsets], dim=3)
    taps = x_taps.shape[3]

    # Chunked, heads split as (group, head within group). The padding tokens have Ā = 1 and
    # no drive, so the state after the last chunk is the state after token l − 1.
    x_c = _chunks(x_taps, Q).reshape(batch, -1, Q, groups, per_group, taps, headdim)
    B_c = _chunks(B_taps, Q)  # (b, c, Q, g, S, n)
    C_c = _chunks(C, Q)  # (b, c, Q, g, n)
    log_c = _chunks(log_abs, Q).reshape(batch, -1, Q, groups, per_group).permute(0, 1, 3, 4, 2)  # (b, c, g, r, Q)
    neg_c = _chunks(negative, Q).reshape(batch, -1, Q, groups, per_group).permute(0, 1, 3, 4, 2)
    n_chunks = x_c.shape[1]

    # Π_{t=s+1..k} Ā_t within each chunk, (b, c, g, r, Q_k, Q_s): zero for s > k.
    negatives_to = neg_c.cumsum(dim=-1)  # negative factors among tokens 0..k of the chunk
    parity = torch.remainder(negatives_to.unsqueeze(-1) - negatives_to.unsqueeze(-2), 2)
    decay = torch.exp(segment_sums(log_c)) * (1 - 2 * parity)
    decay_from_start = torch.exp(log_c.cumsum(dim=-1)) * (1 - 2 * torch.remainder(negatives_to, 2))  # Π_{t≤k}
    decay_to_end = decay[..., -1, :]  # Π_{t=s+1..Q-1}

    # Inputs with (source token, tap) as one axis of Q·S: (b, c, g, r, Q·S, p).
    x_src = x_c.permute(0, 1, 3, 4, 2, 5, 6).reshape(batch, n_chunks, groups, per_group, Q * taps, headdim)

    # 1. Within each chunk: y_k = Σ_{s≤k, j} (C_k · B_{s+j}) Π_{t=s+1..k} Ā_t c_{s,j} x_{s+j}.
    scores = torch.einsum("bckgn,bcsgjn->bcgksj", C_c, B_c)  # (b, c, g, Q, Q, S)
    mixer = (scores.unsqueeze(3) * decay.unsqueeze(-1)).reshape(batch, n_chunks, groups, per_group, Q, Q * taps)
    y_diag = mixer @ x_src  # (b, c, g, r, Q, p)

    # 2. Each chunk's own contribution to the state at its end: (b, c, g, r, p, n).
    B_src = (decay_to_end[..., :, None, None] * B_c.permute(0, 1, 3, 2, 4, 5).unsqueeze(3))
    chunk_states = x_src.transpose(-1, -2) @ B_src.reshape(batch, n_chunks, groups, per_group, Q * taps, state)

    # 3. Carry the state across chunk boundaries (n_chunks = ⌈l/Q⌉ steps).
    chunk_transition = decay_from_start[..., -1]  # (b, c, g, r)
    carried = x.new_zeros(batch, groups, per_group, headdim, state)
    states_in = []
    for c in range(n_chunks):
        states_in.append(carried)
        carried = chunk_transition[:, c, ..., None, None] * carried + chunk_states[:, c]
    states_in = torch.stack(states_in, dim=1)  # state before each chunk, (b, c, g, r, p, n)

    # 4. What the carried state adds within each chunk: Π_{t≤k} Ā_t · (state · C_k).
    C_k = C_c.permute(0, 1, 3, 4, 2).unsqueeze(3)  # (b, c, g, 1, n, Q)
    y_off = (states_in @ C_k) * decay_from_start.unsqueeze(-2)  # (b, c, g, r, p, Q)

    y = y_diag + y_off.transpose(-1, -2)  # (b, c, g, r, Q, p)
    y = y.permute(0, 1, 4, 2, 3, 5).reshape(batch, n_chunks * Q, heads, headdim)[:, :length]
    return y, carried.reshape(batch, heads, headdim, state)
