"""`discbench report`: tables and figures for a paper, computed from results/ only.

    discbench report [STUDY ...] [--format md,tex,csv,html] [--out DIR] [--results-dir DIR]

writes reports/<study>/: one .md/.tex/.csv per table, fig_*.png and .svg, index.md and a
self-contained report.html. STUDY is a name under --results-dir or a path to a results folder;
without one, every study under --results-dir is reported.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..results import STUDY_FILE, TRIALS_DIR, TRIALS_TABLE, ResultsError, StudyResults, consolidate, \
    list_studies, load_study

FORMATS = ("md", "tex", "csv", "html")


@dataclass
class ReportFiles:
    """What `build_report` wrote: the folder, every file, the comparisons it could not make,
    and its findings in words (findings.accuracy_findings)."""

    out_dir: Path
    files: list[Path]
    notes: list[str]
    findings: list[str]


def parse_formats(text: str) -> set[str]:
    formats = {f.strip().lower() for f in text.split(",") if f.strip()}
    unknown = formats - set(FORMATS)
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"--format {text!r}: unknown format(s) {', '.join(sorted(unknown)) or '(none given)'}; "
            f"valid formats: {', '.join(FORMATS)} (comma-separated)")
    return formats


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("studies", nargs="*", metavar="STUDY",
                        help="study names under --results-dir or paths to results folders (default: all)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where studies' results live (default: ./results)")
    parser.add_argument("--out", type=Path, default=Path("reports"),
                        help="where reports go; each study gets <out>/<study>/ (default: ./reports)")
    parser.add_argument("--format", type=parse_formats, default=set(FORMATS), dest="formats",
                        help="comma-separated subset of md,tex,csv,html (default: all); figures are "
                             "always written as PNG and SVG")


def resolve_studies(names: list[str], results_dir: Path) -> list[Path]:
    """Result folders for the given names/paths, or every study under results_dir."""
    if not names:
        studies = list_studies(results_dir)
        if not studies:
            raise ResultsError(f"no studies in {results_dir}: no sub-folder has a {STUDY_FILE} "
                               f"(run one with `discbench run studies/<study>.yaml`)")
        return studies
    paths = []
    for name in names:
        as_path = Path(name)
        if (as_path / STUDY_FILE).exists():
            paths.append(as_path)
        elif (Path(results_dir) / name / STUDY_FILE).exists():
            paths.append(Path(results_dir) / name)
        elif as_path.is_dir():
            raise ResultsError(f"{as_path} is not a discbench results folder: no {STUDY_FILE} in it")
        else:
            known = [p.name for p in list_studies(results_dir)] if Path(results_dir).is_dir() else []
            raise ResultsError(f"unknown study {name!r}: looked for {Path(results_dir) / name / STUDY_FILE} "
                               f"and {as_path / STUDY_FILE}; studies in {results_dir}: "
                               f"{', '.join(known) or 'none'}")
    return paths


def read_study(path: Path) -> StudyResults:
    """The study's tables; re-gathered from the trial folders when they are newer than the
    consolidated tables (a study still running, or one whose last consolidation was cut short)."""
    path = Path(path)
    table = path / TRIALS_TABLE
    trial_files = list((path / TRIALS_DIR).glob("*/trial.json")) if (path / TRIALS_DIR).is_dir() else []
    newest = max((f.stat().st_mtime for p in trial_files for f in p.parent.iterdir()), default=None)
    if trial_files and (not table.exists() or newest > table.stat().st_mtime):
        return consolidate(path)
    return load_study(path)


def build_report(study_path: Path, out_root: Path, formats: set[str] = frozenset(FORMATS)) -> ReportFiles:
    """Write every table and figure of one study under out_root/<study name>/."""
    from .contents import build_figures, build_tables
    from .document import write_html, write_index
    from .findings import accuracy_findings
    from .render import write_table
    from .study_view import build_view

    results = read_study(study_path)
    if results.trials.empty:
        raise ResultsError(f"study {results.name!r} at {study_path} has no trials yet: nothing to report")
    view = build_view(results)
    out_dir = Path(out_root) / results.name
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, notes = build_tables(view)
    files: list[Path] = []
    for table in tables:
        files += write_table(table, out_dir, formats)
    figures = build_figures(view, out_dir)
    files += [p for f in figures for p in (f.png, f.svg)]
    findings = accuracy_findings(view)
    if "md" in formats:
        files.append(write_index(view, out_dir, tables, figures, notes, formats, findings))
    if "html" in formats:
        files.append(write_html(view, out_dir, tables, figures, notes, findings))
    return ReportFiles(out_dir, files, notes, findings)


def run_command(args: argparse.Namespace) -> int:
    try:
        studies = resolve_studies(args.studies, args.results_dir)
        for path in studies:
            report = build_report(path, args.out, args.formats)
            print(f"{path.name}: {len(report.files)} files in {report.out_dir}")
            for note in report.notes:
                print(f"  note: {note}")
    except ResultsError as exc:
        print(f"discbench report: error: {exc}", file=sys.stderr)
        return 2
    return 0
