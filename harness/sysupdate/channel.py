"""The host side of an update channel: builds, publishes, signs and tampers with images.

One `UpdateChannel` lives for one scenario run. Its directory is what the loopback HTTP
server serves; the guest's systemd-sysupdate sees exactly what a distribution's download
server would give it: the images under the layout's file names, SHA256SUMS and, for a
signed channel, SHA256SUMS.gpg.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.extensions.build import prebuilt_digest
from harness.extensions.model import Artifact
from harness.extensions.spec import ExtensionSpec, FileEntry
from harness.sysupdate.model import HOST_ARCH, OS_SLOT_WORDS, ChannelSpec, Component
from harness.sysupdate.signing import SigningKey
from harness.sysupdate.transfer import noop_transfer, target_directories, transfer_file
from harness.targets.model import Target

PUBRING_GUEST_PATH = "/etc/systemd/import-pubring.gpg"
SUMS = "SHA256SUMS"

# Builds one extension spec for the target (the session's cached builder).
Builder = Callable[[ExtensionSpec], Artifact]


def build_variant(spec: ExtensionSpec, component: Component, version: str, arch: str,
                  os_version: str | None) -> ExtensionSpec:
    """The spec of one published build: named after the component, ARCHITECTURE set to
    the build's architecture, VERSION_ID to the OS it is built for (fedora-sysexts), and a
    marker file recording which build it is."""
    release = dict(spec.release or {})
    release["ARCHITECTURE"] = arch
    if os_version is not None and "VERSION_ID" in release:
        release["VERSION_ID"] = os_version
    marker = FileEntry(
        path=component.marker_path(),
        content=f"VERSION={version}\nOS_VERSION_ID={os_version or ''}\nARCHITECTURE={arch}\n",
        mode=0o644,
    )
    return replace(spec, name=component.name, release_name=None, release=release,
                   files=(*spec.files, marker))


class UpdateChannel:
    """A channel for one scenario on one target, rooted at `root` (served over HTTP)."""

    def __init__(self, spec: ChannelSpec, extensions: Mapping[str, ExtensionSpec],
                 target: Target, root: Path, build: Builder,
                 key: Callable[[], SigningKey] | None = None) -> None:
        self.spec = spec
        self.extensions = extensions
        self.target = target
        self.root = root
        self._build = build
        self._key = key
        self.published: dict[str, list[str]] = {name: [] for name in spec.components}
        self.base_url = ""  # the server's root as the guest sees it, set once it serves
        root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ resolution

    def architecture(self, arch: str) -> str:
        return self.target.architecture if arch == HOST_ARCH else arch

    def os_version(self, word: str) -> str:
        """`current` / `next` -> the VERSION_ID of /usr slot A / B; anything else as is."""
        slot = OS_SLOT_WORDS.get(word)
        if slot is None:
            return word
        value = self.target.slot_os_release(slot).get("VERSION_ID")
        if value is None:
            raise ConfigError(f"target {self.target.name} has no VERSION_ID in slot {slot}, "
                              "so fedora-sysexts file names (%w) cannot be formed",
                              key="update_channel.components.os", value=word,
                              allowed="a literal VERSION_ID")
        return value

    def builds(self, component: Component, version: str) -> list[tuple[str, str, str | None]]:
        """(file name, architecture, os VERSION_ID or None) of every build of a version."""
        out = []
        for arch_word in component.architectures:
            arch = self.architecture(arch_word)
            os_words: tuple[str | None, ...] = (
                component.os if self.spec.uses_os_version else (None,))
            for os_word in os_words:
                os_version = self.os_version(os_word) if os_word is not None else None
                name = self.spec.file_name(component.name, version, arch, os_version or "")
                out.append((name, arch, os_version))
        return out

    # ------------------------------------------------------------------ publishing

    def publish_initial(self) -> None:
        for component in self.spec.components.values():
            for version in component.versions:
                self._stage(component, version)
        self._write_sums()

    def publish(self, component: str, version: str) -> list[str]:
        """Add a version to the channel (all its builds) and rewrite SHA256SUMS(.gpg)."""
        files = self._stage(self.spec.components[component], version)
        self._write_sums()
        return files

    def _stage(self, component: Component, version: str) -> list[str]:
        spec = self.extensions[component.extension]
        directory = self.root / self.spec.directory(component.name)
        directory.mkdir(parents=True, exist_ok=True)
        files = []
        for file_name, arch, os_version in self.builds(component, version):
            artifact = self._build(build_variant(spec, component, version, arch, os_version))
            if artifact.path.is_dir():
                raise HarnessError(f"update channel component {component.name}: extension "
                                   f"{component.extension} is a directory, not an image")
            dest = directory / file_name
            dest.unlink(missing_ok=True)
            try:
                os.link(artifact.path, dest)
            except OSError:
                shutil.copy2(artifact.path, dest)
            files.append(file_name)
        if version not in self.published[component.name]:
            self.published[component.name].append(version)
        return files

    def tamper(self, component: str, version: str) -> list[str]:
        """Flip one byte in the middle of every build of `version`, after SHA256SUMS was
        written: what a compromised mirror would serve."""
        comp = self.spec.components[component]
        directory = self.root / self.spec.directory(component)
        changed = []
        for file_name, _arch, _os in self.builds(comp, version):
            path = directory / file_name
            if not path.exists():
                raise HarnessError(f"cannot tamper with {file_name}: not published")
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            # Write a new file: the published one may be a hard link into the build cache.
            tmp = path.with_name(f".{file_name}.tmp")
            tmp.write_bytes(bytes(data))
            os.replace(tmp, path)
            changed.append(file_name)
        return changed

    def _sum_directories(self) -> list[Path]:
        dirs = {self.root / self.spec.directory(name) for name in self.spec.components}
        return sorted(dirs)

    def _write_sums(self) -> None:
        """SHA256SUMS per directory, in `sha256sum` format; signed when the channel is."""
        for directory in self._sum_directories():
            lines = [f"{prebuilt_digest(p)}  {p.name}\n"
                     for p in sorted(directory.glob("*.raw"))]
            sums = directory / SUMS
            sums.write_text("".join(lines))
            if self.spec.signed:
                assert self._key is not None
                self._key().sign(sums)

    # ------------------------------------------------------------------ the guest

    def guest_files(self) -> list[tuple[str, bytes]]:
        """(guest path, content) to install before the first step."""
        if not self.base_url:
            raise HarnessError("update channel: guest files asked for before it is served")
        files: list[tuple[str, bytes]] = []
        for component in self.spec.components.values():
            f = transfer_file(self.spec, component, self.base_url,
                              self.target.systemd_version)
            files.append((f.path, f.text.encode()))
        if self.spec.layout == "bakery":
            noop = noop_transfer()
            files.append((noop.path, noop.text.encode()))
        if self.spec.signed:
            assert self._key is not None
            files.append((PUBRING_GUEST_PATH, self._key().public_keyring()))
        return files

    def guest_directories(self) -> list[str]:
        """Target and current-link directories of the transfers (created the way
        provisioning would)."""
        return sorted({d for c in self.spec.components.values()
                       for d in target_directories(self.spec, c)})
