"""Noticing a boot that hangs before its first console line, so it can be reset.

Under TCG, about one boot in several hundred never gets past the firmware: the console
stays empty and the vCPUs spin, until the 600 s boot timeout fails the run (seen in the
full matrix with two VMs on two cores, on `-M pc`; more often on `-M microvm`). The
reference initramfs prints a line first thing (`Readiness.boot_line`), a few seconds into
any boot. When that line has not appeared long after the boot began, nothing in the guest
has run yet, so a reset (a power cycle before the kernel) loses nothing and is safe.

A clean reboot's new boot begins when the old kernel says it restarts, not when
`systemctl reboot` is sent: a slow shutdown is the guest's business, not a hang.
"""

from __future__ import annotations

from dataclasses import dataclass

# The kernel's last line of a clean reboot (printed at any log level).
RESTARTING_LINE = "reboot: Restarting system"


class SilentBootHang(Exception):
    """The boot stayed silent after `resets` resets: give up."""

    def __init__(self, line: str, resets: int, waited: float) -> None:
        super().__init__(f"{line!r} was not on the console {waited:g} s after each of "
                         f"{resets + 1} starts (hung before the kernel ran the initramfs)")
        self.resets = resets


@dataclass
class SilentBootGuard:
    """When one boot began, and whether its first line has shown up since.

    `console_offset` is where this boot's console output starts; `began` is None while a
    clean reboot's old boot is still shutting down."""

    boot_line: str
    timeout: float
    max_resets: int
    console_offset: int
    began: float | None
    resets: int = 0

    @classmethod
    def starting(cls, boot_line: str, timeout: float, max_resets: int, console_offset: int,
                 now: float, *, after_shutdown: bool = False) -> SilentBootGuard:
        return cls(boot_line, timeout, max_resets, console_offset,
                   None if after_shutdown else now)

    def should_reset(self, console: str, now: float) -> bool:
        """True when the machine must be reset now (then call `was_reset`); raises
        SilentBootHang when it already was, `max_resets` times."""
        this_boot = console[self.console_offset:]
        if self.began is None:
            if RESTARTING_LINE not in this_boot:
                return False
            self.began = now
            return False
        if self.boot_line in this_boot or now - self.began < self.timeout:
            return False
        if self.resets >= self.max_resets:
            raise SilentBootHang(self.boot_line, self.resets, self.timeout)
        return True

    def was_reset(self, console_length: int, now: float) -> None:
        self.resets += 1
        self.console_offset = console_length
        self.began = now
