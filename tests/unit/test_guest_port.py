"""The port shell's protocol (harness/machine/guestport.py) against a local `sh` on one
end of a socket pair, as the guest's shell sits on its virtio-serial port: exit codes,
stdout and stderr kept apart and exact, stdin data delivered byte for byte, copies both
ways, a timeout that retires the channel, and the QEMU options of the port."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import MachineError
from harness.machine.guestport import PORT_NAME, PortShell, accept, listen, qemu_args


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[PortShell]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(["sh"], stdin=theirs, stdout=theirs, stderr=theirs)
    theirs.close()
    ours.setblocking(False)
    port = PortShell(ours, stderr_file=str(tmp_path / "stderr"))
    yield port
    port.close()
    proc.kill()
    proc.wait()


def test_output_streams_and_status_are_kept_apart(shell: PortShell) -> None:
    res = shell.execute("printf 'out'; printf 'err\\n' >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out", "err\n")
    res = shell.execute("echo two lines; echo second")
    assert (res.exit_code, res.stdout, res.stderr) == (0, "two lines\nsecond\n", "")


def test_a_command_cannot_read_the_shells_own_input(shell: PortShell) -> None:
    assert shell.execute("cat").stdout == ""  # stdin is /dev/null
    assert shell.execute("cd / && x=1; echo $x").stdout == "1\n"
    assert shell.execute("echo ${x:-unset}; pwd").stdout != "1\n/\n"  # each in a subshell


def test_stdin_data_arrives_byte_for_byte(shell: PortShell) -> None:
    data = os.urandom(3 << 20) + b"\n__end\n" + bytes(range(256))
    res = shell.execute("sha256sum", stdin=data)
    assert res.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert shell.execute("echo after").stdout == "after\n"  # the shell kept in step


def test_files_go_both_ways(shell: PortShell, tmp_path: Path) -> None:
    local = tmp_path / "ext.raw"
    local.write_bytes(os.urandom(100_000))
    local.chmod(0o600)
    remote = tmp_path / "guest" / "ext.raw"
    remote.parent.mkdir()
    shell.put_file(local, str(remote))
    assert remote.read_bytes() == local.read_bytes()
    assert remote.stat().st_mode & 0o777 == 0o600
    back = tmp_path / "back" / "ext.raw"
    shell.get_file(str(remote), back)
    assert back.read_bytes() == local.read_bytes()
    with pytest.raises(MachineError, match="missing"):
        shell.get_file(str(tmp_path / "missing"), back)


def test_trees_keep_modes_and_symlinks(shell: PortShell, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/hello").write_text("#!/bin/sh\necho hi\n")
    (tree / "usr/bin/hello").chmod(0o755)
    (tree / "usr/bin/hi").symlink_to("hello")
    dest = tmp_path / "dest"
    shell.put_tree(tree, str(dest))
    assert (dest / "usr/bin/hello").stat().st_mode & 0o777 == 0o755
    assert os.readlink(dest / "usr/bin/hi") == "hello"


def test_a_timeout_retires_the_channel(shell: PortShell) -> None:
    with pytest.raises(MachineError, match="timed out"):
        shell.execute("sleep 5", timeout=0.5)
    assert not shell.usable
    with pytest.raises(MachineError, match="not usable"):
        shell.execute("true")


def test_a_shell_that_goes_away_is_an_error(shell: PortShell) -> None:
    with pytest.raises(MachineError, match="closed"):
        shell.execute("kill -9 $$; sleep 1", timeout=20)  # $$: the shell itself
    assert not shell.usable


def test_qemu_connects_to_a_private_socket(tmp_path: Path) -> None:
    path = tmp_path / "port"
    server = listen(path)
    assert server is not None and path.stat().st_mode & 0o777 == 0o600
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(path))  # what QEMU's chardev does when it starts
    conn = accept(server, path, timeout=5)
    assert not path.exists()  # nobody else can connect after QEMU
    conn.close()
    client.close()
    args = " ".join(qemu_args(path))
    assert f"socket,id=guestshell,path={path}" in args and f"name={PORT_NAME}" in args
    assert listen(tmp_path / ("x" * 120)) is None  # too long for a Unix socket: SSH only
