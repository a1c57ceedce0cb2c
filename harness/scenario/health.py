"""Health of the guest after a run: what a pass must not hide.

A scenario whose steps all passed can still have crashed something on the way: a kernel
oops, a daemon that segfaulted or dumped core, an LSM denial, a unit that failed to
start. Like kola's checks after every test, the runner scans the guest's journal of the
current boot (kernel messages included) once the steps passed, and fails the run with the
matching lines. A scenario that provokes such a line on purpose allows it with
`allow_console:` (regular expressions, docs/scenarios.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# (what it is, the pattern that finds it in a journal line)
BADNESS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (what, re.compile(pattern)) for what, pattern in (
        ("kernel oops", r"\bOops\b|\bBUG: |kernel BUG at|Kernel panic"),
        ("kernel warning", r"WARNING: CPU: \d+ PID: \d+"),
        ("lockup", r"soft lockup - CPU#|hard LOCKUP|blocked for more than \d+ seconds"),
        ("RCU stall", r"rcu: INFO: \S+ (self-)?detected stall|rcu_\w+ (self-)?detected stall"),
        ("segfault", r"segfault at [0-9a-f]+ ip |traps: \S+\[\d+\] general protection"),
        ("LSM denial", r"apparmor=\"DENIED\"|avc:\s+denied"),
        ("unit failed to start", r"Failed to start "),
        ("systemd froze", r"Freezing execution"),
        ("core dump", r"systemd-coredump\[\d+\]: .*dumped core|\(core dumped\)"),
    ))

# How the harness reads it: the current boot, kernel included, with monotonic time stamps.
JOURNAL_COMMAND = "journalctl -b --no-pager -o short-monotonic"


@dataclass(frozen=True)
class Finding:
    what: str  # one of BADNESS's names
    line: str  # the journal line, as the guest printed it


def journal_findings(journal: str, allow: Sequence[re.Pattern[str]] = ()) -> list[Finding]:
    """The lines of `journal` that match a BADNESS pattern and no `allow` pattern."""
    out = []
    for line in journal.splitlines():
        for what, pattern in BADNESS:
            if pattern.search(line) and not any(a.search(line) for a in allow):
                out.append(Finding(what, line.strip()))
                break
    return out


def describe(findings: Sequence[Finding], limit: int = 20) -> str:
    """The failure message: each finding with its line, at most `limit` of them."""
    lines = [f"health check: {len(findings)} line(s) in the guest's journal that a pass must "
             "not hide (allow one the scenario provokes with `allow_console:`):"]
    lines += [f"  - {f.what}: {f.line}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"  ... and {len(findings) - limit} more (journal.txt)")
    return "\n".join(lines)
