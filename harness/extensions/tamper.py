"""Deliberately corrupted images: one byte of a file's content flipped after the build.

For a verity DDI the flip happens after the hash tree and the signature were made, so
the image still claims to be intact: exactly what a failing disk or a hostile mirror
serves. The guest must refuse it or fail to read the file, never hand out the changed
bytes. On a plain image the same flip goes unnoticed, which is the contrast to show.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from harness.errors import HarnessError
from harness.extensions.model import Artifact
from harness.extensions.spec import ExtensionSpec


def tamper_artifact(clean: Artifact, spec: ExtensionSpec, cache_dir: Path) -> Artifact:
    """A copy of `clean` with one byte of `spec.tamper`'s content flipped."""
    assert spec.tamper is not None
    entry = next(f for f in spec.files if f.path == spec.tamper)
    assert entry.content is not None
    needle = entry.content.encode()
    digest = hashlib.sha256(f"{clean.digest}:tamper:{spec.tamper}".encode()).hexdigest()
    final_dir = Path(cache_dir) / "extensions" / digest
    final = final_dir / clean.path.name
    if final.exists():
        return Artifact(name=clean.name, path=final, format=clean.format, digest=digest)
    data = bytearray(clean.path.read_bytes())
    at = data.find(needle)
    if at < 0 or data.find(needle, at + 1) >= 0:
        where = "not found" if at < 0 else "found more than once"
        raise HarnessError(
            f"extension {spec.name}: the content of {spec.tamper} is {where} in "
            f"{clean.path}; give it a unique content of at least 16 bytes")
    # A quarter in: for a file of a few KiB that is inside its first data block, not in
    # the tail the file system may pack next to the metadata.
    data[at + len(needle) // 4] ^= 0xFF
    final_dir.mkdir(parents=True, exist_ok=True)
    tmp = final_dir / f".{final.name}.{os.getpid()}.tmp"
    tmp.write_bytes(bytes(data))
    os.replace(tmp, final)
    return Artifact(name=clean.name, path=final, format=clean.format, digest=digest)
