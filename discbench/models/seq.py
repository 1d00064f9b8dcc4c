"""A 1-D selective-SSM classifier: raw samples in, the same blocks as Vim, logits out.

For studies where the discretization should matter: every sample is one token (no patches),
there is no position embedding (the SSM is the only thing that knows where a token is), and
the conv before the scan can be switched off (`conv="none"`), so the scan does all the
sequence modelling. The blocks are Vim's own (`VimBlock` around `BiMambaMixer`), so the
method, variant, Δ initialisation range, scan backend, conv and Δ scale work exactly as in Vim.

    timm.create_model("seqmamba_micro", in_chans=1, seq_len=40, num_classes=10,
                      method="foh", variant="canonical", conv="none")

Input (b, L, in_chans) -> in_proj (in_chans -> D, with bias) -> depth × VimBlock -> RMSNorm
-> pool over tokens ("mean", or "last": the last token's features) -> head. Any L works (no
position embedding); `seq_len` only sets `pretrained_cfg["input_size"] = (seq_len, in_chans)`,
the per-item shape the model is built for (measurement code builds dummy inputs from it).

Sizes: the ladder `SIZES` (seqmamba_nano … seqmamba_small, D = 16 … 96, depth 2 … 4); causal
(bidirectional="none") by default, as a sequence model reading a signal in time order.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .mamba import BiMambaMixer
from .registry import register_ladder, sequence_cfg
from .stack import MixerStack, mixer_blocks

Tensor = torch.Tensor


class SequenceMamba(MixerStack):
    """Sequences (b, L, in_chans) -> logits (b, num_classes); see the module docstring.

    bidirectional: "none" (causal, the default), "ssm" or "ssm_conv" as in BiMambaMixer.
    conv: "causal" (Mamba's depthwise conv, width d_conv) or "none". pool: "mean" over tokens or
    "last" (the last token's features). dt_min, dt_max: Mamba's Δ initialisation range.
    drop_rate: dropout after the input projection; drop_path_rate: stochastic depth rising
    linearly to this over the blocks.
    """

    pool_choices = ("mean", "last")

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
        method: str = "zoh",
        variant: str = "canonical",
        scan_backend: str = "auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
    ):
        super().__init__(num_classes=num_classes, embed_dim=embed_dim, pool=pool, method=method, variant=variant,
                         drop_rate=drop_rate, drop_path_rate=drop_path_rate, seq_len=seq_len, in_chans=in_chans,
                         depth=depth, d_state=d_state, expand=expand, d_conv=d_conv)
        self.seq_len, self.in_chans = seq_len, in_chans

        self.in_proj = nn.Linear(in_chans, embed_dim)
        self.in_drop = nn.Dropout(drop_rate)
        self.layers = mixer_blocks(embed_dim, depth, drop_path_rate, norm_eps, residual_in_fp32, BiMambaMixer,
                                   d_state=d_state, d_conv=d_conv, expand=expand, dt_min=dt_min,
                                   dt_max=dt_max, bidirectional=bidirectional, conv=conv,
                                   method=self.method, variant=self.variant, scan_backend=scan_backend)
        self.norm_f = nn.RMSNorm(embed_dim, eps=norm_eps)
        self.head = self.new_head()
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        # in_proj keeps nn.Linear's default init: weights and bias U(±1/sqrt(in_chans))
        self._init_head()
        self._init_residual_projections(depth)

    @property
    def input_size(self) -> tuple[int, int]:
        """(seq_len, in_chans): the length it was built for (any length runs) and the channels."""
        return (self.seq_len, self.in_chans)

    def forward_features(self, x: Tensor) -> Tensor:
        """Sequences (b, L, in_chans) -> normalised token features (b, L, D)."""
        if x.dim() != 3 or x.shape[-1] != self.in_chans:
            raise ValueError(f"expected sequences (batch, length, {self.in_chans}), got {tuple(x.shape)}")
        return self.run_blocks(self.in_drop(self.in_proj(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Token features (b, L, D) -> logits (b, num_classes), or with pre_logits the pooled (b, D)."""
        features = x.mean(dim=1) if self.pool == "mean" else x[:, -1]
        return features if pre_logits else self.head(features)


# ----------------------------------------------------------------------------- registry

# The size ladder, grown as Vim and VSSD grow: width D and depth together, d_state 16, causal.
# Parameters on MNIST-1D (1 channel, 10 classes) without the conv before the scan, the setting
# the CPU studies train: nano 6,650, micro 19,690, mini 58,378, tiny 129,098, small 270,442
# (tests/test_ladder.py checks them; the README lists them).
SIZES = {
    "nano": dict(embed_dim=16, depth=2, d_state=16),
    "micro": dict(embed_dim=32, depth=2, d_state=16),
    "mini": dict(embed_dim=48, depth=3, d_state=16),
    "tiny": dict(embed_dim=64, depth=4, d_state=16),
    "small": dict(embed_dim=96, depth=4, d_state=16),
}
register_ladder(SequenceMamba, "seqmamba", SIZES, sequence_cfg, __name__)
