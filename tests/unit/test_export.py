"""Exported reference disks (harness/targets/export.py), built from tiny fake partition
images with the real host tools and checked with other tools than the ones that wrote
them: sfdisk -J for the table, mtools for the ESP, debugfs and e2fsck for the root copy,
qemu-img for the qcow2. No VM: booting an export is done by hand (docs/real-images.md).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.run import run
from harness.targets import export
from harness.targets.build import COLDPLUG_DROPIN, VOLATILE_JOURNAL_DROPIN
from harness.targets.export import (
    BIOS_BOOT_TYPE,
    ESP_TYPE,
    GRUB_PC_DIR,
    HARNESS_UDEV_RULE,
    HARNESS_UNITS,
    MIB,
    ROOT_TYPE,
    SERIAL_GETTY_LINK,
    SSHD_KEYGEN,
    SYSTEMD_BOOT,
    USR_TYPE,
    assemble_disk,
    check_exportable,
    copy_sparse,
    export_disk,
    grub_cfg,
    list_dir,
    patch_boot_img,
    patch_core_img,
)
from harness.targets.model import TargetImage
from harness.targets.registry import get_target

_TOOLS = ("sfdisk", "mkfs.fat", "mmd", "mcopy", "mdir", "mtype", "debugfs", "e2fsck",
          "mkfs.ext4", "qemu-img", "grub-mkimage")
_missing = [t for t in _TOOLS if not shutil.which(t)]
needs_tools = pytest.mark.skipif(
    bool(_missing) or not SYSTEMD_BOOT.exists() or not (GRUB_PC_DIR / "boot.img").exists(),
    reason=f"host tools missing ({', '.join(_missing) or 'systemd-boot-efi, grub-pc-bin'}): "
           "make setup")

WANTS = "/etc/systemd/system/multi-user.target.wants"
SYSINIT_WANTS = "/etc/systemd/system/sysinit.target.wants"
CMDLINE = "root=LABEL=REFOS-ROOT rw console=ttyS0,115200n8 quiet"


def _ext4(path: Path, label: str, size: str, tree: Path | None = None) -> Path:
    argv: list[str | Path] = ["mkfs.ext4", "-q", "-F", "-L", label]
    if tree is not None:
        argv += ["-d", tree]
    run([*argv, path, size])
    return path


def _root_tree(base: Path) -> Path:
    """A root file system with the reference images' unit links."""
    tree = base / "root-tree"
    for directory, units in ((WANTS, (*HARNESS_UNITS, "ssh.service")),
                             (SYSINIT_WANTS, ("sysext-harness-ignition.service",))):
        wants = tree / directory.lstrip("/")
        wants.mkdir(parents=True)
        for unit in units:
            (wants / unit).symlink_to(f"/usr/lib/systemd/system/{unit}")
    (tree / "etc/fstab").write_text("LABEL=REFOS-ROOT / ext4 rw 0 1\n")
    rule = tree / HARNESS_UDEV_RULE.lstrip("/")
    rule.parent.mkdir(parents=True)
    rule.write_text('SUBSYSTEM=="virtio-ports", ENV{SYSTEMD_WANTS}+="x.service"\n')
    dropin = tree / COLDPLUG_DROPIN.lstrip("/")
    dropin.parent.mkdir(parents=True)
    dropin.write_text("[Service]\nExecStart=\nExecStart=-udevadm trigger\n")
    journal = tree / VOLATILE_JOURNAL_DROPIN.lstrip("/")
    journal.parent.mkdir(parents=True)
    journal.write_text("[Journal]\nStorage=volatile\n")
    return tree


@pytest.fixture
def image(tmp_path: Path) -> TargetImage:
    """A fake built target: tiny ext4 images, a fake kernel and initramfs."""
    d = tmp_path / "image"
    d.mkdir()
    (d / "vmlinuz").write_bytes(b"MZ fake kernel")
    (d / "initrd.img").write_bytes(b"070701 fake initramfs")
    return TargetImage(
        target=get_target("refos-257-flatcar"), directory=d,
        root=_ext4(d / "root.img", "REFOS-ROOT", "8M", _root_tree(tmp_path)),
        usr_a=_ext4(d / "usr-a.img", "USR-A", "4M"), usr_b=_ext4(d / "usr-b.img", "USR-B", "4M"),
        kernel=d / "vmlinuz", initrd=d / "initrd.img", cmdline=CMDLINE, digest="ab" * 32)


