"""What the extension builders hand out: plain records, importable without the builders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    """A built (or user-supplied) extension, ready to be copied into a target."""

    name: str
    path: Path
    format: str
    digest: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class DdiArtifact(Artifact):
    """A built DDI: `path` is ``<name>.raw``; the rest says what is in it."""

    mode: str  # one of harness.extensions.ddi.DDI_MODES
    partition: str  # "root" or "usr"
    architecture: str
    root_hash: str | None  # dm-verity root hash (hex), None for "plain"
    certificate_fingerprint: str | None  # sha256 of the signing certificate, if signed
