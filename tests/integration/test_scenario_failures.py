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


# A unit that fails to start and a process that segfaults, in a run whose steps all pass.
UNHEALTHY = """\
description: Steps that pass while the guest logs what a pass must not hide.
{allow}steps:
  - run: systemd-run --unit=sysext-harness-fails --collect -p Type=oneshot false || true
  - run: python3 -c 'import ctypes; ctypes.string_at(0)' || true
"""


def test_health_check_fails_a_passing_run_and_allows_what_it_provokes(
        harness, target, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "unhealthy.yaml"
    path.write_text(UNHEALTHY.format(allow=""))
    with pytest.raises(AssertionFailed) as err:
        harness.run(load_scenario(path), target)
    message = str(err.value)
    assert "health check: 2 line(s)" in message
    assert "unit failed to start: " in message and "Failed to start sysext-harness-fails" in message
    assert "segfault: " in message and "python3" in message
    allowed = tmp_path / "allowed" / "unhealthy.yaml"
    allowed.parent.mkdir()
    allowed.write_text(UNHEALTHY.format(
        allow="allow_console: ['Failed to start sysext-harness-fails', 'python3.*segfault at']\n"))
    harness.run(load_scenario(allowed), target)
    log = (harness.artifacts / "unhealthy" / target.name / "steps.log").read_text()
    assert "== health check" in log and "2 allowed line(s)" in log
