"""The persistent guest shell's protocol, against a local `sh` behind a fake SSH channel:
exit codes, stdout and stderr kept apart and exact, `exit`/`cd`/stdin contained per
command, timeouts and a shell that dies."""

from __future__ import annotations

import os
import select
import subprocess
from typing import Any

import pytest

from harness.errors import MachineError
from harness.machine.ssh import GuestShell


class _LocalChannel:
    """The parts of a paramiko Channel GuestShell uses, backed by a local `sh`."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.closed = False
        self.out, self.err = bytearray(), bytearray()

    def _fill(self, stream: Any, buf: bytearray) -> bool:
        """Data waiting, like paramiko's buffers: False at EOF (not "readable")."""
        while select.select([stream], [], [], 0)[0]:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
        return bool(buf)

    def sendall(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv_ready(self) -> bool:
        return self._fill(self.proc.stdout, self.out)

    def recv_stderr_ready(self) -> bool:
        return self._fill(self.proc.stderr, self.err)

    def recv(self, n: int) -> bytes:
        data = bytes(self.out[:n])
        del self.out[:n]
        return data

    def recv_stderr(self, n: int) -> bytes:
        data = bytes(self.err[:n])
        del self.err[:n]
        return data

    def exit_status_ready(self) -> bool:
        return self.proc.poll() is not None

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def close(self) -> None:
        self.closed = True
        self.proc.kill()
        self.proc.wait()


class _Transport:
    def is_active(self) -> bool:
        return True


@pytest.fixture
def shell() -> Any:
    sh = GuestShell.__new__(GuestShell)
    sh.transport = _Transport()  # type: ignore[assignment]
    sh.chan = _LocalChannel()  # type: ignore[assignment]
    sh.usable, sh.out, sh.err = True, bytearray(), bytearray()
    yield sh
    sh.close()


def test_status_and_streams_are_exact(shell: GuestShell) -> None:
    res = shell.run("echo out; echo err >&2; exit 3", 10)
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
    res = shell.run("printf 'no newline'; printf 'e' >&2", 10)
    assert (res.exit_code, res.stdout, res.stderr) == (0, "no newline", "e")
    res = shell.run("printf '\\n\\n'", 10)
    assert res.stdout == "\n\n" and res.stderr == ""


def test_commands_do_not_leak_into_each_other(shell: GuestShell) -> None:
    shell.run("cd /tmp; X=1; exit 0", 10)
    assert shell.run("pwd; echo ${X:-unset}", 10).stdout != "/tmp\n1\n"
    assert shell.run("echo ${X:-unset}", 10).stdout == "unset\n"
    assert shell.run("cat", 10).stdout == ""  # stdin is /dev/null, not the next command
    assert shell.run("echo still here", 10).stdout == "still here\n"


def test_quotes_newlines_and_syntax_errors(shell: GuestShell) -> None:
    res = shell.run("echo \"it's\" 'a \"quote\"'\nprintf '%s\\n' line2", 10)
    assert res.stdout == "it's a \"quote\"\nline2\n"
    bad = shell.run("if then fi", 10)
    assert bad.exit_code != 0 and bad.stderr
    assert shell.run("true", 10).exit_code == 0


def test_large_output(shell: GuestShell) -> None:
    res = shell.run("seq 1 200000", 30)
    assert res.stdout.splitlines()[-1] == "200000" and res.exit_code == 0


def test_timeout_ends_the_shell(shell: GuestShell) -> None:
    with pytest.raises(MachineError, match="timed out"):
        shell.run("sleep 5", 0.5)
    assert not shell.usable


def test_a_dead_shell_is_reported(shell: GuestShell) -> None:
    with pytest.raises(MachineError, match="lost"):
        shell.run("kill -9 $$", 10)  # $$ in a subshell is the shell itself
    assert not shell.usable
