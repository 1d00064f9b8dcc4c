"""Published numbers: the Vim paper's (discbench/published/vim_paper.yaml) and how a study's
trials map onto the paper's rows, and MNIST-1D's table (discbench/published/mnist1d.yaml).

The YAML is data with its source; nothing here restates a number. Names of the paper's models
and ablation rows are the YAML's own spellings.
"""

from __future__ import annotations

import functools
import inspect
from importlib import resources
from typing import Any

import yaml

PAPER_ID = "arXiv:2401.09417"
PAPER_FILE = "vim_paper.yaml"

# Our timm model names -> the paper's model names (Table 1).
PUBLISHED_MODEL_NAMES = {
    "vim_tiny_patch16_224": "Vim-Ti",
    "vim_small_patch16_224": "Vim-S",
    "vim_base_patch16_224": "Vim-B",
    "deit_tiny_patch16_224": "DeiT-Ti",
    "deit_small_patch16_224": "DeiT-S",
    "deit_base_patch16_224": "DeiT-B",
}
# The published ImageNet numbers are ImageNet-1K at 224 px.
PUBLISHED_DATASET = "imagenet"
PUBLISHED_IMAGE_SIZE = 224
# Vim's own discretization is Mamba's: exp for A, Euler for B, i.e. our zoh/paper.
VIM_METHOD_KEY = "zoh/paper"

# Table 4 rows by our `bidirectional` model argument (the paper's "bidirectional block" row,
# pairs of blocks with the second run backward, is not a discbench option).
BIDIRECTIONAL_STRATEGIES = {
    "none": "none",
    "ssm": "bidirectional SSM",
    "ssm_conv": "bidirectional SSM + conv1d",
}


def classification_strategy(cls_token: str, pool: str) -> str:
    """Table 5's row name for our (cls_token, pool) model arguments."""
    if cls_token == "none":
        return f"{pool} pool"
    return {"head": "head class token", "double": "double class token",
            "middle": "middle class token"}[cls_token]


@functools.cache
def paper() -> dict[str, Any]:
    """The YAML as a dict (read once from the package data)."""
    text = resources.files("discbench").joinpath("published", PAPER_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def source() -> str:
    return str(paper()["source"])


def label(where: str) -> str:
    """How a published column is labelled, e.g. 'published (arXiv:2401.09417, Table 1)'."""
    return f"published ({PAPER_ID}, {where})"


def imagenet_top1(published_model: str) -> float | None:
    """Table 1's top-1 (%) for a model, the standard 224 px row (rows with a note are variants
    such as long-sequence fine-tuning); None if the paper has no such row."""
    for row in paper()["imagenet_top1"]:
        if row["model"] == published_model and "note" not in row and "image_size" not in row:
            return float(row["top1"])
    return None


def ablation_rows(table: str) -> list[dict[str, Any]]:
    """Rows of 'ablation_bidirectional' (Table 4) or 'ablation_classification' (Table 5)."""
    return [dict(row) for row in paper()[table]]


def efficiency_claim() -> dict[str, Any]:
    """The Figure 1 claim with numbers: Vim-Ti vs DeiT-Ti at the largest resolution."""
    for row in paper()["efficiency_claims"]:
        if "speedup_vs_deit" in row:
            return dict(row)
    raise KeyError(f"{PAPER_FILE} has no efficiency claim with speedup_vs_deit")


MNIST1D_FILE = "mnist1d.yaml"


@functools.cache
def mnist1d() -> dict[str, Any]:
    """MNIST-1D's published table (discbench/published/mnist1d.yaml) as a dict."""
    text = resources.files("discbench").joinpath("published", MNIST1D_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@functools.cache
def vim_defaults() -> dict[str, Any]:
    """Vim's model-argument defaults (cls_token, pool, bidirectional) as our model defines them;
    a trial that does not set one of these uses this value."""
    from ..models.vim import VisionMamba

    signature = inspect.signature(VisionMamba.__init__)
    return {name: signature.parameters[name].default for name in ("cls_token", "pool", "bidirectional")}


def is_vim_model(model: str) -> bool:
    """Whether a model name is one of discbench's Vim models (the ones with Vim's ablation options)."""
    import timm

    from .. import models  # noqa: F401  (registers the Vim models in timm)

    return model in timm.list_models(module="vim")
