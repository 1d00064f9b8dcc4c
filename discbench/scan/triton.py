"""Backend "triton": the selective scan of every method × variant as Triton kernels.

One program per (batch, channel block); a channel block never straddles a B/C group, so the
block shares one B and C. The program walks the sequence in chunks of CHUNK_TOKENS tokens,
holding a (chunk, channels, states) tile in registers: Ā and the drive x_k = Δ_k Σ_j w_j v_{k+j}
are computed per tile (the stencil's taps read u and B at shifted tokens), the recurrence within
the chunk is `tl.associative_scan` over the pairs (Ā, x), and the state at the chunk's end is
carried into the next chunk. State and arithmetic are fp32 whatever the input dtype.

The forward stores each chunk's start state (b, d, n_chunks, n) fp32. The backward walks the
chunks in reverse, recomputes the chunk's states from its stored start state, and runs the
adjoint recurrence g_k = Ā_{k+1} g_{k+1} + dy_k C_k as a reverse scan, carrying g across
chunks. Every output element is written by exactly one program once, so the gradients are
deterministic: sums across programs (over batch for dA, dD, ddelta_bias; over the channel
blocks of a group for dB, dC) and across stencil taps (a tap's gradient lands on another token,
possibly in another chunk) are per-program partials summed here in PyTorch.

The method math lives in triton_methods.py. On CPU tensors the kernels run only through
Triton's interpreter (TRITON_INTERPRET=1), which is how the tests check them without a GPU.
"""

from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from ..methods import Method
from . import triton_methods as tm

Tensor = torch.Tensor

# Tokens per chunk (the scan tile's length) and the widest channel block. Both are powers of
# two; larger values trade registers for fewer sequential chunk steps, so they are the knobs to
# set from GPU timings (`discbench bench scan` on CUDA).
CHUNK_TOKENS = 16
MAX_BLOCK_CHANNELS = 8
# Warps per program. The backward holds more live tiles than the forward (the adjoint, the tap
# sums and their derivatives), so it gets more warps to keep them in registers instead of
# spilling; the spills ptxas reports for a kernel compiled for the GPU (a CompiledKernel's
# n_spills) are the check when a method with more taps is added.
NUM_WARPS_FORWARD = 4
NUM_WARPS_BACKWARD = 8


def unavailable_reason() -> str | None:
    """None when the kernels can run here (a CUDA GPU Triton supports, or the interpreter)."""
    if triton.knobs.runtime.interpret:
        return None
    if not torch.cuda.is_available():
        return ("no CUDA GPU is visible; set TRITON_INTERPRET=1 to run the Triton kernels on CPU "
                "tensors through Triton's interpreter (slow, for testing)")
    major, minor = torch.cuda.get_device_capability()
    if major < 7:
        return f"Triton needs a GPU of compute capability 7.0 or newer, this one is {major}.{minor}"
    return None


def missing_method_reason(method: Method) -> str | None:
    """None when triton_methods.py has the method's math, else what to add where."""
    return tm.missing_method_reason(method)


def _method_constexprs(method: Method) -> dict:
    """The kernels' method arguments: its transition and taps functions (triton_methods.py)
    and its stencil offsets (the registry's)."""
    transition, taps = tm.kernel_math(method)
    return dict(TRANSITION=transition, TAPS=taps, OFFSETS=method.offsets)


def match_interpreter_setting() -> None:
    """Make the kernels match the current TRITON_INTERPRET setting.

    @triton.jit chooses between the compiler and the interpreter when it decorates a function,
    that is when this module is first imported. If TRITON_INTERPRET was switched since then (a
    test sets it after something else imported triton), re-decorate every Triton function of
    this backend so that the kernels and the device functions they call are of one kind. This
    works because the kernels call only Triton builtins and this backend's own functions, never
    triton.language's @triton.jit helpers (tl.sum, tl.zeros, tl.sigmoid, ...), which stay as
    they were when triton was imported. (`_sum` hands tl.standard._sum_combine to tl.reduce:
    the interpreter only recognises it, the compiler inlines it.) So a process that imported
    triton for the compiler can switch to the interpreter and back, which is what the tests do;
    compiling needs triton imported without TRITON_INTERPRET=1.
    """
    interpret = bool(triton.knobs.runtime.interpret)
    if isinstance(_scan_fwd_kernel, InterpretedFunction) == interpret:
        return
    for module in (tm, sys.modules[__name__]):
        jitted = [(name, obj) for name, obj in vars(module).items()
                  if isinstance(obj, (JITFunction, InterpretedFunction))]
        for name, obj in jitted:
            setattr(module, name, triton.jit(obj.fn))


