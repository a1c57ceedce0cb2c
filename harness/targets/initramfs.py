"""A minimal initramfs for the reference images: load the virtio drivers, mount the root
and the /usr slot named in its /etc/fstab, give the NIC its fixed address, hand over to
systemd.

Debian's initramfs-tools image starts udev and probes every driver it carries: under TCG
that costs about 5 s of every boot (and every reboot of an OS-update scenario). Nothing in
the reference images needs the initramfs for more than finding two file systems, so the
harness builds this one instead: busybox (static, from the host), the few kernel modules
the root disk and the NIC need, and a short shell script. It is a plain ``newc`` cpio
archive, written here without external tools.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import shutil
import subprocess
from pathlib import Path

from harness.errors import HarnessError

# Loaded before systemd runs: the virtio PCI transport and block driver (the root disk),
# and the network, entropy and fw_cfg drivers, which udev's coldplug would otherwise load
# 10 s or more into a TCG boot, holding up the network and with it SSH. Dependencies come
# from modules.dep; built-in ones are skipped.
EARLY_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "qemu_fw_cfg")
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
# Printed when the init script gives up; machine.py treats it as a failed boot.
FAILED_MARKER = "SYSEXT-HARNESS-INITRAMFS-FAILED"
# Readahead of the virtio disks, set before anything is read from them: 8 MiB saved about
# 1 s of QEMU CPU per reboot of refos-257-flatcar against the kernel's 128 KiB (6.12; the
# 7.x kernel of refos-262 sets 8 MiB itself, and 128 KiB cost it 0.9 s).
READ_AHEAD_KB = 8192
# Printed first thing: a boot without it hung before the kernel ran us (silentboot.py).
STARTED_MARKER = "SYSEXT-HARNESS-INITRAMFS"

INIT_SCRIPT = r"""#!/bin/busybox sh
# sysext-harness minimal initramfs: see harness/targets/initramfs.py
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
echo "@STARTED@" > /dev/console
mount -t proc proc /proc
mount -t sysfs sysfs /sys
fail() {  # say why on the console (the harness stops waiting when it sees this), then idle
    echo "@FAILED@: $*" > /dev/console
    while :; do sleep 3600; done
}
for module in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$module" || fail "insmod $module"
done
root=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in root=*) root="${arg#root=}" ;; esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"
# findfs resolves LABEL=/UUID=; the disk may need a moment to show up.
find_device() {
    i=0
    while [ $i -lt 100 ]; do
        dev=$(findfs "$1" 2>/dev/null) && { echo "$dev"; return 0; }
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
rootdev=$(find_device "$root") || fail "root file system $root not found"
# Read ahead up to @READ_AHEAD_KB@ KiB on every virtio disk (kernels from 6.16 on choose
# that themselves, older ones 128): under TCG each request the guest sends costs far more
# than the bytes it moves.
for queue in /sys/block/vd*/queue; do
    echo @READ_AHEAD_KB@ > "$queue/read_ahead_kb" 2>/dev/null || true
done
mount -t ext4 -o rw "$rootdev" /root || fail "cannot mount $rootdev on /"
usr=$(awk '$1 !~ /^#/ && $2 == "/usr" { print $1 " " $4; exit }' /root/etc/fstab)
if [ -n "$usr" ]; then
    set -- $usr
    usrdev=$(find_device "$1") || fail "/usr file system $1 not found"
    mount -t ext4 -o "$2" "$usrdev" /root/usr || fail "cannot mount $usrdev on /usr"
fi
# QEMU user networking's fixed address, as /etc/systemd/network/20-wired.network sets it:
# sshd can be reached as soon as it listens, without waiting for networkd to start.
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
fi
mount --move /dev /root/dev
umount /proc /sys
exec switch_root /root /sbin/init
""".replace("@FAILED@", FAILED_MARKER).replace("@STARTED@", STARTED_MARKER).replace(
    "@READ_AHEAD_KB@", str(READ_AHEAD_KB))


def find_busybox() -> Path:
    for path in BUSYBOX_CANDIDATES:
        if path.exists():
            return path
    raise HarnessError("the minimal initramfs needs a static busybox on the host: "
                       "apt-get install busybox-static (scripts/setup-host.sh installs it)")


def _is_static(binary: Path) -> bool:
    """A dynamically linked busybox would not run in an initramfs without its libc."""
    return b"/lib64/ld-linux" not in binary.read_bytes()[:8192]


def module_load_order(modules_dir: Path, wanted: tuple[str, ...] = EARLY_MODULES) -> list[str]:
    """Paths (relative to `modules_dir`) of `wanted` modules and their dependencies, each
    after what it depends on. Built-in modules (not in modules.dep) are left out."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in reversed(deps.get(path, [])):  # modules.dep lists the deepest last
            visit(dep)
        order.append(path)

    for name in wanted:
        if name in by_name:
            visit(by_name[name])
        elif not _is_builtin(modules_dir, name):
            raise HarnessError(f"kernel module {name} is neither in {modules_dir}/modules.dep "
                               "nor built in")
    return order


def _module_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


def _is_builtin(modules_dir: Path, name: str) -> bool:
    builtin = modules_dir / "modules.builtin"
    if not builtin.exists():
        return False
    return any(_module_name(line) == name for line in builtin.read_text().split())


def _decompressed(path: Path) -> bytes:
    """busybox insmod takes plain .ko files; Debian compresses them (xz or zstd)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        if shutil.which("zstd") is None:
            raise HarnessError(f"{path} is zstd-compressed and the host has no zstd")
        return subprocess.run(["zstd", "-dc", str(path)], check=True,
                              capture_output=True).stdout
    return data


class _Cpio:
    """Writer of the kernel's initramfs format (cpio "newc", see
    Documentation/driver-api/early-userspace/buffer-format.rst)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        fields = [self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        self.inode += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.out.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def build_initramfs(modules_dir: Path, dest: Path, busybox: Path | None = None,
                    modules: tuple[str, ...] = EARLY_MODULES) -> None:
    """Write the gzip-compressed initramfs for the kernel whose modules are `modules_dir`."""
    busybox = busybox or find_busybox()
    if not _is_static(busybox):
        raise HarnessError(f"{busybox} is dynamically linked; install busybox-static")
    cpio = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "root", "lib", "lib/modules"):
        cpio.directory(directory)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    order = module_load_order(modules_dir, modules)
    names = []
    for rel in order:
        name = _module_name(rel) + ".ko"
        cpio.file(f"lib/modules/{name}", _decompressed(modules_dir / rel))
        names.append(name)
    cpio.file("lib/modules/load-order", ("\n".join(names) + "\n").encode())
    dest.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))


def initramfs_digest(busybox: Path | None = None) -> str:
    """Part of the image digest: the script and the busybox binary it runs."""
    h = hashlib.sha256(INIT_SCRIPT.encode())
    h.update(",".join(EARLY_MODULES).encode())
    h.update(hashlib.sha256((busybox or find_busybox()).read_bytes()).digest())
    return h.hexdigest()
