"""How a saved VM state is written and read: QEMU's own file transport where it has one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.machine import qemu


@pytest.fixture(autouse=True)
def _fresh_release_cache() -> Iterator[None]:
    """Each test sees its own fake version, and later tests in the session the real one
    again (the release is cached for the process)."""
    qemu.qemu_release.cache_clear()
    yield
    qemu.qemu_release.cache_clear()


def test_release_is_parsed_from_the_version_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "qemu_version",
                        lambda: "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)")
    assert qemu.qemu_release() == (10, 0)


def test_unknown_version_counts_as_old(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "qemu_version", lambda: "unknown")
    assert qemu.qemu_release() == (0, 0)
    assert qemu.state_file_uri(Path("/s/state.bin"), saving=True) == "exec:cat > /s/state.bin"


@pytest.mark.parametrize(("version", "saving", "expected"), [
    ("8.2.0", True, "file:/s/state.bin"),
    ("10.0.2", False, "file:/s/state.bin"),
    ("8.1.5", True, "exec:cat > /s/state.bin"),
    ("7.2.0", False, "exec:cat /s/state.bin"),
])
def test_file_transport_from_8_2(monkeypatch: pytest.MonkeyPatch, version: str, saving: bool,
                                 expected: str) -> None:
    monkeypatch.setattr(qemu, "qemu_version", lambda: f"QEMU emulator version {version}")
    assert qemu.state_file_uri(Path("/s/state.bin"), saving=saving) == expected


def test_a_comma_in_the_path_goes_through_cat(monkeypatch: pytest.MonkeyPatch) -> None:
    """file: would read what follows the comma as its options."""
    monkeypatch.setattr(qemu, "qemu_version", lambda: "QEMU emulator version 10.0.2")
    assert qemu.state_file_uri(Path("/s,t/state.bin"), saving=False) == "exec:cat /s,t/state.bin"
