"""What every trial kind provides (`TrialKind`), and the small types its functions share.

A kind's file in discbench/kinds/ defines `KIND = TrialKind(...)`; discbench.kinds collects
them. Nothing outside that file names a kind's run, estimate, quantities or report builders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from pydantic import BaseModel, ConfigDict

# Columns every measurement row has; a quantity adds its own context columns.
MEASUREMENT_BASE_COLUMNS = ("trial_id", "quantity", "name", "value", "unit", "status", "note")


class StrictParams(BaseModel):
    """Base of a kind's parameters model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Events:
    """Callbacks from a running trial to whoever schedules it (all optional)."""

    started: Callable[[int], None] | None = None  # epochs already done (0 = fresh)
    epoch: Callable[[dict], None] | None = None  # the epoch record


class Recorder(Protocol):
    """Where a running trial records what it measures: its folder (the train kind keeps its
    checkpoint there) and its epoch and measurement rows. results.TrialRecorder writes them to
    the trial folder and refuses a measurement of a quantity the kind does not declare."""

    folder: Path

    def reset_epochs(self, keep_through_epoch: int) -> None: ...

    def append_epoch(self, record: dict[str, Any]) -> None: ...

    def reset_measurements(self) -> None: ...

    def append_measurements(self, rows: Iterable[dict[str, Any]]) -> None: ...

    def write_correctness(self, evaluations: Iterable[dict[str, Any]]) -> None:
        """Per-example correctness: {evaluation, length, correct ((N,) bool)} per evaluation."""


@dataclass
class Estimate:
    """Measured cost of a set of trials: total seconds (one trial after another) and how."""

    seconds: float
    how: list[str]


@dataclass(frozen=True)
class Quantity:
    """One measured quantity (the `quantity` column of measurements): what its rows hold
    (`doc`: the names it records, the value's unit) and the context columns they may fill."""

    doc: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class TrialKind:
    """Everything about one kind of trial.

    params: its parameters (the study file's `<name>: {...}` section), None if it has none.
    builds_model: it builds the trial's model (the study checks it can; trial rows name it;
        the device comes from the training recipe).
    trains: it trains (its epochs count in progress; its dataset is checked before the run and
        shown in the trial table and rows).
    run(cfg, trial, record, events) -> trial row update ({"status": ...}); `trial` is the
        trial dict of discbench.trials; the run records its rows (`measurement`) in `record`.
    estimate(trials) -> Estimate, measured on this machine (`discbench run --dry-run`).
    quantities: the measured quantities its rows may have, by name.
    tables, figures: the report builders that show its results, in order: a callable or a
        "module:function" reference (imported when the report is built). A table builder takes
        a report StudyView and returns a report Table, None (nothing to show), or (Table or
        None, a note for the reader); a figure builder takes (view, out_dir) and returns a
        FigureFile or None.
    """

    name: str
    params: type[BaseModel] | None
    builds_model: bool
    trains: bool
    run: Callable[[Any, dict, Recorder, Events], dict]
    estimate: Callable[[list], Estimate]
    quantities: dict[str, Quantity] = field(hash=False)
    tables: tuple[Callable | str, ...] = field(default=())
    figures: tuple[Callable | str, ...] = field(default=())


def measurement(quantity: str, name: str, value: Any, unit: str, **context: Any) -> dict[str, Any]:
    """One measurement row: `value` (in `unit`) of `name` in `quantity`, with its context."""
    return {"quantity": quantity, "name": name, "value": value, "unit": unit, **context}
