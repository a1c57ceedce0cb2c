"""Error types shared by every part of the harness.

Two families matter to users: `ConfigError` means *their input* is wrong (exit code 2,
nothing was started), everything else derived from `HarnessError` means the run itself
failed (a VM did not boot, a command timed out, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def first_line(text: object, limit: int = 200) -> str:
    """The first line of a message (an exception's, a failure's detail), for one-line
    summaries; empty for an empty message."""
    lines = str(text or "").strip().splitlines()
    return lines[0][:limit] if lines else ""


class HarnessError(Exception):
    """A failure while doing real work (building, booting, running)."""


class ConfigError(HarnessError):
    """Bad user input. Always names where it is, what was found and what is accepted."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        key: str | None = None,
        value: object = None,
        allowed: str | Iterable[str] | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.key = key
        self.value = value
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(str(a) for a in allowed)
        self.allowed = allowed
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = self.file
        if self.key:
            where = f"{where}: {self.key}" if where else self.key
        text = f"{where}: {self.message}" if where else self.message
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.allowed:
            text += f"; allowed: {self.allowed}"
        return text


class ConfigErrors(ConfigError):
    """Several problems found in one pass, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        # Problems that did not refuse the input but belong next to the errors (Butane's
        # warnings, which the CLI prints too).
        self.warnings: tuple[object, ...] = ()
        super().__init__("\n".join(e.render() for e in errors))

    def render(self) -> str:  # type: ignore[override]
        return "\n".join(e.render() for e in getattr(self, "errors", []))


class CommandError(HarnessError):
    """A host command failed; carries its output so the user sees why."""


class MachineError(HarnessError):
    """A VM misbehaved: did not boot, crashed, or a wait ran out. Carries the console tail."""


class EmulatorCrashed(MachineError):
    """QEMU itself aborted (an internal assertion), not the guest: under multi-threaded TCG
    QEMU 10 very rarely trips over its own memory map early in a boot."""


class ProvisioningFailed(MachineError):
    """First-boot provisioning (Ignition, cloud-config) failed in the guest."""

    def __init__(self, tool: str, reason: str, details: str = "") -> None:
        self.tool = tool
        self.reason = reason
        message = f"{tool} failed in the guest: {reason}"
        super().__init__(f"{message}\n{details}" if details else message)


class AssertionFailed(HarnessError):
    """An expectation about guest state did not hold."""
