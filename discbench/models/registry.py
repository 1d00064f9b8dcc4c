"""How a model family registers in timm, and what the harness reads of a registered name.

A family states, per registered name, a timm pretrained cfg (`FamilyCfg`: timm's data settings
plus `modality` and `discretized`) in its module's `default_cfgs` (timm's
`generate_default_cfgs`), and builds the model with timm's `build_model_with_cfg`
(`build_family_model`). Config validation, training and trials then ask `model_info(name)`:
a new family is one module that the package imports, nothing else.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, TypeVar, get_args

import timm
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model

Modality = Literal["image", "sequence"]
ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass
class FamilyCfg(PretrainedCfg):
    """timm's pretrained cfg plus what the harness must know before building the model.

    modality: "image" (input (b, C, H, W), input_size (C, H, W)) or "sequence" (input
    (b, L, C); the registered cfg has no input_size, since timm would read it as (C, H, W); the
    built model's states (L, C)). discretized: the model takes `method=`, `variant=` and
    `scan_backend=`. ladder: the family whose size ladder this name is a rung of (`register_ladder`;
    a study that varies model.name over rungs of one ladder has a size axis). The defaults are
    what every other timm model is: an image classifier without a discretization or a ladder.
    """

    modality: Modality = "image"
    discretized: bool = False
    ladder: str | None = None

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


def register_ladder(model_cls: type[ModelT], family: str, sizes: Mapping[str, Mapping[str, Any]],
                    cfg: Callable[..., FamilyCfg], module: str) -> None:
    """Registers one timm entrypoint `<family>_<size>` per rung of a size ladder, in `module`
    (the family's file, as @register_model would): it builds `model_cls` with the rung's
    arguments (`sizes[size]`, overridden by the caller's keyword arguments) and its cfg is
    `cfg(ladder=family)`. The ladder is data: a new size is one entry of `sizes`.
    """
    mod = sys.modules[module]
    names = {size: f"{family}_{size}" for size in sizes}
    mod.default_cfgs = {**getattr(mod, "default_cfgs", {}),
                        **generate_default_cfgs({name: cfg(ladder=family) for name in names.values()})}
    for size, name in names.items():
        rung = dict(sizes[size])

        def entrypoint(pretrained: bool = False, *, _name: str = name, _rung: dict = rung, **kwargs: Any) -> ModelT:
            return build_family_model(model_cls, _name, pretrained, **{**_rung, **kwargs})

        entrypoint.__name__ = entrypoint.__qualname__ = name
        entrypoint.__module__ = module
        entrypoint.__doc__ = f"{family} at size {size}: " + ", ".join(f"{k}={v}" for k, v in rung.items()) + "."
        setattr(mod, name, entrypoint)
        register_model(entrypoint)


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
    ladder: str | None = None


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
    return ModelInfo(cfg.modality, cfg.discretized, cfg.ladder)


def family_names(modality: str | None = None) -> list[str]:
    """The registered names with a FamilyCfg (discbench's families), of `modality` if given."""
    cfgs = ((name, get_pretrained_cfg(name)) for name in timm.list_models())
    return [name for name, cfg in cfgs
            if isinstance(cfg, FamilyCfg) and modality in (None, cfg.modality)]
