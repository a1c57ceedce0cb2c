"""Typed description of a target (base image, persona, systemd) and of its built images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The two /usr slots of an image (file system labels USR-A and USR-B), as on Flatcar.
USR_SLOTS: tuple[str, ...] = ("A", "B")


@dataclass(frozen=True)
class BaseRecipe:
    """A Debian-based reference root: one per systemd version."""

    name: str  # e.g. "trixie"
    suite: str  # Debian suite given to mmdebstrap, e.g. "trixie"
    systemd_version: int  # major version the suite ships, e.g. 257
    packages: tuple[str, ...]  # "name" or "name/suite" (e.g. systemd/bookworm-backports)
    extra_suites: tuple[str, ...] = ()  # more suites in sources, e.g. ("bookworm-backports",)
    default: bool = True  # its targets are in the default target set
    # systemd-sysupdate is installed (Debian 12 builds systemd with -Dsysupdate=false).
    sysupdate: bool = True


@dataclass(frozen=True)
class Persona:
    """A distribution's conventions applied to a reference image (not the distribution)."""

    name: str  # "flatcar", "fcos", "kairos"
    title: str  # human name, e.g. "Flatcar Container Linux"
    os_release: dict[str, str]  # /usr/lib/os-release fields as that distribution has them
    default_user: str  # "core", "kairos"
    extension_dir: str  # where this distribution's users put sysext images by default
    extension_dirs: tuple[str, ...] = ()  # every directory the distribution uses for extensions
    provisioning: str = "ignition"  # "ignition" or "cloud-config"
    ignition_fw_cfg_name: str | None = None  # e.g. "opt/org.flatcar-linux/config"
    builtin_extension_dir: str | None = None  # e.g. "/usr/share/flatcar/sysext"
    builtin_extensions: tuple[tuple[str, object], ...] = ()  # (name, extension spec data)
    # os-release fields that change in slot B (the OS update), merged over `os_release`.
    update_os_release: dict[str, str] = field(default_factory=dict)
    # Repoint /etc/extensions/NAME.raw -> .../NAME-<version>.raw to the running version at
    # boot, as Flatcar's initrd does (flatcar-sysext-relink.service).
    relink_per_version: bool = False
    # Files the distribution puts on its root file system: (path, content, systemd
    # constraint or None), e.g. Kairos's drop-in for systemd-sysext.service.
    files: tuple[tuple[str, str, str | None], ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class GuestFacts:
    """What a booted image says about itself: read from the guest, never assumed."""

    os_release: dict[str, str]  # /etc/os-release as the guest resolves it
    systemd_version: int  # major version, from `systemctl --version`
    architecture: str  # systemd's spelling (x86-64), from `uname -m`
    sysupdate: bool  # a systemd-sysupdate binary exists
    kernel: str = ""  # `uname -r`, for reports


@dataclass(frozen=True)
class DiskImage:
    """An image target's disk: a distribution's release image, booted through its own
    firmware and provisioning contract, with nothing of the harness inside."""

    path: Path  # the bootable disk (unpacked into the cache when given compressed)
    format: str  # "qcow2" or "raw"
    firmware: str  # "bios" or "uefi"
    distribution: str  # "flatcar", "fcos", "kairos": provisioning channel and conventions
    digest: str  # sha256 of `path`, keys cached facts
    memory_mb: int = 2048
    boot_timeout: float | None = None  # seconds from power-on to an SSH login
    expect: dict[str, str] = field(default_factory=dict)  # os-release fields it must have
    source: str = ""  # where it was defined: a target file, or the command line


@dataclass(frozen=True)
class Target:
    """An OS image plus what is needed to boot and drive it. Reference targets are `refos-*`;
    image targets (`image` set) boot a distribution's own disk."""

    name: str  # e.g. "refos-257-flatcar"
    base: BaseRecipe
    persona: Persona
    architecture: str = "x86-64"  # systemd's spelling, as in ARCHITECTURE=
    extra_os_release: dict[str, str] = field(default_factory=dict)
    image: DiskImage | None = None
    facts: GuestFacts | None = None  # read from the booted image (image targets)

    @property
    def kind(self) -> str:
        """"reference" (built here, with the harness's glue) or "image" (a real disk)."""
        return "reference" if self.image is None else "image"

    @property
    def default(self) -> bool:
        """Part of the default target set (`make test-scenario` without TARGET=)."""
        return self.base.default

    @property
    def systemd_version(self) -> int:
        return self.base.systemd_version

    @property
    def os_release(self) -> dict[str, str]:
        """The target's /usr/lib/os-release in slot A (the OS as first booted)."""
        return self.slot_os_release("A")

    @property
    def os_release_b(self) -> dict[str, str]:
        """/usr/lib/os-release in slot B: the OS after `os_update` (the persona's next
        release, or a major rebase for fcos)."""
        return self.slot_os_release("B")

    def slot_os_release(self, slot: str) -> dict[str, str]:
        """os-release of /usr slot "A" or "B", as the guest will have it."""
        if slot not in USR_SLOTS:
            raise ValueError(f"unknown /usr slot {slot!r} (slots: {', '.join(USR_SLOTS)})")
        if self.facts is not None:  # an image target: what the guest said, nothing added
            return dict(self.facts.os_release)
        fields = dict(self.persona.os_release)
        if slot == "B":
            fields.update(self.persona.update_os_release)
        fields.update(self.extra_os_release)
        fields["SYSEXT_HARNESS_TARGET"] = self.name
        fields["SYSEXT_HARNESS_SLOT"] = slot
        return fields

    @property
    def default_extension_dir(self) -> str:
        return self.persona.extension_dir


@dataclass(frozen=True)
class UsrSlot:
    """One /usr image: slot A is the OS as first booted, slot B the OS after an update."""

    slot: str  # "A" or "B"
    label: str  # file system label, what /etc/fstab mounts: "USR-A"
    filename: str  # "usr-a.img"
    os_release: dict[str, str]  # its /usr/lib/os-release


def usr_slots(target: Target) -> tuple[UsrSlot, ...]:
    """The /usr images of `target`, slot A first."""
    return tuple(UsrSlot(slot=slot, label=f"USR-{slot}", filename=f"usr-{slot.lower()}.img",
                         os_release=target.slot_os_release(slot)) for slot in USR_SLOTS)


@dataclass(frozen=True)
class TargetImage:
    """A built target: what the machine layer needs to boot it."""

    target: Target
    directory: Path
    root: Path
    usr_a: Path
    usr_b: Path  # slot B: the OS after an update (`switch-usr-slot B` + reboot)
    kernel: Path
    initrd: Path
    cmdline: str
    digest: str
