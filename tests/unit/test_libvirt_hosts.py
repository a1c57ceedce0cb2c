"""Remote libvirt hosts: URIs, the guest SSH tunnel, placeholders, digests, volume names,
and how hosts are shared out (no libvirt needed)."""

from __future__ import annotations

import os
import shlex
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.machine.accel import tcg
from harness.machine.backend import VmConfig
from harness.machine.libvirt_backend import Owner, domain_xml, restore_xml
from harness.machine.libvirt_hosts import LibvirtHosts, hosts_for_worker, worker_slot
from harness.machine.libvirt_remote import (
    HostUri,
    RemoteFile,
    RunVolumeName,
    content_digest,
    data_extents,
    disk_capacity,
    read_placeholder,
)
from harness.targets.boot import Drive

SSH_URI = "qemu+ssh://root@lab1.example:2222/system?keyfile=/k/id&no_verify=1"


def test_uris_local_and_remote() -> None:
    local = HostUri.parse("qemu:///system")
    assert not local.remote and not local.over_ssh
    remote = HostUri.parse(SSH_URI)
    assert remote.remote and remote.over_ssh
    assert (remote.host, remote.port, remote.user) == ("lab1.example", 2222, "root")
    assert remote.params == {"keyfile": "/k/id", "no_verify": "1"}


def test_guest_ssh_goes_through_the_hosts_ssh_login() -> None:
    cmd = HostUri.parse(SSH_URI).ssh_command(40022)
    assert cmd[0] == "ssh" and cmd[-3:] == ["-W", "127.0.0.1:40022", "lab1.example"]
    joined = " ".join(cmd)
    assert "-p 2222" in joined and "-l root" in joined and "-i /k/id" in joined
    assert "BatchMode=yes" in joined and "StrictHostKeyChecking=no" in joined
    proxy = HostUri.parse(SSH_URI).ssh_proxy(40022)
    assert proxy is not None and shlex.split(proxy) == cmd
    verified = HostUri.parse("qemu+ssh://lab2/system").ssh_command(1)
    assert "StrictHostKeyChecking=no" not in " ".join(verified)
    assert "-p" not in verified and "-l" not in verified
    assert HostUri.parse("qemu:///system").ssh_proxy(22) is None
    assert HostUri.parse("qemu+tcp://127.0.0.1/system").ssh_proxy(22) is None


def test_remote_hosts_must_be_reached_over_ssh() -> None:
    with pytest.raises(ConfigError, match="must be reached over SSH") as err:
        HostUri.parse("qemu+tcp://lab1.example/system").check_reachable_guests()
    assert err.value.exit_code == 2 and "qemu+tcp://lab1.example/system" in str(err.value)
    HostUri.parse("qemu+tcp://127.0.0.1:16509/system").check_reachable_guests()  # loopback
    HostUri.parse(SSH_URI).check_reachable_guests()
    with pytest.raises(ConfigError, match="not a libvirt URI"):
        HostUri.parse("/var/run/libvirt")


def test_placeholder_round_trip_and_real_files(tmp_path: Path) -> None:
    remote = RemoteFile(SSH_URI, "/var/lib/sysext-harness/pool/run_x", "qcow2", 1 << 31)
    remote.write_placeholder(tmp_path / "root.qcow2")
    assert read_placeholder(tmp_path / "root.qcow2") == remote
    (tmp_path / "real.img").write_bytes(b"\0" * 4096)
    assert read_placeholder(tmp_path / "real.img") is None
    assert read_placeholder(tmp_path / "missing") is None


def test_disk_capacity_raw_and_qcow2(tmp_path: Path) -> None:
    raw = tmp_path / "disk.img"
    with raw.open("wb") as f:
        f.truncate(3 << 20)
    assert disk_capacity(raw, "raw") == 3 << 20
    qcow2 = tmp_path / "disk.qcow2"
    qcow2.write_bytes(b"QFI\xfb" + b"\0" * 20 + struct.pack(">Q", 5 << 30) + b"\0" * 64)
    assert disk_capacity(qcow2, "qcow2") == 5 << 30


def _sparse(path: Path, size: int, pieces: dict[int, bytes]) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
    return path


