"""A root shell on a virtio-serial port: the command channel of reference-image VMs.

Every scenario starts from a restored snapshot, and over SSH the first command has to wait
for a new connection: the guest's sshd forks and execs a session, both sides do a key
exchange and the guest verifies our key, about 0.9 s and 1.5 CPU seconds under TCG,
paid again by every one of the matrix's runs. The reference images instead run a root
`sh` on a virtio-serial port named `PORT_NAME` (images/overlay: a udev rule starts
`sysext-harness-shell.service` when the port appears). The shell is part of the saved
state, so after a restore it is already waiting: the first command costs what any other
does, a few milliseconds.

The host end is a Unix socket in the run's private directory (mode 0700) that QEMU
connects to when it starts, so no other user can reach the shell. Image targets of real
distributions have no such service and libvirt domains no such port: they use SSH, and so
does everything that needs SSH itself (testinfra's `host`).

The protocol is `GuestShell`'s (ssh.py) over one stream: each command runs in a subshell
with stdin from /dev/null and stderr into a file; then a line with a random token and the
exit status ends stdout, the file's content follows, and the token on a line of its own
ends it. Data for a command's stdin (a copy) is sent raw once the command has said it is
reading, so the shell never buffers any of it as input of its own.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
from pathlib import Path

from harness.errors import MachineError
from harness.machine.ssh import CommandResult, tar_of
from harness.machine.wait import Deadline

PORT_NAME = "org.sysext-harness.shell"
# Where the subshell's stderr goes until it is sent back (tmpfs: nothing left on disk).
_STDERR_FILE = "/run/sysext-harness-shell.stderr"
# Sockets in the run directory must fit sun_path (108 bytes with its terminating NUL).
MAX_SOCKET_PATH = 100


def qemu_args(socket_path: Path, bus: str = "pci") -> list[str]:
    """QEMU options for the port: a virtio-serial controller and the named port, whose
    host end connects to `socket_path` (listened on by `listen`)."""
    return ["-chardev", f"socket,id=guestshell,path={socket_path}",
            "-device", f"virtio-serial-{bus},id=guestserial",
            "-device", f"virtserialport,bus=guestserial.0,chardev=guestshell,name={PORT_NAME}"]


def listen(socket_path: Path) -> socket.socket | None:
    """A listening socket for QEMU's end of the port; None if the path is too long for a
    Unix socket (the machine then uses SSH only)."""
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        return None
    socket_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(socket_path))
    os.chmod(socket_path, 0o600)
    server.listen(1)
    return server


def accept(server: socket.socket, socket_path: Path, timeout: float = 10.0
           ) -> socket.socket:
    """QEMU's connection (it connects while it starts); the listener is closed after."""
    try:
        server.settimeout(timeout)
        conn, _ = server.accept()
    except OSError as exc:
        raise MachineError(f"QEMU did not connect the guest shell port ({exc})") from exc
    finally:
        server.close()
        socket_path.unlink(missing_ok=True)
    conn.setblocking(False)
    return conn