def _table(disk: Path) -> list[dict[str, object]]:
    table = json.loads(run(["sfdisk", "-J", disk]).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    return list(table["partitions"])


def _partition(disk: Path, name: str) -> tuple[int, int]:
    """(offset, size) in bytes of the partition named `name`."""
    part = next(p for p in _table(disk) if p["name"] == name)
    return int(part["start"]) * 512, int(part["size"]) * 512  # type: ignore[call-overload]


def _extract(disk: Path, name: str, dest: Path) -> Path:
    offset, size = _partition(disk, name)
    with open(disk, "rb") as f:
        f.seek(offset)
        dest.write_bytes(f.read(size))
    return dest


def _mtools(*argv: str | Path) -> bytes:
    return run([*argv], env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout


def _mdir(esp: Path, path: str) -> list[str]:
    """Paths in directory `path` of the FAT image, recursively."""
    return _mtools("mdir", "-b", "-/", "-i", esp, f"::{path}").decode().split()


def _mtype(esp: Path, path: str) -> str:
    return _mtools("mtype", "-i", esp, f"::{path}").decode()


@needs_tools
def test_uefi_disk_layout_esp_and_root(image: TargetImage, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    disk = assemble_disk(image, "uefi", work, "seed", progress=lambda _m: None)

    parts = _table(disk)
    assert [p["name"] for p in parts] == ["EFI-SYSTEM", "USR-A", "USR-B", "ROOT"]
    assert [p["type"] for p in parts] == [ESP_TYPE, USR_TYPE, USR_TYPE, ROOT_TYPE]
    assert [int(p["size"]) * 512 for p in parts] == [128 * MIB, 4 * MIB, 4 * MIB,  # type: ignore[call-overload]
                                                     8 * MIB]
    assert all(int(p["start"]) % 2048 == 0 for p in parts)  # type: ignore[call-overload]
    assert disk.stat().st_blocks * 512 < disk.stat().st_size // 4  # sparse

    esp = _extract(disk, "EFI-SYSTEM", tmp_path / "esp.img")
    loader = SYSTEMD_BOOT.read_bytes()
    for path in ("/EFI/BOOT/BOOTX64.EFI", "/EFI/systemd/systemd-bootx64.efi"):
        assert _mtools("mtype", "-i", esp, f"::{path}") == loader
    assert _mtype(esp, "/loader/loader.conf").splitlines()[:2] == [
        "timeout 0", "default refos.conf"]
    entry = _mtype(esp, "/loader/entries/refos.conf")
    assert f"options {CMDLINE}\n" in entry
    assert "linux /refos/vmlinuz\n" in entry and "initrd /refos/initrd.img\n" in entry
    assert _mtype(esp, "/refos/vmlinuz") == "MZ fake kernel"
    assert _mtype(esp, "/refos/initrd.img") == "070701 fake initramfs"
    assert sorted(_mdir(esp, "/")) == [
        "::/EFI/", "::/EFI/BOOT/", "::/EFI/BOOT/BOOTX64.EFI", "::/EFI/systemd/",
        "::/EFI/systemd/systemd-bootx64.efi", "::/loader/", "::/loader/entries/",
        "::/loader/entries/refos.conf", "::/loader/loader.conf", "::/refos/",
        "::/refos/initrd.img", "::/refos/vmlinuz"]

    root = _extract(disk, "ROOT", tmp_path / "root.img")
    assert not set(HARNESS_UNITS) & set(list_dir(root, WANTS))
    rules_dir, rule = HARNESS_UDEV_RULE.rsplit("/", 1)
    assert rule not in list_dir(root, rules_dir)  # no harness port shell on a shipped disk
    dropin_dir, dropin = COLDPLUG_DROPIN.rsplit("/", 1)
    assert dropin not in list_dir(root, dropin_dir)  # a distribution coldplugs every device
    journal_dir, journal = VOLATILE_JOURNAL_DROPIN.rsplit("/", 1)
    assert journal not in list_dir(root, journal_dir)  # and keeps its journal in /var
    assert "ssh.service" in list_dir(root, WANTS)
    assert "sysext-harness-ignition.service" in list_dir(root, SYSINIT_WANTS)
    assert "serial-getty@ttyS0.service" in list_dir(root, SERIAL_GETTY_LINK.rsplit("/", 1)[0])
    keygen = run(["debugfs", "-R", f"cat /etc/systemd/system/{SSHD_KEYGEN}", root]).stdout
    assert b"ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key" in keygen
    run(["e2fsck", "-fn", root])
    # The target's own root image is untouched: the edits went to a copy.
    assert set(HARNESS_UNITS) <= set(list_dir(image.root, WANTS))
    label = run(["e2label", _extract(disk, "USR-B", tmp_path / "usr-b.img")]).stdout
    assert label.strip() == b"USR-B"


@needs_tools
def test_bios_disk_has_grub_in_mbr_and_bios_boot_partition(image: TargetImage,
                                                          tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    disk = assemble_disk(image, "bios", work, "seed", progress=lambda _m: None)

    parts = _table(disk)
    assert [p["name"] for p in parts] == ["EFI-SYSTEM", "BIOS-BOOT", "USR-A", "USR-B", "ROOT"]
    assert parts[1]["type"] == BIOS_BOOT_TYPE
    core_offset, core_size = _partition(disk, "BIOS-BOOT")
    assert core_size == MIB
    data = disk.read_bytes()[:core_offset + core_size]
    boot = (GRUB_PC_DIR / "boot.img").read_bytes()
    assert data[0x5C:0x64] == struct.pack("<Q", core_offset // 512)
    assert data[0x66:0x68] == b"\x90\x90"
    assert data[0x68:0x1B8] == boot[0x68:0x1B8]
    assert data[0x1FE:0x200] == b"\x55\xaa"  # the protective MBR survived
    start, length, segment = struct.unpack_from("<QHH", data, core_offset + 0x1F4)
    assert (start, segment) == (core_offset // 512 + 1, 0x820)
    assert 0 < length < 2047
    assert data[core_offset + 512 * (length + 1):core_offset + core_size].strip(b"\0") == b""

    esp = _extract(disk, "EFI-SYSTEM", tmp_path / "esp.img")
    cfg = _mtype(esp, "/grub/grub.cfg")
    assert "linux /refos/vmlinuz root=LABEL=REFOS-ROOT rw console=ttyS0,115200n8 quiet" in cfg
    assert "initrd /refos/initrd.img" in cfg
    assert "::/EFI/BOOT/BOOTX64.EFI" in _mdir(esp, "/")  # UEFI boots it too


def test_boot_img_patch_keeps_the_disk_bpb_and_table() -> None:
    boot = bytes(range(256)) * 2
    mbr = b"\xee" * 512
    code = patch_boot_img(boot, mbr, 4096)
    assert len(code) == 440
    assert code[:3] == boot[:3] and code[3:0x5A] == mbr[3:0x5A]
    assert struct.unpack_from("<Q", code, 0x5C)[0] == 4096
    assert code[0x66:0x68] == b"\x90\x90"


def test_core_img_patch_points_the_blocklist_after_its_first_sector() -> None:
    core = bytearray(3 * 512 + 100)
    struct.pack_into("<QHH", core, 0x1F4, 2, 3, 0x820)
    patched = patch_core_img(bytes(core), 2048)
    assert len(patched) == 4 * 512
    assert struct.unpack_from("<QHH", patched, 0x1F4) == (2049, 3, 0x820)
    with pytest.raises(Exception, match="blocklist"):
        patch_core_img(bytes(4 * 512), 2048)


def test_grub_cfg_quotes_the_command_line() -> None:
    cfg = grub_cfg("t", "root=LABEL=R rw x=$y")
    assert "linux /refos/vmlinuz root=LABEL=R rw 'x=$y'\n" in cfg


def test_copy_sparse_keeps_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with open(src, "wb") as f:
        f.truncate(64 * MIB)
        f.seek(32 * MIB)
        f.write(b"data")
    dest = tmp_path / "dest"
    with open(dest, "wb") as f:
        f.truncate(128 * MIB)
    copy_sparse(src, dest, MIB)
    with open(dest, "rb") as f:
        f.seek(33 * MIB)
        assert f.read(4) == b"data"
    assert dest.stat().st_blocks * 512 < MIB


def test_bad_input_is_a_config_error() -> None:
    target = get_target("refos-257-flatcar")
    with pytest.raises(ConfigError, match="unknown firmware"):
        check_exportable(target, "efi")


@needs_tools
def test_export_disk_is_cached_by_digest(image: TargetImage, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSEXT_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(export, "ensure_target_image", lambda target, progress: image)
    monkeypatch.setattr(export, "_held", {})
    messages: list[str] = []
    first = export_disk(image.target, "uefi", progress=messages.append)
    assert first.parent == tmp_path / "cache/exports"
    assert first.name.startswith("refos-257-flatcar-") and first.name.endswith("-uefi.qcow2")
    info = json.loads(run(["qemu-img", "info", "--output=json", first]).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == (1 + 128 + 4 + 4 + 8 + 1) * MIB
    assert any("exporting" in m for m in messages)

    messages.clear()
    assert export_disk(image.target, "uefi", progress=messages.append) == first
    assert messages == []  # cached: nothing rebuilt

    for lock in export._held.values():  # as a later process, which no longer uses it
        lock.close()
    monkeypatch.setattr(export, "_held", {})
    monkeypatch.setattr(export, "EXPORT_VERSION", "test-next")
    second = export_disk(image.target, "uefi", progress=messages.append)
    assert second != first and second.exists() and not first.exists()
    assert [p.name for p in (tmp_path / "cache/exports").iterdir()] == [second.name]
