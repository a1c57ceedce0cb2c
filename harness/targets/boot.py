"""Boot specs: what a target kind hands the machine layer, so the Machine knows no image.

A boot spec says what to boot (a kernel, initramfs and command line, or a disk and its
firmware), which drives to attach, which fw_cfg entries to pass, how the harness's SSH key
gets into the guest, and how readiness and the guest's host key are learnt. A reference
target (`reference_boot_spec`) and a real distribution disk are two producers of the same
spec, as the NixOS test driver's start command is one string whoever built the VM.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from harness.targets.build import ensure_target_image
from harness.targets.initramfs import FAILED_MARKER as INITRAMFS_FAILED
from harness.targets.initramfs import STARTED_MARKER as INITRAMFS_STARTED
from harness.targets.model import Persona, Target, TargetImage

FIRMWARES: tuple[str, ...] = ("bios", "uefi")


KeyDelivery = Callable[[str, Path], tuple[dict[str, Path], tuple["Drive", ...]]]


@dataclass(frozen=True)
class Drive:
    """A disk image attached to the machine, in the order the spec lists it."""

    path: Path
    format: str  # "qcow2" or "raw"
    readonly: bool = False


@dataclass(frozen=True)
class KernelBoot:
    """Direct kernel boot: the hypervisor loads these, no boot loader runs."""

    kernel: Path
    initrd: Path
    cmdline: str


@dataclass(frozen=True)
class Readiness:
    """How the harness learns, from the serial console, that a booting guest is ready.

    Every field is optional: a guest that prints nothing of the harness's is ready when its
    SSH port answers and a login succeeds, and its host key is pinned at first contact.
    """

    # A console line printed once sshd listens; until then connecting only hangs in QEMU's
    # user network. None: try SSH every `blind_interval` seconds.
    ready_line: str | None = None
    # The guest's host key as it announces it (group 1 is "ssh-ed25519 BASE64"). A key
    # counts only once something follows it: the console is read while the guest writes.
    host_key_line: re.Pattern[str] | None = None
    # A complete line saying first-boot provisioning failed: (tool word, reason) groups.
    provisioning_failed: re.Pattern[str] | None = None
    provisioning_tools: Mapping[str, str] = field(default_factory=dict)  # word -> tool name
    # Console text that means this boot has failed for good, beyond systemd's emergency mode.
    fatal_console: tuple[str, ...] = ()
    blind_interval: float = 10.0
    # A line every boot prints within seconds (the reference initramfs's first). When it has
    # not appeared `silent_boot_timeout` seconds into a boot, the boot hung before the kernel
    # and the machine is reset (harness/machine/silentboot.py). None: no such check.
    boot_line: str | None = None
    silent_boot_timeout: float = 60.0

    def announced_host_key(self, console: str) -> str | None:
        """The guest's SSH host key as its last complete console announcement gives it."""
        if self.host_key_line is None:
            return None
        found = self.host_key_line.findall(console)
        return found[-1] if found else None

    def provisioning_failure(self, console: str) -> tuple[str, str] | None:
        """The (tool, reason) of the first complete provisioning-failure line, if any."""
        if self.provisioning_failed is None:
            return None
        failed = self.provisioning_failed.search(console)
        if failed is None:
            return None
        word = failed.group(1)
        return self.provisioning_tools.get(word, word), failed.group(2).strip()


# Guest memory of a machine whose spec does not say otherwise (every reference target).
DEFAULT_MEMORY_MB = 1024


@dataclass(frozen=True)
class BootSpec:
    """Everything the machine layer needs to boot one target and reach it over SSH."""

    name: str  # the target's name, for logs and errors
    root: Drive  # base of the writable disk: every machine writes to its own overlay
    kernel: KernelBoot | None = None  # None: boot `root` through `firmware`'s boot loader
    firmware: str = "bios"  # one of FIRMWARES
    drives: tuple[Drive, ...] = ()  # attached after the root disk
    fw_cfg: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    # The fw_cfg name the guest reads the harness's public key from. None: the provisioning
    # config carries the key (Ignition passwd.users, cloud-config users).
    ssh_key_fw_cfg: str | None = None
    ssh_user: str = "root"
    readiness: Readiness = field(default_factory=Readiness)
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int = 2
    boot_timeout: float | None = None  # seconds to SSH after a (re)boot; None: the default
    # How the key gets in when no scenario config is given (an image target's snapshot
    # boot): (public key, work directory) -> the fw_cfg entries and drives of a first-boot
    # config in the distribution's own channel. None: `ssh_key_fw_cfg` does it.
    first_boot_key: KeyDelivery | None = None
    # The image runs the harness's root shell on a virtio-serial port when the VM has one
    # (harness/machine/guestport.py): commands then need no SSH connection.
    guest_shell: bool = False
    # Kernel modules loaded before the ready state is saved, so that restored runs do not
    # each load them again on their first merge (docs/targets.md, faster paths).
    snapshot_modules: tuple[str, ...] = ()

    def provisioned(self, fw_cfg: Mapping[str, Path], drives: tuple[Drive, ...] | list[Drive]
                    ) -> BootSpec:
        """The same target booted with first-boot provisioning (an Ignition config in
        fw_cfg, a cloud-config seed drive), which then also installs the SSH key."""
        return replace(self, fw_cfg=MappingProxyType({**self.fw_cfg, **fw_cfg}),
                       drives=(*self.drives, *drives), ssh_key_fw_cfg=None, first_boot_key=None)

    def with_key(self, pubkey: str, workdir: Path) -> BootSpec:
        """The spec of a boot that must install the harness's key on its own (no scenario
        config): the target's first-boot key delivery, if it has one."""
        if self.first_boot_key is None:
            return self
        fw_cfg, drives = self.first_boot_key(pubkey, workdir)
        return self.provisioned(fw_cfg, drives)


