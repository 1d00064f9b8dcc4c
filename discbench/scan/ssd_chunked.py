"""Backend `chunked` of ssd_scan: SSD's chunked matrix-product form, any method of the registry.

Split the tokens into chunks of Q. Within a chunk the outputs are one masked matrix product
(the "diagonal blocks"); across chunks only the (p × n) state at each chunk boundary is carried.

The stencil folds into the mask. With c_{s,j} = Δ_s w_j(z_s), token k of a chunk receives

    Σ_{s ≤ k} Π_{t=s+1..k} Ā_t · Σ_j c_{s,j} (C_k · B_{s+j}) x_{s+j}  =  Σ_t M[k, t] (C_k · B_t) x_t,
    M[k, t] = Σ_j Π_{r=t-j+1..k} Ā_r · c_{t-j,j}

(substituting t = s + j: the source token t carries both B_t and x_t, whatever the tap). So a
stencil widens each chunk's window of source tokens by its reach (max offset − min offset; 3
for rk4 and the quadratic stencils) and turns the causal mask into a banded sum of |S| shifted
copies; the matrix products stay those of Mamba-2's SSD, over Q + reach source tokens. The
source tokens beyond either end of the sequence are zeros. The state a chunk adds at its end is
the same sum with k = Q − 1: row Q − 1 of M.

The transition enters as products Π_{t=s+1..k} Ā_t, computed as sign · exp(Σ log|Ā_t|):
- log|Ā| is the registry's Ā(z), not z: bilinear's and rk4's Ā are not e^z.
- Ā < 0 (bilinear for z < −2) gives each product the sign (−1)^(number of negative factors), a
  parity from an integer cumulative count (exact), so no restriction on z is needed.
- |Ā| > 1 (rk4 beyond its stability bound) is a positive log: the products grow as the loop's.
- |Ā| below the dtype's smallest normal number (e^z underflowing to 0, bilinear at z = −2)
  enters as log(tiny) with zero gradient: its products are below tiny instead of exactly 0, and
  its dĀ/dz is dropped (the loop's is 0 for an underflowed e^z; bilinear's at exactly z = −2 is
  not — a measure-zero set of steps).
Segment sums within a chunk are cumulative sums of masked copies, never differences of
cumulative sums, so a large |log Ā| does not cancel catastrophically.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..methods import Method
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


def _windows(t: Tensor, n_chunks: int, chunk_size: int, before: int, after: int) -> Tensor:
    """(b, l, ...) -> (b, c, ..., W): chunk c's source tokens c·Q − before … c·Q + Q − 1 + after,
    W = Q + before + after, zeros outside the sequence."""
    length = t.shape[1]
    right = n_chunks * chunk_size - length + after
    widths = [0, 0] * (t.dim() - 2) + [before, right]
    return F.pad(t, widths).unfold(1, chunk_size + before + after, chunk_size)


def ssd_chunked(x, dt, A, B, C, chunk_size, method: Method, lam):
    """The SSD scan in chunks; arguments and result as ssd.ssd_reference.

    x: (b, l, h, p); dt: (b, l, h); A: (h,); B, C: (b, l, g, n); lam: (b, l, h) or None.
    Returns y (b, l, h, p) before D and the gate, and the final state (b, h, p, n).
    """
    batch, length, heads, headdim = x.shape
    groups, state = B.shape[2], B.shape[3]
    per_group = heads // groups
    Q = min(chunk_size, length)
    n_chunks = -(-length // Q)
    transition, coefficients = tap_coefficients(method, dt, A, lam)  # (b, l, h), (b, l, h, S)

    tiny = torch.finfo(transition.dtype).tiny
    magnitude = transition.abs()
    normal = magnitude >= tiny
    log_abs = torch.where(normal, torch.log(torch.where(normal, magnitude, 1.0)), math.log(tiny))
    negative = (transition < 0).to(transition.dtype)

    def per_head(t: Tensor) -> Tensor:  # (b, l, h) -> (b, c, g, r, Q); padding tokens: Ā = 1, no drive
        return _chunks(t, Q).reshape(batch, n_chunks, Q, groups, per_group).permute(0, 1, 3, 4, 2)

    log_c, neg_c = per_head(log_abs), per_head(negative)
    taps = range(len(method.taps))
    coeff_c = torch.stack([per_head(coefficients[..., i]) for i in taps], dim=-2)  # (b, c, g, r, S, Q)

    # Π_{t=s+1..k} Ā_t within each chunk, (b, c, g, r, Q_k, Q_s): zero for s > k.
    negatives_to = neg_c.cumsum(dim=-1)  # negative factors among tokens 0..k of the chunk
    parity = torch.remainder(negatives_to.unsqueeze(-1) - negatives_to.unsqueeze(-2), 2)
    decay = torch.exp(segment_sums(log_c)) * (1 - 2 * parity)
    decay_from_start = torch.exp(log_c.cumsum(dim=-1)) * (1 - 2 * torch.remainder(negatives_to, 2))  # Π_{t≤k}

    # M[k, t'] over the window t' = t − (c·Q + lo) of source tokens: tap j's column offset is j − lo.
    lo, hi = min(0, *method.offsets), max(0, *method.offsets)
    mask = sum(F.pad(decay * coeff_c[..., i, None, :], (j - lo, hi - j)) for i, j in enumerate(method.offsets))
    x_win = _windows(x, n_chunks, Q, -lo, hi)  # (b, c, h, p, W)
    x_win = x_win.reshape(batch, n_chunks, groups, per_group, headdim, -1)
    B_win = _windows(B, n_chunks, Q, -lo, hi)  # (b, c, g, n, W)
    C_c = _chunks(C, Q).transpose(2, 3)  # (b, c, g, Q, n)

    # 1. Within each chunk: y_k = Σ_t M[k, t] (C_k · B_t) x_t.
    scores = (C_c @ B_win).unsqueeze(3)  # (b, c, g, 1, Q, W)
    y_diag = (scores * mask) @ x_win.transpose(-1, -2)  # (b, c, g, r, Q, p)

    # 2. Each chunk's own contribution to the state at its end: Σ_t M[Q−1, t] x_t ⊗ B_t.
    chunk_states = (x_win * mask[..., -1, None, :]) @ B_win.transpose(-1, -2).unsqueeze(3)  # (b, c, g, r, p, n)

    # 3. Carry the state across chunk boundaries (⌈l/Q⌉ steps).
    chunk_transition = decay_from_start[..., -1]  # (b, c, g, r)
    carried = x.new_zeros(batch, groups, per_group, headdim, state)
    states_in = []
    for c in range(n_chunks):
        states_in.append(carried)
        carried = chunk_transition[:, c, ..., None, None] * carried + chunk_states[:, c]
    states_in = torch.stack(states_in, dim=1)  # state before each chunk, (b, c, g, r, p, n)

    # 4. What the carried state adds within each chunk: Π_{t≤k} Ā_t · (state · C_k).
    y_off = (states_in @ C_c.transpose(-1, -2).unsqueeze(3)) * decay_from_start.unsqueeze(-2)  # (b, c, g, r, p, Q)

    y = y_diag + y_off.transpose(-1, -2)  # (b, c, g, r, Q, p)
    y = y.permute(0, 1, 4, 2, 3, 5).reshape(batch, n_chunks * Q, heads, headdim)[:, :length]
    return y, carried.reshape(batch, heads, headdim, state)
