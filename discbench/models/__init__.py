"""Models of discbench. Importing this package imports every module in it, so each model family
registers itself in timm.

A family is one module here: a `MixerStack` subclass, its names registered with timm
(`default_cfgs` of `FamilyCfg`s stating modality and discretization, entrypoints built with
`build_family_model`). What the harness needs of a name is `model_info(name)`.
"""

import importlib
import pkgutil

from .mamba import BiMambaMixer
from .registry import FamilyCfg, ModelInfo, build_family_model, family_names, image_cfg, model_info, sequence_cfg
from .seq import SequenceMamba
from .ssd import BiSSDMixer, SequenceSSD, VisionSSD
from .stack import MixerStack, VimBlock, mixer_blocks
from .vim import VisionMamba

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MixerStack", "VimBlock", "mixer_blocks", "BiMambaMixer", "BiSSDMixer", "VisionMamba", "SequenceMamba",
           "VisionSSD", "SequenceSSD", "FamilyCfg", "ModelInfo", "build_family_model", "image_cfg", "sequence_cfg",
           "model_info", "family_names"]
