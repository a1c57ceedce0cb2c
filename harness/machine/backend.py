"""What the Machine asks of a hypervisor: one small interface, one implementation per backend.

The Machine, the pool, snapshots and cleanup are shared; a backend only turns a `VmConfig`
into a running VM and controls it (start, stop, kill, reset, save and restore its state,
where its console goes, which host port reaches the guest's SSH). The QEMU backend
(`harness.machine.qemu.QemuBackend`) drives QEMU over QMP; a libvirt backend slots in
beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from harness.machine.accel import Accel
from harness.machine.guestport import PortShell
from harness.targets.boot import Drive, KernelBoot


@dataclass(frozen=True)
class VmConfig:
    """The virtual hardware of one machine. A restore must use the saved machine's config,
    so it is made in one place (`Machine._vm_config`)."""

    drives: tuple[Drive, ...]  # the machine's own writable disk first
    accel: Accel
    kernel: KernelBoot | None = None  # None: boot the first drive through `firmware`
    firmware: str = "bios"  # "bios" or "uefi"
    memory_mb: int = 1024
    cpus: int = 2
    fw_cfg: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    guest_shell: bool = False  # give the guest the harness's shell port, if the backend can


class Vm(Protocol):
    """One VM as the Machine drives it, whatever hypervisor runs it."""

    @property
    def ssh_address(self) -> tuple[str, int]:
        """(host, port) that reaches the guest's port 22 (through `ssh_proxy` if set)."""
        ...

    @property
    def ssh_proxy(self) -> str | None:
        """A command whose stdin/stdout reach `ssh_address` (an SSH ProxyCommand), for a
        VM on another host; None: connect directly."""
        ...

    @property
    def where(self) -> str:
        """Where the VM runs, for logs ("" for this host's own QEMU)."""
        ...

    @property
    def guest_shell(self) -> PortShell | None:
        """The guest's root shell on its virtio-serial port (connected at start), or None
        when the VM has no such port (then commands go over SSH)."""
        ...

    def start(self, restore_from: Path | None = None) -> None:
        """Start the VM: a cold boot, or paused on a saved state (see `finish_restore`)."""
        ...

    def finish_restore(self, timeout: float) -> None:
        """Wait until a saved state has loaded, then let the guest run."""
        ...

    def running(self) -> bool: ...

    def reset(self) -> None:
        """A hardware reset, like pressing the reset button (the guest does not shut down)."""
        ...

    def save_state(self, path: Path) -> None:
        """Pause the guest and write its RAM and device state to `path`."""
        ...

    @property
    def resumes_after_save(self) -> bool:
        """True when `resume` can let the guest run on after `save_state` (QEMU); False
        when saving ends the VM (libvirt's save)."""
        ...

    def resume(self) -> None:
        """Let a guest paused by `save_state` run on (only if `resumes_after_save`)."""
        ...

    def stop(self) -> None:
        """End the VM politely, then by force; safe to call twice."""
        ...

    def kill(self) -> None:
        """End the VM at once; safe to call twice."""
        ...

    def last_words(self, lines: int = 10) -> str:
        """The tail of the hypervisor's own log, for errors."""
        ...

    def emulator_aborted(self) -> bool:
        """True when the hypervisor itself crashed (not the guest): worth one more try."""
        ...


class Backend(Protocol):
    """Makes VMs and their disks on one host."""

    name: str

    def create_overlay(self, path: Path, backing: Path, backing_format: str) -> None:
        """A copy-on-write disk at `path` over `backing`, which is never written."""
        ...

    def vm(self, config: VmConfig, workdir: Path, console: Path) -> Vm:
        """A VM of `config`, not started; its serial console is appended to `console`."""
        ...

    def close(self) -> None:
        """Remove what the backend made for this run (volumes on remote hosts)."""
        ...
