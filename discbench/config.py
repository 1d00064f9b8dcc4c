"""One trial's configuration, validated once (pydantic) and then trusted.

A study file expands into TrialConfig dicts; `train.fit` takes a TrialConfig. Unknown keys are
errors (extra="forbid") so that a typo never silently falls back to a default.

The training recipe is `TrainConfig`: a named preset (`PRESETS`) plus any field set explicitly.
Every recipe field defaults to None, meaning "the preset's value"; `TrainConfig.resolved()`
fills them in. None never means "off": switches are spelled out (`clip_grad: 0` turns gradient
clipping off, `auto_augment: "none"` turns RandAugment off, `mixup: 0` and `cutmix: 0` turn
Mixup/CutMix off).
"""

from __future__ import annotations

import json

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .data import DATASETS, DataConfig
from .methods import check_method_name, check_variant, parse_method
from .schema import NO_EFFECT_ON_RESULT, Strict

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


# Trial config keys a study sets at its top level (the rest are study settings).
TRIAL_SECTIONS = ("data", "model", "train", "measure", "seed")

class ModelConfig(Strict):
    name: str = "vim_micro"  # a timm model name (vim_* registered by discbench.models, deit_* by timm)
    patch_size: int | None = Field(None, gt=0)
    scan_backend: str = Field("auto", json_schema_extra=NO_EFFECT_ON_RESULT)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # further create_model arguments


class TrainConfig(Strict):
    """The training recipe: `preset` plus explicit overrides (None = the preset's value).

    Names follow DeiT/Vim's main.py arguments. Learning rate: with `lr_scaling: linear` the
    optimizer's lr is `lr × global_batch / lr_base_batch` (DeiT and Vim: lr 5e-4 per 512 images,
    so 1e-3 at Vim's global batch 1024); with `lr_scaling: none` it is `lr` as given.
    """

    preset: str = "digits"  # a name in PRESETS
    epochs: PositiveInt | None = None
    # auto: cuda when available
    device: Literal["auto", "cpu", "cuda"] | None = Field(None, json_schema_extra=NO_EFFECT_ON_RESULT)
    # optimizer (timm.optim.create_optimizer_v2; no weight decay on biases, norms, embeddings)
    opt: str | None = None
    lr: Positive | None = None
    lr_scaling: Literal["linear", "none"] | None = None
    lr_base_batch: PositiveInt | None = None
    weight_decay: NonNegative | None = None
    opt_eps: Positive | None = None
    opt_betas: tuple[Probability, Probability] | None = None
    momentum: NonNegative | None = None
    clip_grad: NonNegative | None = None  # max gradient norm; 0 = no clipping
    # schedule (timm.scheduler.create_scheduler_v2)
    sched: Literal["cosine", "step", "constant"] | None = None  # timm's names (create_scheduler_v2)
    sched_on_updates: bool | None = None  # False: lr changes once per epoch (DeiT); True: per step
    warmup_epochs: NonNegativeInt | None = None
    warmup_lr: NonNegative | None = None
    min_lr: NonNegative | None = None
    # regularisation and augmentation
    drop_path: Annotated[float, Field(ge=0, lt=1)] | None = None
    drop: Annotated[float, Field(ge=0, lt=1)] | None = None
    smoothing: Annotated[float, Field(ge=0, lt=1)] | None = None
    mixup: NonNegative | None = None  # Beta(α, α) of Mixup; 0 = off
    cutmix: NonNegative | None = None  # Beta(α, α) of CutMix; 0 = off
    mixup_prob: Probability | None = None
    mixup_switch_prob: Probability | None = None
    mixup_mode: Literal["batch", "pair", "elem"] | None = None
    augment: bool | None = None  # False: training images only resized + centre-cropped
    auto_augment: str | None = None  # timm policy string, e.g. rand-m9-mstd0.5-inc1; "none" = off
    color_jitter: NonNegative | None = None  # timm applies it only when auto_augment is off
    hflip: Probability | None = None
    train_interpolation: Literal["bilinear", "bicubic", "random"] | None = None
    reprob: Probability | None = None  # random erasing probability
    remode: Literal["const", "rand", "pixel"] | None = None
    recount: PositiveInt | None = None
    repeated_aug: bool | None = None  # timm RepeatAugSampler, 3 repeats (DeiT)
    eval_crop_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    # model EMA (timm.utils.ModelEmaV3), updated every optimizer step
    model_ema: bool | None = None
    model_ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None
    eval_ema: bool | None = None  # report the EMA weights' accuracy instead of the model's
    amp: Literal["off", "bf16", "fp16"] | None = None  # fp16 needs CUDA (with a GradScaler)
    deterministic: bool | None = None  # torch.use_deterministic_algorithms (bit-exact resume)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown training preset {value!r}; valid presets: {', '.join(PRESETS)}")
        return value

    @field_validator("auto_augment")
    @classmethod
    def _known_auto_augment(cls, value: str | None) -> str | None:
        if value is None or value == "none":
            return value
        # timm's create_transform dispatches on these prefixes (timm.data.auto_augment)
        if not (value.startswith(("rand-", "augmix-")) or value in ("rand", "augmix", "original",
                                                                     "originalr", "v0", "v0r", "3a",
                                                                     "trivialaugment")):
            raise ValueError(f"auto_augment {value!r} is not a timm policy (e.g. 'rand-m9-mstd0.5-inc1', "
                             f"'augmix-m5-w4-d2', 'original', 'v0', '3a', 'trivialaugment') or 'none'")
        return value

    def resolved(self) -> "TrainConfig":
        """This recipe with every None filled from the preset (no field is None afterwards)."""
        values = {**PRESETS[self.preset], **self.model_dump(exclude_none=True)}
        return TrainConfig(**values)


