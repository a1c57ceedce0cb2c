"""Exports a reference target as one standalone, firmware-bootable disk, built like a
distribution's release image.

The reference images boot by direct kernel boot from three loose file system images and
carry the harness's test glue. An export puts them on one GPT disk behind a boot loader,
as Flatcar, Fedora CoreOS or Kairos ship theirs, so the harness's image-target code (and
anyone else) can boot it through firmware and provision it through Ignition or
cloud-config alone:

    1  EFI-SYSTEM  FAT32, 128 MiB: systemd-boot (and GRUB's grub.cfg), kernel, initramfs
    2  BIOS-BOOT   1 MiB, `bios` exports only: GRUB's core.img (boot.img is in the MBR)
    .  USR-A       the target's usr-a.img (ext4, label USR-A)
    .  USR-B       the target's usr-b.img (ext4, label USR-B)
    .  ROOT        a copy of root.img (ext4, label REFOS-ROOT), without the test glue

Nothing here mounts anything or uses a loop device: sfdisk writes the table into a file,
mtools fills the FAT image, debugfs edits the root copy, partition images are copied in
at their offsets (data only, so the raw disk stays sparse) and qemu-img makes the qcow2.
A `bios` export is a hybrid: it boots under UEFI (systemd-boot) and BIOS (GRUB) alike.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shlex
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.buildcache import (
    TMP_PREFIX,
    build_lock,
    cache_dir,
    clean_stale_tmp,
    rename_into_place,
    rmtree,
    versions_of,
)
from harness.errors import ConfigError, HarnessError
from harness.run import run
from harness.targets.build import COLDPLUG_DROPIN, VOLATILE_JOURNAL_DROPIN, ensure_target_image
from harness.targets.model import Target, TargetImage

# Bump when the layout, the boot loader setup or the root edits change, so caches rebuild.
EXPORT_VERSION = "4"
EXPORT_FIRMWARES: tuple[str, ...] = ("uefi", "bios")

MIB = 1024 * 1024
SECTOR = 512
ESP_SIZE = 128 * MIB
BIOS_BOOT_SIZE = 1 * MIB
ESP_LABEL = "EFI-SYSTEM"  # FAT label, at most 11 characters
ENTRY = "refos"  # the boot loader entry, and the ESP directory holding kernel and initramfs

# GPT partition types: the UEFI ones, and the Discoverable Partitions Specification's
# x86-64 /usr and root, so `systemd-dissect` and friends recognise the disk.
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
USR_TYPE = "8484680C-9521-48C6-9C11-B0720656F69E"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"

SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_MODULES = ("biosdisk", "part_gpt", "fat", "search", "search_fs_uuid", "normal",
                "linux", "configfile", "echo", "test")

# The harness's own glue that a real image does not have: the unit that installs the
# harness's key from fw_cfg and announces the host key, and the readiness line. Their
# enablement (links in /etc/systemd/system/*.wants) is removed; the unit files stay in /usr.
HARNESS_UNITS = ("sysext-harness-ssh-key.service", "sysext-harness-ssh-ready.service")
UNIT_DIR = "/etc/systemd/system"
# The udev rule that starts the harness's port shell (the unit file stays in /usr, unused).
HARNESS_UDEV_RULE = "/etc/udev/rules.d/90-sysext-harness-shell.rules"
# The narrower udev coldplug of the harness's VMs: a distribution triggers every device,
# and the serial getty added below waits for dev-ttyS0.device, which that skips. The
# volatile journal: a distribution keeps its journal in /var across boots.
HARNESS_FILES = (HARNESS_UDEV_RULE, COLDPLUG_DROPIN, VOLATILE_JOURNAL_DROPIN)
# What a distribution has instead. A serial login prompt (the reference root masks the
# getty generator, which would make this link from console=ttyS0 on a real system) ...
SERIAL_GETTY_LINK = f"{UNIT_DIR}/getty.target.wants/serial-getty@ttyS0.service"
SERIAL_GETTY_UNIT = "/usr/lib/systemd/system/serial-getty@.service"
# ... and host keys made when they are missing, as Flatcar's and Fedora CoreOS's
# sshd-keygen units do. The reference images get theirs from sysext-harness-ssh-key, and
# Debian's own sshd-keygen.service runs only on ConditionFirstBoot, which an image with an
# empty /etc/machine-id never is.
SSHD_KEYGEN = "sshd-keygen.service"
SSHD_KEYGEN_UNIT = """\
# sysext-harness export: generate the missing sshd host key, as Flatcar's and Fedora
# CoreOS's sshd-keygen units do (Debian's runs on ConditionFirstBoot only). ed25519 only:
# the image's sshd_config uses no other, and an RSA key costs seconds under TCG.
[Unit]
Description=Generate sshd host keys
ConditionPathIsReadWrite=/etc/ssh
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service sshd.service sshd@.service ssh.socket

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=ssh.service
"""
SSHD_KEYGEN_LINK = f"{UNIT_DIR}/ssh.service.wants/{SSHD_KEYGEN}"

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ the layout


@dataclass(frozen=True)
class Partition:
    """One GPT partition: where it is, what it is, and which image fills it (if any)."""

    name: str  # GPT partition name
    type: str  # GPT type GUID
    size: int  # bytes, a multiple of 1 MiB
    start: int = 0  # bytes from the start of the disk, set by `plan_layout`
    source: Path | None = None  # image copied into it; None: left empty (or filled later)
    uuid: str = ""

    @property
    def end(self) -> int:
        return self.start + self.size


def _mib_ceil(size: int) -> int:
    return -(-size // MIB) * MIB


def plan_layout(parts: list[Partition], seed: str = "") -> list[Partition]:
    """Place `parts` one after another from 1 MiB on, each 1 MiB aligned, with partition
    UUIDs derived from `seed`, so the same export always gets the same table."""
    placed = []
    offset = MIB
    for part in parts:
        size = _mib_ceil(part.size)
        digest = hashlib.sha256(f"{seed}:{part.name}".encode()).digest()[:16]
        placed.append(Partition(part.name, part.type, size, offset, part.source,
                                str(uuid.UUID(bytes=digest, version=4))))
        offset += size
    return placed


def disk_size(layout: list[Partition]) -> int:
    """The disk's size: the last partition plus 1 MiB, room for the backup GPT."""
    return layout[-1].end + MIB


