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