# The DeiT recipe as the Vim paper states it (section 4.1, "following DeiT") with the remaining
# values from Vim's main.py defaults: AdamW, lr 5e-4 per 512 images scaled linearly (1e-3 at the
# paper's global batch 1024), weight decay 0.05, 300 epochs, cosine with 5 warm-up epochs from
# 1e-6 to a minimum of 1e-5 (stepped per epoch), label smoothing 0.1, Mixup 0.8 / CutMix 1.0,
# RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 (pixel mode), repeated augmentation, EMA
# 0.99996, no gradient clipping (Vim passes none), fp32 (Vim's scripts pass --no_amp), drop path
# 0.1 (DeiT-Ti's default), eval centre crop 0.875.
_DEIT = dict(
    epochs=300, device="auto", opt="adamw", lr=5e-4, lr_scaling="linear", lr_base_batch=512,
    weight_decay=0.05, opt_eps=1e-8, opt_betas=(0.9, 0.999), momentum=0.9, clip_grad=0.0,
    sched="cosine", sched_on_updates=False, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5,
    drop_path=0.1, drop=0.0, smoothing=0.1, mixup=0.8, cutmix=1.0, mixup_prob=1.0,
    mixup_switch_prob=0.5, mixup_mode="batch", augment=True, auto_augment="rand-m9-mstd0.5-inc1",
    color_jitter=0.3, hflip=0.5, train_interpolation="bicubic", reprob=0.25, remode="pixel",
    recount=1, repeated_aug=True, eval_crop_ratio=0.875, model_ema=True, model_ema_decay=0.99996,
    eval_ema=False, amp="off", deterministic=False,
)

PRESETS: dict[str, dict[str, Any]] = {
    "deit": _DEIT,
    # Vim's own pre-training scripts (vim/scripts/pt-vim-t.sh, pt-vim-s.sh in hustvl/Vim):
    # Vim-Ti 8 GPUs × 128, drop path 0, weight decay 0.1; Vim-S 8 × 64, --lr 1e-3, drop path 0.05.
    "vim_tiny": {**_DEIT, "weight_decay": 0.1, "drop_path": 0.0},
    "vim_small": {**_DEIT, "lr": 1e-3, "drop_path": 0.05},
    # VSSD-Tiny's recipe (Shi et al. 2024, github YuHengsss/VSSD at 87b753b3: classification/
    # configs/vssd/vssd_tiny_e300.yaml over the defaults of classification/config.py; scaling
    # and EMA in classification/main.py). VSSD-Micro's config trains the same way: it sets only
    # MODEL.DROP_PATH_RATE 0.1, which the model builder does not read (it reads
    # MODEL.VMAMBA2.DROP_PATH_RATE, default 0.2). AdamW (eps 1e-8, betas 0.9/0.999), lr 5e-4 per
    # 512 images scaled linearly, weight decay 0.05, gradient norm clipped at 5, 300 epochs,
    # per-step cosine with 20 warm-up epochs; VSSD also scales warmup_lr 5e-7 and min_lr 5e-6 per
    # 512 images, which this recipe does not, so they are given at the README's global batch of
    # 1024 (8 GPUs × 128): 1e-6 and 1e-5. Drop path 0.2, label smoothing 0.1, Mixup 0.8 / CutMix
    # 1.0, RandAugment rand-m9-mstd0.5-inc1, colour jitter 0.4, random erasing 0.25 (pixel),
    # bicubic, no repeated augmentation (a DistributedSampler), eval resize 256 / crop 224,
    # EMA 0.9999, fp16 autocast with a GradScaler (AMP_ENABLE).
    "vssd": {**_DEIT, "lr": 5e-4, "clip_grad": 5.0, "sched_on_updates": True, "warmup_epochs": 20,
             "warmup_lr": 1e-6, "min_lr": 1e-5, "drop_path": 0.2, "color_jitter": 0.4,
             "repeated_aug": False, "model_ema_decay": 0.9999, "amp": "fp16"},
    # A small fast recipe for sklearn's digits on CPU: plain AdamW with a per-step cosine
    # schedule, label smoothing, no image augmentation, no EMA; deterministic so that a resumed
    # run repeats the uninterrupted one exactly.
    "digits": {**_DEIT, "epochs": 8, "lr": 3e-3, "lr_scaling": "none", "weight_decay": 0.05,
               "clip_grad": 1.0, "sched_on_updates": True, "warmup_epochs": 1, "warmup_lr": 1e-5,
               "min_lr": 1e-5, "drop_path": 0.0, "smoothing": 0.1, "mixup": 0.0, "cutmix": 0.0,
               "augment": False, "auto_augment": "none", "reprob": 0.0, "repeated_aug": False,
               "model_ema": False, "eval_crop_ratio": 1.0, "deterministic": True},
    # MNIST-1D's published recipe (greydanus/mnist1d at 7878d96, notebooks/train.py with the
    # classification notebook's 6000 steps): Adam at a constant 1e-2, no weight decay, batch 100
    # (the study's data.batch_size), 6000 steps = 150 epochs of 4000 signals; no smoothing,
    # clipping, warm-up or EMA. The original walks the training set in order without
    # shuffling; the harness draws a new order every epoch.
    "mnist1d_paper": {**_DEIT, "epochs": 150, "opt": "adam", "lr": 1e-2, "lr_scaling": "none",
                      "weight_decay": 0.0, "sched": "constant", "warmup_epochs": 0, "warmup_lr": 1e-2,
                      "min_lr": 1e-2, "drop_path": 0.0, "smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0,
                      "augment": False, "auto_augment": "none", "reprob": 0.0, "repeated_aug": False,
                      "model_ema": False, "eval_crop_ratio": 1.0, "deterministic": True},
}


