"""Vision Mamba (Vim, Zhu et al. 2024, bimamba v2) with a selectable SSM discretization.

The architecture follows the upstream Vim configuration used for the paper's Vim-Ti/S/B
(patch embedding, absolute position embedding, class token in the middle of the sequence,
RMSNorm, residual stream in fp32, drop path, and a bidirectional mixer whose two scan
directions have their own conv1d and SSM parameters; the two outputs are averaged). Parameter
names match upstream, so an upstream checkpoint's state dict loads as is. The mixer is
`BiMambaMixer` (discbench/models/mamba.py), run with the configured `method` and `variant`
in both directions.

Registered in timm (importing `discbench.models` registers them):

    timm.create_model("vim_tiny_patch16_224", method="foh", variant="canonical")

Names: vim_tiny_patch16_224, vim_small_patch16_224, vim_base_patch16_224 (D = 192/384/768,
depth 24), and for CPU studies vim_nano (D = 96, depth 6) and vim_micro (D = 48, depth 4),
which default to 32×32 images with 4×4 patches. All accept img_size, patch_size, in_chans.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, lecun_normal_, to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs, register_model

from .mamba import BiMambaMixer
from .registry import build_family_model, image_cfg
from .stack import MixerStack, check_choice, mixer_blocks

Tensor = torch.Tensor

CLS_TOKEN_CHOICES = ("middle", "head", "double", "none")


class VisionMamba(MixerStack):
    """Vim: images (b, in_chans, H, W) -> logits (b, num_classes).

    cls_token: "middle" (Vim: one class token inserted at position M//2 of the M patch tokens),
    "head" (at position 0), "double" (at both ends, their outputs averaged), "none" (pool all
    tokens). pool: with cls_token="none", "mean" averages the token features before the head;
    "max" applies the head to every token and takes the max over tokens (the paper's "max pool",
    as in the upstream code). drop_rate: dropout after the position embedding (upstream's
    pos_drop). drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks.
    bidirectional, conv, dt_min, dt_max, method, variant, scan_backend: passed to every
    BiMambaMixer (conv "causal" or "none"; Mamba's Δ initialisation range).
    """

    pool_choices = ("mean", "max")

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        cls_token: str = "middle",
        pool: str = "mean",
        bidirectional: str = "ssm_conv",
        conv: str = "causal",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        method: str = "zoh",
        variant: str = "canonical",
        scan_backend: str = "auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
    ):
        img_hw, patch_hw = to_2tuple(img_size), to_2tuple(patch_size)
        super().__init__(num_classes=num_classes, embed_dim=embed_dim, pool=pool, method=method, variant=variant,
                         drop_rate=drop_rate, drop_path_rate=drop_path_rate, depth=depth, d_state=d_state,
                         expand=expand, d_conv=d_conv, in_chans=in_chans, img_size=min(img_hw),
                         patch_size=min(patch_hw))
        check_choice("cls_token", cls_token, CLS_TOKEN_CHOICES)
        if any(i % p for i, p in zip(img_hw, patch_hw)):
            raise ValueError(f"img_size {img_hw} must be a multiple of patch_size {patch_hw}")
        self.cls_token_mode = cls_token

        self.patch_embed = PatchEmbed(img_size=img_hw, patch_size=patch_hw, in_chans=in_chans,
                                      embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        if cls_token == "double":
            self.cls_token_head = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.cls_token_tail = nn.Parameter(torch.zeros(1, 1, embed_dim))
        elif cls_token != "none":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.num_prefix_tokens = {"none": 0, "double": 2}.get(cls_token, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        self.layers = mixer_blocks(embed_dim, depth, drop_path_rate, norm_eps, residual_in_fp32, BiMambaMixer,
                                   d_state=d_state, d_conv=d_conv, expand=expand, dt_min=dt_min,
                                   dt_max=dt_max, bidirectional=bidirectional, conv=conv,
                                   method=self.method, variant=self.variant, scan_backend=scan_backend)
        self.norm_f = nn.RMSNorm(embed_dim, eps=norm_eps)
        self.head = self.new_head()
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """Upstream Vim's initialisation (its segm_init_weights followed by Mamba's _init_weights)."""
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        self._init_head()
        trunc_normal_(self.pos_embed, std=0.02)
        for name in self._cls_token_names():
            trunc_normal_(getattr(self, name), std=0.02)
        self._init_residual_projections(depth)

    def _cls_token_names(self) -> tuple[str, ...]:
        return {"none": (), "double": ("cls_token_head", "cls_token_tail")}.get(
            self.cls_token_mode, ("cls_token",))

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(in_chans, H, W) as built."""
        return (self.patch_embed.proj.in_channels, *self.patch_embed.img_size)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Full names of parameters exempt from weight decay: position embedding, class tokens, A_log, D."""
        return {"pos_embed", *self._cls_token_names(), *super().no_weight_decay()}

    # -- forward -------------------------------------------------------------------------

    def _class_token_positions(self, num_patches: int) -> list[int]:
        return {"middle": [num_patches // 2], "head": [0], "double": [0, num_patches + 1],
                "none": []}[self.cls_token_mode]

    def _insert_class_tokens(self, x: Tensor) -> Tensor:
        """(b, M, D) patch tokens -> (b, M + num_prefix_tokens, D) with the class token(s) placed."""
        batch, num_patches = x.shape[:2]
        if self.cls_token_mode == "double":
            head = self.cls_token_head.expand(batch, -1, -1)
            tail = self.cls_token_tail.expand(batch, -1, -1)
            return torch.cat([head, x, tail], dim=1)
        if self.cls_token_mode == "none":
            return x
        (position,) = self._class_token_positions(num_patches)
        cls = self.cls_token.expand(batch, -1, -1)
        return torch.cat([x[:, :position], cls, x[:, position:]], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (b, C, H, W) -> normalised token features (b, M + num_prefix_tokens, D)."""
        x = self._insert_class_tokens(self.patch_embed(x))
        return self.run_blocks(self.pos_drop(x + self.pos_embed))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Token features (b, L, D) -> logits (b, num_classes), or with pre_logits what the head reads.

        pre_logits gives (b, D) — the class token(s) or the mean-pooled tokens — except for
        pool="max" without class token, where the head reads every token: (b, L, D).
        """
        positions = self._class_token_positions(x.shape[1] - self.num_prefix_tokens)
        if positions:
            features = torch.stack([x[:, p] for p in positions]).mean(0)
        elif self.pool == "mean":
            features = x.mean(dim=1)
        else:
            features = x
        if pre_logits:
            return features
        logits = self.head(features)
        return logits.amax(dim=1) if features.dim() == 3 else logits


# ----------------------------------------------------------------------------- registry

default_cfgs = generate_default_cfgs({
    "vim_tiny_patch16_224": image_cfg(224),
    "vim_small_patch16_224": image_cfg(224),
    "vim_base_patch16_224": image_cfg(224),
    "vim_nano": image_cfg(32),
    "vim_micro": image_cfg(32),
})


@register_model
def vim_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-Ti: D = 192, depth 24, d_state 16 (7.15 M parameters with 1000 classes)."""
    model_args = dict(img_size=224, patch_size=16, embed_dim=192, depth=24, d_state=16)
    return build_family_model(VisionMamba, "vim_tiny_patch16_224", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_small_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-S: D = 384, depth 24, d_state 16 (25.8 M parameters with 1000 classes)."""
    model_args = dict(img_size=224, patch_size=16, embed_dim=384, depth=24, d_state=16)
    return build_family_model(VisionMamba, "vim_small_patch16_224", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_base_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-B: D = 768, depth 24, d_state 16 (97.6 M parameters with 1000 classes)."""
    model_args = dict(img_size=224, patch_size=16, embed_dim=768, depth=24, d_state=16)
    return build_family_model(VisionMamba, "vim_base_patch16_224", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_nano(pretrained: bool = False, **kwargs) -> VisionMamba:
    """CPU-study size: D = 96, depth 6, d_state 16; 32×32 images, 4×4 patches by default."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=96, depth=6, d_state=16)
    return build_family_model(VisionMamba, "vim_nano", pretrained, **dict(model_args, **kwargs))


@register_model
def vim_micro(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Test/CPU-study size: D = 48, depth 4, d_state 16; 32×32 images, 4×4 patches by default."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=48, depth=4, d_state=16)
    return build_family_model(VisionMamba, "vim_micro", pretrained, **dict(model_args, **kwargs))
