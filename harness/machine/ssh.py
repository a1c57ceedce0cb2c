"""SSH transport to a guest (paramiko): bounded command execution and file transfer."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import select
import shlex
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.errors import MachineError
from harness.machine.wait import Deadline

log = logging.getLogger(__name__)
# paramiko logs every refused early connection attempt with a traceback; we retry anyway.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def tar_of(local: Path) -> bytes:
    """A directory as an uncompressed tar stream (modes and symlinks kept), for `tar -x`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(local), arcname=".")
    return buf.getvalue()


class _PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accept only the host key the guest announced or showed at first contact (when known)."""

    def __init__(self, expected: str | None) -> None:
        self.expected = expected

    def missing_host_key(self, client, hostname, key) -> None:  # type: ignore[no-untyped-def]
        if self.expected is None:
            return
        got = f"{key.get_name()} {key.get_base64()}"
        if got != self.expected:
            raise paramiko.SSHException(
                f"guest host key {got[:40]}... does not match the key pinned for it"
            )


class SshConnection:
    """One authenticated SSH session to a guest, used for commands and copies.

    Logged in as root, commands run as they are. Logged in as a distribution's user (`core`
    on Flatcar and Fedora CoreOS, `kairos` on Kairos, which have passwordless sudo and no
    root login), every command and copy goes through `sudo -n`, so callers always act as
    root and never need to know which it was.
    """

    def __init__(self, client: paramiko.SSHClient, host: str, port: int, user: str) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.user = user
        self.sudo = user != "root"
        self.use_shell = os.environ.get("SYSEXT_HARNESS_SSH_EXEC", "") != "1"
        self._shell: GuestShell | None = None

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        key_file: Path,
        *,
        user: str = "root",
        host_key: str | None = None,
        timeout: float = 10.0,
        proxy: str | None = None,
    ) -> SshConnection:
        """Log in to `host`:`port`; with `proxy`, through that command's stdin/stdout
        (`ssh -W` to a guest port forwarded on a remote libvirt host)."""
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_PinnedHostKey(host_key))
        sock = paramiko.ProxyCommand(proxy) if proxy else None
        try:
            client.connect(
                host,
                port=port,
                username=user,
                key_filename=str(key_file),
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                sock=sock,  # type: ignore[arg-type]
            )
        except BaseException:
            client.close()
            if sock is not None:
                sock.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        return cls(client, host, port, user)

    @property
    def host_key(self) -> str:
        """The guest's host key as "TYPE BASE64", e.g. to pin it for later connections."""
        key = self.client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
        return f"{key.get_name()} {key.get_base64()}"

    def as_root(self, command: str) -> str:
        """`command` as the guest's root runs it (a no-op when logged in as root)."""
        return f"sudo -n sh -c {shlex.quote(command)}" if self.sudo else command

    def execute(self, command: str, timeout: float = 120.0, stdin: bytes | None = None
                ) -> CommandResult:
        """Run `command` as root; raise MachineError if it outlives `timeout` (the error
        names the command as given, without the sudo wrapper).

        Commands without stdin go to the connection's persistent shell (`GuestShell`):
        no new SSH channel, login shell or sudo per command. With stdin, or with
        `$SYSEXT_HARNESS_SSH_EXEC=1`, each command is an SSH exec of its own."""
        if stdin is None and self.use_shell:
            if self._shell is None or not self._shell.usable:
                self._shell = GuestShell(self, timeout)
            return self._shell.run(command, timeout)
        return self.exec_command(command, timeout, stdin)

    def exec_command(self, command: str, timeout: float = 120.0, stdin: bytes | None = None
                     ) -> CommandResult:
        """`command` as an SSH exec of its own, through the login shell (and sudo)."""
        shown = command
        command = self.as_root(command)
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise MachineError("SSH connection is closed")
        try:
            chan = transport.open_session(timeout=timeout)
            chan.settimeout(1.0)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # e.g. the guest's sshd is going down for a reboot
            raise MachineError(f"SSH channel failed ({exc}): {shown}") from exc
        out, err = bytearray(), bytearray()
        deadline = Deadline(timeout)
        while True:
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if deadline.expired():
                chan.close()
                raise MachineError(f"command timed out after {timeout:.0f}s: {shown}")
            try:
                data = chan.recv(65536)
            except TimeoutError:
                continue
            if data:
                out += data
            elif not transport.is_active() and not chan.exit_status_ready():
                raise MachineError(f"SSH connection lost while running: {shown}")
            else:
                time.sleep(0.01)  # EOF on stdout; wait for the exit status
        status = chan.recv_exit_status()
        chan.close()
        return CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))

    def put_file(self, local: Path, remote: str) -> None:
        """Copy one file over SFTP with its mode; as a sudo user, into a private staging
        name in the user's home first, then moved into place and given to root."""
        mode = local.stat().st_mode & 0o7777
        if not self.sudo:
            with self.client.open_sftp() as sftp:
                sftp.put(str(local), remote)
                sftp.chmod(remote, mode)
            return
        staging = f".sysext-harness-upload-{os.urandom(6).hex()}"
        with self.client.open_sftp() as sftp:
            sftp.put(str(local), staging)
            home = sftp.normalize(".")
        src, dest = shlex.quote(f"{home}/{staging}"), shlex.quote(remote)
        res = self.execute(f"mv -f {src} {dest} && chown 0:0 {dest} && chmod {mode:o} {dest}"
                           f" || {{ rm -f {src}; false; }}")
        if res.exit_code != 0:
            raise MachineError(f"copying {local} to {remote} failed: {res.output.strip()}")

    def get_file(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        if not self.sudo:
            with self.client.open_sftp() as sftp:
                sftp.get(remote, str(local))
            return
        res = self.execute(f"base64 -w0 < {shlex.quote(remote)}")
        if res.exit_code != 0:
            raise MachineError(f"copying {remote} from the guest failed: {res.output.strip()}")
        local.write_bytes(base64.b64decode(res.stdout))

    def put_tree(self, local: Path, remote: str, timeout: float = 300.0) -> None:
        """Copy a directory with modes and symlinks kept (a tar stream into `tar -x`)."""
        dest = shlex.quote(remote)
        res = self.execute(
            f"mkdir -p {dest} && tar -x -p --no-same-owner -C {dest} -f -",
            timeout=timeout,
            stdin=tar_of(local),
        )
        if res.exit_code != 0:
            raise MachineError(f"copying {local} to {remote} failed: {res.stderr.strip()}")

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        self.client.close()


class GuestShell:
    """One long-lived root `sh` on an SSH channel, running commands one after another.

    An SSH exec per command costs about 0.2 s under TCG, most of it the guest starting a
    session, a login shell and (for a distribution's user) sudo. Here each command costs a
    subshell: ``( eval 'COMMAND' ) </dev/null``, so `exit`, `cd` and variables stay in it
    and it cannot read the shell's own input, then markers with a random token end its
    stdout and stderr and carry its exit status. A command that outlives its timeout, or a
    connection that drops (a reboot), ends the shell; the next command starts a new one.
    """

    def __init__(self, conn: SshConnection, timeout: float) -> None:
        transport = conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise MachineError("SSH connection is closed")
        self.transport = transport
        try:
            self.chan = transport.open_session(timeout=timeout)
            self.chan.exec_command("sudo -n sh" if conn.sudo else "sh")
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise MachineError(f"SSH channel for the guest shell failed ({exc})") from exc
        self.usable = True
        self.out = bytearray()
        self.err = bytearray()

    def run(self, command: str, timeout: float) -> CommandResult:
        token = os.urandom(8).hex()
        out_mark, err_mark = f"\n{token} ".encode(), f"\n{token}\n".encode()
        script = (f"( eval {shlex.quote(command)} ) </dev/null; _sh_rc=$?; "
                  f"printf '\\n%s\\n' {token} >&2; "
                  f"printf '\\n%s %d\\n' {token} $_sh_rc\n")
        try:
            self.chan.sendall(script.encode())
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise MachineError(f"SSH channel failed ({exc}): {command}") from exc
        deadline = Deadline(timeout)
        while True:
            self._drain()
            out_at, err_at = self.out.find(out_mark), self.err.find(err_mark)
            end = self.out.find(b"\n", out_at + len(out_mark)) if out_at >= 0 else -1
            if end >= 0 and err_at >= 0:
                break
            if self.chan.closed or self.chan.exit_status_ready() \
                    or not self.transport.is_active():
                self.close()
                raise MachineError(f"SSH connection lost while running: {command}")
            if deadline.expired():
                self.close()
                raise MachineError(f"command timed out after {timeout:.0f}s: {command}")
            select.select([self.chan], [], [], min(0.5, max(deadline.remaining(), 0.01)))
        status = int(self.out[out_at + len(out_mark):end])
        stdout, stderr = bytes(self.out[:out_at]), bytes(self.err[:err_at])
        del self.out[:end + 1]
        del self.err[:err_at + len(err_mark)]
        return CommandResult(status, stdout.decode(errors="replace"),
                             stderr.decode(errors="replace"))

    def _drain(self) -> None:
        while self.chan.recv_ready():
            self.out += self.chan.recv(65536)
        while self.chan.recv_stderr_ready():
            self.err += self.chan.recv_stderr(65536)

    def close(self) -> None:
        self.usable = False
        with contextlib.suppress(Exception):
            self.chan.close()
