"""The report as a whole: reports/<study>/index.md (links every file) and report.html (one
self-contained file: tables as HTML, figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..results import now
from . import published
from .figures import FigureFile
from .render import md_text, to_html, to_markdown
from .study_view import StudyView
from .tables import Table

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #111; }
table { border-collapse: collapse; margin: 0.5em 0 2em; font-size: 0.9em; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.4em; max-width: 1100px; }
th, td { border-top: 1px solid #999; border-bottom: 1px solid #999; padding: 0.25em 0.6em; text-align: left; }
thead th { border-bottom: 2px solid #333; }
figure { margin: 1em 0 2.5em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-style: italic; max-width: 1100px; }
.meta { color: #444; }
"""


def _status_line(view: StudyView) -> str:
    counts = view.trials["status"].value_counts()
    parts = [f"{status}: {int(counts[status])}" for status in ("ok", "diverged", "failed", "running")
             if status in counts]
    return f"{len(view.trials)} trials ({', '.join(parts)})"


def _header(view: StudyView) -> list[tuple[str, str]]:
    meta = view.results.meta
    return [
        ("study", view.name),
        ("results", str(view.results.path)),
        ("study started", str(meta.get("created", "unknown"))),
        ("trials", _status_line(view)),
        ("models", ", ".join(view.models)),
        ("factors", ", ".join(view.factor_label(f) for f in view.factors) or "none besides the method"),
        ("provenance", view.provenance()),
        ("published numbers", f"{published.source()} (discbench/published/{published.PAPER_FILE})"),
        ("report generated", now()),
    ]


def write_index(view: StudyView, out_dir: Path, tables: list[Table], figures: list[FigureFile],
                notes: list[str], formats: set[str], findings: list[str]) -> Path:
    lines = [f"# discbench report: {view.name}", ""]
    lines += [f"- **{k}**: {v}" for k, v in _header(view)]
    lines += ["", "Every number below is computed from the results folder by `discbench report`.", ""]
    if findings:
        lines += ["## Findings", ""] + [f"- {f}" for f in findings] + [""]
    lines += ["## Tables", ""]
    for table in tables:
        lines.append(to_markdown(table))
        links = [f"[{ext}]({table.name}.{ext})" for ext in ("md", "tex", "csv") if ext in formats]
        if links:
            lines += ["Files: " + " · ".join(links), ""]
    lines += ["## Figures", ""]
    for figure in figures:
        lines += [f"### {figure.title}", "", f"![{figure.title}]({figure.png.name})", "",
                  f"*{md_text(figure.caption)}*", "",
                  f"Files: [PNG]({figure.png.name}) · [SVG]({figure.svg.name})", ""]
    if notes:
        lines += ["## Not in this report", ""] + [f"- {n}" for n in notes] + [""]
    if "html" in formats:
        lines += ["The same report as one self-contained file: [report.html](report.html)", ""]
    path = Path(out_dir) / "index.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_html(view: StudyView, out_dir: Path, tables: list[Table], figures: list[FigureFile],
               notes: list[str], findings: list[str]) -> Path:
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>discbench report: {html.escape(view.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>discbench report: {html.escape(view.name)}</h1>", '<ul class="meta">',
    ]
    parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in _header(view)]
    parts.append("</ul>")
    if findings:
        parts += ["<h2>Findings</h2>", "<ul>"] + [f"<li>{html.escape(f)}</li>" for f in findings] + ["</ul>"]
    parts.append("<h2>Tables</h2>")
    for table in tables:
        parts += [f"<h3>{html.escape(table.title)}</h3>", to_html(table)]
    parts.append("<h2>Figures</h2>")
    for figure in figures:
        data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
        parts += [f"<h3>{html.escape(figure.title)}</h3>", "<figure>",
                  f'<img alt="{html.escape(figure.title)}" src="data:image/png;base64,{data}">',
                  f"<figcaption>{html.escape(figure.caption)}</figcaption>", "</figure>"]
    if notes:
        parts += ["<h2>Not in this report</h2>", "<ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    parts.append("</body></html>")
    path = Path(out_dir) / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
