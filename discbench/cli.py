"""The `discbench` command. Each sub-command lives in the module that does the work.

A command module provides `configure_parser(parser)` and `run_command(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "run": ("discbench.runner", "schedule a study's trials on Ray Tune (resumes after a crash)"),
    "tune": ("discbench.tuner", "tune each arm of a study on its validation split (Ray Tune, ASHA) and write its lock file"),
    "validate": ("discbench.study", "check study files without running them"),
    "report": ("discbench.report", "turn results/ into tables and plots under reports/"),
    "compare": ("discbench.compare", "whether two runs of a study recorded the same numbers, bit for bit"),
    "plan": ("discbench.report.plan", "seeds each comparison needs for a given effect, from a pilot study"),
    "bench": ("discbench.bench", "time the scan backends, Vim against DeiT, or a training step against the GRU, side by side"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (torch and Ray load slowly)."""
    parser = argparse.ArgumentParser(prog="discbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=summary, description=summary)
        if name == command:
            importlib.import_module(module).configure_parser(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return int(importlib.import_module(args._module).run_command(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
