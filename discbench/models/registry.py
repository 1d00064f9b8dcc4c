"""How a model family registers in timm, and what the harness reads of a registered name.

A family states, per registered name, a timm pretrained cfg (`FamilyCfg`: timm's data settings
plus `modality` and `discretized`) in its module's `default_cfgs` (timm's
`generate_default_cfgs`), and builds the model with timm's `build_model_with_cfg`
(`build_family_model`). Config validation, training and trials then ask `model_info(name)`:
a new family is one module that the package imports, nothing else.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

import timm
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import PretrainedCfg, build_model_with_cfg, get_pretrained_cfg

Modality = Literal["image", "sequence"]
ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass
class FamilyCfg(PretrainedCfg):
    """timm's pretrained cfg plus what the harness must know before building the model.

    modality: "image" (input (b, C, H, W), input_size (C, H, W)) or "sequence" (input
    (b, L, C); the registered cfg has no input_size, since timm would read it as (C, H, W); the
    built model's states (L, C)). discretized: the model takes `method=`, `variant=` and
    `scan_backend=`. The defaults are what every other timm model is: an image classifier
    without a discretization.
    """

    modality: Modality = "image"
    discretized: bool = False

    def __post_init__(self) -> None:
        if self.modality not in get_args(Modality):
            raise ValueError(f"modality={self.modality!r} is not valid; choose one of: "
                             f"{', '.join(get_args(Modality))}")


def image_cfg(img_size: int, **kwargs: Any) -> FamilyCfg:
    """A discretized image family's cfg for square `img_size`-pixel images with ImageNet's
    normalisation; no weights exist (no url, no hub id)."""
    return FamilyCfg(input_size=(3, img_size, img_size), num_classes=1000, interpolation="bicubic",
                     crop_pct=0.9 if img_size >= 224 else 1.0, mean=IMAGENET_DEFAULT_MEAN,
                     std=IMAGENET_DEFAULT_STD, first_conv="patch_embed.proj", classifier="head",
                     fixed_input_size=True, modality="image", discretized=True, **kwargs)


def sequence_cfg(num_classes: int = 10, discretized: bool = True, first_conv: str = "in_proj",
                 **kwargs: Any) -> FamilyCfg:
    """A sequence family's cfg (no image settings; discretized unless said otherwise); no weights exist."""
    return FamilyCfg(input_size=None, num_classes=num_classes, first_conv=first_conv, classifier="head",
                     fixed_input_size=False, interpolation=None, crop_pct=None, crop_mode=None, mean=None,
                     std=None, modality="sequence", discretized=discretized, **kwargs)


def build_family_model(model_cls: type[ModelT], name: str, pretrained: bool, **kwargs: Any) -> ModelT:
    """timm's build_model_with_cfg for registered `name` (its FamilyCfg), with its pretrained_cfg
    then stating the classes and per-item input size the model was built with (model.input_size).

    `pretrained` is refused before anything is built: no weights exist and nothing is ever
    downloaded (timm.create_model(..., checkpoint_path=...) loads a local checkpoint).
    """
    if pretrained:
        raise ValueError(
            f"{name}: no pretrained weights exist for discbench's models and nothing is ever "
            "downloaded; use pretrained=False (with timm.create_model(..., checkpoint_path=...) "
            "to load a local checkpoint)")
    if "variant" in kwargs:  # build_model_with_cfg's `variant` is the model name: bind the method's here
        model_cls = functools.partial(model_cls, variant=kwargs.pop("variant"))
    model = build_model_with_cfg(model_cls, name, pretrained=False, **kwargs)
    model.pretrained_cfg.update(num_classes=model.num_classes, input_size=tuple(model.input_size))
    return model


@dataclass(frozen=True)
class ModelInfo:
    """What the harness reads of a registered model name (see FamilyCfg)."""

    modality: Modality
    discretized: bool


def model_info(name: str) -> ModelInfo:
    """The modality and discretization of timm model `name`: a discbench family's as its
    FamilyCfg states, else those of timm's own models (an image classifier, no discretization).

    Raises ValueError for a name timm does not know.
    """
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(family_names())} or a timm model "
                         "(e.g. deit_tiny_patch16_224)")
    cfg = get_pretrained_cfg(name)
    if not isinstance(cfg, FamilyCfg):
        cfg = FamilyCfg()
    return ModelInfo(cfg.modality, cfg.discretized)


def family_names(modality: str | None = None) -> list[str]:
    """The registered names with a FamilyCfg (discbench's families), of `modality` if given."""
    cfgs = ((name, get_pretrained_cfg(name)) for name in timm.list_models())
    return [name for name, cfg in cfgs
            if isinstance(cfg, FamilyCfg) and modality in (None, cfg.modality)]
