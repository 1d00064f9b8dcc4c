"""Models of discbench. Importing this package registers the Vim, SSD and sequence families in timm."""

from .seq import SEQ_CONFIGS, SequenceMamba
from .ssd import SEQSSD_CONFIGS, VSSD_CONFIGS, BiSSDMixer, SequenceSSD, VisionSSD
from .vim import VIM_CONFIGS, BiMambaMixer, MixerStack, VimBlock, VisionMamba

VIM_MODEL_NAMES = tuple(VIM_CONFIGS) + tuple(VSSD_CONFIGS)  # images (b, 3, H, W)
SEQ_MODEL_NAMES = tuple(SEQ_CONFIGS) + tuple(SEQSSD_CONFIGS)  # sequences (b, L, channels)
# Names that take discbench's discretization arguments (discretization, variant, scan_backend);
# every other timm name (e.g. the DeiT baselines) takes timm's own only.
DISCRETIZED_MODEL_NAMES = VIM_MODEL_NAMES + SEQ_MODEL_NAMES

__all__ = ["VisionMamba", "SequenceMamba", "VimBlock", "BiMambaMixer", "MixerStack", "VIM_CONFIGS",
           "SEQ_CONFIGS", "VIM_MODEL_NAMES", "SEQ_MODEL_NAMES", "DISCRETIZED_MODEL_NAMES",
           "VisionSSD", "SequenceSSD", "BiSSDMixer", "VSSD_CONFIGS", "SEQSSD_CONFIGS"]
