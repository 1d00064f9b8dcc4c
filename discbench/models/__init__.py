"""Models of discbench. Importing this package registers the Vim and SSD families in timm."""

from .ssd import VSSD_CONFIGS, BiSSDMixer, VisionSSD
from .vim import VIM_CONFIGS, BiMambaMixer, VimBlock, VisionMamba

# Names that take discbench's discretization arguments; every other timm name (e.g. the DeiT
# baselines) takes timm's own arguments only.
VIM_MODEL_NAMES = tuple(VIM_CONFIGS) + tuple(VSSD_CONFIGS)

__all__ = ["VisionMamba", "VimBlock", "BiMambaMixer", "VIM_CONFIGS", "VIM_MODEL_NAMES",
           "VisionSSD", "BiSSDMixer", "VSSD_CONFIGS"]
