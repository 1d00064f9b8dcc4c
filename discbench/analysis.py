"""A study's declared statistical analysis: the optional `analysis:` section of a study file.

    analysis:
      families:                     # the primary comparisons (default: every method against
        - name: transfer at L′=32   #   the baseline at the training length, one family)
          table: transfer           # accuracy (top-1 at the training length) | transfer
          lengths: [32]             # transfer only: evaluation lengths L′ (default: all but L)
          methods: [foh/paper]      # method keys compared to the baseline (default: all)
          models: [vim_micro]       # default: every model
      error_rate: fwer              # fwer: Holm's correction | fdr: Benjamini–Hochberg
      equivalence_margin: 1.0       # points; enables equivalence claims (TOST) within ±margin
      target_mde: 2.0               # points; the report says whether the seeds met it
      divergence_fallback: chance   # a diverged seed's score in the sensitivity Δ:
                                    #   chance (100/num_classes) | last_epoch (its last finite top-1)
      convergence:                  # the rule a finished trial must pass to count as converged:
        window: 0.25                #   over the last quarter of its epochs (at least two), the
        top1_tolerance: 0.5         #   second half's mean validation top-1 differs from the first
        loss_tolerance: 0.02        #   half's by less than 0.5 points (up or down), and its mean
        loss_floor: 0.01            #   training loss by less than 2% (up or down) or the loss
                                    #   ended below 0.01 (a training set fitted)

Validated once, where the study file is read (study.py); the report re-reads it from the
study file kept in results/<study>/study.json (`from_study_source`).
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .methods import METHODS

TABLES = ("accuracy", "transfer")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FamilySpec(_Strict):
    """One declared family of comparisons to the baseline, adjusted together."""

    name: str = Field(min_length=1)
    table: Literal["accuracy", "transfer"] = "accuracy"
    lengths: list[int] | None = Field(None, min_length=1)
    methods: list[str] | None = Field(None, min_length=1)
    models: list[str] | None = Field(None, min_length=1)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str] | None) -> list[str] | None:
        unknown = [m for m in methods or [] if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method key(s) {', '.join(unknown)}; allowed: {', '.join(METHODS)}")
        return methods

    @model_validator(mode="after")
    def _lengths_only_for_transfer(self) -> "FamilySpec":
        if self.lengths is not None and self.table != "transfer":
            raise ValueError(f"family {self.name!r}: lengths apply to table transfer only (got table {self.table})")
        return self


class ConvergenceSpec(_Strict):
    """When a finished trial counts as converged (see the module docstring). With E epochs done,
    w = max(2, ceil(window · E)) epochs in the window and h = w // 2: the mean validation top-1
    of epochs E − h + 1 … E differs from that of the h epochs before by less than top1_tolerance
    (points), and the same halves' mean training loss by less than loss_tolerance of the first
    half's, or the loss ended below loss_floor (nats: a fitted training set, whose tiny loss still
    halves from epoch to epoch). Half-window means, not two single epochs, so that one noisy
    epoch decides nothing. Changes count either way: a loss that jumps up or a top-1 that falls
    is not a converged run. A trial with E < w epochs cannot be judged."""

    window: float = Field(0.25, gt=0, le=1)
    top1_tolerance: float = Field(0.5, gt=0)
    loss_tolerance: float = Field(0.02, gt=0)
    loss_floor: float = Field(0.01, ge=0)


class AnalysisSpec(_Strict):
    """The `analysis:` section (all optional; see the module docstring)."""

    families: list[FamilySpec] = Field(default_factory=list)
    error_rate: Literal["fwer", "fdr"] = "fwer"
    equivalence_margin: float | None = Field(None, gt=0)
    target_mde: float | None = Field(None, gt=0)
    divergence_fallback: Literal["chance", "last_epoch"] = "chance"
    convergence: ConvergenceSpec = Field(default_factory=ConvergenceSpec)

    @field_validator("families")
    @classmethod
    def _unique_names(cls, families: list[FamilySpec]) -> list[FamilySpec]:
        names = [f.name for f in families]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"family name(s) {', '.join(repeated)} used twice")
        return families


class AnalysisError(ValueError):
    """An analysis section that does not validate (the message names the field)."""


def from_study_source(source: str | None) -> AnalysisSpec:
    """The analysis section of a study file's text (the default analysis when there is none)."""
    try:
        raw = yaml.safe_load(source or "") or {}
    except yaml.YAMLError:
        raw = {}
    section = raw.get("analysis") if isinstance(raw, dict) else None
    try:
        return AnalysisSpec.model_validate(section or {})
    except ValidationError as exc:
        problems = "; ".join(f"analysis.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise AnalysisError(problems) from None
