"""The four models of MNIST-1D's published table (Greydanus 2020), as the mnist1d repository
defines them (notebooks/models.py at 7878d96: LinearBase, MLPBase, ConvBase, GRUBase), registered
in timm so the harness trains them like every family: the first paper table reproduced here.

    timm.create_model("mnist1d_cnn", seq_len=40, in_chans=1, num_classes=10)

Input (b, L, in_chans), flattened or read as channels as the original does:

    mnist1d_logistic  Linear(L·C → classes)                                 410 parameters at L = 40
    mnist1d_mlp       Linear(L·C → 100), ReLU; h + ReLU(Linear(100 → 100)); Linear(100 → classes)
                                                                            15,210
    mnist1d_cnn       Conv1d(C → 25, 5, stride 2, pad 1), ReLU; twice Conv1d(25 → 25, 3, stride 2,
                      pad 1), ReLU; flatten; Linear(25·L₃ → classes) (L₃ = 5 at L = 40: the
                      original's 125 inputs)                                5,210
    mnist1d_gru       bidirectional GRU(C → 6), every token's output flattened;
                      Linear(2·6·L → classes)                               5,134

The parameter counts are those the repository's notebook prints (ConvBase 5210, GRUBase 5134)
or follow from its definitions (LinearBase, MLPBase); a test checks them. The models read the
whole sequence at once, so each is built for one length (seq_len).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from .reference import SequenceClassifier
from .registry import build_family_model, sequence_cfg

Tensor = torch.Tensor


class FlatSequenceModel(SequenceClassifier):
    """A model of the published table: sequences (b, seq_len, in_chans) -> logits, built for one length.

    kind: "logistic", "mlp", "cnn" or "gru" (see the module docstring); drop_rate: dropout before
    the head (0 in the published recipe).
    """

    kinds = ("logistic", "mlp", "cnn", "gru")

    def __init__(self, seq_len: int = 40, in_chans: int = 1, num_classes: int = 10, kind: str = "cnn",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__(seq_len, in_chans, num_classes, drop_rate, drop_path_rate)
        if kind not in self.kinds:
            raise ValueError(f"kind={kind!r} is not valid; choose one of: {', '.join(self.kinds)}")
        self.kind = kind
        flat = seq_len * in_chans
        if kind == "logistic":
            self.num_features = flat
        elif kind == "mlp":
            self.linear1, self.linear2 = nn.Linear(flat, 100), nn.Linear(100, 100)
            self.num_features = 100
        elif kind == "cnn":
            self.conv1 = nn.Conv1d(in_chans, 25, 5, stride=2, padding=1)
            self.conv2 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
            self.conv3 = nn.Conv1d(25, 25, 3, stride=2, padding=1)
            length = seq_len
            for conv in (self.conv1, self.conv2, self.conv3):
                length = (length + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            if length < 1:
                raise ValueError(f"seq_len={seq_len} is too short for the CNN's three stride-2 convolutions")
            self.num_features = 25 * length
        else:
            self.gru = nn.GRU(in_chans, 6, batch_first=True, bidirectional=True)
            self.num_features = 2 * 6 * seq_len
        self.head_hidden_size = self.num_features
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self.new_head()

    def forward_features(self, x: Tensor) -> Tensor:
        """Sequences (b, seq_len, in_chans) -> the flat features the head reads (b, num_features)."""
        self.check_input(x, fixed_length=True)
        if self.kind == "logistic":
            return x.flatten(1)
        if self.kind == "mlp":
            h = self.linear1(x.flatten(1)).relu()
            return h + self.linear2(h).relu()
        if self.kind == "cnn":
            h = x.transpose(1, 2)  # (b, C, L): the original's view(-1, 1, L) for one channel
            for conv in (self.conv1, self.conv2, self.conv3):
                h = conv(h).relu()
            return h.flatten(1)
        return self.gru(x)[0].flatten(1)  # the original's zero initial state is the GRU's default

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        features = self.head_drop(x)
        return features if pre_logits else self.head(features)


# ----------------------------------------------------------------------------- registry

default_cfgs = generate_default_cfgs({f"mnist1d_{kind}": sequence_cfg(discretized=False, first_conv="")
                                      for kind in FlatSequenceModel.kinds})


def _build(kind: str, pretrained: bool, kwargs: dict) -> FlatSequenceModel:
    return build_family_model(FlatSequenceModel, f"mnist1d_{kind}", pretrained, **dict(kwargs, kind=kind))


@register_model
def mnist1d_logistic(pretrained: bool = False, **kwargs) -> FlatSequenceModel:
    """MNIST-1D's logistic regression (LinearBase)."""
    return _build("logistic", pretrained, kwargs)


@register_model
def mnist1d_mlp(pretrained: bool = False, **kwargs) -> FlatSequenceModel:
    """MNIST-1D's MLP (MLPBase, hidden 100, one residual layer)."""
    return _build("mlp", pretrained, kwargs)


@register_model
def mnist1d_cnn(pretrained: bool = False, **kwargs) -> FlatSequenceModel:
    """MNIST-1D's CNN (ConvBase, 25 channels)."""
    return _build("cnn", pretrained, kwargs)


@register_model
def mnist1d_gru(pretrained: bool = False, **kwargs) -> FlatSequenceModel:
    """MNIST-1D's GRU (GRUBase, bidirectional, hidden 6, every output flattened)."""
    return _build("gru", pretrained, kwargs)
