"""A scenario whose QEMU aborts (an emulator bug, not the guest) runs once more; the
aborted attempt's files are kept aside. No VMs: the attempt itself is replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import EmulatorCrashed
from harness.scenario import load_scenario
from harness.session import HarnessSession
from harness.targets.registry import get_target


@pytest.fixture
def session(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = HarnessSession(tmp_path / "artifacts", run_name="unit")
    s.pool.progress = lambda message: None
    yield s
    s.close()


def scenario(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "scenarios" / "x.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("description: d\nsteps: [merge]\n")
    return load_scenario(path)


def test_one_abort_reruns_and_keeps_the_first_attempt(session, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def once(sc, target, artifacts, out: Path) -> None:  # type: ignore[no-untyped-def]
        calls.append(1)
        (out / "steps.log").write_text(f"attempt {len(calls)}\n")
        if len(calls) == 1:
            raise EmulatorCrashed("QEMU exited during reboot: iotlb_to_section: Assertion")

    monkeypatch.setattr(session, "_run_once", once)
    out = session.run(scenario(tmp_path), get_target("refos-257-flatcar"))
    assert len(calls) == 2
    assert (out / "steps.log").read_text() == "attempt 2\n"
    assert (out / "attempt-1/steps.log").read_text() == "attempt 1\n"
    assert "iotlb_to_section" in (out / "attempt-1/emulator-abort.txt").read_text()


def test_a_second_abort_fails_and_other_errors_are_not_retried(
        session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def aborts(*args) -> None:  # type: ignore[no-untyped-def]
        raise EmulatorCrashed("again")

    monkeypatch.setattr(session, "_run_once", aborts)
    sc = scenario(tmp_path)
    with pytest.raises(EmulatorCrashed):
        session.run(sc, get_target("refos-257-flatcar"))

    calls: list[int] = []

    def fails(*args) -> None:  # type: ignore[no-untyped-def]
        calls.append(1)
        raise AssertionError("the guest misbehaved")

    monkeypatch.setattr(session, "_run_once", fails)
    with pytest.raises(AssertionError):
        session.run(sc, get_target("refos-252-flatcar"))
    assert calls == [1]