def test_digest_reads_only_data_and_tells_contents_apart(tmp_path: Path) -> None:
    size = 64 << 20
    a = _sparse(tmp_path / "a", size, {1 << 20: b"x" * 4096, 40 << 20: b"y" * 4096})
    b = _sparse(tmp_path / "b", size, {1 << 20: b"x" * 4096, 40 << 20: b"y" * 4096})
    c = _sparse(tmp_path / "c", size, {1 << 20: b"x" * 4096, 40 << 20: b"z" * 4096})
    with a.open("rb") as f:
        extents = list(data_extents(f.fileno(), size))
    assert sum(length for _, length in extents) < 1 << 20  # the holes were skipped
    assert content_digest(a) == content_digest(b) != content_digest(c)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert content_digest(empty) != content_digest(a)


def test_run_volume_names_name_their_owner() -> None:
    parsed = RunVolumeName.parse("run_ci-host_4242_777_3_root.qcow2")
    assert parsed == RunVolumeName("ci-host", 4242, "777", "root.qcow2")
    assert RunVolumeName.parse("run_ci_4242_777_3_my_disk.qcow2").label == "my_disk.qcow2"
    for other in ("img_abc_root.img", "run_x_notapid_1_2_a", "root.qcow2"):
        assert RunVolumeName.parse(other) is None


@pytest.mark.parametrize(("hosts", "workers", "expected"), [
    (2, 2, [[0], [1]]),
    (4, 2, [[0, 2], [1, 3]]),
    (3, 2, [[0, 2], [1]]),
    (1, 2, [[0], [0]]),
    (2, 3, [[0], [1], [0]]),
    (2, 1, [[0, 1]]),
])
def test_hosts_are_shared_out_among_workers(hosts: int, workers: int,
                                            expected: list[list[int]]) -> None:
    assert [hosts_for_worker(hosts, w, workers) for w in range(workers)] == expected


def test_worker_slot_from_xdist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert worker_slot() == (0, 1)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert worker_slot() == (3, 4)


@dataclass(eq=False)  # hashable by identity, as the real backends
class _FakeHost:
    uri: str
    lost: str | None = None


def test_cold_boots_take_turns_and_avoid_lost_hosts() -> None:
    a, b, c = _FakeHost("qemu+ssh://a/system"), _FakeHost("qemu+ssh://b/system"), \
        _FakeHost("qemu+ssh://c/system")
    hosts = LibvirtHosts([a, b, c], slot=(0, 1))  # type: ignore[list-item]
    firsts = [hosts.candidates()[0].uri for _ in range(4)]
    assert firsts == [a.uri, b.uri, c.uri, a.uri]
    b.lost = "connection closed by the host"
    order = hosts.candidates()
    assert order[-1] is b and set(order) == {a, b, c}
    worker2 = LibvirtHosts([a, b, c], slot=(1, 2))  # type: ignore[list-item]
    assert worker2.preferred == [b]
    assert worker2.candidates()[0] is not b  # its own host is lost: another one


def test_placeholder_of_a_host_not_in_the_run_is_refused(tmp_path: Path) -> None:
    from harness.errors import MachineError

    RemoteFile("qemu+ssh://gone/system", "/p/run_x", "qcow2", 1).write_placeholder(
        tmp_path / "disk.qcow2")
    hosts = LibvirtHosts([_FakeHost("qemu+ssh://a/system")], slot=(0, 1))  # type: ignore[list-item]
    with pytest.raises(MachineError, match="qemu\\+ssh://gone/system"):
        hosts.create_overlay(tmp_path / "new.qcow2", tmp_path / "disk.qcow2", "qcow2")


def test_remote_console_is_a_pty_and_a_restore_drops_the_stale_one() -> None:
    config = VmConfig(drives=(Drive(Path("/pool/run_1_root.qcow2"), "qcow2"),), accel=tcg())
    owner = Owner("h", os.getpid(), "1")
    xml = domain_xml(config, name="sysext-harness-1-1", console=None, ssh_port=2222,
                     nvram=Path("/pool/vars"), owner=owner)
    serial = ET.fromstring(xml).find("devices/serial")
    assert serial is not None and serial.get("type") == "pty"
    assert serial.find("source") is None
    saved = ET.fromstring(xml)
    ET.SubElement(saved.find("devices/serial"), "source", path="/dev/pts/7")  # type: ignore[arg-type]
    console = ET.SubElement(saved.find("devices"), "console", type="pty")  # type: ignore[arg-type]
    ET.SubElement(console, "source", path="/dev/pts/7")
    restored = ET.fromstring(restore_xml(ET.tostring(saved, encoding="unicode"), xml))
    assert restored.find("devices/serial/source") is None
    assert restored.find("devices/console/source") is None
