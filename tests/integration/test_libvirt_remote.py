"""Remote libvirt hosts for real: two `qemu+ssh://` URIs, each through an sshd of the
test's own on a loopback port, both reaching this machine's libvirtd. Images go into the
host's storage pool over the connection, consoles and guest SSH come back over SSH, and
a run with two workers spreads its targets over both URIs.

Needs root on a Debian host (it starts libvirtd and sshd itself); boots one or two VMs
at a time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.machine.libvirt_backend import DEFAULT_URI, NAME_PREFIX, HostUnreachable
from harness.machine.libvirt_hosts import LibvirtHosts, select_backend
from harness.machine.libvirt_remote import POOL_NAME, RUN_PREFIX
from harness.machine.pool import MachinePool
from harness.machine.qemu import free_port
from harness.machine.rundir import RunDir
from harness.targets.registry import get_target

sys.path.insert(0, str(Path(__file__).parent))
from loopback_sshd import LoopbackSshd  # noqa: E402

pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("refos-257-flatcar", "refos-252-flatcar")


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", DEFAULT_URI, *args], capture_output=True,
                          text=True, check=True).stdout


def _our_domains() -> list[str]:
    return [n for n in _virsh("list", "--all", "--name").split() if n.startswith(NAME_PREFIX)]


def _run_volumes() -> list[str]:
    return [line.split()[0] for line in _virsh("vol-list", POOL_NAME).splitlines()
            if line.strip().startswith(RUN_PREFIX)]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LoopbackSshd]]:
    res = subprocess.run([str(ROOT / "scripts/start-libvirtd.sh")], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, f"start-libvirtd.sh failed:\n{res.stdout}\n{res.stderr}"
    base = tmp_path_factory.mktemp("sshd")
    started = [LoopbackSshd(base / "a"), LoopbackSshd(base / "b")]
    try:
        yield started
    finally:
        for sshd in started:
            sshd.kill()


def test_unreachable_or_unsuitable_uris_are_refused(hosts: list[LoopbackSshd]) -> None:
    closed = hosts[0].uri.replace(f":{hosts[0].port}/", f":{free_port()}/")
    with pytest.raises(ConfigError) as refused:
        select_backend("libvirt", [hosts[0].uri, closed])
    assert refused.value.exit_code == 2
    assert closed in str(refused.value) and "Connection refused" in str(refused.value)
    with pytest.raises(ConfigError, match="must be reached over SSH"):
        select_backend("libvirt", ["qemu+tcp://lab1.example/system"])


def test_bad_uri_exits_2_before_any_vm(hosts: list[LoopbackSshd], tmp_path: Path) -> None:
    closed = hosts[0].uri.replace(f":{hosts[0].port}/", f":{free_port()}/")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios/merge", "-p", "no:cacheprovider",
         "--target", TARGETS[0], "--backend", "libvirt", "--libvirt-uri", closed,
         "--artifacts", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert closed in out and "Connection refused" in out
    assert not _our_domains()


def test_a_run_spreads_over_two_hosts(hosts: list[LoopbackSshd], tmp_path: Path) -> None:
    """Two workers, two targets, two URIs: each target boots on its own host, every
    scenario passes, and nothing of the run is left on the hosts."""
    artifacts = tmp_path / "artifacts"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios/merge", "-p", "no:cacheprovider",
         "-k", "merge-squashfs or merge-directory", "--target", ",".join(TARGETS),
         "--backend", "libvirt", "--libvirt-uri", hosts[0].uri, "--libvirt-uri",
         hosts[1].uri, "-n", "2", "--dist", "loadgroup", "--artifacts", str(artifacts)],
        cwd=ROOT, capture_output=True, text=True, timeout=1100)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert re.search(r"\b4 passed\b", res.stdout), res.stdout[-3000:]
    logs = "\n".join(p.read_text() for p in artifacts.rglob("machine.log"))
    used = {sshd.port for sshd in hosts if f"127.0.0.1:{sshd.port}/system" in logs}
    assert used == {hosts[0].port, hosts[1].port}, logs[-3000:]
    assert not _our_domains()
    assert not _run_volumes()


def test_a_host_that_goes_away_fails_its_machines_and_the_others_go_on(
        hosts: list[LoopbackSshd], tmp_path: Path) -> None:
    a, b = hosts[0], LoopbackSshd(tmp_path / "sshd-c")  # a host of this test alone
    target = get_target(TARGETS[0])
    backends = select_backend("libvirt", [a.uri, b.uri])
    assert isinstance(backends, LibvirtHosts)
    hosts_b_first = LibvirtHosts(backends.backends, slot=(1, 2))  # worker 2 of 2: b
    run = RunDir(label="libvirt-remote")
    pool = MachinePool(run.path, backend=hosts_b_first)
    try:
        pool.snapshot(target)  # cold boot on b
        b.kill()
        with pytest.raises(HostUnreachable) as lost:
            pool.start(target, pool.workdir("restore-on-b"))
        assert b.uri in str(lost.value)
        machine = pool.cold_boot(target, pool.workdir("cold-on-a"))  # b is skipped
        assert machine.vm is not None and machine.vm.where == a.uri
        assert machine.succeed("echo still-$((6 * 7))").strip() == "still-42"
        pool.stop(machine)
    finally:
        pool.close()  # a's connection removes this process's volumes (b's too: one pool)
        run.cleanup()
        b.kill()
    assert not _our_domains()
    assert not _run_volumes()
