"""Vim's bidirectional Mamba-1 mixer (bimamba v2) with a selectable discretization.

Every scan goes through `discbench.selective_scan` with the configured `method` and `variant`,
in BOTH directions. The backward direction is the forward computation on the reversed sequence
(flip, conv + scan, flip back; on the CPU kernel the same run in reverse inside the kernels, see
BiMambaMixer.fast_path), so a stencil's "previous" tokens are those to the right, as METHODS.md
requires. Parameter names match upstream Vim, so an upstream checkpoint's state dict loads as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..causal_conv1d import causal_conv1d_fn
from ..methods import get_method
from ..scan import BACKENDS, resolve_backend, selective_scan
from ..scan.cpu import selective_scan_block
from .stack import (BIDIRECTIONAL_CHOICES, CONV_CHOICES, add_lambda_stats, at_least_fp32, check_choice,
                    check_dt_range)

Tensor = torch.Tensor


def check_scan_backend(name: str) -> str:
    """`name` if it is "auto" or a registered backend usable on this machine, else a clear error."""
    if name == "auto":
        return name
    if name not in BACKENDS:
        raise ValueError(f"scan_backend={name!r} is not valid; choose one of: auto, {', '.join(BACKENDS)}")
    why = BACKENDS[name].unavailable_reason()
    if why is not None:
        raise RuntimeError(f"scan_backend={name!r} is not available here: {why}")
    return name


class BiMambaMixer(nn.Module):
    """Vim's bidirectional Mamba mixer (bimamba v2), (b, l, D) -> (b, l, D).

    in_proj: D -> 2E (x and the gate z, E = expand·D, no bias). Per direction: causal
    depthwise conv1d (width d_conv, with bias) -> SiLU -> x_proj (E -> dt_rank + 2N) ->
    dt_proj (dt_rank -> E; its bias is the scan's delta_bias, softplus applied in the scan) ->
    selective scan with A = -exp(A_log), skip D and gate silu(z). The backward direction runs on
    the reversed sequence (x and z both flipped, as upstream flips xz) and is flipped back;
    the two directions are averaged (upstream's if_divide_out) -> out_proj (E -> D, no bias).

    bidirectional: "ssm_conv" (Vim's default) each direction has its own conv1d and SSM
    parameters; "ssm" the backward SSM (x_proj_b, dt_proj_b, A_b_log, D_b) reads the reversed
    output of the single forward conv1d; "none" forward direction only.

    conv: "causal" (Mamba's) the depthwise causal conv1d before the SiLU; "none" no conv at all
    (no conv parameters): each direction's scan reads silu(x), so all mixing along the sequence
    is the SSM's own (with "ssm_conv" and "ssm" alike the backward scan then reads silu(x) reversed).

    A method whose weights read a per-token λ (`takes_lam`: Mamba-3's trapezoid/paper) gets one
    learned projection per direction, lam_proj (D -> 1, with bias) of the mixer's input:
    λ_k = sigmoid(lam_proj(hidden_k)), one λ per token shared by the channels, flipped with the
    tokens for the backward scan. Weight and bias start at 0, so λ starts at ½ everywhere (the
    classical trapezoid, trapezoid/canonical); every other method has no such parameters.

    delta_scale (attribute, default 1.0; set it with `set_delta_scale` on the model): every
    step Δ = softplus(dt_proj(x) + bias) of both directions is multiplied by it, the change of
    step a change of sampling rate implies (trained at L samples, run at L′: L/L′). At 1.0 the
    scan is called exactly as without it.

    fast_path (attribute, default True): where the scan lands on the fused CPU kernel, every
    product writes the channel-major (b, ·, l) layout the kernels read (no transposing copies),
    and the backward direction's conv and scan run in reverse inside the kernels (no flips). The
    numbers are the flip path's (False; every other backend) up to fp32 rounding
    (tests/test_vim_fast_path.py).
    """

    fast_path = True
    no_weight_decay_names = ("A_log", "A_b_log", "D", "D_b")
    check_scan_backend = staticmethod(check_scan_backend)

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        bidirectional: str = "ssm_conv",
        conv: str = "causal",
        method: str = "zoh",
        variant: str = "canonical",
        scan_backend: str = "auto",
    ):
        super().__init__()
        check_choice("bidirectional", bidirectional, BIDIRECTIONAL_CHOICES)
        check_choice("conv", conv, CONV_CHOICES)
        check_dt_range(dt_min, dt_max)
        self.method = get_method(method, variant)
        self.scan_backend = self.check_scan_backend(scan_backend)
        self.bidirectional = bidirectional
        self.conv = conv
        self.delta_scale = 1.0
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(d_model / 16)
        self.dt_range = (dt_min, dt_max, dt_init_floor)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        if conv == "causal":
            self.conv1d = self._make_conv(d_conv)
        self.x_proj, self.dt_proj, self.A_log, self.D = self._make_ssm()
        if bidirectional != "none":
            if bidirectional == "ssm_conv" and conv == "causal":
                self.conv1d_b = self._make_conv(d_conv)
            self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b = self._make_ssm()
        self.learns_lambda = self.method.takes_lam
        if self.learns_lambda:
            self.lam_proj = self._make_lam_proj()
            if bidirectional != "none":
                self.lam_proj_b = self._make_lam_proj()
        # {direction: tensor [Σλ, Σλ², count]} while MixerStack.recording_lambda() is active
        self.lam_stats: dict[str, Tensor] | None = None
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _make_conv(self, d_conv: int) -> nn.Conv1d:
        # Padding is applied by causal_conv1d_fn, so the layer holds weights only.
        return nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=True)

    def _make_lam_proj(self) -> nn.Linear:
        """One direction's λ projection, D -> 1, zero-initialised (λ = sigmoid(0) = ½)."""
        proj = nn.Linear(self.d_model, 1, bias=True)
        nn.init.zeros_(proj.weight)
        nn.init.zeros_(proj.bias)
        return proj

    def _lam(self, hidden: Tensor, proj: nn.Linear | None, direction: str) -> Tensor | None:
        """λ_k = sigmoid(proj(hidden_k)) in token order, (b, 1, l); None for a method without λ.

        hidden: (b, l, D). While λ is recorded, its running sums are added to lam_stats.
        """
        if proj is None:
            return None
        lam = torch.sigmoid(F.linear(hidden, proj.weight, proj.bias)).transpose(1, 2)
        add_lambda_stats(self.lam_stats, direction, lam)
        return lam

    def _make_ssm(self) -> tuple[nn.Linear, nn.Linear, nn.Parameter, nn.Parameter]:
        """x_proj, dt_proj, A_log, D of one direction, with Mamba's initialisation."""
        x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.init_dt_proj(dt_proj)
        # S4D-real: poles -1, -2, …, -N in every channel; kept in fp32 like upstream.
        poles = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        A_log = nn.Parameter(torch.log(poles))
        D = nn.Parameter(torch.ones(self.d_inner))
        return x_proj, dt_proj, A_log, D

    def init_dt_proj(self, dt_proj: nn.Linear) -> None:
        """Mamba's Δ init: weight U(±dt_rank^-½); bias = softplus⁻¹(Δ0), Δ0 log-uniform in [dt_min, dt_max]."""
        dt_min, dt_max, floor = self.dt_range
        bound = self.dt_rank ** -0.5
        with torch.no_grad():
            dt_proj.weight.uniform_(-bound, bound)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=floor)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def _on_fast_path(self, hidden: Tensor) -> bool:
        """Whether this call takes the fast path: asked for, and the scan lands on the CPU kernel."""
        if not self.fast_path or hidden.device.type != "cpu":
            return False
        return resolve_backend(self.scan_backend, hidden.device, hidden.dtype, self.method.key).name == "cpu"

    def _scan(self, x: Tensor, gate: Tensor, x_proj: nn.Linear, dt_proj: nn.Linear, A_log: Tensor, D: Tensor,
              lam: Tensor | None = None, reverse: bool = False, fast: bool = False) -> Tensor:
        """One direction's SSM: x, gate (b, E, l) in token order -> gated output (b, E, l) in token order.

        lam: (b, 1, l) in token order for a method that takes λ (expanded over the channels
        without a copy), else None. reverse: the backward direction (the recurrence runs from the
        last token to the first); on the fast path inside the kernel, else by flipping the inputs
        and the output.

        The one place the scan is called. With delta_scale ≠ 1 the step is computed here,
        softplus(delta + bias) × delta_scale, and handed to the scan as it is.
        """
        A = -torch.exp(at_least_fp32(A_log))
        kwargs = dict(D=at_least_fp32(D), z=gate, method=self.method.name, variant=self.method.variant,
                      lam=None if lam is None else lam.expand_as(x))
        delta_bias = at_least_fp32(dt_proj.bias)
        if fast:  # channel-major products straight from x: dt_low, B, C are (b, ·, l) views of x_dbl
            x_dbl = torch.bmm(x_proj.weight.expand(x.shape[0], -1, -1), x)  # (b, dt_rank + 2N, l)
            dt_low, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
            if self.delta_scale == 1.0:  # dt_proj inside the kernel
                return selective_scan_block(x, dt_low, A, B, C, delta_bias=delta_bias, delta_softplus=True,
                                            delta_proj=dt_proj.weight, reverse=reverse, **kwargs)
            delta = F.softplus(torch.bmm(dt_proj.weight.expand(x.shape[0], -1, -1), dt_low) + delta_bias[:, None])
            return selective_scan_block(x, delta * self.delta_scale, A, B, C, reverse=reverse, **kwargs)
        x_dbl = F.linear(x.transpose(1, 2), x_proj.weight)  # (b, l, dt_rank + 2N)
        dt_low, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = torch.matmul(dt_proj.weight, dt_low.transpose(1, 2))  # (b, E, l)
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
        softplus = True
        if self.delta_scale != 1.0:
            delta = F.softplus(delta + delta_bias[:, None]) * self.delta_scale
            delta_bias, softplus = None, False
        if reverse:
            x, delta, B, C, kwargs["z"] = (t.flip(-1) for t in (x, delta, B, C, gate))
            kwargs["lam"] = None if lam is None else kwargs["lam"].flip(-1)
        out = selective_scan(x, delta, A, B, C, delta_bias=delta_bias, delta_softplus=softplus,
                             backend=self.scan_backend, **kwargs)
        return out.flip(-1) if reverse else out

    def _conv_silu(self, x: Tensor, conv: nn.Conv1d | None, reverse: bool, fast: bool) -> Tensor:
        """silu(causal conv1d(x)), or silu(x) when conv="none"; x (b, E, l) in token order -> (b, E, l).

        reverse: the backward direction's conv (token t sees t … t + w − 1); on the fast path the
        fused kernel runs it in reverse, else x is flipped in and out. PyTorch's conv1d outside
        the fast path on the CPU, the fused kernels elsewhere (see discbench.causal_conv1d).
        """
        if conv is None:
            return F.silu(x)
        path = "auto" if fast or x.device.type != "cpu" else "torch"
        return causal_conv1d_fn(x, conv.weight.squeeze(1), conv.bias, activation="silu", reverse=reverse, path=path)

    def forward_directions(self, hidden: Tensor, fast: bool | None = None) -> tuple[Tensor, Tensor | None]:
        """The two directions' gated scan outputs in original token order, (b, E, l) each.

        hidden: (b, l, D). The second is None when bidirectional="none". fast: take the fast path
        (default: wherever `_on_fast_path` allows).
        """
        fast = self._on_fast_path(hidden) if fast is None else fast
        if fast:  # (b, 2E, l) written by the product itself, as matmul would transpose a copy.
            # Without autograd the token rows are padded to whole cache lines, since a product
            # over an odd token count (Vim's 197, 4097) runs on misaligned rows; with autograd
            # they are not, since the slice's backward would zero-fill the padded gradient, which
            # costs more than the alignment saves. One product per item (not one for the whole
            # batch) keeps each item's channel rows contiguous for the conv and scan reading them
            # through the view's strides. `discbench bench model --flip-path` times this path.
            b, l = hidden.shape[:2]
            pad = -l % 16 if not torch.is_grad_enabled() else 0
            tokens = F.pad(hidden, (0, 0, 0, pad)) if pad else hidden
            xz = torch.bmm(self.in_proj.weight.expand(b, -1, -1), tokens.transpose(1, 2))[..., :l]
        else:
            xz = torch.matmul(self.in_proj.weight, hidden.transpose(1, 2))  # (b, 2E, l)
        x, gate = xz.chunk(2, dim=1)
        x_fwd = self._conv_silu(x, getattr(self, "conv1d", None), False, fast)
        lam_fwd = self._lam(hidden, getattr(self, "lam_proj", None), "forward")
        out_fwd = self._scan(x_fwd, gate, self.x_proj, self.dt_proj, self.A_log, self.D, lam_fwd, False, fast)
        if self.bidirectional == "none":
            return out_fwd, None
        if self.bidirectional == "ssm_conv" and self.conv == "causal":
            x_bwd = self._conv_silu(x, self.conv1d_b, True, fast)
        else:  # the backward SSM reads the forward conv's output (or silu(x)), reversed
            x_bwd = x_fwd
        lam_bwd = self._lam(hidden, getattr(self, "lam_proj_b", None), "backward")
        out_bwd = self._scan(x_bwd, gate, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b, lam_bwd, True,
                             fast)
        return out_fwd, out_bwd

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (b, l, D) -> (b, l, D)."""
        fast = self._on_fast_path(hidden)
        out_fwd, out_bwd = self.forward_directions(hidden, fast)
        if fast:  # (b, E, l) read as it is (no transposing copy); the average's ½ goes into the
            # weight, which is exact (a power of two) and saves a pass over the activations
            weight = self.out_proj.weight.t()
            mixed = out_fwd if out_bwd is None else out_fwd + out_bwd
            if out_bwd is not None:
                weight = weight * 0.5
            return torch.bmm(mixed.transpose(1, 2), weight.expand(hidden.shape[0], -1, -1))
        mixed = out_fwd if out_bwd is None else (out_fwd + out_bwd) / 2
        return self.out_proj(mixed.transpose(1, 2))
