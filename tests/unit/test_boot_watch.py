"""The boot watch judges a reboot by the console output after the reboot began: a clean
shutdown can keep the reboot command waiting until the next boot has printed its ready
line, and that line must still count."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from harness.machine.machine import _BootWatch
from harness.targets.boot import REFERENCE_READINESS

OLD_BOOT = "SYSEXT-HARNESS-INITRAMFS\nSYSEXT-HARNESS-SSH-READY\n"
NEW_BOOT = "reboot: Restarting system\nSYSEXT-HARNESS-INITRAMFS\nSYSEXT-HARNESS-SSH-READY\n"


def machine(console: str) -> Any:
    """What _BootWatch reads of a Machine: its console, spec, VM and boot guard."""
    vm = SimpleNamespace(running=lambda: True)
    return SimpleNamespace(
        console_log=lambda: console, spec=SimpleNamespace(readiness=REFERENCE_READINESS),
        vm=vm, check_provisioning=lambda: None, _boot_guard=None, host_key="pinned",
        log=lambda message: None)


def test_a_ready_line_printed_before_the_watch_began_counts_from_the_reboot() -> None:
    m = machine(OLD_BOOT + NEW_BOOT)
    watch = _BootWatch(m, "reboot", ready_line=True, connect=False,
                       console_from=len(OLD_BOOT))
    assert watch.poll() is True


def test_without_an_offset_only_what_comes_later_counts() -> None:
    m = machine(OLD_BOOT + NEW_BOOT)
    watch = _BootWatch(m, "reboot", ready_line=True, connect=False)
    assert watch.poll() is None


def test_the_previous_boots_ready_line_does_not_count() -> None:
    m = machine(OLD_BOOT + "reboot: Restarting system\n")
    watch = _BootWatch(m, "reboot", ready_line=True, connect=False,
                       console_from=len(OLD_BOOT))
    assert watch.poll() is None
