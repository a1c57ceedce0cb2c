"""The Machine API against a real VM of a reference target."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.errors import AssertionFailed, MachineError
from harness.machine.machine import Machine
from harness.targets.initramfs import STARTED_MARKER as INITRAMFS_STARTED

# VM-booting tests never run next to each other under xdist (they count processes, ...)
pytestmark = [pytest.mark.vm, pytest.mark.xdist_group("integration")]


def test_succeed_fail_execute(machine) -> None:  # type: ignore[no-untyped-def]
    assert machine.succeed("echo hi").strip() == "hi"
    assert "nope" in machine.fail("echo nope >&2; exit 3")
    res = machine.execute("echo out; echo err >&2; exit 7")
    assert (res.exit_code, res.stdout, res.stderr) == (7, "out\n", "err\n")
    with pytest.raises(AssertionFailed, match="exit 5"):
        machine.succeed("exit 5")
    with pytest.raises(AssertionFailed, match="unexpectedly succeeded"):
        machine.fail("true")


def test_waits(machine) -> None:  # type: ignore[no-untyped-def]
    machine.wait_for_unit("ssh.service", timeout=30)
    machine.execute("(sleep 2; touch /run/later) >/dev/null 2>&1 &")
    machine.wait_until_succeeds("test -e /run/later", timeout=30)


def test_bounded_waits_carry_the_console_tail(machine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MachineError, match="console tail") as err:
        machine.execute("sleep 30", timeout=2)
    assert "timed out after 2s" in str(err.value)
    with pytest.raises(MachineError, match="console tail"):
        machine.wait_until_succeeds("false", timeout=3)
    with pytest.raises(AssertionFailed, match="failed"):
        machine.succeed("systemd-run --unit=doomed.service --wait false")
        machine.wait_for_unit("doomed.service", timeout=10)


def test_copy_to_and_from(machine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho copied\n")
    script.chmod(0o750)
    machine.copy_to(script, "/opt/test/tool.sh")
    assert machine.succeed("/opt/test/tool.sh").strip() == "copied"
    assert machine.succeed("stat -c %a /opt/test/tool.sh").strip() == "750"

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub/file").write_text("data\n")
    (tree / "link").symlink_to("sub/file")
    machine.copy_to(tree, "/var/tmp/tree")
    assert machine.succeed("readlink /var/tmp/tree/link").strip() == "sub/file"
    assert machine.succeed("cat /var/tmp/tree/link") == "data\n"

    back = tmp_path / "back" / "os-release"
    machine.copy_from("/usr/lib/os-release", back)
    assert "SYSEXT_HARNESS_TARGET=" in back.read_text()


def test_testinfra_host(machine, target) -> None:  # type: ignore[no-untyped-def]
    host = machine.host
    assert host.file("/usr/lib/os-release").contains(f"^ID={target.os_release['ID']}")
    assert host.service("ssh").is_running
    assert host.mount_point("/usr").exists


def test_image_shape(machine, target) -> None:  # type: ignore[no-untyped-def]
    """/usr read-only on its own file system; state writable; persona identity in place."""
    usr = machine.succeed("findmnt -n -o SOURCE,FSTYPE,OPTIONS /usr").split()
    assert usr[1] == "ext4" and "ro" in usr[2].split(",")
    assert machine.succeed("findmnt -n -o SOURCE /") != usr[0]
    machine.fail("touch /usr/lib/x")
    for d in ("/etc", "/var", "/opt"):
        machine.succeed(f"touch {d}/.w && rm {d}/.w")
    os_release = dict(
        line.split("=", 1) for line in machine.succeed(
            ". /etc/os-release; env -i sh -c 'set -a; . /etc/os-release; env'").splitlines()
        if "=" in line
    )
    for key in ("ID", "VERSION_ID"):
        assert os_release.get(key) == target.os_release[key]
    assert machine.succeed("systemd-sysext --version").split()[1] == str(target.systemd_version)
    user = target.persona.default_user
    machine.succeed(f"id {user}")
    machine.succeed(f"test -d {target.default_extension_dir}")


def test_ssh_is_key_only(machine) -> None:  # type: ignore[no-untyped-def]
    # OpenSSH 10.6 (Debian sid) prints the keywords as written in sshd_config, older
    # versions in lower case.
    cfg = machine.succeed("sshd -T 2>/dev/null").lower()
    assert "passwordauthentication no" in cfg
    assert "kbdinteractiveauthentication no" in cfg
    assert machine.succeed("stat -c %a /root/.ssh/authorized_keys").strip() == "600"


def test_restore_starts_fresh_with_synced_clock(harness, target) -> None:  # type: ignore[no-untyped-def]
    first = harness.machine(target, "fresh-1")
    try:
        first.succeed("echo dirty > /etc/left-behind")
    finally:
        harness.pool.stop(first)
    second = harness.machine(target, "fresh-2")
    try:
        second.succeed("test ! -e /etc/left-behind")
        guest = float(second.succeed("date +%s.%N"))
        assert abs(guest - time.time()) < 30, "guest clock was not resynced after restore"
    finally:
        harness.pool.stop(second)


@pytest.mark.parametrize("shutdown", ["clean", "reset"])
def test_reboot_keeps_state(machine, shutdown: str) -> None:  # type: ignore[no-untyped-def]
    """Both ways to end a boot keep what was written; only the clean one shuts down (the
    kernel's "reboot: Restarting system" comes at the end of `systemctl reboot`)."""
    before = machine.boot_id()
    seen = len(machine.console_log())
    machine.succeed("echo kept > /etc/kept && echo kept > /var/kept && echo kept > /opt/kept")
    machine.reboot(shutdown=shutdown)
    assert machine.boot_id() != before
    assert machine.succeed("cat /etc/kept /var/kept /opt/kept").split() == ["kept"] * 3
    machine.fail("touch /usr/lib/x")
    new = machine.console_log()[seen:]
    shut_down = "reboot: Restarting system" in new
    assert shut_down == (shutdown == "clean"), new[-2000:]
    assert new.count(INITRAMFS_STARTED) == 1, new[-2000:]  # one boot, no silent-boot reset


def test_a_boot_that_stays_silent_is_reset_then_fails(harness, target, tmp_path: Path  # type: ignore[no-untyped-def]
                                                       ) -> None:
    """A boot must print the initramfs's first line within `silent_boot_timeout`. With a
    timeout shorter than firmware and kernel take, every start counts as hung: the machine
    is reset twice, logged, and the boot then fails with a clear error, without waiting
    for the 600 s boot timeout."""
    spec = harness.pool.boot_spec(target).with_key(harness.pool.key.public_text, tmp_path)
    impatient = replace(spec, readiness=replace(spec.readiness, silent_boot_timeout=0.5))
    lines: list[str] = []
    m = Machine(impatient, tmp_path / "m", harness.pool.key, harness.pool.accel(spec),
                logger=lines.append)
    try:
        with pytest.raises(MachineError, match="not on the console 0.5 s after each of 3 starts"
                           ) as failed:
            m.boot(timeout=120)
        assert "console tail" in str(failed.value)
        assert sum("resetting the machine" in line for line in lines) == 2, lines
    finally:
        m.shutdown()


def test_reboot_refuses_an_unknown_shutdown(machine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="clean, reset"):
        machine.reboot(shutdown="halt")
