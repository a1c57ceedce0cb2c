"""docs/behaviour.md must match the scenarios (it is generated; `make docs` refreshes it)."""

from __future__ import annotations

from harness.docgen import behaviour_doc
from harness.paths import project_root


def test_behaviour_doc_is_up_to_date() -> None:
    expected = behaviour_doc(project_root())
    current = (project_root() / "docs" / "behaviour.md").read_text()
    assert current == expected, "docs/behaviour.md is stale: run `make docs`"


def test_every_scenario_is_listed() -> None:
    text = (project_root() / "docs" / "behaviour.md").read_text()
    for path in (project_root() / "scenarios").rglob("*.yaml"):
        assert f"[{path.stem}]" in text
