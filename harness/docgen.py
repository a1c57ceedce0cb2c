"""docs/behaviour.md, generated from the scenarios themselves so it cannot drift.

`make docs` (or `sysext-harness docs`) rewrites it; a unit test fails when it is stale.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from harness.scenario import Scenario, load_scenarios
from harness.scenario.upstream import (
    CANNOT_APPLY,
    INVENTORIES,
    NOT_COVERED,
    UPSTREAM_CASES,
    UPSTREAM_TEST_FILES,
    UPSTREAM_VERSION,
    normalized,
)

HEADER = """# What the scenario suite checks

Generated from the `description` (and `source`, the upstream systemd test case a scenario
mirrors) of every scenario under `scenarios/` by `make docs`;
do not edit by hand. Each scenario runs on every reference target it applies to; the
results matrix of a run (`artifacts/latest/matrix.md`) shows pass, fail or n/a per target.
"""


def _applies(scenario: Scenario) -> str:
    a = scenario.applies_to
    parts = []
    if a.systemd:
        parts.append(f"systemd {a.systemd}")
    if a.personas:
        parts.append("personas " + ", ".join(a.personas))
    if a.targets:
        parts.append("targets " + ", ".join(a.targets))
    if scenario.provisioning is not None:
        parts.append(f"first-boot {scenario.provisioning.kind}")
    if scenario.uses_sysupdate:
        parts.append("targets that ship systemd-sysupdate (not Debian 12's 252)")
    text = "; ".join(parts) if parts else "every target"
    if a.reason:
        text += f" ({a.reason.strip()})"
    return text


def render_behaviour_doc(scenarios: list[Scenario], root: Path) -> str:
    groups: dict[str, list[Scenario]] = defaultdict(list)
    for s in scenarios:
        rel = s.path.relative_to(root)
        groups[rel.parts[0] if len(rel.parts) > 1 else "(top level)"].append(s)
    out = [HEADER]
    for group in sorted(groups):
        out.append(f"\n## {group}\n")
        out.append("| scenario | checks | applies to |")
        out.append("|---|---|---|")
        for s in sorted(groups[group], key=lambda s: s.name):
            desc = " ".join(s.description.split())
            if s.source:
                desc += " Upstream: " + "; ".join(f"`{c.file}`, {c.case}" for c in s.source)
            desc = desc.replace("|", "\\|")
            link = f"[{s.name}](../{s.path.relative_to(root.parent).as_posix()})"
            out.append(f"| {link} | {desc} | {_applies(s).replace('|', '/')} |")
    out += _upstream_table(scenarios)
    return "\n".join(out) + "\n"


def _upstream_table(scenarios: list[Scenario]) -> list[str]:
    """Every listed upstream case with the scenarios that cite it (`source:`) and, for
    the files titled by reading them, the systemd versions of our targets it applies to."""
    citing: dict[tuple[str, str], list[str]] = defaultdict(list)
    for s in sorted(scenarios, key=lambda s: s.name):
        for c in s.source:
            citing[(c.file, normalized(c.case))].append(s.name)
    out = [f"\n## Upstream cases (systemd {UPSTREAM_VERSION})\n",
           "The cases of systemd's own tests and the scenarios that mirror them (a "
           "scenario's `source:`). `TEST-50-DISSECT.sysext.sh` names its cases; the "
           "other files were read case by case (`harness/data/upstream/`), and their "
           "tables say which systemd versions of the reference targets (252, 254, 257, "
           "262) a case can apply to, or why it cannot.\n"]
    applicable = [(file, case) for file in UPSTREAM_TEST_FILES for case in UPSTREAM_CASES[file]
                  if (file, case) not in CANNOT_APPLY]
    mirrored = sum(1 for key in applicable if citing.get((key[0], normalized(key[1]))))
    out.append(f"**{mirrored} of the {len(applicable)} cases that can apply to the reference "
               f"targets have a scenario ({100 * mirrored // len(applicable)}%).** A case "
               "without one says why (`harness/data/upstream/not-covered.tsv`).\n")
    for file in UPSTREAM_TEST_FILES:
        cases = UPSTREAM_CASES[file]
        names = [citing.get((file, normalized(case)), []) for case in cases]
        covered = sum(1 for n in names if n)
        inventory = file in INVENTORIES
        cannot = sum(1 for row in INVENTORIES.get(file, ()) if row.cannot_apply)
        note = f"; {cannot} cannot apply to the reference targets" if cannot else ""
        out.append(f"\n### {file}: {covered} of {len(cases)} cases have a scenario{note}\n")
        names = [n or [f"— ({NOT_COVERED[(file, case)]})" if (file, case) in NOT_COVERED
                       else "—"] for case, n in zip(cases, names, strict=True)]
        if inventory:
            out.append("| case | upstream lines | applies to systemd | scenarios |")
            out.append("|---|---|---|---|")
            out += [f"| {row.title.replace('|', '/')} | {row.lines} | "
                    f"{row.applies.replace('|', '/')} | {', '.join(n) or '—'} |"
                    for row, n in zip(INVENTORIES[file], names, strict=True)]
        else:
            out.append("| case | scenarios |")
            out.append("|---|---|")
            out += [f"| {case.replace('|', '/')} | {', '.join(n) or '—'} |"
                    for case, n in zip(cases, names, strict=True)]
    return out


def behaviour_doc(project: Path) -> str:
    root = project / "scenarios"
    return render_behaviour_doc(load_scenarios(root), root)
