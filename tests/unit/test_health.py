"""The health check's journal scan: what it finds, and what a scenario allows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import ConfigErrors
from harness.scenario import load_scenario
from harness.scenario.health import describe, journal_findings

JOURNAL = """\
[    1.0] host kernel: Linux version 7.2
[    2.0] host kernel: BUG: kernel NULL pointer dereference, address: 0000000000000000
[    2.1] host kernel: Oops: 0000 [#1] PREEMPT SMP NOPTI
[    3.0] host kernel: WARNING: CPU: 0 PID: 1 at kernel/foo.c:12 foo+0x1/0x2
[    4.0] host kernel: watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker:1]
[    5.0] host kernel: rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
[    6.0] host kernel: app[12]: segfault at 0 ip 00007f sp 00007e error 4 in libc.so.6
[    7.0] host kernel: audit: type=1400 apparmor="DENIED" operation="open" profile="x"
[    8.0] host systemd[1]: Failed to start foo.service - Foo.
[    9.0] host systemd[1]: Freezing execution.
[   10.0] host systemd-coredump[99]: Process 12 (app) of user 0 dumped core.
[   11.0] host systemd[1]: Started bar.service - Bar.
"""


def test_every_kind_of_badness_is_found_once_per_line() -> None:
    found = journal_findings(JOURNAL)
    assert [f.what for f in found] == [
        "kernel oops", "kernel oops", "kernel warning", "kernel oops", "RCU stall", "segfault",
        "LSM denial", "unit failed to start", "systemd froze", "core dump"]
    assert found[-1].line.endswith("dumped core.")
    assert "Started bar.service" not in describe(found)


def test_allowed_lines_are_not_findings_and_the_message_is_bounded() -> None:
    allow = (re.compile(r"Failed to start foo\.service"), re.compile("segfault at"))
    whats = [f.what for f in journal_findings(JOURNAL, allow)]
    assert "unit failed to start" not in whats and "segfault" not in whats
    message = describe(journal_findings(JOURNAL * 3), limit=5)
    assert message.startswith("health check: 30 line(s)") and "... and 25 more" in message


def test_allow_console_is_checked_when_the_scenario_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("description: d\nallow_console: 'Failed to start x'\nsteps: [merge]\n")
    assert [p.pattern for p in load_scenario(path).allow_console] == ["Failed to start x"]
    path.write_text("description: d\nallow_console: ['(unclosed']\nsteps: [merge]\n")
    with pytest.raises(ConfigErrors) as err:
        load_scenario(path)
    assert "allow_console[0]" in str(err.value) and "not a regular expression" in str(err.value)
