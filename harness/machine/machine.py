"""The Machine API tests use: one running VM of a target.

Modelled on the NixOS test driver: ``succeed``, ``fail``, ``execute``, ``wait_for_unit``,
``wait_until_succeeds``, ``copy_to``, ``copy_from``, ``reboot``, ``console_log``. Every wait
is bounded, and a timeout error carries the tail of the serial console.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.errors import AssertionFailed, EmulatorCrashed, MachineError, ProvisioningFailed
from harness.machine.accel import Accel
from harness.machine.keys import SshKey
from harness.machine.qemu import Drive, QemuConfig, QemuProcess, tail
from harness.machine.ssh import CommandResult, SshConnection
from harness.targets.build import TargetImage
from harness.targets.initramfs import FAILED_MARKER as INITRAMFS_FAILED

log = logging.getLogger(__name__)

BOOT_TIMEOUT = 600.0  # cold boot under TCG takes ~20-25 s; leave room for a loaded host
RESTORE_TIMEOUT = 120.0
SSH_KEY_FW_CFG = "opt/org.sysext-harness/ssh-key"
# The key counts only once something follows it: the console is polled while the guest
# writes, and a key cut mid-line would make every login fail as a host-key mismatch.
_HOSTKEY_LINE = re.compile(r"SYSEXT-HARNESS-HOSTKEY (ssh-ed25519 [A-Za-z0-9+/=]+)[ \r\n]")
# Printed by sysext-harness-ssh-ready.service once sshd listens (images/overlay). Until
# then a connection attempt would only hang in QEMU's user network until it times out.
_SSH_READY = "SYSEXT-HARNESS-SSH-READY"
# Without the line (a config that replaced the unit, a slow guest), still try now and then.
_BLIND_ATTEMPT_INTERVAL = 10.0
# Console lines that mean the boot has failed for good: stop waiting at once.
_FATAL_CONSOLE = re.compile(
    r"You are in emergency mode|Give root password for maintenance|Entering emergency mode|"
    + INITRAMFS_FAILED
)
# With panic=-1 a panicking guest reboots itself. Under QEMU 7.2 TCG the Debian 6.12 kernel
# occasionally oopses early (an int3 in patched kernel text); the next boot is fine. So a
# panic is only fatal when it keeps happening.
_PANIC = "Kernel panic - not syncing"
MAX_PANICS = 3
# QEMU's own aborts, as its stderr shows them ("qemu-system-x86_64: system/physmem.c:2678:
# iotlb_to_section: Assertion ... failed."): seen once in ~900 TCG boots with QEMU 10.
_EMULATOR_ABORT = re.compile(r"^qemu-system-\S+: \S+:\d+: .*Assertion .* failed", re.M)
COLD_BOOT_ATTEMPTS = 2
# A boot whose second vCPU never gets going under TCG (seen once in ~60 reboots with QEMU
# 10, two VMs on two cores): the kernel reports RCU stalls ~21 s in and the boot never
# finishes. The machine is reset (like a power cycle in early boot), at most this often.
_RCU_STALL = re.compile(r"rcu: INFO: rcu_(preempt|sched) detected stalls")
MAX_STALL_RESETS = 2
# Lines the guest's first-boot provisioning prints when it fails (see images/overlay). Only
# a finished line counts: the console is polled while the guest is still writing, and a
# reason cut mid-line would not match what a scenario's `expect_failure` asks for.
_PROVISIONING_FAILED = re.compile(
    r"SYSEXT-HARNESS-(IGNITION|CLOUD-CONFIG)-FAILED: ([^\r\n]*)\r?\n")


def announced_host_key(console: str) -> str | None:
    """The guest's SSH host key as its last complete console announcement gives it."""
    found = _HOSTKEY_LINE.findall(console)
    return found[-1] if found else None


def provisioning_failure(console: str) -> tuple[str, str] | None:
    """The (tool, reason) of the first complete provisioning-failure line, if any."""
    failed = _PROVISIONING_FAILED.search(console)
    if failed is None:
        return None
    tool = "Ignition" if failed.group(1) == "IGNITION" else "cloud-config"
    return tool, failed.group(2).strip()


def emulator_aborted(stderr: str) -> bool:
    """True when QEMU's stderr shows QEMU aborting on an internal assertion."""
    return _EMULATOR_ABORT.search(stderr) is not None


