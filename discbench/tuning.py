"""The tuning stage's data: a study's optional `tune:` section and the lock file `discbench tune`
(discbench/tuner.py) writes.

    tune:
      space:                                # dotted trial config keys and how to draw them
        train.lr: {log_uniform: [1e-3, 3e-2]}
        train.weight_decay: {log_uniform: [1e-3, 0.3]}
        train.warmup_epochs: {choice: [0, 1, 2]}
      search: stratified    # stratified: `samples` Latin-hypercube draws (the default) | random: `samples`
                            # independent draws | grid: every combination of `choice` values
      samples: 8            # configurations per arm (stratified and random search)
      search_seed: 0        # the draws; the same candidates for every arm
      seed: 1000            # the training seed of every candidate; the study's seeds must differ
      asha: {grace_period: 3, reduction_factor: 3}   # early stopping (Ray Tune's ASHA); null: none

An arm is one trial of the study without its seed (a method, with whatever else the grid
varies). `discbench tune STUDY` (discbench/tuner.py) tries every arm's candidates on the
validation split and writes the lock file `studies/<name>.tuned.yaml` beside the study
(`lock_path`): each arm's chosen values with their validation top-1, every candidate's score, the
space, the budget, the seed and the commit. `discbench run` applies an arm's chosen values to its
trials (study.py; `-o` overrides still win), with the study's own seeds; a study with `tune:` but
no lock file runs untuned, and its report says so.

Why stratified is the default: eight independent log-uniform draws can leave whole decades empty
(Ray's random search with seed 0 put 7 of 8 learning rates above 1e-2 and none between 0.0023 and
0.0115, for every arm of every study). A Latin hypercube cuts each numeric key's range into
`samples` equal strata (equal in log for log_uniform) and puts exactly one candidate in each, so
the candidates cover every key's range evenly whatever the seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

LOCK_SUFFIX = ".tuned.yaml"
METRIC = "val_top1"  # validation top-1 (%), the only metric tuning reads


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Strict):
    """How one key is drawn: exactly one of log_uniform [lo, hi], uniform [lo, hi], choice [values]."""

    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    choice: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Distribution":
        given = [k for k in ("log_uniform", "uniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of log_uniform: [lo, hi], uniform: [lo, hi], choice: [...]; "
                             f"got {', '.join(given) or 'none'}")
        bounds = self.log_uniform or self.uniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"bounds [lo, hi] need lo < hi; got {list(bounds)}")
        if self.log_uniform is not None and self.log_uniform[0] <= 0:
            raise ValueError(f"log_uniform needs positive bounds; got {list(self.log_uniform)}")
        return self

    def ray(self) -> Any:
        """The Ray Tune search-space object."""
        from ray import tune

        if self.log_uniform is not None:
            return tune.loguniform(*self.log_uniform)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        return tune.choice(self.choice)


class AshaSpec(_Strict):
    """ASHA's rungs: every candidate trains grace_period epochs; at each rung (grace_period ×
    reduction_factor^k epochs) only the best 1/reduction_factor of the arm's candidates go on."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


class TuneSpec(_Strict):
    """A study's `tune:` section (see the module docstring)."""

    space: dict[str, Distribution] = Field(min_length=1)
    search: Literal["stratified", "random", "grid"] = "stratified"
    samples: int = Field(8, ge=1)
    search_seed: int = 0
    seed: int = 1000
    asha: AshaSpec | None = Field(default_factory=AshaSpec)

    @model_validator(mode="after")
    def _keys_and_search(self) -> "TuneSpec":
        from .config import TRIAL_SECTIONS

        for key in self.space:
            head = key.split(".")[0]
            if head not in TRIAL_SECTIONS or head == "seed":
                raise ValueError(f"space.{key}: not a tunable trial config key; a key under "
                                 f"{', '.join(s for s in TRIAL_SECTIONS if s != 'seed')} (e.g. train.lr)")
        if self.search == "grid":
            drawn = [k for k, d in self.space.items() if d.choice is None]
            if drawn:
                raise ValueError(f"search grid: space.{drawn[0]} needs choice: [...] (a grid enumerates "
                                 f"values; log_uniform and uniform are for search random)")
        return self

    def candidates_per_arm(self) -> int:
        if self.search == "grid":
            return math.prod(len(d.choice) for d in self.space.values())
        return self.samples

    def stratified_points(self) -> list[dict[str, Any]]:
        """The `samples` candidates of search stratified (a Latin hypercube), sorted by the first key.

        Each log_uniform / uniform key's range is cut into `samples` equal strata (in log10 for
        log_uniform); each stratum holds exactly one candidate, at a uniformly drawn position inside
        it. A choice key takes its values in turn, so each is used ⌊samples/n⌋ or ⌈samples/n⌉ times.
        Which stratum of one key meets which of another is a random permutation per key. All draws
        come from search_seed, so every arm gets the same candidates."""
        import numpy as np

        rng = np.random.default_rng(self.search_seed)
        n = self.samples
        columns: dict[str, list[Any]] = {}
        for i, (key, d) in enumerate(self.space.items()):
            order = np.arange(n) if i == 0 else rng.permutation(n)
            if d.choice is not None:
                columns[key] = [d.choice[k % len(d.choice)] for k in order]
                continue
            u = (order + rng.uniform(size=n)) / n  # one point per stratum [k/n, (k+1)/n)
            if d.log_uniform is not None:
                lo, hi = np.log10(d.log_uniform)
                columns[key] = [float(10 ** (lo + x * (hi - lo))) for x in u]
            else:
                lo, hi = d.uniform
                columns[key] = [float(lo + x * (hi - lo)) for x in u]
        return [{key: columns[key][j] for key in self.space} for j in range(n)]


class Candidate(_Strict):
    """One configuration tried on one arm: its values, the last validation top-1 it reported,
    the epochs it trained and how it ended (finished | stopped: by ASHA | diverged | failed)."""

    values: dict[str, Any]
    val_top1: float | None
    epochs: int
    status: Literal["finished", "stopped", "diverged", "failed"]


class ArmChoice(_Strict):
    method: str
    chosen: dict[str, Any]
    val_top1: float
    epochs_spent: int  # epochs trained over all candidates: the arm's actual cost
    candidates: list[Candidate]


class TuningLock(_Strict):
    """The lock file: what `discbench tune` chose per arm, and how."""

    study: str
    created: str
    commit: str
    device: str
    metric: Literal["val_top1"] = METRIC
    tune: TuneSpec
    epochs: int  # every candidate's full budget (the study's train.epochs)
    tuning_seconds: float  # wall time spent tuning its arms, over the invocations that tuned them
    arms: dict[str, ArmChoice]


def lock_path(study_file: Path) -> Path:
    """studies/<name>.yaml -> studies/<name>.tuned.yaml."""
    return Path(study_file).with_name(Path(study_file).stem + LOCK_SUFFIX)


def read_lock(path: Path) -> TuningLock:
    """The validated lock file; ValueError naming the file and the field otherwise."""
    try:
        return TuningLock.model_validate(yaml.safe_load(Path(path).read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not a valid tuning lock file (written by discbench tune): {exc}") from None


def parse_lock_text(text: str | None) -> TuningLock | None:
    """A lock kept as text (results/<study>/study.json), or None."""
    return TuningLock.model_validate(yaml.safe_load(text)) if text else None


__all__ = ["TuneSpec", "TuningLock", "ArmChoice", "Candidate", "Distribution", "AshaSpec", "lock_path",
           "read_lock", "parse_lock_text", "LOCK_SUFFIX", "METRIC"]