class MeasureConfig(Strict):
    throughput: bool = True  # inference images/s after training (first batch size, trained size)
    batch_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [64], min_length=1)
    resolutions: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)
    warmup: int = Field(2, ge=0)  # untimed forward passes before timing
    repeats: int = Field(5, gt=0)  # timed forward passes
    # Sampling-rate transfer (resampling sequence datasets only): after training at length L,
    # top-1 on the same val signals resampled to each length L' with every Δ scaled by L/L'.
    eval_lengths: list[Annotated[int, Field(gt=1)]] = Field(default_factory=list)


class TrialConfig(Strict):
    method: str = "zoh"
    variant: str = "canonical"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)

    @model_validator(mode="before")
    @classmethod
    def _split_method_key(cls, values: Any) -> Any:
        """method "foh/paper" sets both fields (parse_method; another explicit variant is an error)."""
        if isinstance(values, dict) and isinstance(values.get("method"), str):
            name, variant = parse_method(values["method"], values.get("variant"))
            values = {**values, "method": name, "variant": variant}
        return values

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return check_method_name(value)

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        return check_variant(value)

    @property
    def method_key(self) -> str:
        return f"{self.method}/{self.variant}"

    @model_validator(mode="after")
    def _fits_the_data(self) -> "TrialConfig":
        """Options that only make sense for image data (or only for resampling sequence data)."""
        info = DATASETS[self.data.dataset]
        if info.modality == "sequence":
            recipe = self.train.resolved()
            image_only = [f"train.{name}: {value}" for name, value, off in (
                ("augment", recipe.augment, False), ("mixup", recipe.mixup, 0),
                ("cutmix", recipe.cutmix, 0)) if value != off]
            if image_only:
                raise ValueError(f"{', '.join(image_only)}: image augmentations, but dataset "
                                 f"{self.data.dataset!r} is sequence data; set train.augment: false, "
                                 f"train.mixup: 0, train.cutmix: 0 (preset 'digits' has them off)")
            if self.measure.resolutions:
                raise ValueError(f"measure.resolutions is for image data; dataset {self.data.dataset!r} "
                                 f"is sequence data (its throughput is measured at its length)")
        if self.measure.eval_lengths:
            resampling = [name for name, d in DATASETS.items() if d.resamples]
            if not info.resamples:
                raise ValueError(f"measure.eval_lengths {self.measure.eval_lengths}: dataset "
                                 f"{self.data.dataset!r} cannot be resampled to other lengths; "
                                 f"datasets that can: {', '.join(resampling)}")
            if self.data.permute:
                raise ValueError("measure.eval_lengths: a permuted sequence (data.permute: true) has no "
                                 "sampling rate to change; use one or the other")
        return self


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'train.epochs: 1 → 2' for every leaf that differs between two config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += config_differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: {json.dumps(old)} → {json.dumps(new)}"]


def result_neutral_fields(model: type[BaseModel] = TrialConfig, prefix: str = "") -> tuple[str, ...]:
    """Dotted paths ("data.root", …) of the fields marked NO_EFFECT_ON_RESULT, in `model` and
    the config sections nested in it."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if (info.json_schema_extra or {}).get("affects_result") is False:
            paths.append(path)
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            paths += result_neutral_fields(info.annotation, f"{path}.")
    return tuple(paths)


def without_result_neutral(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config dict (TrialConfig's shape) without the result-neutral fields."""
    config = json.loads(json.dumps(config))
    for path in result_neutral_fields():
        *sections, key = path.split(".")
        node = config
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return config
