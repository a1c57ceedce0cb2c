"""Typed description of an update channel, as a scenario's `update_channel:` block gives it.

Two layouts are modelled on what extension publishers really ship:

* ``bakery`` (flatcar/sysext-bakery): every image of every extension in one directory with
  one concatenated SHA256SUMS; files ``NAME-@v-%a.raw``; installed into
  ``/opt/extensions/NAME`` with ``/etc/extensions/NAME.raw`` as the current link.
* ``fedora-sysexts`` (travier/fedora-sysexts): one directory per extension, each with its
  own SHA256SUMS; files ``NAME-@v-%w-%a.raw`` (``%w``: the OS VERSION_ID), installed into
  ``/var/lib/extensions.d/`` with ``/var/lib/extensions/NAME.raw`` as the current link.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

LAYOUTS: tuple[str, ...] = ("bakery", "fedora-sysexts")
# `os:` entries that name a /usr slot of the target rather than a literal VERSION_ID.
OS_SLOT_WORDS: Mapping[str, str] = MappingProxyType({"current": "A", "next": "B"})
HOST_ARCH = "host"
# The file every channel image carries, so a scenario can tell which build is merged.
MARKER_DIR = "/usr/lib/sysext-harness/channel"


@dataclass(frozen=True)
class Component:
    """One extension on the channel: a sysupdate component of the same name."""

    name: str  # component and image name: NAME-@v-...raw, sysupdate -C NAME
    extension: str  # the scenario `extensions:` entry the images are built from
    versions: tuple[str, ...]  # published when the scenario starts, oldest first
    architectures: tuple[str, ...] = (HOST_ARCH,)  # systemd names (x86-64, arm64) or host
    os: tuple[str, ...] = ("current",)  # fedora-sysexts: VERSION_IDs built (current, next, "42")
    # Overrides of the generated transfer file: {"Transfer.Verify": "yes", ...}
    transfer: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def marker_path(self) -> str:
        return f"{MARKER_DIR}/{self.name}"


@dataclass(frozen=True)
class ChannelSpec:
    layout: str  # one of LAYOUTS
    signed: bool  # publish SHA256SUMS.gpg made with the run's GPG key
    components: Mapping[str, Component]

    @property
    def uses_os_version(self) -> bool:
        """Whether file names carry the OS VERSION_ID (`%w`)."""
        return self.layout == "fedora-sysexts"

    def file_name(self, component: str, version: str, arch: str, os_version: str) -> str:
        """The published file name of one build, as the layout's MatchPattern expects."""
        if self.uses_os_version:
            return f"{component}-{version}-{os_version}-{arch}.raw"
        return f"{component}-{version}-{arch}.raw"

    def directory(self, component: str) -> str:
        """Directory (relative to the server root) that holds the component's images."""
        if self.layout == "bakery":
            return "extensions"
        return f"extensions/{component}"