def sfdisk_script(layout: list[Partition], seed: str = "") -> str:
    """The sfdisk input that makes `layout` a GPT."""
    label_id = uuid.UUID(bytes=hashlib.sha256(f"{seed}:disk".encode()).digest()[:16],
                         version=4)
    lines = ["label: gpt", f"label-id: {str(label_id).upper()}", "unit: sectors",
             "first-lba: 2048", ""]
    for part in layout:
        lines.append(f"start={part.start // SECTOR}, size={part.size // SECTOR}, "
                     f"type={part.type}, uuid={part.uuid.upper()}, name=\"{part.name}\"")
    return "\n".join(lines) + "\n"


def write_partition_table(disk: Path, layout: list[Partition], seed: str = "") -> None:
    """Create the sparse raw `disk` and write its GPT: sfdisk works on a plain file."""
    with open(disk, "wb") as f:
        f.truncate(disk_size(layout))
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "never", disk],
        input=sfdisk_script(layout, seed).encode())


def copy_sparse(src: Path, dest: Path, offset: int) -> None:
    """Copy `src` into `dest` at byte `offset`, only the data regions (SEEK_DATA), so the
    holes of a mostly empty ext4 image stay holes in the disk."""
    with open(src, "rb") as s, open(dest, "r+b") as d:
        size = os.fstat(s.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(s.fileno(), pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            hole = os.lseek(s.fileno(), data, os.SEEK_HOLE)
            _copy_range(s.fileno(), d.fileno(), data, offset + data, hole - data)
            pos = hole


def _copy_range(src: int, dest: int, src_off: int, dest_off: int, count: int) -> None:
    while count > 0:
        done = os.copy_file_range(src, dest, count, src_off, dest_off)
        if done == 0:
            raise HarnessError(f"short copy: {count} bytes left")
        src_off, dest_off, count = src_off + done, dest_off + done, count - done


# ---------------------------------------------------------------------- the ESP


def _mtools_env() -> dict[str, str]:
    # The FAT image is a file, not a drive mtools knows of.
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def build_esp(image: Path, size: int, files: Mapping[str, Path], volume_id: str) -> None:
    """A FAT32 image of `size` bytes holding `files` (ESP path -> host file), made with
    mkfs.fat -C and mtools: no mount."""
    image.unlink(missing_ok=True)
    run(["mkfs.fat", "-F", "32", "-n", ESP_LABEL, "-i", volume_id, "-C", image,
         str(size // 1024)])
    env = _mtools_env()
    dirs = sorted({str(Path(p).parent) for p in files} - {"."})
    made: set[str] = set()
    for directory in dirs:
        parts = Path(directory).parts
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                run(["mmd", "-i", image, f"::/{sub}"], env=env)
                made.add(sub)
    for dest, src in sorted(files.items()):
        run(["mcopy", "-i", image, "-o", src, f"::/{dest}"], env=env)


def loader_conf() -> str:
    """systemd-boot's loader.conf: boot the one entry at once."""
    return f"timeout 0\ndefault {ENTRY}.conf\neditor no\n"


def loader_entry(title: str, cmdline: str) -> str:
    """The Boot Loader Specification type #1 entry for the target's kernel."""
    return (f"title {title}\nlinux /{ENTRY}/vmlinuz\ninitrd /{ENTRY}/initrd.img\n"
            f"options {cmdline}\n")


def grub_cfg(title: str, cmdline: str) -> str:
    """GRUB's menu (BIOS exports): the same kernel, initramfs and command line."""
    args = " ".join(shlex.quote(arg) for arg in cmdline.split())
    return (f"set timeout=0\nset default=0\nmenuentry {shlex.quote(title)} {{\n"
            f"    linux /{ENTRY}/vmlinuz {args}\n    initrd /{ENTRY}/initrd.img\n}}\n")


def esp_files(image: TargetImage, staging: Path, firmware: str) -> dict[str, Path]:
    """What goes on the ESP (ESP path -> host file); text files are written to `staging`."""
    if not SYSTEMD_BOOT.exists():
        raise HarnessError(f"{SYSTEMD_BOOT} is missing: apt-get install systemd-boot-efi "
                           "(scripts/setup-host.sh installs it)")
    title = image.target.name
    texts = {"loader/loader.conf": loader_conf(),
             f"loader/entries/{ENTRY}.conf": loader_entry(title, image.cmdline)}
    if firmware == "bios":
        texts["grub/grub.cfg"] = grub_cfg(title, image.cmdline)
    files = {"EFI/BOOT/BOOTX64.EFI": SYSTEMD_BOOT,
             "EFI/systemd/systemd-bootx64.efi": SYSTEMD_BOOT,
             f"{ENTRY}/vmlinuz": image.kernel,
             f"{ENTRY}/initrd.img": image.initrd}
    for dest, text in texts.items():
        path = staging / dest.replace("/", "_")
        path.write_text(text)
        files[dest] = path
    return files


# ------------------------------------------------------------------------ GRUB (BIOS)

# Offsets in GRUB 2's boot.img (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h)
BOOT_BPB = (0x03, 0x5A)  # a FAT BPB's place: grub-bios-setup keeps the disk's bytes
BOOT_KERNEL_SECTOR = 0x5C  # 8 bytes LE: first sector of core.img
BOOT_DRIVE_CHECK = 0x66  # a 2-byte jmp, made NOPs for hard disks
MBR_CODE_END = 0x1B8  # 440: the disk signature and partition table follow
# diskboot.img (core.img's first sector) ends with a blocklist: start (8), length (2),
# segment (2): where the rest of core.img is and where to load it.
BLOCKLIST = SECTOR - 12
BLOCKLIST_SEGMENT = 0x820


def patch_boot_img(boot: bytes, mbr: bytes, core_sector: int) -> bytes:
    """The MBR's first 440 bytes as grub-bios-setup writes them: boot.img pointing at
    core.img, the disk's own BPB bytes kept, the floppy drive check disabled."""
    if len(boot) != SECTOR:
        raise HarnessError(f"boot.img is {len(boot)} bytes, expected {SECTOR}")
    code = bytearray(boot[:MBR_CODE_END])
    code[BOOT_BPB[0]:BOOT_BPB[1]] = mbr[BOOT_BPB[0]:BOOT_BPB[1]]
    code[BOOT_KERNEL_SECTOR:BOOT_KERNEL_SECTOR + 8] = struct.pack("<Q", core_sector)
    code[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    return bytes(code)


def patch_core_img(core: bytes, core_sector: int) -> bytes:
    """core.img, padded to whole sectors, with diskboot's blocklist pointing at its
    sectors after the first, as grub-bios-setup does for an embedded core.img."""
    data = bytearray(core + b"\0" * (-len(core) % SECTOR))
    sectors = len(data) // SECTOR
    start, length, segment = struct.unpack_from("<QHH", data, BLOCKLIST)
    if segment != BLOCKLIST_SEGMENT or length != sectors - 1:
        raise HarnessError(f"core.img's diskboot blocklist is not what grub-mkimage writes "
                           f"(start {start}, length {length}/{sectors - 1}, segment "
                           f"{segment:#x})")
    struct.pack_into("<QHH", data, BLOCKLIST, core_sector + 1, sectors - 1, segment)
    return bytes(data)


def grub_core_img(work: Path, esp_volume_id: str) -> bytes:
    """GRUB's i386-pc core.img: finds the ESP by its FAT volume id and reads
    /grub/grub.cfg from it."""
    if not (GRUB_PC_DIR / "boot.img").exists():
        raise HarnessError(f"{GRUB_PC_DIR} is missing: apt-get install grub-pc-bin "
                           "(scripts/setup-host.sh installs it)")
    vid = esp_volume_id.upper()
    early = work / "grub-early.cfg"
    early.write_text(f"search --no-floppy --fs-uuid --set=root {vid[:4]}-{vid[4:]}\n"
                     "set prefix=($root)/grub\n")
    core = work / "core.img"
    run(["grub-mkimage", "-O", "i386-pc", "-d", GRUB_PC_DIR, "-o", core, "-c", early,
         "-p", "/grub", *GRUB_MODULES])
    return core.read_bytes()


def install_grub_bios(disk: Path, bios_boot: Partition, core: bytes) -> None:
    """Write core.img into the BIOS boot partition and boot.img into the MBR."""
    if bios_boot.start % SECTOR:
        raise HarnessError("the BIOS boot partition is not sector aligned")
    sector = bios_boot.start // SECTOR
    patched = patch_core_img(core, sector)
    if len(patched) > bios_boot.size:
        raise HarnessError(f"core.img ({len(patched)} bytes) does not fit the BIOS boot "
                           f"partition ({bios_boot.size} bytes)")
    boot = (GRUB_PC_DIR / "boot.img").read_bytes()
    with open(disk, "r+b") as f:
        mbr = f.read(SECTOR)
        f.seek(0)
        f.write(patch_boot_img(boot, mbr, sector))
        f.seek(bios_boot.start)
        f.write(patched)


# ------------------------------------------------------------------ the root file system


def _debugfs(image: Path, request: str, write: bool = False) -> str:
    argv: list[str | Path] = ["debugfs", *(["-w"] if write else []), "-R", request, image]
    return run(argv).stdout.decode(errors="replace")


def _debugfs_script(image: Path, commands: list[str], work: Path) -> None:
    """Run several debugfs requests in one go. debugfs exits 0 even when a request
    fails, so the caller checks the result."""
    script = work / "debugfs.cmd"
    script.write_text("\n".join(commands) + "\n")
    run(["debugfs", "-w", "-f", script, image])


def list_dir(image: Path, path: str) -> dict[str, str]:
    """Entries of directory `path` in the ext4 `image`: name -> octal mode ({} if the
    directory does not exist)."""
    out = _debugfs(image, f"ls -p {path}")
    entries = {}
    for line in out.splitlines():
        fields = line.split("/")
        if len(fields) >= 7 and fields[5] not in (".", ".."):
            entries[fields[5]] = fields[2]
    return entries


def _is_dir(mode: str) -> bool:
    return mode.startswith("04")


def harness_unit_links(image: Path) -> list[str]:
    """Paths of the links that enable HARNESS_UNITS in the root `image`."""
    found = []
    for name, mode in sorted(list_dir(image, UNIT_DIR).items()):
        if _is_dir(mode) and name.endswith((".wants", ".requires", ".upholds")):
            found += [f"{UNIT_DIR}/{name}/{unit}"
                      for unit in list_dir(image, f"{UNIT_DIR}/{name}") if unit in HARNESS_UNITS]
    return found


def harness_glue(image: Path) -> list[str]:
    """What of the harness is left in the root `image`: HARNESS_UNITS' links, the port
    shell's udev rule, the coldplug and journal drop-ins."""
    return harness_unit_links(image) + [path for path in HARNESS_FILES
                                        if _exists(image, path)]


def _exists(image: Path, path: str) -> bool:
    parent, name = path.rsplit("/", 1)
    return name in list_dir(image, parent)


def distribution_root(image: Path, work: Path) -> list[str]:
    """Turn a copy of root.img into a distribution's root: disable the harness glue, add
    a serial login prompt and missing-host-key generation. Returns what it changed."""
    links = harness_glue(image)
    commands = [f"rm {link}" for link in links]
    changes = [f"removed {link}" for link in links]
    keygen = work / SSHD_KEYGEN
    keygen.write_text(SSHD_KEYGEN_UNIT)
    keygen.chmod(0o644)
    if _exists(image, f"{UNIT_DIR}/{SSHD_KEYGEN}"):
        commands.append(f"rm {UNIT_DIR}/{SSHD_KEYGEN}")
    commands.append(f"write {keygen} {UNIT_DIR}/{SSHD_KEYGEN}")
    changes.append(f"added {UNIT_DIR}/{SSHD_KEYGEN}")
    for link, unit in ((SERIAL_GETTY_LINK, SERIAL_GETTY_UNIT),
                       (SSHD_KEYGEN_LINK, f"{UNIT_DIR}/{SSHD_KEYGEN}")):
        if _exists(image, link):
            continue
        directory = link.rsplit("/", 1)[0]
        if not _exists(image, directory):
            commands.append(f"mkdir {directory}")
        commands.append(f"symlink {link} {unit}")
        changes.append(f"added {link} -> {unit}")
    _debugfs_script(image, commands, work)
    _check_root(image)
    return changes


def _check_root(image: Path) -> None:
    """debugfs reports failed requests only on stderr: check the result itself."""
    left = harness_glue(image)
    if left:
        raise HarnessError(f"{image}: debugfs did not remove {', '.join(left)}")
    for path in (SERIAL_GETTY_LINK, f"{UNIT_DIR}/{SSHD_KEYGEN}", SSHD_KEYGEN_LINK):
        if not _exists(image, path):
            raise HarnessError(f"{image}: debugfs did not create {path}")
    problems = run(["e2fsck", "-fn", image], check=False)
    if problems.returncode != 0:
        out = (problems.stdout or b"").decode(errors="replace")
        raise HarnessError(f"{image}: e2fsck found problems after the edits:\n{out[-2000:]}")


# ------------------------------------------------------------------------ the export


def export_digest(image: TargetImage, firmware: str) -> str:
    """An export is a pure function of the target image, the firmware and EXPORT_VERSION."""
    return hashlib.sha256(f"export={EXPORT_VERSION}\n{image.digest}\n{firmware}\n".encode()
                          ).hexdigest()


def exports_dir() -> Path:
    return cache_dir() / "exports"


def export_path(target: Target, digest: str, firmware: str) -> Path:
    return exports_dir() / f"{target.name}-{digest[:16]}-{firmware}.qcow2"


def check_exportable(target: Target, firmware: str) -> None:
    """Bad input, before anything is built: exit 2 through ConfigError."""
    if firmware not in EXPORT_FIRMWARES:
        raise ConfigError("unknown firmware", key="--firmware", value=firmware,
                          allowed=EXPORT_FIRMWARES)
    if target.kind != "reference":
        raise ConfigError("only reference targets (refos-*) can be exported; an image "
                          "target already is a disk", key="target", value=target.name)
    if target.architecture != "x86-64":
        raise ConfigError("only x86-64 targets can be exported (the boot loaders are "
                          "x86-64 ones)", key="target", value=target.name)


def partitions(image: TargetImage, firmware: str, root_copy: Path) -> list[Partition]:
    """The export's partitions in table order, not yet placed."""
    parts = [Partition("EFI-SYSTEM", ESP_TYPE, ESP_SIZE)]
    if firmware == "bios":
        parts.append(Partition("BIOS-BOOT", BIOS_BOOT_TYPE, BIOS_BOOT_SIZE))
    parts += [Partition("USR-A", USR_TYPE, image.usr_a.stat().st_size, source=image.usr_a),
              Partition("USR-B", USR_TYPE, image.usr_b.stat().st_size, source=image.usr_b),
              Partition("ROOT", ROOT_TYPE, root_copy.stat().st_size, source=root_copy)]
    return parts


def assemble_disk(image: TargetImage, firmware: str, work: Path, seed: str,
                  progress: Progress = _stderr) -> Path:
    """Build the raw export disk of `image` in `work`; returns its path."""
    root_copy = work / "root.img"
    with open(root_copy, "wb") as f:
        f.truncate(image.root.stat().st_size)
    copy_sparse(image.root, root_copy, 0)
    for change in distribution_root(root_copy, work):
        progress(f"root: {change}")
    layout = plan_layout(partitions(image, firmware, root_copy), seed)
    disk = work / "disk.raw"
    write_partition_table(disk, layout, seed)
    esp = next(p for p in layout if p.type == ESP_TYPE)
    volume_id = hashlib.sha256(f"{seed}:esp".encode()).hexdigest()[:8].upper()
    staging = work / "esp"
    staging.mkdir()
    build_esp(work / "esp.img", esp.size, esp_files(image, staging, firmware), volume_id)
    copy_sparse(work / "esp.img", disk, esp.start)
    for part in layout:
        if part.source is not None:
            copy_sparse(part.source, disk, part.start)
    if firmware == "bios":
        bios_boot = next(p for p in layout if p.type == BIOS_BOOT_TYPE)
        install_grub_bios(disk, bios_boot, grub_core_img(work, volume_id))
    return disk


# Read locks on the exports this process boots from, held until it exits (as
# harness.targets.inuse does for image directories).
_held: dict[Path, IO[bytes]] = {}


def _hold(path: Path) -> bool:
    """Keep `path` from being removed as stale by another process's export (a checkout
    with another recipe) while machines of this process may boot overlays of it. False if
    it does not exist."""
    if path in _held:
        return True
    try:
        lock = open(path, "rb")  # noqa: SIM115 - held until exit
    except FileNotFoundError:
        return False
    fcntl.flock(lock, fcntl.LOCK_SH)
    if not path.exists():  # removed between open and lock
        lock.close()
        return False
    _held[path] = lock
    return True


def _remove_unused_versions(target: Target, firmware: str, progress: Progress) -> None:
    """remove_stale_versions for exports: older exports of `target` for `firmware` go,
    unless a harness process still holds one."""
    for stale in versions_of(exports_dir(), target.name, f"-{firmware}.qcow2"):
        with open(stale, "rb") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"keeping {stale.name}: another harness run still uses it")
                continue
            stale.unlink(missing_ok=True)


def export_disk(target: Target, firmware: str = "uefi",
                progress: Progress = _stderr) -> Path:
    """The cached qcow2 export of `target` for `firmware` ("uefi"; "bios" is a hybrid
    that boots under both), built first when missing. Read-only: boot overlays of it."""
    check_exportable(target, firmware)
    image = ensure_target_image(target, progress=progress)
    digest = export_digest(image, firmware)
    dest = export_path(target, digest, firmware)
    if _hold(dest):
        return dest
    with build_lock():
        if _hold(dest):
            return dest
        exports_dir().mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(exports_dir())
        started = time.monotonic()
        progress(f"exporting {target.name} as a {firmware} disk ...")
        work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-{firmware}-",
                                     dir=exports_dir()))
        try:
            disk = assemble_disk(image, firmware, work, digest, progress)
            qcow2 = work / "disk.qcow2"
            run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk, qcow2],
                timeout=1800)
            qcow2.chmod(0o444)  # a base: machines boot overlays of it
            _remove_unused_versions(target, firmware, progress)
            rename_into_place(qcow2, dest)
        finally:
            rmtree(work)
        if not _hold(dest):
            raise HarnessError(f"{dest}: gone right after the export")
        progress(f"{dest.name} ready in {time.monotonic() - started:.1f} s")
    return dest
