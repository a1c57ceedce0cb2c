"""The QEMU backend: one QEMU process per VM, controlled over QMP.

Every QEMU gets PR_SET_PDEATHSIG=SIGKILL, so it dies with the harness process that started
it, also when that process is killed outright (Ctrl-C twice, a test timeout, SIGKILL).
Saving and restoring a running VM is QEMU's migration to and from a file.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import logging
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.errors import MachineError
from harness.machine import guestport
from harness.machine.accel import qemu_version
from harness.machine.backend import VmConfig
from harness.machine.guestport import PortShell
from harness.machine.wait import wait_until
from harness.targets.boot import Drive

__all__ = ["Drive", "QemuBackend", "QemuProcess", "emulator_aborted", "free_port", "tail"]

log = logging.getLogger(__name__)
# qemu.qmp logs every refused connection at ERROR, but refusals are expected while QEMU
# starts (the wait in `start` retries them); failures still surface as MachineError.
logging.getLogger("qemu.qmp.protocol").setLevel(logging.CRITICAL)
_PR_SET_PDEATHSIG = 1
_QMP_IDS = itertools.count(1)
# QEMU's own aborts, as its stderr shows them ("qemu-system-x86_64: system/physmem.c:2678:
# iotlb_to_section: Assertion ... failed."): seen once in ~900 TCG boots with QEMU 10.
_EMULATOR_ABORT = re.compile(r"^qemu-system-\S+: \S+:\d+: .*Assertion .* failed", re.M)
# Debian's ovmf package: the 4 MB firmware and its variable store template.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


# QEMU 8.2 and later read and write a saved state file themselves (the "file:" migration
# transport); older ones through a `cat` child and a pipe. A restore starts each of the
# matrix's runs: the file transport took one of refos-262-flatcar from 0.67 s to 0.52 s to
# the first command (mean of ten; QEMU 9's mapped-ram layout was no faster again).
FILE_MIGRATION_SINCE = (8, 2)


@functools.cache
def qemu_release() -> tuple[int, int]:
    """(major, minor) of the installed QEMU; (0, 0) if it cannot be told."""
    match = re.search(r"version (\d+)\.(\d+)", qemu_version())
    return (int(match[1]), int(match[2])) if match else (0, 0)


def state_file_uri(path: Path, *, saving: bool) -> str:
    """The migration URI that writes (`saving`) or reads the saved state at `path`. The
    file: transport takes options after a comma, so a path with one goes through `cat`."""
    if qemu_release() >= FILE_MIGRATION_SINCE and "," not in str(path):
        return f"file:{path}"
    return f"exec:cat > {path}" if saving else f"exec:cat {path}"


def emulator_aborted(stderr: str) -> bool:
    """True when QEMU's stderr shows QEMU aborting on an internal assertion."""
    return _EMULATOR_ABORT.search(stderr) is not None


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A free TCP port on loopback (QEMU binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.splitlines()[-lines:])


class QemuBackend:
    """VMs as local QEMU processes, disks as qcow2 overlays made by qemu-img."""

    name = "qemu"

    def create_overlay(self, path: Path, backing: Path, backing_format: str) -> None:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", backing_format,
             "-b", str(backing), str(path)],
            check=True, capture_output=True,
        )

    def vm(self, config: VmConfig, workdir: Path, console: Path) -> QemuProcess:
        return QemuProcess(config, workdir, console)

    def close(self) -> None:
        """Nothing to do: overlays live in the run directory, QEMU dies with us."""


