"""The file tree an extension spec resolves to: its entries, its digest, writing it.

Shared by both packers, `harness.extensions.build` (squashfs, erofs, directory) and
`harness.extensions.ddi` (GPT + verity), so a DDI holds the very tree a plain image would.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from harness.errors import HarnessError
from harness.extensions.spec import RELAXED_XATTR, ExtensionSpec, FileEntry, render_release

#: Bump when the builder's output for the same spec changes, to invalidate caches.
BUILDER_VERSION = 1


def artifact_filename(spec: ExtensionSpec) -> str:
    """``<name>.raw`` for images, ``<name>`` for directories (systemd derives the name)."""
    return spec.name if spec.format == "directory" else f"{spec.name}.raw"


def tree_entries(spec: ExtensionSpec, release: Mapping[str, str] | None) -> list[FileEntry]:
    """Everything that goes into the tree: files, unit files and the release file."""
    entries = list(spec.files)
    for name, text in spec.units:
        entries.append(FileEntry(path=f"{spec.unit_dir}/{name}", content=text, mode=0o644))
    if release is not None:
        entries.append(
            FileEntry(path=spec.release_path, content=render_release(release), mode=0o644)
        )
    return entries


def spec_digest(spec: ExtensionSpec, release: Mapping[str, str] | None) -> str:
    """sha256 over a canonical JSON of everything that shapes the output."""
    doc = {
        "builder": BUILDER_VERSION,
        "name": spec.name,
        "type": spec.type,
        "format": spec.format,
        "release": dict(release) if release is not None else None,
        "release_order": list(release) if release is not None else None,
        "release_name": spec.release_name,
        "relaxed_release_name": spec.relaxed_release_name,
        "files": [
            {
                "path": f.path,
                "content": f.content,
                "symlink": f.symlink,
                "directory": f.directory,
                "mode": f.effective_mode,
            }
            for f in spec.files
        ],
        "units": [[n, t] for n, t in spec.units],
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def write_tree(root: Path, entries: list[FileEntry], spec: ExtensionSpec) -> None:
    """Create files, symlinks and directories; modes are applied last, deepest first,
    so a read-only directory mode cannot block writing its children."""
    root.mkdir(mode=0o755)
    dir_modes: dict[Path, int] = {root: 0o755}
    file_modes: list[tuple[Path, int]] = []

    def ensure_dir(path: Path) -> None:
        missing = []
        while path != root and not path.exists():
            missing.append(path)
            path = path.parent
        for d in reversed(missing):
            d.mkdir()
            dir_modes.setdefault(d, 0o755)

    for e in entries:
        target = root / e.path.lstrip("/")
        ensure_dir(target.parent)
        if e.directory:
            ensure_dir(target)
            dir_modes[target] = e.effective_mode or 0o755
        elif e.symlink is not None:
            os.symlink(e.symlink, target)
        else:
            target.write_bytes((e.content or "").encode("utf-8"))
            file_modes.append((target, e.effective_mode or 0o644))

    for path, mode in file_modes:
        os.chmod(path, mode)
    if spec.relaxed_release_name and spec.release is not None:
        release_file = root / spec.release_path.lstrip("/")
        try:
            os.setxattr(release_file, RELAXED_XATTR, b"0")
        except OSError as exc:
            raise HarnessError(
                f"cannot set xattr {RELAXED_XATTR} on {release_file}: {exc.strerror}; "
                "the cache directory must be on a filesystem with user xattrs (e.g. ext4)"
            ) from exc
    for path in sorted(dir_modes, key=lambda p: len(p.parts), reverse=True):
        os.chmod(path, dir_modes[path])