@dataclass(frozen=True)
class Snapshot:
    """A booted, ready target: frozen disk overlay plus saved RAM/device state."""

    image: TargetImage
    disk: Path
    state: Path
    host_key: str | None
    accel: Accel


def _qemu_img_overlay(path: Path, backing: Path, backing_format: str) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", backing_format,
         "-b", str(backing), str(path)],
        check=True, capture_output=True,
    )


class Machine:
    """A VM of one target, driven over SSH as root."""

    def __init__(self, image: TargetImage, workdir: Path, key: SshKey, accel: Accel, *,
                 name: str | None = None, memory_mb: int = 1024, cpus: int = 2,
                 logger: Callable[[str], None] | None = None,
                 fw_cfg: dict[str, Path] | None = None, extra_drives: list[Drive] | None = None,
                 key_via_fw_cfg: bool = True) -> None:
        """`fw_cfg`/`extra_drives` carry first-boot provisioning (an Ignition config, a
        cloud-config seed). With `key_via_fw_cfg=False` the harness's SSH key is not handed
        over by fw_cfg: the provisioning config must install it."""
        self.image = image
        self.name = name or image.target.name
        self.workdir = workdir
        self.key = key
        self.accel = accel
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.console_path = workdir / "console.log"
        self.disk = workdir / "root.qcow2"
        self.host_key: str | None = None
        self.qemu: QemuProcess | None = None
        self.ssh: SshConnection | None = None
        self._logger = logger
        self._host = None
        self.fw_cfg = dict(fw_cfg or {})
        if key_via_fw_cfg:
            self.fw_cfg[SSH_KEY_FW_CFG] = key.public
        self.extra_drives = list(extra_drives or [])
        workdir.mkdir(parents=True, exist_ok=True)

    # ----- lifecycle -------------------------------------------------------------------
    def _config(self) -> QemuConfig:
        """The virtual hardware; the one place it is defined, so a restore's device list is
        the saved one. Disks: the root overlay, /usr slot A, /usr slot B (both read-only;
        /etc/fstab picks the slot by label, `switch-usr-slot` changes it), then provisioning
        drives (found by label too, so the order does not matter to the guest)."""
        return QemuConfig(
            kernel=self.image.kernel, initrd=self.image.initrd, cmdline=self.image.cmdline,
            drives=[Drive(self.disk, "qcow2"), Drive(self.image.usr_a, "raw", readonly=True),
                    Drive(self.image.usr_b, "raw", readonly=True), *self.extra_drives],
            accel=self.accel, memory_mb=self.memory_mb, cpus=self.cpus,
            fw_cfg=self.fw_cfg,
        )

    def boot(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Cold boot from the target's base image; returns seconds until SSH answered.

        A cold boot starts from nothing, so when QEMU itself aborts it is tried once more
        on a fresh overlay (the guest had no part in it)."""
        for attempt in range(1, COLD_BOOT_ATTEMPTS + 1):
            self.disk.unlink(missing_ok=True)
            _qemu_img_overlay(self.disk, self.image.root, "raw")
            self.qemu = QemuProcess(self._config(), self.workdir, self.console_path)
            started = time.monotonic()
            self.log(f"cold boot ({self.accel.name})")
            self.qemu.start()
            try:
                self._wait_for_ssh(timeout, "boot")
            except EmulatorCrashed:
                self.qemu.kill()
                if attempt == COLD_BOOT_ATTEMPTS:
                    raise
                self.log(f"QEMU aborted during the cold boot, starting it again "
                         f"({tail(self.qemu.stderr_path, 1)})")
                continue
            return time.monotonic() - started
        raise AssertionError("unreachable")

    @classmethod
    def restore(cls, snapshot: Snapshot, workdir: Path, key: SshKey, *,
                name: str | None = None, logger: Callable[[str], None] | None = None,
                timeout: float = RESTORE_TIMEOUT) -> Machine:
        """Start from a snapshot on a fresh disk overlay; the guest clock is resynced."""
        machine = cls(snapshot.image, workdir, key, snapshot.accel, name=name, logger=logger)
        machine.host_key = snapshot.host_key
        _qemu_img_overlay(machine.disk, snapshot.disk, "qcow2")
        machine.qemu = QemuProcess(machine._config(), workdir, machine.console_path,
                                   incoming=snapshot.state)
        machine.qemu.start()
        machine.qemu.finish_incoming(timeout)
        machine._wait_for_ssh(timeout, "restore", ready_line=False)  # sshd was up when saved
        machine.sync_clock()
        return machine

    def snapshot(self, directory: Path) -> Snapshot:
        """Freeze this machine into a snapshot; the machine is stopped afterwards."""
        assert self.qemu is not None
        self.execute("sync")
        self._close_ssh()
        directory.mkdir(parents=True, exist_ok=True)
        state = directory / "state.bin"
        self.qemu.save_state(state)
        self.qemu.quit()
        self.qemu = None
        disk = directory / "disk.qcow2"
        self.disk.rename(disk)
        disk.chmod(0o444)
        return Snapshot(self.image, disk, state, self.host_key, self.accel)

    def shutdown(self) -> None:
        """Stop QEMU now (the guest's state is thrown away with its overlay)."""
        self._close_ssh()
        if self.qemu is not None:
            self.qemu.kill()
            self.qemu = None

    def _close_ssh(self) -> None:
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        self._host = None

    def _wait_for_ssh(self, timeout: float, what: str, *, ready_line: bool = True) -> None:
        """Connect once the guest says sshd listens (`ready_line`), else by retrying."""
        assert self.qemu is not None
        deadline = time.monotonic() + timeout
        last_error = "no attempt yet"
        seen = len(self.console_log())  # judge only what this boot prints
        panics_logged = 0
        last_attempt = time.monotonic() - 1.0
        resets = 0
        while time.monotonic() < deadline:
            if not self.qemu.running():
                stderr = tail(self.qemu.stderr_path, 5)
                error = EmulatorCrashed if emulator_aborted(stderr) else MachineError
                raise error(self._with_console(
                    f"{self.name}: QEMU exited during {what}:\n{stderr}"))
            console = self.console_log()
            self.check_provisioning()
            new = console[seen:]
            if _FATAL_CONSOLE.search(new):
                raise MachineError(self._with_console(f"{self.name}: {what} failed"))
            panics = new.count(_PANIC)
            if panics >= MAX_PANICS:
                raise MachineError(self._with_console(
                    f"{self.name}: guest kernel panicked {panics} times during {what}"))
            if panics > panics_logged:
                panics_logged = panics
                self.log(f"guest kernel panicked during {what}; it reboots itself (panic=-1)")
            if what != "restore" and _RCU_STALL.search(new):
                if resets >= MAX_STALL_RESETS:
                    raise MachineError(self._with_console(
                        f"{self.name}: guest kernel stalled (RCU) in {resets + 1} boots"))
                resets += 1
                self.log(f"guest kernel stalled (RCU) during {what}; resetting the machine")
                self.qemu.command("system_reset")
                seen = len(console)
                panics_logged = 0
                continue
            if self.host_key is None:
                self.host_key = announced_host_key(console)
            since = time.monotonic() - last_attempt
            ready = not ready_line or _SSH_READY in new
            if self.host_key is not None and (
                    (ready and since >= 1.0) or since > _BLIND_ATTEMPT_INTERVAL):
                last_attempt = time.monotonic()
                try:
                    self.ssh = SshConnection.connect(
                        "127.0.0.1", self.qemu.ssh_port, self.key.private,
                        host_key=self.host_key, timeout=5 if ready else 2)
                    return
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise MachineError(self._with_console(
            f"{self.name}: SSH not ready {timeout:.0f}s after {what} (last: {last_error})"))

    def check_provisioning(self) -> None:
        """Raise ProvisioningFailed if first-boot provisioning reported a failure."""
        failed = provisioning_failure(self.console_log())
        if failed:
            tool, reason = failed
            raise ProvisioningFailed(tool, reason,
                                     f"--- console tail ---\n{tail(self.console_path)}")

    def settle(self, timeout: float = 300.0) -> str:
        """Wait for the boot transaction to finish; returns the system state."""
        res = self.execute("systemctl is-system-running --wait", timeout=timeout)
        return res.stdout.strip()

    def _with_console(self, message: str) -> str:
        return f"{message}\n--- console tail ({self.console_path}) ---\n{tail(self.console_path)}"

    # ----- commands --------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"[{self.name}] {message}"
        log.info(line)
        if self._logger:
            self._logger(line)

    def execute(self, command: str, timeout: float = 120.0) -> CommandResult:
        """Run a shell command as root; never raises for a non-zero exit."""
        if self.ssh is None:
            raise MachineError(f"{self.name}: not running")
        try:
            return self.ssh.execute(command, timeout=timeout)
        except MachineError as exc:
            raise MachineError(self._with_console(f"{self.name}: {exc}")) from exc

    def succeed(self, command: str, timeout: float = 120.0) -> str:
        res = self.execute(command, timeout)
        if res.exit_code != 0:
            raise AssertionFailed(
                f"{self.name}: command failed with exit {res.exit_code}: {command}\n"
                f"{res.output.strip()}")
        return res.stdout

    def fail(self, command: str, timeout: float = 120.0) -> str:
        res = self.execute(command, timeout)
        if res.exit_code == 0:
            raise AssertionFailed(f"{self.name}: command unexpectedly succeeded: {command}\n"
                                  f"{res.output.strip()}")
        return res.output

    def wait_until_succeeds(self, command: str, timeout: float = 120.0,
                            interval: float = 1.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            res = self.execute(command, timeout=max(5.0, deadline - time.monotonic()))
            if res.exit_code == 0:
                return res.stdout
            if time.monotonic() > deadline:
                raise MachineError(self._with_console(
                    f"{self.name}: still failing after {timeout:.0f}s: {command}\n"
                    f"last output: {res.output.strip()}"))
            time.sleep(interval)

    def wait_for_unit(self, unit: str, timeout: float = 120.0) -> None:
        """Wait until `unit` is active; fail at once if it failed."""
        deadline = time.monotonic() + timeout
        q = shlex.quote(unit)
        while True:
            state = self.execute(f"systemctl is-active {q}").stdout.strip()
            if state == "active":
                return
            if state == "failed":
                status = self.execute(f"systemctl status --no-pager {q}").output
                raise AssertionFailed(f"{self.name}: unit {unit} failed\n{status}")
            if time.monotonic() > deadline:
                raise MachineError(self._with_console(
                    f"{self.name}: unit {unit} not active after {timeout:.0f}s (is {state})"))
            time.sleep(1.0)

    def sync_clock(self) -> None:
        """A restored guest's clock stands at snapshot time; set it to the host's."""
        self.succeed(f"date -u -s @{time.time():.3f} >/dev/null")

    def copy_to(self, local: Path, remote: str) -> None:
        """Copy a file or a directory tree into the guest (modes and symlinks kept)."""
        if self.ssh is None:
            raise MachineError(f"{self.name}: not running")
        local = Path(local)
        if local.is_dir():
            self.ssh.put_tree(local, remote)
        else:
            self.succeed(f"mkdir -p {shlex.quote(str(Path(remote).parent))}")
            self.ssh.put_file(local, remote)

    def copy_from(self, remote: str, local: Path) -> None:
        if self.ssh is None:
            raise MachineError(f"{self.name}: not running")
        self.ssh.get_file(remote, Path(local))

    def boot_id(self) -> str:
        return self.succeed("cat /proc/sys/kernel/random/boot_id").strip()

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Reboot the guest and wait until it answers again with a new boot id."""
        before = self.boot_id()
        self.log("reboot")
        with contextlib.suppress(MachineError):  # the connection may drop mid-command
            self.execute("systemctl reboot", timeout=10)
        self._close_ssh()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._wait_for_ssh(max(1.0, deadline - time.monotonic()), "reboot")
                res = self.execute("cat /proc/sys/kernel/random/boot_id", timeout=10)
                if res.exit_code == 0 and res.stdout.strip() not in ("", before):
                    self.sync_clock()
                    return
            except MachineError:
                if self.qemu is None or not self.qemu.running():
                    raise
            self._close_ssh()  # still the old boot (sshd not yet stopped): try again
            time.sleep(1.0)
        raise MachineError(self._with_console(f"{self.name}: reboot did not finish"))

    def console_log(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def host(self):  # type: ignore[no-untyped-def]
        """A testinfra Host on this machine's SSH connection, for readable assertions."""
        if self._host is None:
            import testinfra.backend.paramiko as tparamiko
            import testinfra.host

            if self.ssh is None:
                raise MachineError(f"{self.name}: not running")
            backend = tparamiko.ParamikoBackend(f"paramiko://root@127.0.0.1:{self.ssh.port}")
            backend.__dict__["client"] = self.ssh.client  # reuse our pinned connection
            self._host = testinfra.host.Host(backend)
        return self._host
