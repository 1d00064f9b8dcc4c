"""docs/METHODS.md, the specification in the repository, documents every registered method."""

from __future__ import annotations

from pathlib import Path

from discbench.methods import METHODS

SPEC = Path(__file__).resolve().parents[1] / "docs" / "METHODS.md"


def _table_rows() -> dict[str, str]:
    """First cell (a method key in backticks) -> the whole row, for every table row."""
    rows = {}
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            rows[line.split("|")[1].strip().strip("`")] = line
    return rows


def test_every_registered_method_and_variant_has_a_row_in_the_spec():
    rows = _table_rows()
    missing = [key for key in METHODS if key not in rows]
    assert not missing, f"docs/METHODS.md has no table row for {missing}: document them there"


def test_the_spec_states_the_registry_order_of_each_documented_method():
    rows = _table_rows()
    for key, method in METHODS.items():
        cells = [c.strip() for c in rows[key].split("|")]
        stated = cells[-3]  # the column before "measured order"
        assert stated.split()[0] == str(method.order), \
            f"{key}: docs/METHODS.md states order {stated!r}, the registry {method.order}"


def test_the_readme_studies_table_lists_every_shipped_study_with_its_trial_count():
    """README.md's studies table is where users read what a study costs: it must stay true."""
    import re

    from discbench.study import DEFAULT_STUDY, SHIPPED_STUDIES, load_study, study_files

    readme = (SPEC.parents[1] / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        found = re.match(r"\| `([a-z0-9_]+)\.yaml` \|", line)
        if found:  # cells: study, what it reproduces, trials, cost ("\|" inside a cell is text)
            rows[found.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    shipped = [p.stem for p in study_files(SHIPPED_STUDIES)]
    assert sorted(rows) == shipped
    for name in shipped:
        assert rows[name][2] == str(len(load_study(name).trials)), f"README.md: trial count of {name}"
    assert "**the default**" in rows[DEFAULT_STUDY][1]
    assert f"studies/{DEFAULT_STUDY}.yaml" in readme  # the `make study` line
