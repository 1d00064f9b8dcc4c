"""The size ladder of the 1-D families: every rung registered, its parameter count (the README's
table), the SSD rungs and the references matched to seqmamba's, and the ladder the report reads."""

from __future__ import annotations

import pytest
import timm

from discbench.models import family_names, model_info
from discbench.models.seq import SIZES

# Parameters on MNIST-1D (1 channel, 40 samples, 10 classes); the SSMs without the conv before the
# scan, as the CPU studies train them. The README's ladder table states these numbers.
PARAMETERS = {
    "seqmamba": {"nano": 6_650, "micro": 19_690, "mini": 58_378, "tiny": 129_098, "small": 270_442},
    "seqssd": {"nano": 6_534, "micro": 19_330, "mini": 57_280, "tiny": 126_634, "small": 265_210},
    "seqgru": {"nano": 6_654, "micro": 19_744, "mini": 58_082, "tiny": 128_734, "small": 270_280},
    "seqcnn": {"nano": 6_710, "micro": 19_274, "mini": 59_138, "tiny": 129_734, "small": 271_922},
    "seqtransformer": {"nano": 6_470, "micro": 19_730, "mini": 57_830, "tiny": 129_950, "small": 270_910},
}
SSMS = ("seqmamba", "seqssd")


def _count(family: str, size: str) -> int:
    kwargs = {"conv": "none"} if family in SSMS else {}
    model = timm.create_model(f"{family}_{size}", in_chans=1, seq_len=40, num_classes=10, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", list(PARAMETERS))
def test_every_rung_is_registered_with_its_stated_parameter_count_and_its_ladder(family):
    assert list(PARAMETERS[family]) == list(SIZES)  # every family has every rung, in the ladder's order
    counts = [_count(family, size) for size in SIZES]
    assert counts == list(PARAMETERS[family].values())
    assert counts == sorted(counts) and counts[-1] / counts[0] >= 30  # the span: at least 30×
    for size in SIZES:
        info = model_info(f"{family}_{size}")
        assert (info.ladder, info.discretized) == (family, family in SSMS)
    assert {n for n in family_names("sequence") if model_info(n).ladder == family} == {
        f"{family}_{size}" for size in SIZES}


@pytest.mark.parametrize("size", list(SIZES))
def test_each_rung_matches_seqmamba_s_within_three_percent(size):
    target = PARAMETERS["seqmamba"][size]
    for family in PARAMETERS:
        assert abs(PARAMETERS[family][size] - target) / target < 0.03, family


def test_a_rung_s_arguments_are_defaults_the_caller_overrides():
    model = timm.create_model("seqmamba_nano", depth=3, conv="none")
    assert (model.embed_dim, len(model.layers)) == (SIZES["nano"]["embed_dim"], 3)
    assert timm.create_model("seqmamba_nano").pretrained_cfg["architecture"] == "seqmamba_nano"
    with pytest.raises(ValueError, match="no pretrained weights exist"):
        timm.create_model("seqmamba_nano", pretrained=True)
    assert model_info("vim_micro").ladder is None
