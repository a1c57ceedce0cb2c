"""An sshd of the test's own on a loopback port, so `qemu+ssh://` URIs reach this machine's
libvirtd for real: per-run host and client keys (0600), key logins only, nothing but
127.0.0.1. Each `LoopbackSshd` is one "host" of a multi-host run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from harness.machine.qemu import free_port

SSHD = Path("/usr/sbin/sshd")


def ensure_openssh_server() -> None:
    """Debian's openssh-server (its postinst may fail to start a service without systemd;
    the binary is all the test needs)."""
    if SSHD.exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                    "openssh-server"], env=env, check=False, capture_output=True)
    if not SSHD.exists():
        raise RuntimeError("could not install openssh-server (apt-get install failed)")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (sshd's per-login children and what they run)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class LoopbackSshd:
    def __init__(self, directory: Path) -> None:
        ensure_openssh_server()
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.host_key = directory / "host_key"
        self.client_key = directory / "client_key"
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        authorized = directory / "authorized_keys"
        authorized.write_text((directory / "client_key.pub").read_text())
        authorized.chmod(0o600)
        config = directory / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile {directory}/sshd.pid\nAllowTcpForwarding yes\n"
            "Subsystem sftp internal-sftp\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                     stderr=open(directory / "sshd.log", "wb"))  # noqa: SIM115
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port}: "
                           f"{(self.directory / 'sshd.log').read_text()[-2000:]}")

    @property
    def uri(self) -> str:
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system"
                f"?keyfile={self.client_key}&no_verify=1")

    def kill(self) -> None:
        """The host goes away: sshd and every login it serves (libvirt's connection and
        the guests' `ssh -W` tunnels). Safe to call twice."""
        if self.proc.poll() is not None:
            return
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