# ----------------------------------------------------------------------------- device helpers


@triton.jit
def _sum(x, axis: tl.constexpr):
    """tl.sum spelt with builtins: tl.sum itself is a @triton.jit function of triton.language,
    fixed to compiler or interpreter when triton is imported (see match_interpreter_setting).
    The interpreter recognises this combine function and sums with numpy."""
    return tl.reduce(x, axis, tl.standard._sum_combine)


@triton.jit
def _combine(a_left, x_left, a_right, x_right):
    """(Ā, x) pairs compose as h ↦ a_right (a_left h + x_left) + x_right."""
    return a_left * a_right, x_left * a_right + x_right


@triton.jit
def _softplus(x):
    """log(1 + e^x) without overflow; Goldberg's log1p keeps e^-|x| ≪ 1 accurate."""
    e = tl.exp(-tl.abs(x))
    one_plus = 1.0 + e
    log1p = tl.where(one_plus == 1.0, e, tl.log(one_plus) * e / (one_plus - 1.0))
    return tl.maximum(x, 0.0) + log1p


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _load_channels(ptr, seq_base, pos, length, ch_mask):
    """ptr[(b, d, l)] at tokens pos (L,) for the block's channels: (L, D) fp32, 0 off [0, length)."""
    inside = (pos >= 0) & (pos < length)
    mask = inside[:, None] & ch_mask[None, :]
    return tl.load(ptr + seq_base[None, :] + pos[:, None], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_states(ptr, group_base, pos, length, n_idx, n_mask):
    """B or C (b, g, n, l) at tokens pos for the block's group: (L, N) fp32, 0 off [0, length)."""
    inside = (pos >= 0) & (pos < length)
    mask = inside[:, None] & n_mask[None, :]
    return tl.load(ptr + group_base + n_idx[None, :] * length + pos[:, None], mask=mask,
                   other=0.0).to(tl.float32)


@triton.jit
def _delta_at(delta_ptr, bias, seq_base, pos, length, ch_mask,
              HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(Δ, Δ before softplus) at tokens pos, (L, D) fp32; Δ is 0 off [0, length)."""
    raw = _load_channels(delta_ptr, seq_base, pos, length, ch_mask)
    if HAS_BIAS:
        raw = raw + bias[None, :]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    inside = (pos >= 0) & (pos < length)
    dt = tl.where(inside[:, None] & ch_mask[None, :], dt, 0.0)
    return dt, raw


@triton.jit
def _lam_at(lam_ptr, lam_base, pos, length, ch_mask, like, HAS_LAM: tl.constexpr):
    """λ at tokens pos, (L, D) fp32 (0 off [0, length), and everywhere without λ; `like` is any
    (L, D) fp32 tile). lam_base: (D,) offsets of the block's channels (λ's tokens are
    contiguous, its other strides free)."""
    if HAS_LAM:
        lam = _load_channels(lam_ptr, lam_base, pos, length, ch_mask)
    else:
        lam = like * 0.0
    return lam


@triton.jit
def _discretize(u_ptr, B_ptr, a, dt, lam, seq_base, group_base, pos, length, ch_mask, n_idx, n_mask,
                TRANSITION: tl.constexpr, TAPS: tl.constexpr, OFFSETS: tl.constexpr):
    """At tokens pos: Ā, dĀ/dz, and the tap sums Σ_t w_t v_{k+o_t}, Σ_t ∂w_t/∂a v_{k+o_t},
    Σ_t ∂w_t/∂Δ v_{k+o_t}, Σ_t ∂w_t/∂λ v_{k+o_t} with v = u·B; each (L, D, N) fp32.
    a: (D, N); dt, lam: (L, D)."""
    dt3 = dt[:, :, None]
    a3 = a[None, :, :]
    lam3 = lam[:, :, None]
    z = dt3 * a3
    a_bar, da_bar = TRANSITION(z)
    taps = z * 0.0
    taps_da = z * 0.0
    taps_ddelta = z * 0.0
    taps_dlam = z * 0.0
    for t in tl.static_range(len(OFFSETS)):
        w, w_da, w_ddelta, w_dlam = TAPS(z, a3, dt3, lam3, t)
        u_at = _load_channels(u_ptr, seq_base, pos + OFFSETS[t], length, ch_mask)
        b_at = _load_states(B_ptr, group_base, pos + OFFSETS[t], length, n_idx, n_mask)
        v = u_at[:, :, None] * b_at[:, None, :]
        taps += w * v
        taps_da += w_da * v
        taps_ddelta += w_ddelta * v
        taps_dlam += w_dlam * v
    return a_bar, da_bar, taps, taps_da, taps_ddelta, taps_dlam


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, gate_ptr, bias_ptr, lam_ptr,
    out_ptr, chunk_state_ptr, last_state_ptr,
    length, channels, groups, state, channels_per_group, n_chunks, lam_stride_b, lam_stride_d,
    TRANSITION: tl.constexpr, TAPS: tl.constexpr, OFFSETS: tl.constexpr,
    HAS_D: tl.constexpr, HAS_GATE: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_LAM: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """out (b, d, l); chunk_state (b, d, n_chunks, n) = state before each chunk; last_state (b, d, n)."""
    pid_b = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_c = tl.program_id(2)
    ch_local = pid_c * BLOCK_D + tl.arange(0, BLOCK_D)
    ch_mask = ch_local < channels_per_group
    ch = pid_g * channels_per_group + ch_local
    n_idx = tl.arange(0, BLOCK_N)
    n_mask = n_idx < state
    dn_mask = ch_mask[:, None] & n_mask[None, :]
    rows = tl.arange(0, BLOCK_L)

    a = tl.load(A_ptr + ch[:, None] * state + n_idx[None, :], mask=dn_mask, other=0.0).to(tl.float32)
    bias = tl.full([BLOCK_D], 0.0, tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch, mask=ch_mask, other=0.0).to(tl.float32)
    skip = tl.full([BLOCK_D], 0.0, tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + ch, mask=ch_mask, other=0.0).to(tl.float32)
    bd = (pid_b * channels + ch).to(tl.int64)
    seq_base = bd * length
    lam_base = pid_b.to(tl.int64) * lam_stride_b + ch.to(tl.int64) * lam_stride_d
    group_base = (pid_b * groups + pid_g).to(tl.int64) * state * length
    chunk_base = (bd * n_chunks)[:, None] * state + n_idx[None, :]

    h = tl.full([BLOCK_D, BLOCK_N], 0.0, tl.float32)
    for c in range(n_chunks):
        tl.store(chunk_state_ptr + chunk_base + c * state, h, mask=dn_mask)
        pos = c * BLOCK_L + rows
        valid = (pos < length)[:, None, None]
        dt, _ = _delta_at(delta_ptr, bias, seq_base, pos, length, ch_mask, HAS_BIAS, SOFTPLUS)
        lam = _lam_at(lam_ptr, lam_base, pos, length, ch_mask, dt, HAS_LAM)
        a_bar, _, taps, _, _, _ = _discretize(
            u_ptr, B_ptr, a, dt, lam, seq_base, group_base, pos, length, ch_mask, n_idx, n_mask,
            TRANSITION, TAPS, OFFSETS)
        # Tokens past the end are the identity step, so the tile's last row is the final state.
        a_bar = tl.where(valid, a_bar, 1.0)
        x = tl.where(valid, dt[:, :, None] * taps, 0.0)
        a_prod, x_acc = tl.associative_scan((a_bar, x), 0, _combine)
        states = a_prod * h[None, :, :] + x_acc
        c_at = _load_states(C_ptr, group_base, pos, length, n_idx, n_mask)
        y = _sum(states * c_at[:, None, :], axis=2)
        if HAS_D:
            y += _load_channels(u_ptr, seq_base, pos, length, ch_mask) * skip[None, :]
        if HAS_GATE:
            gate = _load_channels(gate_ptr, seq_base, pos, length, ch_mask)
            y = y * gate * _sigmoid(gate)
        out_mask = (pos < length)[:, None] & ch_mask[None, :]
        tl.store(out_ptr + seq_base[None, :] + pos[:, None], y.to(out_ptr.dtype.element_ty),
                 mask=out_mask)
        h = _sum(tl.where(rows[:, None, None] == BLOCK_L - 1, states, 0.0), axis=0)
    tl.store(last_state_ptr + bd[:, None] * state + n_idx[None, :], h, mask=dn_mask)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, gate_ptr, bias_ptr, lam_ptr,
    dout_ptr, dlast_ptr, chunk_state_ptr,
    du_ptr, ddelta_ptr, dgate_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, dlam_ptr,
    length, channels, groups, state, channels_per_group, n_chunks, n_blocks, plane, tap_stride,
    lam_stride_b, lam_stride_d,
    TRANSITION: tl.constexpr, TAPS: tl.constexpr, OFFSETS: tl.constexpr,
    HAS_D: tl.constexpr, HAS_GATE: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr, HAS_LAM: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Gradients, fp32, as per-program partials (see the module docstring):

    du (taps + 1, b, d, l): slice t holds tap t's share, the last slice D·dy;
    ddelta, dgate, dlam (b, d, l); dA (b, d, n); dD, dbias (b, d);
    dB (taps, b, g, blocks, n, l); dC (b, g, blocks, n, l).
    """
    pid_b = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_c = tl.program_id(2)
    ch_local = pid_c * BLOCK_D + tl.arange(0, BLOCK_D)
    ch_mask = ch_local < channels_per_group
    ch = pid_g * channels_per_group + ch_local
    n_idx = tl.arange(0, BLOCK_N)
    n_mask = n_idx < state
    dn_mask = ch_mask[:, None] & n_mask[None, :]
    rows = tl.arange(0, BLOCK_L)

    a = tl.load(A_ptr + ch[:, None] * state + n_idx[None, :], mask=dn_mask, other=0.0).to(tl.float32)
    a3 = a[None, :, :]
    bias = tl.full([BLOCK_D], 0.0, tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch, mask=ch_mask, other=0.0).to(tl.float32)
    skip = tl.full([BLOCK_D], 0.0, tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + ch, mask=ch_mask, other=0.0).to(tl.float32)
    bd = (pid_b * channels + ch).to(tl.int64)
    seq_base = bd * length
    lam_base = pid_b.to(tl.int64) * lam_stride_b + ch.to(tl.int64) * lam_stride_d
    group_base = (pid_b * groups + pid_g).to(tl.int64) * state * length
    chunk_base = (bd * n_chunks)[:, None] * state + n_idx[None, :]
    # plane = b·d·l, one slice of du; tap_stride = b·g·blocks·n·l, one tap's slice of dB.
    # This program's (n, l) plane of dC, and of dB for tap t at + t * tap_stride.
    block_plane = ((pid_b * groups + pid_g) * n_blocks + pid_c).to(tl.int64) * state * length
    nl_offsets = n_idx[None, :] * length

    # g at the first token of the chunk after the current one (the final state's gradient at the end)
    g_next = tl.full([BLOCK_D, BLOCK_N], 0.0, tl.float32)
    if HAS_DLAST:
        g_next = tl.load(dlast_ptr + bd[:, None] * state + n_idx[None, :], mask=dn_mask,
                         other=0.0).to(tl.float32)
    da_acc = tl.full([BLOCK_D, BLOCK_N], 0.0, tl.float32)
    dskip_acc = tl.full([BLOCK_D], 0.0, tl.float32)
    dbias_acc = tl.full([BLOCK_D], 0.0, tl.float32)

    for i in range(n_chunks):
        c = n_chunks - 1 - i
        pos = c * BLOCK_L + rows
        valid2 = (pos < length)[:, None] & ch_mask[None, :]
        valid = (pos < length)[:, None, None]
        h0 = tl.load(chunk_state_ptr + chunk_base + c * state, mask=dn_mask, other=0.0)

        dt, raw = _delta_at(delta_ptr, bias, seq_base, pos, length, ch_mask, HAS_BIAS, SOFTPLUS)
        dt3 = dt[:, :, None]
        lam = _lam_at(lam_ptr, lam_base, pos, length, ch_mask, dt, HAS_LAM)
        a_bar, da_bar, taps, taps_da, taps_ddelta, taps_dlam = _discretize(
            u_ptr, B_ptr, a, dt, lam, seq_base, group_base, pos, length, ch_mask, n_idx, n_mask,
            TRANSITION, TAPS, OFFSETS)

        # States before each token: scan the previous tokens' steps (identity at row 0) from h0.
        dt_prev, _ = _delta_at(delta_ptr, bias, seq_base, pos - 1, length, ch_mask,
                               HAS_BIAS, SOFTPLUS)
        lam_prev = _lam_at(lam_ptr, lam_base, pos - 1, length, ch_mask, dt_prev, HAS_LAM)
        a_bar_prev, _, taps_prev, _, _, _ = _discretize(
            u_ptr, B_ptr, a, dt_prev, lam_prev, seq_base, group_base, pos - 1, length, ch_mask,
            n_idx, n_mask, TRANSITION, TAPS, OFFSETS)
        first = (rows == 0)[:, None, None]
        a_bar_prev = tl.where(first, 1.0, a_bar_prev)
        x_prev = tl.where(first, 0.0, dt_prev[:, :, None] * taps_prev)
        a_prod, x_acc = tl.associative_scan((a_bar_prev, x_prev), 0, _combine)
        h_prev = a_prod * h0[None, :, :] + x_acc
        h = a_bar * h_prev + dt3 * taps

        c_at = _load_states(C_ptr, group_base, pos, length, n_idx, n_mask)
        u_here = _load_channels(u_ptr, seq_base, pos, length, ch_mask)
        dy = _load_channels(dout_ptr, seq_base, pos, length, ch_mask)
        if HAS_GATE:
            y = _sum(h * c_at[:, None, :], axis=2)
            if HAS_D:
                y += u_here * skip[None, :]
            gate = _load_channels(gate_ptr, seq_base, pos, length, ch_mask)
            sig = _sigmoid(gate)
            dgate = dy * y * sig * (1.0 + gate * (1.0 - sig))
            tl.store(dgate_ptr + seq_base[None, :] + pos[:, None], dgate, mask=valid2)
            dy = dy * gate * sig
        if HAS_D:
            dskip_acc += _sum(dy * u_here, axis=0)
            tl.store(du_ptr + len(OFFSETS) * plane + seq_base[None, :] + pos[:, None],
                     dy * skip[None, :], mask=valid2)
        dc = _sum(dy[:, :, None] * h, axis=1)
        tl.store(dC_ptr + block_plane + nl_offsets + pos[:, None], dc,
                 mask=(pos < length)[:, None] & n_mask[None, :])

        # Adjoint g_k = Ā_{k+1} g_{k+1} + dy_k C_k; past the end Δ = 0 makes Ā = 1, so the last
        # valid token receives g_next (= the final state's gradient) unchanged.
        dt_next, _ = _delta_at(delta_ptr, bias, seq_base, pos + 1, length, ch_mask,
                               HAS_BIAS, SOFTPLUS)
        a_bar_next, _ = TRANSITION(dt_next[:, :, None] * a3)
        a_prod_rev, g_acc = tl.associative_scan(
            (a_bar_next, dy[:, :, None] * c_at[:, None, :]), 0, _combine, reverse=True)
        g = g_acc + a_prod_rev * g_next[None, :, :]
        g_next = _sum(tl.where(first, g, 0.0), axis=0)
        g = tl.where(valid, g, 0.0)

        g_transition = g * h_prev * da_bar  # ∂L/∂z through Ā
        ddt = _sum(g_transition * a3 + g * (taps + dt3 * taps_ddelta), axis=2)
        da_acc += _sum(g_transition * dt3 + g * dt3 * taps_da, axis=0)
        if HAS_LAM:
            tl.store(dlam_ptr + seq_base[None, :] + pos[:, None], _sum(g * dt3 * taps_dlam, axis=2),
                     mask=valid2)

        # Tap t carried v_{k+o_t} into x_k: its gradient lands on token k + o_t.
        z = dt3 * a3
        lam3 = lam[:, :, None]
        for t in tl.static_range(len(OFFSETS)):
            w, _, _, _ = TAPS(z, a3, dt3, lam3, t)
            share = g * dt3 * w
            target = pos + OFFSETS[t]
            inside = (pos < length) & (target >= 0) & (target < length)
            u_at = _load_channels(u_ptr, seq_base, target, length, ch_mask)
            b_at = _load_states(B_ptr, group_base, target, length, n_idx, n_mask)
            tl.store(du_ptr + t * plane + seq_base[None, :] + target[:, None],
                     _sum(share * b_at[:, None, :], axis=2),
                     mask=inside[:, None] & ch_mask[None, :])
            tl.store(dB_ptr + t * tap_stride + block_plane + nl_offsets + target[:, None],
                     _sum(share * u_at[:, :, None], axis=1),
                     mask=inside[:, None] & n_mask[None, :])

        if SOFTPLUS:
            ddt = ddt * _sigmoid(raw)
        ddt = tl.where(valid2, ddt, 0.0)
        tl.store(ddelta_ptr + seq_base[None, :] + pos[:, None], ddt, mask=valid2)
        dbias_acc += _sum(ddt, axis=0)

    tl.store(dA_ptr + bd[:, None] * state + n_idx[None, :], da_acc, mask=dn_mask)
    tl.store(dD_ptr + bd, dskip_acc, mask=ch_mask)
    tl.store(dbias_ptr + bd, dbias_acc, mask=ch_mask)


# ----------------------------------------------------------------------------- host side


def _layout(u: Tensor, B: Tensor, n_state: int) -> dict:
    """Grid and block sizes for (b, d, l) inputs with B grouped as (b, g, n, l)."""
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups
    block_d = min(MAX_BLOCK_CHANNELS, triton.next_power_of_2(per_group))
    n_blocks = triton.cdiv(per_group, block_d)
    return dict(batch=batch, channels=channels, length=length, groups=groups,
                per_group=per_group, n_blocks=n_blocks, n_chunks=triton.cdiv(length, CHUNK_TOKENS),
                block_d=block_d, block_n=triton.next_power_of_2(n_state),
                grid=(batch, groups, n_blocks))


class TritonSelectiveScan(torch.autograd.Function):
    """Autograd wrapper: forward and backward kernels, partial sums reduced on the host."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, gate, delta_bias, lam, delta_softplus: bool, method: Method):
        u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
        D = None if D is None else D.contiguous()
        gate = None if gate is None else gate.contiguous()
        delta_bias = None if delta_bias is None else delta_bias.contiguous()
        lam = None if lam is None else _token_contiguous(lam)
        shape = _layout(u, B, A.shape[1])
        batch, channels, n_state = u.shape[0], u.shape[1], A.shape[1]
        out = torch.empty_like(u)
        chunk_states = torch.empty(batch, channels, shape["n_chunks"], n_state,
                                   dtype=torch.float32, device=u.device)
        last_state = torch.empty(batch, channels, n_state, dtype=torch.float32, device=u.device)
        match_interpreter_setting()
        _scan_fwd_kernel[shape["grid"]](
            u, delta, A, B, C, u if D is None else D, u if gate is None else gate,
            u if delta_bias is None else delta_bias, u if lam is None else lam,
            out, chunk_states, last_state,
            shape["length"], channels, shape["groups"], n_state, shape["per_group"],
            shape["n_chunks"], *_lam_strides(lam),
            **_method_constexprs(method),
            HAS_D=D is not None, HAS_GATE=gate is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), HAS_LAM=lam is not None,
            BLOCK_L=CHUNK_TOKENS, BLOCK_D=shape["block_d"], BLOCK_N=shape["block_n"],
            num_warps=NUM_WARPS_FORWARD,
        )
        ctx.save_for_backward(u, delta, A, B, C, D, gate, delta_bias, lam, chunk_states)
        ctx.delta_softplus = bool(delta_softplus)
        ctx.method = method
        ctx.set_materialize_grads(False)
        return out, last_state.to(u.dtype)

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, gate, delta_bias, lam, chunk_states = ctx.saved_tensors
        method: Method = ctx.method
        shape = _layout(u, B, A.shape[1])
        batch, channels, length = u.shape
        groups, n_state, n_blocks = shape["groups"], A.shape[1], shape["n_blocks"]
        n_taps = len(method.taps)
        dev = u.device
        if dout is None:
            dout = torch.zeros_like(u)
        dout = dout.contiguous()
        f32 = dict(dtype=torch.float32, device=dev)
        du_parts = torch.zeros(n_taps + 1, batch, channels, length, **f32)
        ddelta = torch.empty(batch, channels, length, **f32)
        dgate = torch.empty(batch, channels, length, **f32) if gate is not None else None
        dlam = torch.empty(batch, channels, length, **f32) if lam is not None else None
        dA_parts = torch.empty(batch, channels, n_state, **f32)
        dD_parts = torch.empty(batch, channels, **f32)
        dbias_parts = torch.empty(batch, channels, **f32)
        dB_parts = torch.zeros(n_taps, batch, groups, n_blocks, n_state, length, **f32)
        dC_parts = torch.zeros(batch, groups, n_blocks, n_state, length, **f32)
        match_interpreter_setting()
        _scan_bwd_kernel[shape["grid"]](
            u, delta, A, B, C, u if D is None else D, u if gate is None else gate,
            u if delta_bias is None else delta_bias, u if lam is None else lam,
            dout, u if dlast is None else dlast.contiguous(), chunk_states,
            du_parts, ddelta, ddelta if dgate is None else dgate, dA_parts, dD_parts,
            dbias_parts, dB_parts, dC_parts, ddelta if dlam is None else dlam,
            length, channels, groups, n_state, shape["per_group"], shape["n_chunks"],
            n_blocks, batch * channels * length, batch * groups * n_blocks * n_state * length,
            *_lam_strides(lam),
            **_method_constexprs(method),
            HAS_D=D is not None, HAS_GATE=gate is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.delta_softplus, HAS_DLAST=dlast is not None, HAS_LAM=lam is not None,
            BLOCK_L=CHUNK_TOKENS, BLOCK_D=shape["block_d"], BLOCK_N=shape["block_n"],
            num_warps=NUM_WARPS_BACKWARD,
        )
        du = du_parts.sum(0).to(u.dtype)
        dB = dB_parts.sum(dim=(0, 3)).to(B.dtype)
        dC = dC_parts.sum(dim=2).to(C.dtype)
        dA = dA_parts.sum(0).to(A.dtype)
        dD = None if D is None else dD_parts.sum(0).to(D.dtype)
        dbias = None if delta_bias is None else dbias_parts.sum(0).to(delta_bias.dtype)
        dgate = None if gate is None else dgate.to(gate.dtype)
        dlam = None if lam is None else dlam.to(lam.dtype)
        return du, ddelta.to(delta.dtype), dA, dB, dC, dD, dgate, dbias, dlam, None, None


def _token_contiguous(lam: Tensor) -> Tensor:
    """λ (b, d, l) with its tokens contiguous; batch and channel strides stay as they are, so an
    expanded λ shared by the channels (stride 0 along d) is read without a copy."""
    return lam if lam.shape[2] <= 1 or lam.stride(2) == 1 else lam.contiguous()


def _lam_strides(lam: Tensor | None) -> tuple[int, int]:
    """(batch, channel) element strides of λ; (0, 0) without one."""
    return (0, 0) if lam is None else (lam.stride(0), lam.stride(1))


def selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                          method: Method, lam=None):
    """The backend entry point (see discbench.scan): out (b, d, l) in u's dtype, and with
    return_last_state the final state (b, d, n) in u's dtype. B, C: (b, g, n, l); lam (b, d, l)
    for a method that takes λ (tokens contiguous or made so; other strides, e.g. 0 for a λ
    shared by the channels, are read as they are)."""
    if u.device.type != "cuda" and not triton.knobs.runtime.interpret:
        raise RuntimeError(f"backend 'triton' got {u.device.type} tensors: it runs CUDA tensors, "
                           "or CPU tensors only with TRITON_INTERPRET=1 (Triton's interpreter)")
    out, last_state = TritonSelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, lam,
                                                delta_softplus, method)
    return (out, last_state) if return_last_state else out
