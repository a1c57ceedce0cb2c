"""One QEMU process: command line, QMP control, saving and restoring the running state.

Every QEMU gets PR_SET_PDEATHSIG=SIGKILL, so it dies with the harness process that started
it, also when that process is killed outright (Ctrl-C twice, a test timeout, SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.errors import MachineError
from harness.machine.accel import Accel

log = logging.getLogger(__name__)
# qemu.qmp logs every refused connection at ERROR, but refusals are expected while QEMU
# starts (the loop in `start` retries them); failures still surface as MachineError.
logging.getLogger("qemu.qmp.protocol").setLevel(logging.CRITICAL)
_PR_SET_PDEATHSIG = 1
_QMP_IDS = itertools.count(1)


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A free TCP port on loopback (QEMU binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Drive:
    path: Path
    format: str  # "qcow2" or "raw"
    readonly: bool = False


@dataclass
class QemuConfig:
    """Everything that defines the virtual hardware. Restores must use the same config."""

    kernel: Path
    initrd: Path
    cmdline: str
    drives: list[Drive]
    accel: Accel
    memory_mb: int = 1024
    cpus: int = 2
    fw_cfg: dict[str, Path] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.splitlines()[-lines:])


class QemuProcess:
    """A QEMU system emulator with a serial console file, QMP socket and SSH port forward."""

    def __init__(self, config: QemuConfig, workdir: Path, console: Path,
                 incoming: Path | None = None) -> None:
        self.config = config
        self.workdir = workdir
        self.console = console
        self.incoming = incoming
        # An abstract socket: no path-length limit, nothing left on disk if we are killed.
        self.qmp_name = f"sysext-harness-qmp-{os.getpid()}-{next(_QMP_IDS)}"
        self.stderr_path = workdir / "qemu.stderr"
        self.ssh_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QEMUMonitorProtocol | None = None

    def argv(self) -> list[str]:
        c = self.config
        args = [
            "qemu-system-x86_64", "-machine", "pc", *c.accel.args,
            "-smp", str(c.cpus), "-m", str(c.memory_mb),
            "-nodefaults", "-display", "none", "-no-user-config",
            "-kernel", str(c.kernel), "-initrd", str(c.initrd), "-append", c.cmdline,
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
        if self.incoming is not None:
            args += ["-incoming", f"exec:cat {self.incoming}"]
        return [*args, *c.extra_args]

    def start(self, timeout: float = 30.0) -> None:
        """Start QEMU and connect QMP; retries once if the forwarded port was taken."""
        for attempt in range(3):
            self.ssh_port = free_port()
            stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - owned by the child
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                preexec_fn=_die_with_parent, cwd=self.workdir,
            )
            stderr.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    qmp = QEMUMonitorProtocol("\0" + self.qmp_name)
                    qmp.connect()
                    self.qmp = qmp
                    return
                except (OSError, ConnectionError, QMPError):
                    pass
                time.sleep(0.05)
            err = tail(self.stderr_path, 10)
            self.kill()
            if "Could not set up host forwarding" in err and attempt < 2:
                continue
            raise MachineError(f"QEMU did not start ({self.stderr_path}):\n{err}")
        raise MachineError("QEMU did not start: no free port for SSH forwarding")

    def command(self, name: str, **args: object) -> object:
        if self.qmp is None:
            raise MachineError("QMP is not connected")
        return self.qmp.cmd(name, **args)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> str:
        return str(self.command("query-status")["status"])  # type: ignore[index]

    def finish_incoming(self, timeout: float = 60.0) -> None:
        """Wait for a restore (-incoming) to load, then let the guest run."""
        deadline = time.monotonic() + timeout
        while self.status() == "inmigrate":
            if time.monotonic() > deadline or not self.running():
                raise MachineError(f"restoring saved state did not finish:\n"
                                   f"{tail(self.stderr_path, 10)}")
            time.sleep(0.02)
        self.command("cont")

    def save_state(self, path: Path, timeout: float = 120.0) -> None:
        """Pause the guest and write its RAM and device state to `path`."""
        self.command("stop")
        self.command("migrate", uri=f"exec:cat > {path}")
        deadline = time.monotonic() + timeout
        while True:
            info = self.command("query-migrate")
            status = info.get("status") if isinstance(info, dict) else None
            if status == "completed":
                return
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise MachineError(f"saving VM state failed ({status}): {info}")
            time.sleep(0.05)

    def quit(self, timeout: float = 10.0) -> None:
        """Stop QEMU: politely over QMP, then by force. Safe to call twice."""
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

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                self.qmp.close()
            self.qmp = None
