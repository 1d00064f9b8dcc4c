"""One trial's configuration, validated once (pydantic) and then trusted.

A study file expands into TrialConfig dicts; `train.fit` takes a TrialConfig. Unknown keys are
errors (extra="forbid") so that a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .methods import METHOD_NAMES, VARIANTS, parse_method

DATASETS = ("digits", "synthetic", "cifar10", "cifar100", "imagefolder", "imagenet",
            "tiny_imagenet", "imagenette")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    dataset: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
    root: str | None = None  # where the user's dataset lives (not needed for digits/synthetic)
    image_size: int = Field(16, gt=0)  # pixels, square
    num_classes: int | None = Field(None, gt=1)  # synthetic only; others know their classes
    train_limit: int | None = Field(None, gt=0)  # use only the first N training images
    val_limit: int | None = Field(None, gt=0)
    batch_size: int = Field(64, gt=0)  # per data-parallel worker
    eval_batch_size: int | None = Field(None, gt=0)
    workers: int = Field(0, ge=0)  # DataLoader worker processes


class ModelConfig(Strict):
    name: str = "vim_micro"  # a timm model name (vim_* registered by discbench.models, deit_* by timm)
    patch_size: int | None = Field(None, gt=0)
    scan_backend: str = "auto"
    kwargs: dict[str, Any] = Field(default_factory=dict)  # further create_model arguments


class TrainConfig(Strict):
    preset: str = "digits"  # named recipe (train.PRESETS); fields set here override it
    epochs: int = Field(10, gt=0)
    overrides: dict[str, Any] = Field(default_factory=dict)


class MeasureConfig(Strict):
    throughput: bool = True  # inference images/s after training
    batch_sizes: list[int] = Field(default_factory=lambda: [64])
    resolutions: list[int] = Field(default_factory=list)


class TrialConfig(Strict):
    method: str = "zoh"
    variant: str = "canonical"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        name, _ = parse_method(value)
        if name not in METHOD_NAMES:
            raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHOD_NAMES)}")
        return name

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        if value not in VARIANTS:
            raise ValueError(f"unknown variant {value!r}; valid variants: {', '.join(VARIANTS)}")
        return value

    @property
    def method_key(self) -> str:
        return f"{self.method}/{self.variant}"
