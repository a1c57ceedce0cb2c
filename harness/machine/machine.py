"""The Machine API tests use: one running VM of a target.

Modelled on the NixOS test driver: ``succeed``, ``fail``, ``execute``, ``wait_for_unit``,
``wait_until_succeeds``, ``copy_to``, ``copy_from``, ``reboot``, ``console_log``. Every wait
is bounded, and a timeout error carries the tail of the serial console.

A Machine knows no image: its target kind hands it a `BootSpec` (what to boot, how the SSH
key gets in, how readiness and the host key are learnt), and a `Backend` runs the VM.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.errors import AssertionFailed, EmulatorCrashed, MachineError, ProvisioningFailed
from harness.machine.accel import Accel
from harness.machine.backend import Backend, Vm, VmConfig
from harness.machine.guestport import PortShell
from harness.machine.keys import SshKey
from harness.machine.qemu import QemuBackend, tail
from harness.machine.silentboot import SilentBootGuard, SilentBootHang
from harness.machine.ssh import CommandResult, SshConnection
from harness.machine.wait import Deadline, wait_until
from harness.targets.boot import BootSpec, Drive

log = logging.getLogger(__name__)

BOOT_TIMEOUT = 600.0  # cold boot under TCG takes ~20-25 s; leave room for a loaded host
RESTORE_TIMEOUT = 120.0
# How long a (re)booted guest's port shell may take to answer its first command: it starts
# with the boot, at about the time sshd does. Without an answer, commands go over SSH.
GUEST_SHELL_PROBE_TIMEOUT = 30.0
# How `reboot()` may end the running boot (see there).
SHUTDOWNS = ("clean", "reset")
# How long `systemctl --no-block reboot` may take to answer (it only queues the job).
REBOOT_COMMAND_TIMEOUT = 3.0
BOOT_ID_COMMAND = "cat /proc/sys/kernel/random/boot_id"  # a new value after each boot
# systemd's own words for a boot that has failed for good: stop waiting at once. A boot
# spec adds its image's own (e.g. the reference initramfs's failure marker).
_EMERGENCY = ("You are in emergency mode", "Give root password for maintenance",
              "Entering emergency mode")
# With panic=-1 a panicking guest reboots itself. Under QEMU 7.2 TCG the Debian 6.12 kernel
# occasionally oopses early (an int3 in patched kernel text); the next boot is fine. So a
# panic is only fatal when it keeps happening.
_PANIC = "Kernel panic - not syncing"
MAX_PANICS = 3
COLD_BOOT_ATTEMPTS = 2
# A boot whose second vCPU never gets going under TCG (seen once in ~60 reboots with QEMU
# 10, two VMs on two cores): the kernel reports RCU stalls ~21 s in and the boot never
# finishes. The machine is reset (like a power cycle in early boot), at most this often.
_RCU_STALL = re.compile(r"rcu: INFO: rcu_(preempt|sched) detected stalls")
MAX_STALL_RESETS = 2
# A boot that prints not even its first line (harness/machine/silentboot.py) is reset this
# often before the boot fails.
MAX_SILENT_RESETS = 2


@dataclass(frozen=True)
class Snapshot:
    """A booted, ready target: frozen disk overlay plus saved RAM/device state."""

    spec: BootSpec
    disk: Path
    state: Path
    host_key: str | None
    accel: Accel
    guest_shell: bool = False  # the port shell answered when it was saved


class Machine:
    """A VM of one target, driven over SSH as the boot spec's user (root)."""

    def __init__(self, spec: BootSpec, workdir: Path, key: SshKey, accel: Accel, *,
                 backend: Backend | None = None, name: str | None = None,
                 logger: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self.backend: Backend = backend or QemuBackend()
        self.name = name or spec.name
        self.workdir = workdir
        self.key = key
        self.accel = accel
        self.console_path = workdir / "console.log"
        self.disk = workdir / "root.qcow2"
        self.host_key: str | None = None
        self.vm: Vm | None = None
        self.ssh: SshConnection | None = None
        self._logger = logger
        self._host = None
        self._depth = 0
        self._boot_guard: SilentBootGuard | None = None  # the boot now under way, if any
        workdir.mkdir(parents=True, exist_ok=True)

    # ----- lifecycle -------------------------------------------------------------------
    def _vm_config(self) -> VmConfig:
        """The virtual hardware; the one place it is defined, so a restore's device list is
        the saved one: this machine's overlay of the root disk, then the spec's drives."""
        fw_cfg = dict(self.spec.fw_cfg)
        if self.spec.ssh_key_fw_cfg:
            fw_cfg[self.spec.ssh_key_fw_cfg] = self.key.public
        return VmConfig(
            drives=(Drive(self.disk, "qcow2"), *self.spec.drives), accel=self.accel,
            kernel=self.spec.kernel, firmware=self.spec.firmware,
            memory_mb=self.spec.memory_mb, cpus=self.spec.cpus, fw_cfg=fw_cfg,
            guest_shell=self.spec.guest_shell,
        )

    def boot(self, timeout: float | None = None) -> float:
        """Cold boot from the target's base image; returns seconds until SSH answered
        (within `timeout`, by default the boot spec's or BOOT_TIMEOUT).

        A cold boot starts from nothing, so when the emulator itself aborts it is tried once
        more on a fresh overlay (the guest had no part in it)."""
        timeout = timeout or self.spec.boot_timeout or BOOT_TIMEOUT
        for attempt in range(1, COLD_BOOT_ATTEMPTS + 1):
            self.disk.unlink(missing_ok=True)
            self.backend.create_overlay(self.disk, self.spec.root.path, self.spec.root.format)
            self.vm = self.backend.vm(self._vm_config(), self.workdir, self.console_path)
            started = time.monotonic()
            where = f" on {self.vm.where}" if self.vm.where else ""
            self.log(f"cold boot ({self.accel.name}){where}")
            self._guard_boot()
            self.vm.start()
            try:
                self._wait_for_ssh(timeout, "boot")
                self._boot_guard = None
                self._probe_guest_shell()
            except EmulatorCrashed:
                self.vm.kill()
                if attempt == COLD_BOOT_ATTEMPTS:
                    raise
                self.log(f"the emulator aborted during the cold boot, starting it again "
                         f"({self.vm.last_words(1)})")
                continue
            return time.monotonic() - started
        raise AssertionError("unreachable")

    @classmethod
    def restore(cls, snapshot: Snapshot, workdir: Path, key: SshKey, *,
                backend: Backend | None = None, name: str | None = None,
                logger: Callable[[str], None] | None = None,
                timeout: float = RESTORE_TIMEOUT) -> Machine:
        """Start from a snapshot on a fresh disk overlay; the guest clock is resynced."""
        machine = cls(snapshot.spec, workdir, key, snapshot.accel, backend=backend, name=name,
                      logger=logger)
        machine.host_key = snapshot.host_key
        machine.backend.create_overlay(machine.disk, snapshot.disk, "qcow2")
        machine.vm = machine.backend.vm(machine._vm_config(), workdir, machine.console_path)
        machine.vm.start(restore_from=snapshot.state)
        machine.vm.finish_restore(timeout)
        shell = machine.vm.guest_shell
        if shell is None or not snapshot.guest_shell:
            machine._wait_for_ssh(timeout, "restore", ready_line=False)  # sshd was up
        # else: the port shell was waiting when the state was saved, and still is
        machine.sync_clock(timeout=GUEST_SHELL_PROBE_TIMEOUT)
        return machine

    def snapshot(self, directory: Path) -> Snapshot:
        """Freeze this machine into a snapshot; the machine is stopped afterwards."""
        def keep_overlay(disk: Path) -> None:
            assert self.vm is not None
            self.vm.stop()
            self.vm = None
            self.disk.rename(disk)
        return self._save(directory, keep_overlay)

    def checkpoint(self, directory: Path) -> Snapshot | None:
        """Save this machine as a snapshot other runs can start from, and let it run on.

        The saved disk is a copy of the overlay taken while the guest is paused after the
        state was written (the migration has flushed it), so both belong to one instant.
        None when the backend ends the VM on saving (libvirt): then nothing is saved."""
        assert self.vm is not None
        if not self.vm.resumes_after_save:
            return None

        def copy_overlay(disk: Path) -> None:
            assert self.vm is not None
            try:
                shutil.copyfile(self.disk, disk)
            finally:
                self.vm.resume()
        return self._save(directory, copy_overlay)

    def _save(self, directory: Path, place_disk: Callable[[Path], None]) -> Snapshot:
        """Write the guest's state to `directory`, then let `place_disk` put the overlay
        that belongs to it at the path it is given (the guest is paused meanwhile)."""
        assert self.vm is not None
        self.execute("sync")
        port_works = self._port_usable
        self._close_ssh()  # no half-open SSH session in the saved state
        directory.mkdir(parents=True, exist_ok=True)
        state = directory / "state.bin"
        self.vm.save_state(state)
        disk = directory / "disk.qcow2"
        place_disk(disk)
        disk.chmod(0o444)
        return Snapshot(self.spec, disk, state, self.host_key, self.accel, port_works)

    def shutdown(self) -> None:
        """Stop the VM now (the guest's state is thrown away with its overlay)."""
        self._close_ssh()
        if self.vm is not None:
            self.vm.kill()
            self.vm = None

    @property
    def _port(self) -> PortShell | None:
        """The VM's port shell, if it has one (usable or not)."""
        return self.vm.guest_shell if self.vm is not None else None

    @property
    def _port_usable(self) -> bool:
        return self._port is not None and self._port.usable

    def _probe_guest_shell(self) -> None:
        """After a (re)boot: commands use the port shell once it has answered (it starts
        with the boot, at about the time sshd does); until then, or if it never does,
        they go over SSH."""
        shell = self._port
        if shell is None:
            return
        shell.discard_pending()  # whatever the previous boot's shell left
        try:
            shell.execute("true", timeout=GUEST_SHELL_PROBE_TIMEOUT)
        except MachineError as exc:
            self.log(f"the guest's shell port did not answer ({exc}); commands use SSH")

    def _end_boot_channels(self) -> None:
        """The boot is ending: its SSH session and port shell go with it (the port is
        probed again once the next boot is up, `_probe_guest_shell`)."""
        if self._port is not None:
            self._port.usable = False
        self._close_ssh()

    def _channel(self) -> PortShell | SshConnection:
        """Where commands and copies go: the guest's port shell while it works, else SSH
        (connected now if the machine was restored over the port)."""
        if self.vm is None:
            raise MachineError(f"{self.name}: not running")
        shell = self._port
        if shell is not None and shell.usable:
            return shell
        return self.ssh_connection()

    @property
    def connected(self) -> bool:
        """Commands can go somewhere now without a new connection (port shell or SSH)."""
        return self.ssh is not None or self._port_usable

    def ssh_connection(self) -> SshConnection:
        """The machine's SSH connection, made now if commands so far went over the port."""
        if self.ssh is None:
            if self.vm is None:
                raise MachineError(f"{self.name}: not running")
            self._wait_for_ssh(RESTORE_TIMEOUT, "connect", ready_line=False)
        assert self.ssh is not None
        return self.ssh

    def _close_ssh(self) -> None:
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        self._host = None

    def _guard_boot(self, *, after_shutdown: bool = False) -> None:
        """Watch the boot that begins now for a silent hang, if the image says what its
        first console line is."""
        line = self.spec.readiness.boot_line
        self._boot_guard = None if line is None else SilentBootGuard.starting(
            line, self.spec.readiness.silent_boot_timeout, MAX_SILENT_RESETS,
            len(self.console_log()), time.monotonic(), after_shutdown=after_shutdown)

    def _wait_for_ssh(self, timeout: float, what: str, *, ready_line: bool = True,
                      console_from: int | None = None) -> None:
        """Connect once the guest says sshd listens (`ready_line`, in the console after
        `console_from`, default: from now on), else by retrying."""
        watch = _BootWatch(self, what, ready_line, console_from=console_from)
        wait_until(watch.poll, timeout=timeout, interval=0.2, on_timeout=lambda: MachineError(
            self._with_console(f"{self.name}: SSH not ready {timeout:.0f}s after {what} "
                               f"(last: {watch.last_error})")))

    def check_provisioning(self) -> None:
        """Raise ProvisioningFailed if first-boot provisioning reported a failure."""
        failed = self.spec.readiness.provisioning_failure(self.console_log())
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

    # ----- log -------------------------------------------------------------------------
    def log(self, message: str) -> None:
        line = f"[{self.name}] {'  ' * self._depth}{message}"
        log.info(line)
        if self._logger:
            self._logger(line)

    @contextlib.contextmanager
    def nested(self, title: str) -> Iterator[None]:
        """A timed block of the machine log: its lines are indented, and its end says how
        long it took (as the NixOS driver's `nested`)."""
        self.log(title)
        self._depth += 1
        started = time.monotonic()
        outcome = "failed"
        try:
            yield
            outcome = "done"
        finally:
            self._depth -= 1
            self.log(f"({outcome}: {title}, {time.monotonic() - started:.1f} s)")

    # ----- commands --------------------------------------------------------------------
    def execute(self, command: str, timeout: float = 120.0) -> CommandResult:
        """Run a shell command as root (through sudo when the target logs in as its
        distribution's user); never raises for a non-zero exit."""
        try:
            return self._channel().execute(command, timeout=timeout)
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
        deadline = Deadline(timeout)
        last: list[CommandResult] = []

        def succeeded() -> str | None:
            res = self.execute(command, timeout=max(5.0, deadline.remaining()))
            last[:] = [res]
            return res.stdout if res.exit_code == 0 else None

        return wait_until(succeeded, timeout=timeout, interval=interval,
                          on_timeout=lambda: MachineError(self._with_console(
                              f"{self.name}: still failing after {timeout:.0f}s: {command}\n"
                              f"last output: {last[0].output.strip()}")))

    def wait_for_unit(self, unit: str, timeout: float = 120.0) -> None:
        """Wait until `unit` is active; fail at once if it failed."""
        q = shlex.quote(unit)
        state = ["(not asked yet)"]

        def active() -> bool | None:
            state[0] = self.execute(f"systemctl is-active {q}").stdout.strip()
            if state[0] == "failed":
                status = self.execute(f"systemctl status --no-pager {q}").output
                raise AssertionFailed(f"{self.name}: unit {unit} failed\n{status}")
            return True if state[0] == "active" else None

        wait_until(active, timeout=timeout, interval=1.0, on_timeout=lambda: MachineError(
            self._with_console(
                f"{self.name}: unit {unit} not active after {timeout:.0f}s (is {state[0]})")))

    def sync_clock(self, timeout: float = 120.0) -> None:
        """A restored guest's clock stands at snapshot time; set it to the host's."""
        self.succeed(f"date -u -s @{time.time():.3f} >/dev/null", timeout)

    def copy_to(self, local: Path, remote: str) -> None:
        """Copy a file or a directory tree into the guest (modes and symlinks kept)."""
        local = Path(local)
        if local.is_dir():
            self._channel().put_tree(local, remote)
        else:
            self.succeed(f"mkdir -p {shlex.quote(str(Path(remote).parent))}")
            self._channel().put_file(local, remote)

    def copy_from(self, remote: str, local: Path) -> None:
        self._channel().get_file(remote, Path(local))

    def ssh_command(self) -> list[str]:
        """The `ssh` command line a person runs to log in to this machine: the run's key,
        its forwarded port on loopback and its pinned host key (a known_hosts file in the
        machine's work directory), so nothing is trusted on first use."""
        conn = self.ssh_connection()  # also makes sure sshd answers
        assert self.vm is not None
        host, port = self.vm.ssh_address
        known_hosts = self.workdir / "known_hosts"
        name = host if port == 22 else f"[{host}]:{port}"
        known_hosts.write_text(f"{name} {self.host_key or conn.host_key}\n")
        return ["ssh", "-i", str(self.key.private), "-p", str(port),
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                f"{self.spec.ssh_user}@{host}"]

    def boot_id(self) -> str:
        return self.succeed(BOOT_ID_COMMAND).strip()

    def reboot(self, timeout: float | None = None, *, shutdown: str = "clean") -> None:
        """Reboot the guest and wait until it answers again with a new boot id.

        shutdown="clean": `systemctl reboot` (units stop, file systems unmount).
        shutdown="reset": `sync`, then a hardware reset, like a power cut right after the
        disks were flushed. The next boot sees the same files; what it skips is the
        shutdown itself (about 1.5 s and several CPU seconds under TCG)."""
        if shutdown not in SHUTDOWNS:
            raise ValueError(f"shutdown={shutdown!r}: expected one of {', '.join(SHUTDOWNS)}")
        timeout = timeout or self.spec.boot_timeout or BOOT_TIMEOUT
        before = self.boot_id()
        # The new boot is judged by what the console shows from here on: a clean shutdown
        # may keep the command below waiting until the next boot has printed its ready line.
        console_from = len(self.console_log())
        if shutdown == "reset":
            assert self.vm is not None
            self.log("reboot (sync, then reset)")
            self.succeed("sync")
            self._guard_boot()
            self.vm.reset()
        else:
            self.log("reboot")
            self._guard_boot(after_shutdown=True)
            # The shutdown may end the connection or the port shell before the reply: give
            # the command the moment it needs to queue the reboot, not more (a port shell
            # never answered, and each clean reboot waited out the whole timeout).
            with contextlib.suppress(MachineError):
                self.execute("systemctl --no-block reboot", timeout=REBOOT_COMMAND_TIMEOUT)
        self._end_boot_channels()
        deadline = Deadline(timeout)
        # With a port shell and a ready line, the reboot is over at the new boot's ready line
        # once the port answers with a new boot id: no SSH handshake (about 0.5 s of guest
        # CPU under TCG); SSH connects when something asks for it.
        over_port = self._port is not None and self.spec.readiness.ready_line is not None
        if over_port:
            self._wait_for_ready_line(deadline, console_from)
            self._probe_guest_shell()

        def rebooted() -> bool | None:
            try:
                self._wait_for_ssh(max(1.0, deadline.remaining()), "reboot",
                                   console_from=console_from)
                if self._is_new_boot(before):
                    return True
            except MachineError:
                if self.vm is None or not self.vm.running():
                    raise
            self._close_ssh()  # still the old boot (sshd not yet stopped): try again
            return None

        if not (over_port and self._port_usable and self._is_new_boot(before)):
            wait_until(rebooted, timeout=max(1.0, deadline.remaining()), interval=1.0,
                       on_timeout=lambda: MachineError(
                self._with_console(f"{self.name}: reboot did not finish")))
            if not over_port:  # else the port was probed already, and did not answer
                self._probe_guest_shell()
        self._boot_guard = None
        self.sync_clock()

    def _wait_for_ready_line(self, deadline: Deadline, console_from: int) -> None:
        """Wait, without connecting anything, until the new boot prints its ready line
        (in the console after `console_from`)."""
        watch = _BootWatch(self, "reboot", ready_line=True, connect=False,
                           console_from=console_from)
        wait_until(watch.poll, timeout=max(1.0, deadline.remaining()), interval=0.2,
                   on_timeout=lambda: MachineError(self._with_console(
                       f"{self.name}: reboot did not finish (no "
                       f"{self.spec.readiness.ready_line!r} on the console)")))

    def _is_new_boot(self, before: str) -> bool:
        res = self.execute(BOOT_ID_COMMAND, timeout=10)
        return res.exit_code == 0 and res.stdout.strip() not in ("", before)

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

            ssh = self.ssh_connection()
            backend = tparamiko.ParamikoBackend(
                f"paramiko://{self.spec.ssh_user}@{ssh.host}:{ssh.port}",
                sudo=ssh.sudo)
            backend.__dict__["client"] = ssh.client  # reuse our pinned connection
            self._host = testinfra.host.Host(backend)
        return self._host


class _BootWatch:
    """One wait for SSH after a boot, reboot or restore: reads the new console output,
    stops at once on a failed boot, resets a stalled one, and connects when it is time."""

    def __init__(self, machine: Machine, what: str, ready_line: bool,
                 connect: bool = True, console_from: int | None = None) -> None:
        self.machine = machine
        # connect=False: done at the ready line, without an SSH connection (the caller
        # talks to the port shell).
        self.connect = connect
        self.what = what
        self.readiness = machine.spec.readiness
        # Without a ready line (a restore: sshd was up when saved; an image that prints
        # nothing of ours) every attempt counts as ready.
        self.wait_for_line = ready_line and self.readiness.ready_line is not None
        # Judge only what this boot prints.
        self.seen = len(machine.console_log()) if console_from is None else console_from
        self.panics_logged = 0
        self.resets = 0
        self.last_attempt = time.monotonic() - 1.0
        self.last_error = "no attempt yet"

    def _fail(self, message: str, error: type[MachineError] = MachineError) -> MachineError:
        return error(self.machine._with_console(f"{self.machine.name}: {message}"))

    def poll(self) -> bool | None:
        m, vm = self.machine, self.machine.vm
        assert vm is not None
        if not vm.running():
            error = EmulatorCrashed if vm.emulator_aborted() else MachineError
            raise self._fail(f"the VM exited during {self.what}:\n{vm.last_words(5)}", error)
        console = m.console_log()
        m.check_provisioning()
        new = console[self.seen:]
        if any(text in new for text in (*_EMERGENCY, *self.readiness.fatal_console)):
            raise self._fail(f"{self.what} failed")
        panics = new.count(_PANIC)
        if panics >= MAX_PANICS:
            raise self._fail(f"guest kernel panicked {panics} times during {self.what}")
        if panics > self.panics_logged:
            self.panics_logged = panics
            m.log(f"guest kernel panicked during {self.what}; it reboots itself (panic=-1)")
        if self.what != "restore" and _RCU_STALL.search(new):
            if self.resets >= MAX_STALL_RESETS:
                raise self._fail(f"guest kernel stalled (RCU) in {self.resets + 1} boots")
            self.resets += 1
            m.log(f"guest kernel stalled (RCU) during {self.what}; resetting the machine")
            vm.reset()
            self.seen = len(console)
            self.panics_logged = 0
            return None
        guard = m._boot_guard
        if guard is not None:
            try:
                silent = guard.should_reset(console, time.monotonic())
            except SilentBootHang as exc:
                raise self._fail(f"{self.what} failed: {exc}") from None
            if silent:
                m.log(f"{self.what}: no {guard.boot_line!r} on the console {guard.timeout:.0f} s "
                      f"after the boot began (hung before the kernel); resetting the machine")
                vm.reset()
                guard.was_reset(len(console), time.monotonic())
                self.seen = len(console)
                return None
        if m.host_key is None and self.readiness.host_key_line is not None:
            m.host_key = self.readiness.announced_host_key(console)
            if m.host_key is None:
                return None  # the guest has not announced its key yet
        since = time.monotonic() - self.last_attempt
        ready = not self.wait_for_line or str(self.readiness.ready_line) in new
        if not self.connect:
            return True if ready else None
        if not ((ready and since >= 1.0) or since > self.readiness.blind_interval):
            return None
        self.last_attempt = time.monotonic()
        host, port = vm.ssh_address
        try:
            m.ssh = SshConnection.connect(host, port, m.key.private, user=m.spec.ssh_user,
                                          host_key=m.host_key, timeout=5 if ready else 2,
                                          proxy=vm.ssh_proxy)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None
        if m.host_key is None:  # pinned at first contact for the rest of the run
            m.host_key = m.ssh.host_key
        return True
