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


def test_upstream_table_lists_every_case_with_its_scenarios() -> None:
    from harness.scenario.upstream import UPSTREAM_CASES

    text = (project_root() / "docs" / "behaviour.md").read_text()
    start = text.index("### TEST-50-DISSECT.sysext.sh")
    table = text[start:text.index("\n### ", start + 1)]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    cases = UPSTREAM_CASES["TEST-50-DISSECT.sysext.sh"]
    assert len(rows) == len(cases) + 1  # the header row and one row per case
    row = next(r for r in rows if r.startswith("| Check if vpick works for image extensions |"))
    assert "vpick-version" in row
    covered = sum(1 for r in rows[1:] if not r.endswith("| — |"))
    assert f"{covered} of {len(cases)} cases have a scenario" in table


def test_inventory_tables_say_where_each_case_applies() -> None:
    from harness.scenario.upstream import INVENTORIES

    text = (project_root() / "docs" / "behaviour.md").read_text()
    for file, cases in INVENTORIES.items():
        start = text.index(f"### {file}:")
        end = text.find("\n### ", start + 1)
        table = text[start:end if end > 0 else None]
        rows = [line for line in table.splitlines()
                if line.startswith("| ") and "---" not in line][1:]
        assert len(rows) == len(cases)
        for row, case in zip(rows, cases, strict=True):
            assert row.startswith(f"| {case.title} | {case.lines} | {case.applies} |")


def test_every_applicable_case_has_a_scenario_or_a_reason() -> None:
    from harness.scenario import load_scenarios
    from harness.scenario.upstream import CANNOT_APPLY, NOT_COVERED, UPSTREAM_CASES, normalized

    cited = {(c.file, normalized(c.case))
             for s in load_scenarios(project_root() / "scenarios") for c in s.source}
    for file, cases in UPSTREAM_CASES.items():
        for case in cases:
            key = (file, case)
            if (file, normalized(case)) in cited:
                assert key not in NOT_COVERED, f"{key} has a scenario: drop it from not-covered.tsv"
            elif key not in CANNOT_APPLY:
                assert key in NOT_COVERED, f"{key} has no scenario and no reason in not-covered.tsv"
