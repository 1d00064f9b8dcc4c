"""The block stack every discbench model family is built of, and the base class they share.

A family is a classifier whose sequence mixing is a stack of `VimBlock`s (`mixer_blocks`),
each around one bidirectional mixer (Mamba-1's `BiMambaMixer`, Mamba-2's `BiSSDMixer`, or a new
family's own). `MixerStack` is the base class of every family: its constructor checks, timm's
model interface (head, weight decay, gradient checkpointing) and the hooks the harness calls
(scan backend, Δ scale, learned λ) are written once here.

A mixer provides: `scan_backend` (attribute) and `check_scan_backend(name)` (its backends),
`delta_scale` (attribute, default 1.0: every step Δ is multiplied by it), `learns_lambda` and
`lam_stats` (λ recorded with `add_lambda_stats`), `no_weight_decay_names` (its parameters
exempt from weight decay) and `out_proj` (the residual branch's output projection).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import DropPath, trunc_normal_

from ..methods import get_method

Tensor = torch.Tensor

BIDIRECTIONAL_CHOICES = ("ssm_conv", "ssm", "none")
CONV_CHOICES = ("causal", "none")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """A clear error naming `name`, `value` and the allowed values when `value` is not one of them."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(allowed)}")


def check_dt_range(dt_min: float, dt_max: float) -> None:
    """Mamba's Δ initialisation range: 0 < dt_min ≤ dt_max, else a clear error."""
    if not (isinstance(dt_min, (int, float)) and isinstance(dt_max, (int, float)) and 0 < dt_min <= dt_max):
        raise ValueError(f"dt_min={dt_min!r}, dt_max={dt_max!r}: the Δ initialisation range needs "
                         f"0 < dt_min ≤ dt_max (Mamba's default 0.001, 0.1)")


def at_least_fp32(t: Tensor) -> Tensor:
    """The SSM's own parameters (A, D, Δ bias) go to the scan in fp32 even in a bf16 model, as upstream."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def add_lambda_stats(stats: dict[str, Tensor] | None, direction: str, lam: Tensor) -> None:
    """Add λ's running sums [Σλ, Σλ², count] (any shape) to stats[direction]; nothing when
    stats is None (λ is not being recorded). Every mixer that learns λ records it this way."""
    if stats is None:
        return
    values = lam.detach().double()
    sums = torch.stack([values.sum(), values.square().sum(), values.new_tensor(values.numel())])
    stats[direction] = stats.get(direction, 0) + sums.cpu()


class VimBlock(nn.Module):
    """x + drop_path(mixer(RMSNorm(x))), with the residual stream x kept in fp32.

    Upstream writes the same computation as "add, then norm, then mixer" to fuse the add into
    the norm kernel; block i's mixer output there is dropped with the i-th drop-path rate too.
    """

    def __init__(self, dim: int, mixer: nn.Module, drop_path: float = 0.0,
                 norm_eps: float = 1e-5, residual_in_fp32: bool = True):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=norm_eps)
        self.mixer = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, l, D) residual stream -> (b, l, D), fp32 when residual_in_fp32."""
        if self.residual_in_fp32:
            x = x.float()
        return x + self.drop_path(self.mixer(self.norm(x.to(self.norm.weight.dtype))))


def mixer_blocks(embed_dim: int, depth: int, drop_path_rate: float, norm_eps: float, residual_in_fp32: bool,
                 mixer: Callable[..., nn.Module], **mixer_kwargs) -> nn.ModuleList:
    """`depth` VimBlocks of mixer(embed_dim, **mixer_kwargs), drop path rising linearly from 0 to
    drop_path_rate over the blocks."""
    rates = torch.linspace(0, drop_path_rate, depth).tolist()
    return nn.ModuleList([
        VimBlock(embed_dim, mixer(embed_dim, **mixer_kwargs), drop_path=rate, norm_eps=norm_eps,
                 residual_in_fp32=residual_in_fp32)
        for rate in rates
    ])


