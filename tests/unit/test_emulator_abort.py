"""Telling QEMU's own aborts (worth one more cold boot) from a guest that failed to boot."""

from __future__ import annotations

from harness.machine.qemu import emulator_aborted


def test_qemu_assertion_is_an_emulator_abort() -> None:
    stderr = ("qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion "
              "`section_index < d->map.sections_nb' failed.\n")
    assert emulator_aborted(stderr)


def test_other_qemu_errors_are_not() -> None:
    assert not emulator_aborted("qemu-system-x86_64: -drive file=x: Could not open 'x'\n")
    assert not emulator_aborted("qemu-system-x86_64: terminating on signal 15 from pid 1\n")
    assert not emulator_aborted("")
