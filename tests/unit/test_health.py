"""The health check's journal scan: what it finds, and what a scenario allows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import ConfigErrors
from harness.scenario import load_scenario
from harness.scenario.health import (
    HEALTH_COMMAND,
    GuestHealth,
    allowed_count,
    console_findings,
    describe,
    health_findings,
    journal_findings,
    parse_health_output,
)

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
[   10.5] host kernel: Out of memory: Killed process 77 (sleep) total-vm:1kB
[   10.6] host systemd[1]: crashy.service: Main process exited, code=dumped, status=11/SEGV
[   11.0] host systemd[1]: Started bar.service - Bar.
"""


def test_every_kind_of_badness_is_found_once_per_line() -> None:
    found = journal_findings(JOURNAL)
    assert [f.what for f in found] == [
        "kernel oops", "kernel oops", "kernel warning", "kernel oops", "RCU stall", "segfault",
        "LSM denial", "unit failed to start", "systemd froze", "core dump", "out of memory",
        "core dump"]
    assert found[-3].line.endswith("dumped core.")
    assert "Started bar.service" not in describe(found)


def test_allowed_lines_are_not_findings_and_the_message_is_bounded() -> None:
    allow = (re.compile(r"Failed to start foo\.service"), re.compile("segfault at"))
    whats = [f.what for f in journal_findings(JOURNAL, allow)]
    assert "unit failed to start" not in whats and "segfault" not in whats
    message = describe(journal_findings(JOURNAL * 3), limit=5)
    assert message.startswith("health check: 36 finding(s)") and "... and 31 more" in message


def test_allow_console_is_checked_when_the_scenario_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("description: d\nallow_console: 'Failed to start x'\nsteps: [merge]\n")
    assert [p.pattern for p in load_scenario(path).allow_console] == ["Failed to start x"]
    path.write_text("description: d\nallow_console: ['(unclosed']\nsteps: [merge]\n")
    with pytest.raises(ConfigErrors) as err:
        load_scenario(path)
    assert "allow_console[0]" in str(err.value) and "not a regular expression" in str(err.value)


def test_the_health_command_output_splits_into_journal_units_and_core_files() -> None:
    out = ("[1.0] host systemd[1]: Started x.\n@@sysext-harness-health@@\n"
           "crashy.service loaded failed failed Crashy\n@@sysext-harness-health@@\n"
           "/core.271\n")
    health = parse_health_output(out)
    assert health == GuestHealth("[1.0] host systemd[1]: Started x.\n", ("crashy.service",),
                                 ("/core.271",))
    assert parse_health_output("") == GuestHealth("", (), ())
    assert HEALTH_COMMAND.count("@@sysext-harness-health@@") == 2


CONSOLE = """\
[   20.1] Out of memory: Killed process 77 (sleep) total-vm:1kB
[\x1b[0;1;31mFAILED\x1b[0m] Failed to start \x1b[0;1;39msystemd-sysext.ser…\x1b[0m.
[   30.0] BUG: kernel NULL pointer dereference, address: 0000000000000000
"""


def test_the_console_adds_what_the_journal_of_this_boot_does_not_show() -> None:
    journal = journal_findings("[30.0] host kernel: BUG: kernel NULL pointer dereference, "
                               "address: 0000000000000000\n")
    found = console_findings(CONSOLE, journal)
    assert [(f.what, f.where) for f in found] == [
        ("out of memory", "console"), ("unit failed to start", "console")]
    assert "\x1b" not in found[1].line and "Failed to start systemd-sysext.ser" in found[1].line
    allow = (re.compile("Failed to start systemd-sysext"),)
    assert [f.what for f in console_findings(CONSOLE, journal, allow)] == ["out of memory"]


def test_failed_units_and_core_files_are_findings_unless_allowed() -> None:
    health = GuestHealth("", ("crashy.service", "run-u4.service"), ("/core.271",))
    found = health_findings(health, "")
    assert [(f.what, f.line) for f in found] == [
        ("unit failed at the end", "crashy.service"),
        ("unit failed at the end", "run-u4.service"), ("core file", "core file /core.271")]
    allow = (re.compile(r"core file /core\.\d+"),)
    assert health_findings(health, "", allow_console=allow,
                           allow_failed_units=("crashy.*", "run-*.service")) == []
    assert allowed_count(health, "", allow, ("crashy.*", "run-*.service")) == 3
    assert "unit failed at the end (units): crashy.service" in describe(found)


def test_allow_failed_units_is_checked_when_the_scenario_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("description: d\nallow_failed_units: 'run-*.service'\nsteps: [merge]\n")
    assert load_scenario(path).allow_failed_units == ("run-*.service",)
    path.write_text("description: d\nallow_failed_units: ['a b.service', 3]\nsteps: [merge]\n")
    with pytest.raises(ConfigErrors) as err:
        load_scenario(path)
    assert "allow_failed_units[0]" in str(err.value) and "allow_failed_units[1]" in str(err.value)
