"""seqcnn: a 1-D convolutional reference for sequence data (no discretization), registered in
timm like every family so that a study lists it under `model.name` or `references:`.

    timm.create_model("seqcnn_micro", in_chans=1, seq_len=40, num_classes=10)

input (b, L, in_chans) -> `depth` × [Conv1d (kernel 5, 'same' padding) -> ReLU] of width W ->
the mean over tokens -> Linear head. The mean makes it length-agnostic, so it runs unchanged at
the transfer lengths (like the GRU, it has no step to rescale). Sizes are matched in parameters
to the conv-free seqmamba of the same name on MNIST-1D's one channel and 10 classes:
seqcnn_micro (W = 43, 19,274 parameters against seqmamba_micro's 19,690), seqcnn_tiny (W = 113,
129,734 against seqmamba_tiny's 129,098).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from .reference import SequenceClassifier
from .registry import build_family_model, sequence_cfg

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


default_cfgs = generate_default_cfgs({
    "seqcnn_micro": sequence_cfg(discretized=False, first_conv="convs.0"),
    "seqcnn_tiny": sequence_cfg(discretized=False, first_conv="convs.0"),
})


@register_model
def seqcnn_micro(pretrained: bool = False, **kwargs) -> SequenceCNN:
    """W = 43: seqmamba_micro's parameter count without its conv (19,274 against 19,690)."""
    return build_family_model(SequenceCNN, "seqcnn_micro", pretrained, **dict(dict(width=43), **kwargs))


@register_model
def seqcnn_tiny(pretrained: bool = False, **kwargs) -> SequenceCNN:
    """W = 113: seqmamba_tiny's parameter count without its conv."""
    return build_family_model(SequenceCNN, "seqcnn_tiny", pretrained, **dict(dict(width=113), **kwargs))
