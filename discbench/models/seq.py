"""A 1-D selective-SSM classifier: raw samples in, the same blocks as Vim, logits out.

For studies where the discretization should matter: every sample is one token (no patches),
there is no position embedding (the SSM is the only thing that knows where a token is), and
the conv before the scan can be switched off (`conv="none"`), so the scan does all the
sequence modelling. The blocks are Vim's own (`VimBlock` around `BiMambaMixer`), so the
discretization, variant, Δ initialisation range, scan backend, conv and Δ scale work exactly
as in Vim.

    timm.create_model("seqmamba_micro", in_chans=1, seq_len=40, num_classes=10,
                      discretization="foh", variant="canonical", conv="none")

Input (b, L, in_chans) -> in_proj (in_chans -> D, with bias) -> depth × VimBlock -> RMSNorm
-> pool over tokens ("mean", or "last": the last token's features) -> head. Any L works (no
position embedding); `seq_len` only sets `pretrained_cfg["input_size"] = (seq_len, in_chans)`,
the per-item shape the model is built for (measurement code builds dummy inputs from it).

Sizes: seqmamba_micro (D = 32, depth 2), seqmamba_tiny (D = 64, depth 4); both causal
(bidirectional="none") by default, as a sequence model reading a signal in time order.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models import register_model

from ..methods import get_method
from .vim import BIDIRECTIONAL_CHOICES, MixerStack, _check_choice, entrypoint_arguments, mixer_blocks

Tensor = torch.Tensor

SEQ_POOL_CHOICES = ("mean", "last")


class SequenceMamba(MixerStack, nn.Module):
    """Sequences (b, L, in_chans) -> logits (b, num_classes); see the module docstring.

    bidirectional: "none" (causal, the default), "ssm" or "ssm_conv" as in BiMambaMixer.
    conv: "causal" (Mamba's depthwise conv, width d_conv) or "none". dt_min, dt_max: Mamba's Δ
    initialisation range. drop_rate: dropout after the input projection; drop_path_rate:
    stochastic depth rising linearly to this over the blocks.
    """

    def __init__(
        self,
        seq_len: int = 40,
        in_chans: int = 1,
        num_classes: int = 10,
        embed_dim: int = 64,
        depth: int = 4,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        conv: str = "causal",
        bidirectional: str = "none",
        pool: str = "mean",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        discretization: str = "zoh",
        variant: str = "canonical",
        scan_backend: str = "auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
    ):
        super().__init__()
        _check_choice("pool", pool, SEQ_POOL_CHOICES)
        _check_choice("bidirectional", bidirectional, BIDIRECTIONAL_CHOICES)
        for name, value in (("seq_len", seq_len), ("in_chans", in_chans), ("embed_dim", embed_dim),
                            ("depth", depth), ("d_state", d_state), ("expand", expand), ("d_conv", d_conv)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be ≥ 0 (0: no head), got {num_classes}")
        if not 0.0 <= drop_path_rate < 1.0 or not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate}, {drop_path_rate}")
        method = get_method(discretization, variant)
        self.discretization, self.variant = method.name, method.variant
        self.num_classes = num_classes
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.in_chans = in_chans
        self.pool = pool
        self.bidirectional = bidirectional
        self.conv = conv
        self.grad_checkpointing = False

        self.in_proj = nn.Linear(in_chans, embed_dim)
        self.in_drop = nn.Dropout(drop_rate)
        self.layers = mixer_blocks(embed_dim, depth, drop_path_rate, norm_eps, residual_in_fp32,
                                   d_state=d_state, d_conv=d_conv, expand=expand, dt_min=dt_min,
                                   dt_max=dt_max, bidirectional=bidirectional, conv=conv,
                                   discretization=method.name, variant=method.variant,
                                   scan_backend=scan_backend)
        self.norm_f = nn.RMSNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        # in_proj keeps nn.Linear's default init: weights and bias U(±1/sqrt(in_chans))
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        self._init_residual_projections(depth)

    # -- timm conventions ----------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters exempt from weight decay: A_log, D (both directions)."""
        return self._ssm_no_weight_decay()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for `num_classes` (0: none); global_pool, if given, sets `pool` ("mean"/"last")."""
        if global_pool is not None:
            _check_choice("global_pool", global_pool, SEQ_POOL_CHOICES)
            self.pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    # -- forward -------------------------------------------------------------------------

    def forward_features(self, x: Tensor) -> Tensor:
        """Sequences (b, L, in_chans) -> normalised token features (b, L, D)."""
        if x.dim() != 3 or x.shape[-1] != self.in_chans:
            raise ValueError(f"expected sequences (batch, length, {self.in_chans}), got {tuple(x.shape)}")
        x = self.in_drop(self.in_proj(x))
        for block in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm_f(x.to(self.norm_f.weight.dtype))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Token features (b, L, D) -> logits (b, num_classes), or with pre_logits the pooled (b, D)."""
        features = x.mean(dim=1) if self.pool == "mean" else x[:, -1]
        return features if pre_logits else self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        """Sequences (b, L, in_chans) -> logits (b, num_classes)."""
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------- registry

# Architecture defaults per registered name; every one of them can be overridden by kwargs.
SEQ_CONFIGS: dict[str, dict] = {
    "seqmamba_micro": dict(embed_dim=32, depth=2, d_state=16),
    "seqmamba_tiny": dict(embed_dim=64, depth=4, d_state=16),
}


def create_sequence_model(model_cls: type, configs: dict[str, dict], name: str, pretrained: bool,
                          **kwargs) -> nn.Module:
    """`model_cls` (SequenceMamba or a subclass) built with `name`'s architecture defaults
    (configs) overridden by kwargs, its timm pretrained_cfg stating the per-item input size."""
    kwargs = entrypoint_arguments(name, pretrained, kwargs)
    seq_len = kwargs.get("seq_len", 40)
    model = model_cls(**{**configs[name], **kwargs})
    model.pretrained_cfg = model.default_cfg = dict(
        architecture=name, input_size=(seq_len, model.in_chans), num_classes=model.num_classes,
        first_conv="in_proj", classifier="head", fixed_input_size=False)
    return model


@register_model
def seqmamba_micro(pretrained: bool = False, **kwargs) -> SequenceMamba:
    """CPU-study size: D = 32, depth 2, d_state 16, causal."""
    return create_sequence_model(SequenceMamba, SEQ_CONFIGS, "seqmamba_micro", pretrained, **kwargs)


@register_model
def seqmamba_tiny(pretrained: bool = False, **kwargs) -> SequenceMamba:
    """CPU-study size: D = 64, depth 4, d_state 16, causal."""
    return create_sequence_model(SequenceMamba, SEQ_CONFIGS, "seqmamba_tiny", pretrained, **kwargs)
