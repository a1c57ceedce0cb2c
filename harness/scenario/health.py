"""Health of the guest after a run: what a pass must not hide.

A scenario whose steps all passed can still have crashed something on the way: a kernel
oops, a daemon that segfaulted or dumped core, an OOM kill, an LSM denial, a unit that
failed to start. Like kola's checks after every test, once the steps passed the runner
reads, in one guest command (`HEALTH_COMMAND`):
- the journal of the current boot, kernel messages included;
- the units failed at the end (a snapshot is only taken of a target whose boot left none
  failed, so each one is new);
- core files written by the kernel (`core_pattern` `core`: into the process's working
  directory, / for services) or kept by systemd-coredump;
and scans the serial console the run's machine printed, which also holds the boots before
a reboot (the reference images keep a volatile journal). Any finding fails the run with
its lines. A scenario that provokes one on purpose allows it: `allow_console:` (regular
expressions matched against journal and console lines, and against `core file /PATH`) and
`allow_failed_units:` (globs of unit names), docs/scenarios.md.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import AssertionFailed

# (what it is, the pattern that finds it in a journal or console line)
BADNESS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (what, re.compile(pattern)) for what, pattern in (
        ("kernel oops", r"\bOops\b|\bBUG: |kernel BUG at|Kernel panic"),
        ("kernel warning", r"WARNING: CPU: \d+ PID: \d+"),
        ("lockup", r"soft lockup - CPU#|hard LOCKUP|blocked for more than \d+ seconds"),
        ("RCU stall", r"rcu: INFO: \S+ (self-)?detected stall|rcu_\w+ (self-)?detected stall"),
        ("out of memory", r"Out of memory: Killed process|invoked oom-killer"),
        ("segfault", r"segfault at [0-9a-f]+ ip |traps: \S+\[\d+\] general protection"),
        ("LSM denial", r"apparmor=\"DENIED\"|avc:\s+denied"),
        ("unit failed to start", r"Failed to start "),
        ("systemd froze", r"Freezing execution"),
        ("core dump", r"systemd-coredump\[\d+\]: .*dumped core|\(core dumped\)|code=dumped"),
    ))

# How the harness reads the journal: the current boot, kernel included, monotonic stamps;
# and the file of a run's artifacts that keeps it.
JOURNAL_COMMAND = "journalctl -b --no-pager -o short-monotonic"
JOURNAL_FILE = "journal.txt"
_SEPARATOR = "@@sysext-harness-health@@"
# Core files: the kernel's own (`core`, `core.PID`) in / (a service's working directory)
# and /root (a command run over SSH), and what systemd-coredump keeps.
CORE_FILE_GLOBS = ("/core", "/core.[0-9]*", "/root/core", "/root/core.[0-9]*",
                   "/var/lib/systemd/coredump/*")
HEALTH_COMMAND = "; ".join((
    JOURNAL_COMMAND,
    f"echo {_SEPARATOR}",
    "systemctl list-units --state=failed --plain --no-legend --full",
    f"echo {_SEPARATOR}",
    f"for f in {' '.join(CORE_FILE_GLOBS)}; do if [ -f \"$f\" ]; then echo \"$f\"; fi; done",
))
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class GuestHealth:
    """What `HEALTH_COMMAND` printed, in parts."""

    journal: str
    failed_units: tuple[str, ...]
    core_files: tuple[str, ...]


def parse_health_output(stdout: str) -> GuestHealth:
    """Split `HEALTH_COMMAND`'s output; a part it did not print is empty."""
    parts = (stdout.split(f"{_SEPARATOR}\n") + ["", ""])[:3]
    units = tuple(line.split()[0] for line in parts[1].splitlines() if line.strip())
    cores = tuple(line.strip() for line in parts[2].splitlines() if line.strip())
    return GuestHealth(parts[0], units, cores)


@dataclass(frozen=True)
class Finding:
    what: str  # one of BADNESS's names, "unit failed at the end" or "core file"
    line: str  # the line as the guest printed it (escape sequences removed)
    where: str = "journal"  # journal, console, units or core files

    def text(self) -> str:
        return f"{self.what} ({self.where}): {self.line}"


def _scan(text: str, where: str, allow: Sequence[re.Pattern[str]]) -> list[Finding]:
    out = []
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).strip()
        for what, pattern in BADNESS:
            if pattern.search(line) and not any(a.search(line) for a in allow):
                out.append(Finding(what, line, where))
                break
    return out


def journal_findings(journal: str, allow: Sequence[re.Pattern[str]] = ()) -> list[Finding]:
    """The lines of `journal` that match a BADNESS pattern and no `allow` pattern."""
    return _scan(journal, "journal", allow)


def console_findings(console: str, journal: Sequence[Finding] = (),
                     allow: Sequence[re.Pattern[str]] = ()) -> list[Finding]:
    """Badness on the serial console that the journal's findings do not already show: the
    kernel's messages of earlier boots, and systemd's `[FAILED]` lines while booting."""
    seen = [f.line for f in journal]
    out = []
    for finding in _scan(console, "console", allow):
        # "[   12.3] Oops: ..." on the console is "... kernel: Oops: ..." in the journal.
        message = re.sub(r"^\[\s*[\d.]+\]\s*", "", finding.line)
        if not any(message in line for line in seen):
            out.append(finding)
    return out


def health_findings(health: GuestHealth, console: str, *,
                    allow_console: Sequence[re.Pattern[str]] = (),
                    allow_failed_units: Sequence[str] = ()) -> list[Finding]:
    """Every finding of one run: journal, console, units failed at the end, core files."""
    found = journal_findings(health.journal, allow_console)
    found += console_findings(console, found, allow_console)
    found += [Finding("unit failed at the end", unit, "units")
              for unit in health.failed_units
              if not any(fnmatch.fnmatchcase(unit, glob) for glob in allow_failed_units)]
    found += [Finding("core file", f"core file {path}", "core files")
              for path in health.core_files
              if not any(a.search(f"core file {path}") for a in allow_console)]
    return found


def allowed_count(health: GuestHealth, console: str,
                  allow_console: Sequence[re.Pattern[str]],
                  allow_failed_units: Sequence[str]) -> int:
    """How many lines, units and files the scenario's allow lists let through."""
    if not allow_console and not allow_failed_units:
        return 0  # most scenarios: no need to read every line again
    lines = [_ANSI.sub("", line) for line in (health.journal + console).splitlines()]
    lines += [f"core file {path}" for path in health.core_files]
    count = sum(1 for line in lines if any(a.search(line) for a in allow_console))
    return count + sum(1 for unit in health.failed_units
                       if any(fnmatch.fnmatchcase(unit, g) for g in allow_failed_units))


def describe(findings: Sequence[Finding], limit: int = 20) -> str:
    """The failure message: each finding with its line, at most `limit` of them."""
    lines = [f"health check: {len(findings)} finding(s) a pass must not hide (allow one the "
             "scenario provokes with `allow_console:` or `allow_failed_units:`):"]
    lines += [f"  - {f.text()}" for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"  ... and {len(findings) - limit} more (journal.txt, console.log)")
    return "\n".join(lines)


class UnhealthyGuest(AssertionFailed):
    """The steps passed, the health check did not; carries the findings (matrix.json)."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = tuple(findings)
        super().__init__(describe(self.findings))
