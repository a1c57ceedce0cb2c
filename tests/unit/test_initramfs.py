"""The minimal initramfs: module order from modules.dep, and a cpio archive the kernel reads.

The archive is checked by a reader written from the format description, not by the writer;
the boot itself is covered by every VM test.
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.targets.initramfs import (
    FAILED_MARKER,
    INIT_SCRIPT,
    _Cpio,
    build_initramfs,
    module_load_order,
)


def _modules_dir(tmp_path: Path, dep: str, builtin: str = "") -> Path:
    d = tmp_path / "modules"
    d.mkdir()
    (d / "modules.dep").write_text(dep)
    (d / "modules.builtin").write_text(builtin)
    return d


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, content) from a newc archive."""
    entries: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        content = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, content)


def test_dependencies_load_first(tmp_path: Path) -> None:
    d = _modules_dir(tmp_path, (
        "kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz"
        " kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz\n"
        "kernel/drivers/virtio/virtio_pci_legacy_dev.ko.xz:\n"
        "kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz\n"
        "kernel/drivers/virtio/virtio.ko.xz:\n"
        "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz"
        " kernel/drivers/virtio/virtio.ko.xz\n"))
    order = module_load_order(d, ("virtio_pci", "virtio_blk"))
    names = [Path(p).name for p in order]
    assert names[-1] == "virtio_blk.ko.xz"
    assert names.index("virtio.ko.xz") < names.index("virtio_ring.ko.xz") \
        < names.index("virtio_pci.ko.xz")
    assert len(names) == len(set(names)) == 5


def test_builtin_modules_are_skipped(tmp_path: Path) -> None:
    d = _modules_dir(tmp_path, "kernel/drivers/block/virtio_blk.ko.xz:\n",
                     builtin="kernel/drivers/virtio/virtio_pci.ko\n")
    assert module_load_order(d, ("virtio_pci", "virtio_blk")) == [
        "kernel/drivers/block/virtio_blk.ko.xz"]


def test_missing_module_is_an_error(tmp_path: Path) -> None:
    d = _modules_dir(tmp_path, "kernel/drivers/virtio/virtio_pci.ko:\n")
    with pytest.raises(HarnessError, match="virtio_blk"):
        module_load_order(d, ("virtio_pci", "virtio_blk"))


def test_cpio_round_trip() -> None:
    cpio = _Cpio()
    cpio.directory("bin")
    cpio.file("bin/x", b"abc", 0o755)
    cpio.file("odd-name", b"12345")
    entries = read_cpio(cpio.finish())
    assert entries["bin"][0] == 0o040755
    assert entries["bin/x"] == (0o100755, b"abc")
    assert entries["odd-name"][1] == b"12345"


def test_build_initramfs(tmp_path: Path) -> None:
    d = _modules_dir(tmp_path,
                     "kernel/virtio_pci.ko:\nkernel/virtio_blk.ko.xz: kernel/virtio_pci.ko\n")
    (d / "kernel").mkdir()
    (d / "kernel/virtio_pci.ko").write_bytes(b"PCI")
    (d / "kernel/virtio_blk.ko.xz").write_bytes(lzma.compress(b"BLK"))
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF static")
    dest = tmp_path / "initrd.img"
    build_initramfs(d, dest, busybox=busybox, modules=("virtio_pci", "virtio_blk"))
    entries = read_cpio(gzip.decompress(dest.read_bytes()))
    assert entries["init"] == (0o100755, INIT_SCRIPT.encode())
    assert entries["bin/busybox"][0] == 0o100755
    assert entries["lib/modules/virtio_blk.ko"][1] == b"BLK"  # decompressed for insmod
    assert entries["lib/modules/load-order"][1] == b"virtio_pci.ko\nvirtio_blk.ko\n"
    assert FAILED_MARKER in INIT_SCRIPT


def test_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    d = _modules_dir(tmp_path, "")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF ... /lib64/ld-linux-x86-64.so.2")
    with pytest.raises(HarnessError, match="busybox-static"):
        build_initramfs(d, tmp_path / "initrd.img", busybox=busybox)
