"""Non-SSM reference models for sequence data, to stand beside every SSM number.

A reader of "method X beats zoh/paper by 2 points" must also see what a model without any
discretization gets on the same data with the same recipe. These are those models, registered in
timm like every family (`FamilyCfg(modality="sequence", discretized=False)`), so a study lists them
under `model.name` and the harness trains them exactly as it trains seqmamba.

    timm.create_model("seqgru_micro", in_chans=1, seq_len=40, num_classes=10)

seqgru: input (b, L, in_chans) -> one-layer nn.GRU (hidden_size H) -> the last token's hidden
state ("last") or the mean over tokens ("mean") -> Linear head. No input projection: the GRU's
own input weights are that. Sizes are matched in parameters to the seqmamba size of the same
name without its conv (the conv-free model the default study trains), on MNIST-1D's one channel
and 10 classes: one rung per seqmamba size (`SIZES`, seqgru_nano … seqgru_small).
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

from .registry import register_ladder, sequence_cfg
from .stack import check_choice

Tensor = torch.Tensor


class SequenceClassifier(nn.Module):
    """Base of the non-SSM sequence classifiers: (b, L, in_chans) -> logits (b, num_classes).

    Checks what the harness passes every model (seq_len, in_chans, num_classes, drop_rate,
    drop_path_rate: these models have no residual path to drop, so it must be 0) and gives
    timm's classifier interface and the head: the last token's features ("last") or their mean
    over tokens ("mean"), dropout, Linear. A subclass builds its layers after
    `super().__init__(...)`, sets `num_features` (the head's input width), builds `self.head` with
    `new_head()` and implements `forward_features`.
    """

    pool_choices: tuple[str, ...] = ()

    def __init__(self, seq_len: int, in_chans: int, num_classes: int, drop_rate: float, drop_path_rate: float,
                 pool: str | None = None, **sizes: int):
        super().__init__()
        if pool is not None:
            check_choice("pool", pool, self.pool_choices)
        for name, value in {"seq_len": seq_len, "in_chans": in_chans, **sizes}.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if drop_path_rate != 0.0:
            raise ValueError(f"drop_path_rate must be 0 for {type(self).__name__} (no residual path to drop), "
                             f"got {drop_path_rate}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.seq_len, self.in_chans, self.num_classes, self.pool = seq_len, in_chans, num_classes, pool
        self.head_drop = nn.Dropout(drop_rate)

    @property
    def input_size(self) -> tuple[int, int]:
        """(seq_len, in_chans): the length it was built for and the channels."""
        return (self.seq_len, self.in_chans)

    def check_input(self, x: Tensor, fixed_length: bool = False) -> None:
        """A clear error unless x is (b, L, in_chans) (and L = seq_len for a model built for one length)."""
        if x.dim() != 3 or x.shape[-1] != self.in_chans or (fixed_length and x.shape[1] != self.seq_len):
            length = self.seq_len if fixed_length else "length"
            raise ValueError(f"expected sequences (batch, {length}, {self.in_chans}), got {tuple(x.shape)}")

    def new_head(self) -> nn.Module:
        return nn.Linear(self.num_features, self.num_classes) if self.num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Features (b, L, W) -> logits (b, num_classes), or with pre_logits the pooled (b, W)."""
        features = self.head_drop(x[:, -1] if self.pool == "last" else x.mean(dim=1))
        return features if pre_logits else self.head(features)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            check_choice("global_pool", global_pool, self.pool_choices)
            self.pool = global_pool
        self.num_classes = num_classes
        self.head = self.new_head()


class SequenceGRU(SequenceClassifier):
    """Sequences (b, L, in_chans) -> logits (b, num_classes) through one GRU layer.

    hidden_size: the GRU's state width H. pool: "last" (the final hidden state, the usual GRU
    classifier) or "mean" (over every token's output). drop_rate: dropout before the head.
    """

    pool_choices = ("last", "mean")
    width_arg = "hidden_size"  # what `discbench bench train` varies to match another model's parameters

    def __init__(self, seq_len: int = 40, in_chans: int = 1, num_classes: int = 10, hidden_size: int = 78,
                 pool: str = "last", drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__(seq_len, in_chans, num_classes, drop_rate, drop_path_rate, pool=pool,
                         hidden_size=hidden_size)
        self.num_features = self.head_hidden_size = hidden_size
        self.rnn = nn.GRU(in_chans, hidden_size, batch_first=True)
        self.head = self.new_head()

    def forward_features(self, x: Tensor) -> Tensor:
        """Sequences (b, L, in_chans) -> every token's hidden state (b, L, H)."""
        self.check_input(x)
        return self.rnn(x)[0]


# ----------------------------------------------------------------------------- registry

# One rung per seqmamba size (seq.SIZES), H chosen so the parameters on MNIST-1D match the conv-free
# seqmamba of the same name (tests/test_ladder.py): nano 6,654 (against 6,650), micro 19,744
# (19,690), mini 58,082 (58,378), tiny 128,734 (129,098), small 270,280 (270,442).
SIZES = {"nano": dict(hidden_size=44), "micro": dict(hidden_size=78), "mini": dict(hidden_size=136),
         "tiny": dict(hidden_size=204), "small": dict(hidden_size=297)}
register_ladder(SequenceGRU, "seqgru", SIZES, functools.partial(sequence_cfg, discretized=False, first_conv="rnn"),
                __name__)
