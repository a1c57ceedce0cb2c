"""The silent-boot guard: when a boot that printed nothing is reset, and when it is not."""
from __future__ import annotations

import pytest

from harness.machine.silentboot import RESTARTING_LINE, SilentBootGuard, SilentBootHang

LINE = "SYSEXT-HARNESS-INITRAMFS"


def guard(offset: int = 0, *, after_shutdown: bool = False) -> SilentBootGuard:
    return SilentBootGuard.starting(LINE, 60.0, 2, offset, 100.0,
                                    after_shutdown=after_shutdown)


def test_a_boot_that_prints_its_line_is_never_reset() -> None:
    g = guard()
    assert not g.should_reset("", 159.0)
    assert not g.should_reset(f"{LINE}\r\n", 1000.0)


def test_a_silent_boot_is_reset_after_the_timeout_and_watched_again() -> None:
    g = guard()
    assert g.should_reset("", 160.5)
    g.was_reset(0, 160.5)
    assert not g.should_reset("", 200.0)  # the new start's own 60 s
    assert g.should_reset("", 221.0)


def test_the_line_of_the_previous_boot_does_not_count() -> None:
    old = f"{LINE}\nSYSEXT-HARNESS-SSH-READY\n"
    g = guard(len(old))
    assert g.should_reset(old, 161.0)
    assert not g.should_reset(old + LINE + "\n", 161.0)


def test_resets_are_bounded() -> None:
    g = guard()
    for _ in range(2):
        assert g.should_reset("", g.began + 61.0)  # type: ignore[operator]
        g.was_reset(0, g.began + 61.0)  # type: ignore[operator]
    with pytest.raises(SilentBootHang, match="3 starts"):
        g.should_reset("", g.began + 61.0)  # type: ignore[operator]


def test_a_clean_reboot_is_timed_from_the_kernel_restart_not_the_shutdown() -> None:
    g = guard(after_shutdown=True)
    assert not g.should_reset("Stopping units...\n", 1000.0)  # a slow shutdown
    assert not g.should_reset(f"{RESTARTING_LINE}\n", 1000.0)
    assert not g.should_reset(f"{RESTARTING_LINE}\n", 1059.0)
    assert g.should_reset(f"{RESTARTING_LINE}\n", 1061.0)