class QemuProcess:
    """A QEMU system emulator with a serial console file, QMP socket and SSH port forward."""

    ssh_proxy: str | None = None  # always on this host
    where = ""

    def __init__(self, config: VmConfig, workdir: Path, console: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.console = console
        self.incoming: Path | None = None
        # An abstract socket: no path-length limit, nothing left on disk if we are killed.
        self.qmp_name = f"sysext-harness-qmp-{os.getpid()}-{next(_QMP_IDS)}"
        self.stderr_path = workdir / "qemu.stderr"
        self.ssh_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QEMUMonitorProtocol | None = None
        # The guest shell port's host end: a socket in the run's private directory (the
        # workdir's parent), short enough for sun_path.
        self.port_path = workdir.parent / f"port-{os.getpid()}-{self.qmp_name.rsplit('-', 1)[1]}"
        self._port_server: socket.socket | None = None
        self._shell: PortShell | None = None

    @property
    def guest_shell(self) -> PortShell | None:
        return self._shell

    @property
    def ssh_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.ssh_port

    def _boot_args(self) -> list[str]:
        c = self.config
        if c.kernel is not None:
            return ["-kernel", str(c.kernel.kernel), "-initrd", str(c.kernel.initrd),
                    "-append", c.kernel.cmdline]
        if c.firmware == "uefi":
            vars_copy = self.workdir / "OVMF_VARS.fd"
            if not vars_copy.exists():
                vars_copy.write_bytes(OVMF_VARS.read_bytes())
            return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        return []  # SeaBIOS boots the first disk

    def argv(self) -> list[str]:
        c = self.config
        args = [
            "qemu-system-x86_64", "-machine", "pc", *c.accel.args,
            "-smp", str(c.cpus), "-m", str(c.memory_mb),
            "-nodefaults", "-display", "none", "-no-user-config",
            *self._boot_args(),
        ]
        for drive in c.drives:
            spec = f"file={drive.path},if=virtio,format={drive.format},cache=unsafe"
            if drive.readonly:
                spec += ",readonly=on"
            args += ["-drive", spec]
        args += [
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
            "-chardev", f"file,id=serial0,path={self.console},append=on",
            "-serial", "chardev:serial0",
            "-chardev", f"socket,id=qmp0,path={self.qmp_name},abstract=on,server=on,wait=off",
            "-mon", "chardev=qmp0,mode=control",
        ]
        for name, path in c.fw_cfg.items():
            args += ["-fw_cfg", f"name={name},file={path}"]
        if self._port_server is not None:
            args += guestport.qemu_args(self.port_path)
        if self.incoming is not None:
            args += ["-incoming", state_file_uri(self.incoming, saving=False)]
        return args

    def start(self, restore_from: Path | None = None, timeout: float = 30.0) -> None:
        """Start QEMU and connect QMP; retries if the forwarded port was taken meanwhile."""
        self.incoming = restore_from
        for attempt in range(3):
            self.ssh_port = free_port()
            if self.config.guest_shell:
                self._port_server = guestport.listen(self.port_path)
            stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - owned by the child
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                preexec_fn=_die_with_parent, cwd=self.workdir,
            )
            stderr.close()
            with contextlib.suppress(MachineError):
                self.qmp = wait_until(self._connect_qmp, timeout=timeout, interval=0.05,
                                      on_timeout=lambda: MachineError("QMP did not answer"))
                if self._port_server is not None:  # QEMU connected while it started
                    server, self._port_server = self._port_server, None
                    self._shell = PortShell(guestport.accept(server, self.port_path))
                return
            err = tail(self.stderr_path, 10)
            self.kill()
            if "Could not set up host forwarding" in err and attempt < 2:
                continue
            raise MachineError(f"QEMU did not start ({self.stderr_path}):\n{err}")
        raise MachineError("QEMU did not start: no free port for SSH forwarding")

    def _connect_qmp(self) -> QEMUMonitorProtocol | None:
        if self.proc is None or self.proc.poll() is not None:
            raise MachineError("QEMU exited")
        try:
            qmp = QEMUMonitorProtocol("\0" + self.qmp_name)
            qmp.connect()
            return qmp
        except (OSError, ConnectionError, QMPError):
            return None

    def command(self, name: str, **args: object) -> object:
        if self.qmp is None:
            raise MachineError("QMP is not connected")
        return self.qmp.cmd(name, **args)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> str:
        return str(self.command("query-status")["status"])  # type: ignore[index]

    def reset(self) -> None:
        self.command("system_reset")

    def last_words(self, lines: int = 10) -> str:
        return tail(self.stderr_path, lines)

    def emulator_aborted(self) -> bool:
        return emulator_aborted(self.last_words(5))

    def finish_restore(self, timeout: float = 60.0) -> None:
        """Wait for a restore (-incoming) to load, then let the guest run."""

        def loaded() -> bool | None:
            if not self.running():
                raise MachineError(f"QEMU exited while restoring saved state:\n"
                                   f"{self.last_words()}")
            return True if self.status() != "inmigrate" else None

        wait_until(loaded, timeout=timeout, interval=0.02, on_timeout=lambda: MachineError(
            f"restoring saved state did not finish:\n{self.last_words()}"))
        self.command("cont")

    def save_state(self, path: Path, timeout: float = 120.0) -> None:
        """Pause the guest and write its RAM and device state to `path`."""
        self.command("stop")
        self.command("migrate", uri=state_file_uri(path, saving=True))
        last: list[object] = [None]

        def completed() -> bool | None:
            info = self.command("query-migrate")
            last[0] = info
            status = info.get("status") if isinstance(info, dict) else None
            if status in ("failed", "cancelled"):
                raise MachineError(f"saving VM state failed ({status}): {info}")
            return True if status == "completed" else None

        wait_until(completed, timeout=timeout, interval=0.05, on_timeout=lambda: MachineError(
            f"saving VM state did not finish in {timeout:.0f}s: {last[0]}"))

    resumes_after_save = True  # QEMU's source VM stays, paused, after a migration

    def resume(self) -> None:
        """Run on after `save_state`: `cont` reactivates the disks the migration flushed."""
        self.command("cont")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop QEMU: politely over QMP, then by force. Safe to call twice."""
        self._close_port()
        if self.qmp is not None:
            with contextlib.suppress(Exception):  # QEMU may already be gone
                self.qmp.cmd("quit")
            with contextlib.suppress(Exception):
                self.qmp.close()
            self.qmp = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def _close_port(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        if self._port_server is not None:
            self._port_server.close()
            self._port_server = None
        self.port_path.unlink(missing_ok=True)

    def kill(self) -> None:
        self._close_port()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                self.qmp.close()
            self.qmp = None
