"""seqtransformer: a small Transformer-encoder reference for sequence data (no discretization),
registered in timm like every family so that a study lists it under `model.name` or `references:`.

    timm.create_model("seqtransformer_micro", in_chans=1, seq_len=40, num_classes=10)

input (b, L, in_chans) -> Linear to width D, plus sinusoidal positions (fixed, so any length
runs) -> `depth` pre-norm encoder layers (`num_heads` heads, one by default so that any width D
works; feed-forward 2D, GELU) -> LayerNorm ->
the mean over tokens -> Linear head. Sizes are matched in parameters to the conv-free seqmamba
of the same name on MNIST-1D's one channel and 10 classes: one rung per seqmamba size (`SIZES`,
seqtransformer_nano … seqtransformer_small, one head each).
"""

from __future__ import annotations

import functools

import math

import torch
import torch.nn as nn

from .reference import SequenceClassifier
from .registry import register_ladder, sequence_cfg

Tensor = torch.Tensor


def sinusoidal_positions(length: int, width: int, device: torch.device) -> Tensor:
    """(length, width) fixed positions of "Attention Is All You Need" (sin on even, cos on odd
    features), for any length."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


class SequenceTransformer(SequenceClassifier):
    """Sequences (b, L, in_chans) -> logits (b, num_classes) through a pre-norm Transformer encoder."""

    pool_choices = ("mean",)
    width_arg = "embed_dim"  # what `discbench bench train` varies to match another model's parameters

    def __init__(self, seq_len: int = 40, in_chans: int = 1, num_classes: int = 10, embed_dim: int = 34,
                 depth: int = 2, num_heads: int = 1, pool: str = "mean", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__(seq_len, in_chans, num_classes, drop_rate, drop_path_rate, pool=pool, embed_dim=embed_dim,
                         depth=depth, num_heads=num_heads)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        self.num_features = self.head_hidden_size = embed_dim
        self.embed = nn.Linear(in_chans, embed_dim)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=2 * embed_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = self.new_head()

    def forward_features(self, x: Tensor) -> Tensor:
        """Sequences (b, L, in_chans) -> every token's features (b, L, D)."""
        self.check_input(x)
        tokens = self.embed(x) + sinusoidal_positions(x.shape[1], self.num_features, x.device)
        return self.norm(self.encoder(tokens))


# One rung per seqmamba size (seq.SIZES), one head, D matched in parameters to the conv-free seqmamba
# of the same name (tests/test_ladder.py): nano 6,470 (against 6,650), micro 19,730 (19,690),
# mini 57,830 (58,378), tiny 129,950 (129,098), small 270,910 (270,442).
SIZES = {"nano": dict(embed_dim=19), "micro": dict(embed_dim=34), "mini": dict(embed_dim=59),
         "tiny": dict(embed_dim=89), "small": dict(embed_dim=129)}
register_ladder(SequenceTransformer, "seqtransformer", SIZES,
                functools.partial(sequence_cfg, discretized=False, first_conv="embed"), __name__)
