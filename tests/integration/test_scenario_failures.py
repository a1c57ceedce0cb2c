"""A scenario whose expectation does not hold must fail, say why, and keep the evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import AssertionFailed
from harness.scenario import load_scenario

# VM-booting tests never run next to each other under xdist (they count processes, ...)
pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

WRONG = """\
description: Expects an extension to merge that cannot (its VERSION_ID is not the host's).
extensions:
  pinned-elsewhere:
    release: {ID: host, VERSION_ID: "0.0.0-elsewhere"}
    files: [{path: /usr/share/pinned/marker, content: "x\\n"}]
steps:
  - install: pinned-elsewhere
  - merge:
    name: this expectation is wrong on purpose
    expect:
      merged: [pinned-elsewhere]
"""


def test_wrong_expectation_fails_with_step_and_evidence(harness, target, tmp_path: Path
                                                        ) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "wrong-expectation.yaml"
    path.write_text(WRONG)
    scenario = load_scenario(path)
    with pytest.raises(AssertionFailed) as err:
        harness.run(scenario, target)
    message = str(err.value)
    assert "this expectation is wrong on purpose" in message
    assert "pinned-elsewhere" in message
    out = harness.artifacts / scenario.name / target.name
    for name in ("steps.log", "console.log", "journal.txt", "sysext-status.json",
                 "scenario.yaml", "inputs.json"):
        assert (out / name).exists(), f"{name} missing from {out}"
    assert '"extensions":"none"' in (out / "sysext-status.json").read_text().replace(" ", "")


# Steps that all pass while the guest suffers what a pass must not hide: a unit that fails
# to start, a process that segfaults, a service that dumps core (LimitCORE=infinity for
# the unit and core_pattern `core`: a core file in /) and stays failed, and an OOM kill
# (sysrq f; the victim is a service holding 100 MiB). The `reboot` placeholder adds a
# reboot, after which only the serial console and the disk remember.
UNHEALTHY = """\
description: Steps that pass while the guest logs what a pass must not hide.
{allow}steps:
  - run: systemd-run --unit=sysext-harness-fails --collect -p Type=oneshot false || true
  - run: python3 -c 'import ctypes; ctypes.string_at(0)' || true
  - run: >-
      systemd-run --unit=sysext-harness-crashes -p Type=oneshot -p LimitCORE=infinity
      python3 -c 'import ctypes; ctypes.string_at(0)' || true
  - run: >-
      systemd-run -q --unit=sysext-harness-oom -p OOMScoreAdjust=1000
      python3 -c 'import time; x = bytearray(100 << 20); time.sleep(600)' &&
      until grep -Eq 'VmRSS:[[:space:]]+[0-9]{{6,}} kB'
      /proc/$(systemctl show -P MainPID sysext-harness-oom)/status; do sleep 0.2; done &&
      echo f > /proc/sysrq-trigger && sleep 1 && systemctl is-failed sysext-harness-oom
{reboot}"""
ALLOW_ALL = """\
allow_console:
  - Failed to start sysext-harness-(fails|crashes)
  - python3.*segfault at
  - sysext-harness-crashes.service.*code=dumped
  - Out of memory|invoked oom-killer
  - core file /core
allow_failed_units: sysext-harness-*
"""


def test_health_check_fails_a_passing_run_and_allows_what_it_provokes(
        harness, target, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def scenario(name: str, allow: str = "", reboot: str = ""):  # type: ignore[no-untyped-def]
        path = tmp_path / name / "unhealthy.yaml"
        path.parent.mkdir()
        path.write_text(UNHEALTHY.format(allow=allow, reboot=reboot))
        return load_scenario(path)

    with pytest.raises(AssertionFailed) as err:
        harness.run(scenario("plain"), target)
    message = str(err.value)
    for line in ("unit failed to start (journal): ", "Failed to start sysext-harness-fails",
                 "segfault (journal): ", "python3", "core dump (journal): ", "code=dumped",
                 "out of memory (journal): ", "Killed process",
                 "unit failed at the end (units): sysext-harness-crashes.service",
                 "unit failed at the end (units): sysext-harness-oom.service",
                 "core file (core files): core file /core"):
        assert line in message, f"{line!r} not in {message}"

    # After a reboot (the journal is volatile) the OOM kill is still on the serial console,
    # and the core file on the disk; the failed units are gone with the boot.
    with pytest.raises(AssertionFailed) as err:
        harness.run(scenario("rebooted", reboot="  - reboot:\n    shutdown: reset\n"), target)
    message = str(err.value)
    assert "out of memory (console): " in message and "Killed process" in message
    assert "core file (core files): core file /core" in message
    assert "(journal)" not in message and "(units)" not in message

    harness.run(scenario("allowed", allow=ALLOW_ALL), target)
    log = (harness.artifacts / "unhealthy" / target.name / "steps.log").read_text()
    assert "== health check" in log and "allowed line(s), unit(s) or file(s)" in log