class PortShell:
    """Commands and copies through the guest's port shell; see the module docstring.

    A command that outlives its timeout leaves the shell busy, so the channel is then
    marked unusable and the machine falls back to SSH."""

    def __init__(self, conn: socket.socket, stderr_file: str = _STDERR_FILE) -> None:
        self.conn = conn
        self.stderr_file = stderr_file
        self.usable = True
        self._buffer = bytearray()

    def discard_pending(self) -> None:
        """Forget output of a shell that is gone (the guest rebooted)."""
        with contextlib.suppress(OSError):
            while select.select([self.conn], [], [], 0)[0]:
                if not self.conn.recv(65536):
                    break
        self._buffer.clear()
        self.usable = True

    # ----- commands ---------------------------------------------------------------------
    def execute(self, command: str, timeout: float = 120.0, stdin: bytes | None = None
                ) -> CommandResult:
        """Run `command` as root; MachineError if it outlives `timeout`."""
        status, out, err = self._run(command, timeout, stdin)
        return CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))

    def _run(self, command: str, timeout: float, stdin: bytes | None
             ) -> tuple[int, bytes, bytes]:
        if not self.usable:
            raise MachineError(f"the guest shell port is not usable: {command}")
        token = os.urandom(8).hex()
        deadline = Deadline(timeout)
        if stdin is None:
            body = f"( eval {shlex.quote(command)} ) </dev/null"
        else:  # say "go", then read exactly len(stdin) bytes of the port as stdin
            body = (f"( printf '%s\\n' {token}-go; head -c {len(stdin)} | "
                    f"( eval {shlex.quote(command)} ) )")
        err = shlex.quote(self.stderr_file)  # `cat` only when there is something (a fork)
        script = (f"{body} 2>{err}; _sh_rc=$?; printf '\\n%s %d\\n' {token} $_sh_rc; "
                  f"[ -s {err} ] && cat {err}; printf '\\n%s\\n' {token}\n")
        self._send(script.encode(), deadline, command, timeout)
        if stdin is not None:
            self._read_until(f"{token}-go\n".encode(), deadline, command, timeout)
            self._send(stdin, deadline, command, timeout)
        out_mark, err_mark = f"\n{token} ".encode(), f"\n{token}\n".encode()
        stdout = self._read_until(out_mark, deadline, command, timeout)
        status = int(self._read_until(b"\n", deadline, command, timeout))
        stderr = self._read_until(err_mark, deadline, command, timeout)
        return status, stdout, stderr

    def _send(self, data: bytes, deadline: Deadline, command: str, timeout: float) -> None:
        view = memoryview(data)
        while view:
            if deadline.expired():
                self._give_up(f"command timed out after {timeout:.0f}s sending its input: "
                              f"{command}")
            try:
                if not select.select([], [self.conn], [], min(0.5, deadline.remaining()))[1]:
                    continue
                sent = self.conn.send(view)
            except OSError as exc:
                self._give_up(f"guest shell port failed ({exc}): {command}")
            view = view[sent:]

    def _read_until(self, marker: bytes, deadline: Deadline, command: str, timeout: float
                    ) -> bytes:
        """The bytes before `marker` (both are consumed)."""
        while True:
            at = self._buffer.find(marker)
            if at >= 0:
                data = bytes(self._buffer[:at])
                del self._buffer[:at + len(marker)]
                return data
            if deadline.expired():
                self._give_up(f"command timed out after {timeout:.0f}s: {command}")
            try:
                ready = select.select([self.conn], [], [], min(0.5, deadline.remaining()))[0]
                chunk = self.conn.recv(1 << 20) if ready else None
            except OSError as exc:
                self._give_up(f"guest shell port failed ({exc}): {command}")
            if chunk == b"":
                self._give_up(f"guest shell port closed while running: {command}")
            if chunk:
                self._buffer += chunk

    def _give_up(self, message: str) -> None:
        self.usable = False
        raise MachineError(message)

    # ----- copies -----------------------------------------------------------------------
    def put_file(self, local: Path, remote: str, timeout: float = 300.0) -> None:
        """Copy one file with its mode (replaced atomically, owned by root)."""
        mode = local.stat().st_mode & 0o7777
        dest = shlex.quote(remote)
        tmp = shlex.quote(f"{remote}.sysext-harness-{os.urandom(4).hex()}")
        res = self.execute(f"cat > {tmp} && chmod {mode:o} {tmp} && mv -f {tmp} {dest} "
                           f"|| {{ rm -f {tmp}; false; }}", timeout, stdin=local.read_bytes())
        if res.exit_code != 0:
            raise MachineError(f"copying {local} to {remote} failed: {res.output.strip()}")

    def put_tree(self, local: Path, remote: str, timeout: float = 300.0) -> None:
        """Copy a directory with modes and symlinks kept (a tar stream into `tar -x`)."""
        dest = shlex.quote(remote)
        res = self.execute(f"mkdir -p {dest} && tar -x -p --no-same-owner -C {dest} -f -",
                           timeout, stdin=tar_of(local))
        if res.exit_code != 0:
            raise MachineError(f"copying a tree to {remote} failed: {res.stderr.strip()}")

    def get_file(self, remote: str, local: Path, timeout: float = 300.0) -> None:
        status, out, err = self._run(f"cat {shlex.quote(remote)}", timeout, None)
        if status != 0:
            raise MachineError(f"copying {remote} from the guest failed: "
                               f"{err.decode(errors='replace').strip()}")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(out)

    def close(self) -> None:
        self.usable = False
        with contextlib.suppress(OSError):
            self.conn.close()