# --------------------------------------------------------------------- reference images

# What the reference images' own units print (images/overlay): sysext-harness-ssh-ready,
# the host-key announcement of install-ssh-key, and the first-boot provisioning units.
REFERENCE_READINESS = Readiness(
    ready_line="SYSEXT-HARNESS-SSH-READY",
    host_key_line=re.compile(r"SYSEXT-HARNESS-HOSTKEY (ssh-ed25519 [A-Za-z0-9+/=]+)[ \r\n]"),
    provisioning_failed=re.compile(
        r"SYSEXT-HARNESS-(IGNITION|CLOUD-CONFIG)-FAILED: ([^\r\n]*)\r?\n"),
    provisioning_tools=MappingProxyType({"IGNITION": "Ignition",
                                         "CLOUD-CONFIG": "cloud-config"}),
    fatal_console=(INITRAMFS_FAILED,),
    boot_line=INITRAMFS_STARTED,
)
# What merges use: loop devices, the overlay, both image file systems and dm-verity. Loading
# them took about 0.8 s under TCG, in nearly every restored run. And btrfs: systemd-sysext's
# merge of a DDI loads it (with raid6_pq and xor, whose speed tests run as they load), about
# 1 s in each of the 69 runs of the matrix that merge a DDI.
REFERENCE_SNAPSHOT_MODULES = ("loop", "overlay", "erofs", "squashfs", "dm_verity", "btrfs")
# Where the reference images' install-ssh-key unit reads the harness's public key.
REFERENCE_SSH_KEY_FW_CFG = "opt/org.sysext-harness/ssh-key"


def reference_boot_spec(image: TargetImage) -> BootSpec:
    """A reference image: direct kernel boot; disks are the root overlay, /usr slot A and
    /usr slot B (both read-only; /etc/fstab picks the slot by label, `switch-usr-slot`
    changes it), then any provisioning drives (found by label, so order does not matter)."""
    return BootSpec(
        name=image.target.name,
        root=Drive(image.root, "raw"),
        kernel=KernelBoot(image.kernel, image.initrd, image.cmdline),
        drives=(Drive(image.usr_a, "raw", readonly=True),
                Drive(image.usr_b, "raw", readonly=True)),
        ssh_key_fw_cfg=REFERENCE_SSH_KEY_FW_CFG,
        readiness=REFERENCE_READINESS,
        guest_shell=True,
        snapshot_modules=REFERENCE_SNAPSHOT_MODULES,
    )


# ------------------------------------------------------------------------ image targets

# A real image prints nothing of ours: try an SSH login every few seconds. Its console
# still shows systemd's emergency mode, which the machine layer stops at.
IMAGE_READINESS = Readiness(blind_interval=3.0)
IGNITION_VERSION = "3.3.0"  # understood by Flatcar, Fedora CoreOS and Debian's Ignition


def image_boot_spec(target: Target) -> BootSpec:
    """Disk + firmware, logged in as the distribution's user (sudo for root), the key
    delivered by a first-boot config in the distribution's own channel."""
    disk = target.image
    assert disk is not None
    persona = target.persona
    return BootSpec(name=target.name, root=Drive(disk.path, disk.format), kernel=None,
                    firmware=disk.firmware, ssh_user=persona.default_user,
                    readiness=IMAGE_READINESS, memory_mb=disk.memory_mb,
                    boot_timeout=disk.boot_timeout,
                    first_boot_key=_key_delivery(persona))


def _key_delivery(persona: Persona) -> KeyDelivery:
    user = persona.default_user
    if persona.provisioning == "cloud-config":
        def seed(pubkey: str, workdir: Path) -> tuple[dict[str, Path], tuple[Drive, ...]]:
            from harness.config.cloudconfig import add_ssh_key, make_seed_iso, render_cloud_config

            user_data = render_cloud_config(add_ssh_key({}, user, pubkey))
            (workdir / "user-data").write_text(user_data)
            return {}, (Drive(make_seed_iso(user_data, workdir / "seed.iso"), "raw",
                              readonly=True),)
        return seed
    fw_cfg_name = persona.ignition_fw_cfg_name
    assert fw_cfg_name is not None

    def ignition(pubkey: str, workdir: Path) -> tuple[dict[str, Path], tuple[Drive, ...]]:
        config = {"ignition": {"version": IGNITION_VERSION},
                  "passwd": {"users": [{"name": user, "sshAuthorizedKeys": [pubkey.strip()]}]}}
        path = workdir / "key.ign"
        path.write_text(json.dumps(config, indent=2) + "\n")
        return {fw_cfg_name: path}, ()
    return ignition


def boot_spec(target: Target, progress: Callable[[str], None] | None = None) -> BootSpec:
    """The boot spec of any target, building what it needs first (reference images)."""
    if target.image is not None:
        return image_boot_spec(target)
    image = ensure_target_image(target, progress=progress) if progress else (
        ensure_target_image(target))
    return reference_boot_spec(image)
