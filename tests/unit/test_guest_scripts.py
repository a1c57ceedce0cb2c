"""The guest's A/B update scripts, run for real on the host against a directory tree
(SYSEXT_HARNESS_ROOT_PREFIX), with every POSIX shell the host has."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.paths import images_dir

SCRIPTS = images_dir() / "overlay/usr/lib/sysext-harness"
SWITCH = SCRIPTS / "switch-usr-slot"
RELINK = SCRIPTS / "flatcar-sysext-relink"
FSTAB = images_dir() / "overlay/etc/fstab"
SHELLS = [s for s in ("sh", "dash", "bash", "busybox") if shutil.which(s)]


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> list[str]:
    return [request.param, "sh"] if request.param == "busybox" else [request.param]


def run(shell: list[str], script: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "SYSEXT_HARNESS_ROOT_PREFIX": str(root)}
    return subprocess.run([*shell, str(script), *args], env=env, capture_output=True,
                          text=True, timeout=30)


def test_scripts_are_executable_posix_sh() -> None:
    for script in (SWITCH, RELINK):
        assert os.access(script, os.X_OK)
        assert script.read_text().startswith("#!/bin/sh\n")
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0


# ------------------------------------------------------------------- switch-usr-slot


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    shutil.copy(FSTAB, root / "etc/fstab")
    (root / "usr/lib/os-release").write_text("ID=flatcar\nSYSEXT_HARNESS_SLOT=A\n")
    return root


def test_switch_rewrites_only_the_usr_line(shell: list[str], root: Path) -> None:
    original = (root / "etc/fstab").read_text()
    res = run(shell, SWITCH, root, "B")
    assert res.returncode == 0, res.stderr
    assert "LABEL=USR-A -> LABEL=USR-B" in res.stdout
    assert "slot B" in res.stdout
    new = (root / "etc/fstab").read_text()
    assert new == original.replace("LABEL=USR-A       /usr", "LABEL=USR-B       /usr")
    assert new.count("USR-B") == 1 + original.count("USR-B")  # only the /usr line changed
    assert (root / "etc/sysext-harness/slot").read_text() == "B\n"
    assert not list((root / "etc").glob("fstab.*"))  # no temporary file left

    res = run(shell, SWITCH, root, "A")
    assert res.returncode == 0, res.stderr
    assert (root / "etc/fstab").read_text() == original
    assert (root / "etc/sysext-harness/slot").read_text() == "A\n"


def test_switch_is_idempotent_and_keeps_the_mode(shell: list[str], root: Path) -> None:
    (root / "etc/fstab").chmod(0o640)
    assert run(shell, SWITCH, root, "B").returncode == 0
    res = run(shell, SWITCH, root, "B")
    assert res.returncode == 0 and "already" in res.stdout
    assert (root / "etc/fstab").stat().st_mode & 0o777 == 0o640


def test_switch_leaves_comments_and_other_entries(shell: list[str], root: Path) -> None:
    (root / "etc/fstab").write_text(
        "# LABEL=OLD /usr ext4 ro 0 0\n"
        "LABEL=REFOS-ROOT / ext4 rw 0 1\n"
        "\tLABEL=USR-A\t/usr\text4\tro,noatime\t0 0\n"
        "tmpfs /usr/local tmpfs rw 0 0\n")
    assert run(shell, SWITCH, root, "b").returncode == 0  # lower case accepted
    assert (root / "etc/fstab").read_text() == (
        "# LABEL=OLD /usr ext4 ro 0 0\n"
        "LABEL=REFOS-ROOT / ext4 rw 0 1\n"
        "LABEL=USR-B\t/usr\text4\tro,noatime\t0 0\n"
        "tmpfs /usr/local tmpfs rw 0 0\n")


def test_switch_refuses_bad_input(shell: list[str], root: Path) -> None:
    for args in ((), ("C",), ("A", "B"), ("--slot=B",)):
        res = run(shell, SWITCH, root, *args)
        assert res.returncode == 2, args
        assert "usage" in res.stderr
    (root / "etc/fstab").write_text("LABEL=REFOS-ROOT / ext4 rw 0 1\n")
    res = run(shell, SWITCH, root, "B")
    assert res.returncode == 1 and "no /usr entry" in res.stderr
    assert not (root / "etc/sysext-harness/slot").exists()
    (root / "etc/fstab").unlink()
    res = run(shell, SWITCH, root, "B")
    assert res.returncode == 1 and "does not exist" in res.stderr


def test_current_reads_the_slot_of_the_tree(shell: list[str], root: Path) -> None:
    res = run(shell, SWITCH, root, "--current")
    assert (res.returncode, res.stdout) == (0, "A\n")
    (root / "usr/lib/os-release").write_text('ID=flatcar\nSYSEXT_HARNESS_SLOT="B"\n')
    assert run(shell, SWITCH, root, "--current").stdout == "B\n"
    # the fstab says what the next boot mounts, not what is mounted now
    assert run(shell, SWITCH, root, "A").returncode == 0
    assert run(shell, SWITCH, root, "--current").stdout == "B\n"
    (root / "usr/lib/os-release").write_text("ID=flatcar\n")
    res = run(shell, SWITCH, root, "--current")
    assert res.returncode == 1 and "cannot tell" in res.stderr


# -------------------------------------------------------------- flatcar-sysext-relink


@pytest.fixture
def flatcar(tmp_path: Path) -> Path:
    """A Flatcar-like tree running 4152.2.0, with images for two versions in /opt."""
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text(
        'ID=flatcar\nVERSION=4152.2.0\nVERSION_ID="4152.2.0"\nSYSEXT_LEVEL="1.0"\n')
    (root / "etc/extensions").mkdir(parents=True)
    (root / "etc/flatcar/sysext").mkdir(parents=True)
    for name in ("foo", "bar", "only-old", "bakery"):
        (root / "opt/extensions" / name).mkdir(parents=True)
    for path in ("opt/extensions/foo/foo-4081.2.0.raw", "opt/extensions/foo/foo-4152.2.0.raw",
                 "opt/extensions/bar/bar-4081.2.0.raw", "opt/extensions/bar/bar-4152.2.0.raw",
                 "opt/extensions/only-old/only-old-4081.2.0.raw",
                 "opt/extensions/bakery/bakery-1.2.3-x86-64.raw",
                 "etc/flatcar/sysext/flatcar-zfs-4081.2.0.raw",
                 "etc/flatcar/sysext/flatcar-zfs-4152.2.0.raw",
                 "etc/extensions/plain.raw"):
        (root / path).write_text(path)
    links = {
        "foo.raw": "/opt/extensions/foo/foo-4081.2.0.raw",  # absolute
        "bar.raw": "../../opt/extensions/bar/bar-4081.2.0.raw",  # relative
        "only-old.raw": "/opt/extensions/only-old/only-old-4081.2.0.raw",  # no new image
        "bakery.raw": "/opt/extensions/bakery/bakery-1.2.3-x86-64.raw",  # not per-version
        "flatcar-zfs.raw": "/etc/flatcar/sysext/flatcar-zfs-4081.2.0.raw",  # Flatcar's own
        "docker-flatcar.raw": "/dev/null",  # a mask
        "other.raw": "/opt/extensions/foo/foo-4081.2.0.raw",  # another name's image
        "current.raw": "/opt/extensions/foo/current-4152.2.0.raw",  # dangling, current
    }
    for name, target in links.items():
        (root / "etc/extensions" / name).symlink_to(target)
    return root


def _links(root: Path) -> dict[str, str]:
    return {p.name: os.readlink(p) for p in sorted((root / "etc/extensions").iterdir())
            if p.is_symlink()}


def test_relink_points_links_at_the_running_version(shell: list[str], flatcar: Path) -> None:
    before = _links(flatcar)
    res = run(shell, RELINK, flatcar)
    assert res.returncode == 0, res.stderr
    after = _links(flatcar)
    assert after == {
        **before,
        "foo.raw": "/opt/extensions/foo/foo-4152.2.0.raw",
        "bar.raw": "../../opt/extensions/bar/bar-4152.2.0.raw",  # stays relative
        "flatcar-zfs.raw": "/etc/flatcar/sysext/flatcar-zfs-4152.2.0.raw",
    }
    assert (flatcar / "etc/extensions/plain.raw").read_text() == "etc/extensions/plain.raw"
    out = res.stdout
    assert ("/etc/extensions/foo.raw -> /opt/extensions/foo/foo-4152.2.0.raw "
            "(was /opt/extensions/foo/foo-4081.2.0.raw)") in out
    assert "keeping /etc/extensions/only-old.raw" in out
    assert "VERSION_ID 4152.2.0, 3 link(s) changed" in out
    assert not [p for p in (flatcar / "etc/extensions").iterdir() if ".relink." in p.name]

    # a second run changes nothing; a rollback to 4081.2.0 points them back
    assert "0 link(s) changed" in run(shell, RELINK, flatcar).stdout
    (flatcar / "usr/lib/os-release").write_text("ID=flatcar\nVERSION_ID=4081.2.0\n")
    res = run(shell, RELINK, flatcar)
    assert "VERSION_ID 4081.2.0, 3 link(s) changed" in res.stdout
    assert _links(flatcar) == before


def test_relink_without_version_or_directory_does_nothing(shell: list[str],
                                                          tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=flatcar\n")
    res = run(shell, RELINK, root)
    assert res.returncode == 0 and "no VERSION_ID" in res.stderr
    (root / "usr/lib/os-release").write_text("ID=flatcar\nVERSION_ID=1\n")
    res = run(shell, RELINK, root)  # no /etc/extensions
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_relink_unit_is_gated_and_ordered_before_sysext() -> None:
    unit = (images_dir() / "overlay/usr/lib/systemd/system/flatcar-sysext-relink.service")
    text = unit.read_text()
    for line in ("ConditionPathExists=/etc/sysext-harness/flatcar-relink-enabled",
                 "ConditionDirectoryNotEmpty=/etc/extensions", "DefaultDependencies=no",
                 "WantedBy=sysinit.target",
                 "ExecStart=/usr/lib/sysext-harness/flatcar-sysext-relink"):
        assert f"\n{line}\n" in text
    assert "systemd-sysext.service" in next(
        x for x in text.splitlines() if x.startswith("Before="))
    assert "local-fs.target" in next(x for x in text.splitlines() if x.startswith("After="))


def test_current_on_a_live_system_asks_findmnt(shell: list[str], tmp_path: Path) -> None:
    """Without a prefix the label of the file system under /usr decides, also when a
    merged sysext's overlayfs (no label) is mounted on top of it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    findmnt = bin_dir / "findmnt"
    for mounts, slot in (("/ REFOS-ROOT\n/usr USR-B\n", "B"),
                         ("/ REFOS-ROOT\n/usr USR-A\n/usr \n/usr/local x\n", "A")):
        findmnt.write_text(f"#!/bin/sh\ncat <<'EOF'\n{mounts}EOF\n")
        findmnt.chmod(0o755)
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
        res = subprocess.run([*shell, str(SWITCH), "--current"], env=env,
                             capture_output=True, text=True, timeout=30)
        assert (res.returncode, res.stdout) == (0, f"{slot}\n"), res.stderr
