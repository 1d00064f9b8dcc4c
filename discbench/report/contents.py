"""What a report holds: every trial kind's declared tables and figures (TrialKind.tables and
.figures, in registry order; a builder that two kinds declare runs once), then the table of
missing trials. A builder returns nothing when the study has no data for it, so a study's
report shows what its trials measured."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from ..kinds import TRIAL_KINDS
from .figures import FigureFile
from .study_view import StudyView
from .tables import Table, missing_table


def resolve_builder(builder: Callable | str) -> Callable:
    """A declared builder: the callable itself, or "module:function" imported."""
    if callable(builder):
        return builder
    module, _, name = builder.partition(":")
    found = getattr(importlib.import_module(module), name, None)
    if not callable(found):
        raise ValueError(f"report builder {builder!r} (declared by a trial kind) is not a function "
                         f"in {module}")
    return found


def _declared(attribute: str) -> list[Callable]:
    builders: list[Callable] = []
    for kind in TRIAL_KINDS.values():
        for builder in map(resolve_builder, getattr(kind, attribute)):
            if builder not in builders:
                builders.append(builder)
    return builders


def build_tables(view: StudyView) -> tuple[list[Table], list[str]]:
    """Every table the study has data for, and a note for each comparison it cannot make."""
    tables: list[Table] = []
    notes: list[str] = []
    for builder in _declared("tables"):
        built = builder(view)
        if isinstance(built, tuple):  # (table or None, a note for the reader)
            built, note = built
            if note:
                notes.append(note)
        if built is not None:
            tables.append(built)
    missing = missing_table(view)
    if missing is not None:
        tables.append(missing)
    return tables, notes


def build_figures(view: StudyView, out_dir: Path) -> list[FigureFile]:
    """Every figure the study has data for, saved under out_dir."""
    return [f for f in (builder(view, out_dir) for builder in _declared("figures")) if f is not None]
