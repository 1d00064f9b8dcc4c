"""seqcnn: a 1-D convolutional reference for sequence data (no discretization), registered in
timm like every family so that a study lists it under `model.name` or `references:`.

    timm.create_model("seqcnn_micro", in_chans=1, seq_len=40, num_classes=10)

input (b, L, in_chans) -> `depth` × [Conv1d (kernel 5, 'same' padding) -> ReLU] of width W ->
the mean over tokens -> Linear head. The mean makes it length-agnostic, so it runs unchanged at
the transfer lengths (like the GRU, it has no step to rescale). Sizes are matched in parameters
to the conv-free seqmamba of the same name on MNIST-1D's one channel and 10 classes: one rung
per seqmamba size (`SIZES`, seqcnn_nano … seqcnn_small).
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from .reference import SequenceClassifier
from .registry import register_ladder, sequence_cfg

Tensor = torch.Tensor
KERNEL = 5


class SequenceCNN(SequenceClassifier):
    """Sequences (b, L, in_chans) -> logits (b, num_classes) through `depth` convolutions of
    width `width` (kernel 5, stride 1, zero 'same' padding, ReLU), mean-pooled over tokens."""

    pool_choices = ("mean",)
    width_arg = "width"  # what `discbench bench train` varies to match another model's parameters

    def __init__(self, seq_len: int = 40, in_chans: int = 1, num_classes: int = 10, width: int = 43,
                 depth: int = 3, pool: str = "mean", drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__(seq_len, in_chans, num_classes, drop_rate, drop_path_rate, pool=pool, width=width,
                         depth=depth)
        self.num_features = self.head_hidden_size = width
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv1d(in_chans if i == 0 else width, width, KERNEL, padding=KERNEL // 2), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.head = self.new_head()

    def forward_features(self, x: Tensor) -> Tensor:
        """Sequences (b, L, in_chans) -> every token's features (b, L, W)."""
        self.check_input(x)
        return self.convs(x.transpose(1, 2)).transpose(1, 2)


# One rung per seqmamba size (seq.SIZES), W matched in parameters to the conv-free seqmamba of the
# same name (tests/test_ladder.py): nano 6,710 (against 6,650), micro 19,274 (19,690), mini
# 59,138 (58,378), tiny 129,734 (129,098), small 271,922 (270,442).
SIZES = {"nano": dict(width=25), "micro": dict(width=43), "mini": dict(width=76), "tiny": dict(width=113),
         "small": dict(width=164)}
register_ladder(SequenceCNN, "seqcnn", SIZES, functools.partial(sequence_cfg, discretized=False, first_conv="convs.0"),
                __name__)
