"""The libvirt backend against a real libvirtd: boot, snapshot, two restores, no leftovers.

Starts the daemon itself (scripts/start-libvirtd.sh: packages, qemu.conf, `libvirtd -d`),
so it needs root on a Debian host; it boots one VM at a time.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.machine.libvirt_backend import DEFAULT_URI, NAME_PREFIX, LibvirtBackend
from harness.machine.pool import MachinePool
from harness.machine.rundir import RunDir
from harness.targets.registry import get_target

# VM-booting tests never run next to each other under xdist (they count processes, ...)
pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]

ROOT = Path(__file__).resolve().parents[2]
TARGET = "refos-257-flatcar"


def _our_domains() -> list[str]:
    out = subprocess.run(["virsh", "-c", DEFAULT_URI, "list", "--all", "--name"],
                         capture_output=True, text=True, check=True).stdout
    return [n for n in out.split() if n.startswith(NAME_PREFIX)]


@pytest.fixture(scope="module")
def libvirtd() -> str:
    res = subprocess.run([str(ROOT / "scripts/start-libvirtd.sh")], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, f"start-libvirtd.sh failed:\n{res.stdout}\n{res.stderr}"
    return DEFAULT_URI


@pytest.fixture
def pool(libvirtd: str) -> Iterator[MachinePool]:
    run = RunDir(label="libvirt")
    backend = LibvirtBackend(libvirtd)
    backend.check()
    pool = MachinePool(run.path, backend=backend)
    try:
        yield pool
    finally:
        pool.close()
        backend.close()
        run.cleanup()


def test_boot_snapshot_and_two_restores(pool: MachinePool, tmp_path: Path) -> None:
    target = get_target(TARGET)
    started = time.monotonic()
    snap = pool.snapshot(target)  # cold boot, settle, save
    print(f"libvirt: cold boot to SSH {pool.boot_seconds[TARGET]:.1f} s, "
          f"save {pool.snapshot_seconds[TARGET]:.1f} s, "
          f"snapshot ready after {time.monotonic() - started:.1f} s")
    assert snap.state.stat().st_size > 0
    assert not _our_domains(), "saving should have ended the boot domain"
    for n in (1, 2):
        began = time.monotonic()
        machine = pool.start(target, pool.workdir(f"restore{n}"))
        try:
            first = machine.succeed("echo restored-$((20 + 3))")
            print(f"libvirt: restore {n} to first command {time.monotonic() - began:.1f} s")
            assert first.strip() == "restored-23"
            assert machine.succeed("systemctl is-system-running --wait").strip() == "running"
            machine.succeed(f"touch /var/restore-{n}")
            assert machine.fail(f"test -e /var/restore-{3 - n}") is not None  # fresh overlay
            assert machine.disk.exists() and machine.disk != snap.disk
        finally:
            pool.stop(machine)
    assert not _our_domains()


def test_no_domain_left_after_the_run(libvirtd: str) -> None:
    out = subprocess.run(["virsh", "-c", libvirtd, "list", "--all"], capture_output=True,
                         text=True, check=True).stdout
    assert NAME_PREFIX not in out, out