class MixerStack(nn.Module):
    """Base class of every discbench model family: a classifier of mixer blocks.

    A family's constructor calls `super().__init__(...)` first (the checks and the attributes
    below), then builds `self.layers` (`mixer_blocks`), `self.norm_f` (the final norm) and
    `self.head` (`new_head()`), and implements `forward_features` (input -> normalised token
    features (b, L, D), `run_blocks` does the blocks and the norm), `forward_head` and
    `input_size`. The model is built with timm's `build_model_with_cfg` (see
    discbench.models.registry).

    Attributes: method, variant (the discretization every mixer uses), num_classes, embed_dim
    (= num_features = head_hidden_size, timm's names), pool (one of `pool_choices`),
    grad_checkpointing.
    """

    pool_choices: tuple[str, ...] = ("mean",)
    layers: nn.ModuleList
    head: nn.Module
    norm_f: nn.Module

    def __init__(self, *, num_classes: int, embed_dim: int, pool: str, method: str, variant: str,
                 drop_rate: float, drop_path_rate: float, **sizes: int):
        """Checks what every family takes (sizes: further positive integers, by name)."""
        super().__init__()
        check_choice("pool", pool, self.pool_choices)
        for name, value in {"embed_dim": embed_dim, **sizes}.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be ≥ 0 (0: no head), got {num_classes}")
        if not 0.0 <= drop_path_rate < 1.0 or not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate}, {drop_path_rate}")
        resolved = get_method(method, variant)
        self.method, self.variant = resolved.name, resolved.variant
        self.num_classes = num_classes
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.pool = pool
        self.grad_checkpointing = False

    @property
    def input_size(self) -> tuple[int, ...]:
        """One item's shape as built: (in_chans, H, W) for images, (L, in_chans) for sequences
        (timm's pretrained_cfg["input_size"])."""
        raise NotImplementedError(f"{type(self).__name__} must state its input_size")

    # -- forward -------------------------------------------------------------------------

    def run_blocks(self, x: Tensor) -> Tensor:
        """Tokens (b, L, D) through every block (checkpointed when asked) and the final norm."""
        for block in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm_f(x.to(self.norm_f.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Input -> logits (b, num_classes)."""
        return self.forward_head(self.forward_features(x))

    # -- timm conventions ----------------------------------------------------------------

    def new_head(self) -> nn.Module:
        """A head for num_classes (nn.Identity for 0), with PyTorch's default initialisation."""
        return nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()

    def _init_head(self) -> None:
        """Vim's head initialisation: weight trunc_normal(std 0.02), bias 0."""
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for `num_classes` (0: none); global_pool, if given, sets `pool` (one of pool_choices)."""
        if global_pool is not None:
            check_choice("global_pool", global_pool, self.pool_choices)
            self.pool = global_pool
        self.num_classes = num_classes
        self.head = self.new_head()
        self._init_head()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters exempt from weight decay: each mixer's `no_weight_decay_names`
        (the SSM's A, D and, for Mamba-2, the Δ biases)."""
        return {f"layers.{i}.mixer.{name}" for i, block in enumerate(self.layers)
                for name, _ in block.mixer.named_parameters() if name in block.mixer.no_weight_decay_names}

    def _init_residual_projections(self, depth: int) -> None:
        """GPT-2's scheme, as Mamba: each block's out_proj scaled by 1/sqrt(depth)."""
        for block in self.layers:
            nn.init.kaiming_uniform_(block.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                block.mixer.out_proj.weight /= math.sqrt(depth)

    # -- hooks the harness calls ---------------------------------------------------------

    def set_scan_backend(self, name: str) -> None:
        """Run every scan of the model on backend `name` ("auto" or one of the mixer's backends)."""
        for block in self.layers:
            block.mixer.check_scan_backend(name)
            block.mixer.scan_backend = name

    @property
    def scan_backend(self) -> str:
        return self.layers[0].mixer.scan_backend

    def set_delta_scale(self, scale: float) -> None:
        """Multiply every step Δ (after softplus; every layer, both scan directions) by `scale`
        from now on; 1.0 restores the model as trained. For a change of sampling rate: a model
        trained on L samples of a signal, run on L′ samples of it, takes scale L/L′."""
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"delta_scale must be a finite number > 0, got {scale!r}")
        for block in self.layers:
            block.mixer.delta_scale = float(scale)

    @property
    def delta_scale(self) -> float:
        return self.layers[0].mixer.delta_scale

    @contextlib.contextmanager
    def delta_scaled(self, scale: float) -> Iterator[None]:
        """`with model.delta_scaled(s):` runs the model with every Δ × s, then restores the scale."""
        previous = self.delta_scale
        self.set_delta_scale(scale)
        try:
            yield
        finally:
            self.set_delta_scale(previous)

    @property
    def learns_lambda(self) -> bool:
        """Whether the mixers project a per-token λ (a method with `takes_lam`; each mixer's
        `learns_lambda`)."""
        return any(block.mixer.learns_lambda for block in self.layers)

    @contextlib.contextmanager
    def recording_lambda(self) -> Iterator[list[dict]]:
        """`with model.recording_lambda() as summary:` every forward inside adds the λ it computes
        to running sums; on exit `summary` holds one record per layer (0-based) and direction:
        {layer, direction ("forward"/"backward"), mean, std (over every token of every input),
        count}. Empty for a model without λ."""
        summary: list[dict] = []
        mixers = [block.mixer for block in self.layers if block.mixer.learns_lambda]
        for mixer in mixers:
            mixer.lam_stats = {}
        try:
            yield summary
        finally:
            for layer, block in enumerate(self.layers):
                stats = block.mixer.lam_stats or {}
                for direction, (total, squares, count) in ((d, t.tolist()) for d, t in stats.items()):
                    mean = total / count
                    std = math.sqrt(max(squares / count - mean * mean, 0.0))
                    summary.append({"layer": layer, "direction": direction, "mean": mean, "std": std,
                                    "count": int(count)})
            for mixer in mixers:
                mixer.lam_stats = None
