"""Turn an `ExtensionSpec` into an artifact (squashfs/erofs image or directory), cached.

The cache key is a digest of the *resolved* spec, so the same spec built for two targets
with different os-release values gives two artifacts, and an unchanged spec is never
rebuilt. Builds happen in a temporary directory inside the cache and are renamed into
place, so an interrupted build never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.extensions.signing import VerityKeys
from harness.extensions.spec import (
    RELAXED_XATTR,
    ExtensionSpec,
    FileEntry,
    render_release,
    resolve_release,
)
from harness.run import run

log = logging.getLogger(__name__)

#: Bump when the builder's output for the same spec changes, to invalidate caches.
BUILDER_VERSION = 1

_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 6 * 3600


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


def default_cache_dir() -> Path:
    """$SYSEXT_HARNESS_CACHE, else $XDG_CACHE_HOME/sysext-harness, else ~/.cache/sysext-harness."""
    env = os.environ.get("SYSEXT_HARNESS_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "sysext-harness"
    return Path.home() / ".cache" / "sysext-harness"


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


def prebuilt_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's sorted entries (path, type, mode, contents)."""
    h = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(dirs + files):
            p = Path(root, name)
            rel = p.relative_to(path).as_posix()
            st = p.lstat()
            h.update(f"{rel}\0{st.st_mode:o}\0".encode())
            if p.is_symlink():
                h.update(b"L" + os.readlink(p).encode() + b"\0")
            elif p.is_file():
                h.update(b"F")
                with p.open("rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(chunk)
                h.update(b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------- tools


def _require_tool(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise HarnessError(
            f"{tool} is not installed; run `make setup` to install the host tools "
            "(squashfs-tools, erofs-utils)"
        )
    return found


@functools.cache
def _help_text(tool: str) -> str:
    """The tool's --help output, to use options only where this version has them."""
    flag = "-help" if tool.endswith("mksquashfs") else "--help"
    proc = run([tool, flag], check=False, timeout=30)
    return ((proc.stdout or b"") + (proc.stderr or b"")).decode(errors="replace")


def _has_option(help_text: str, opt: str) -> bool:
    """True if a help line starts with `opt` (``-T#``, ``-UX``, ``--quiet``, ``-x <n>``)."""
    return re.search(rf"(?m)^\s*{re.escape(opt)}(?:[\s#X=\[]|$)", help_text) is not None


def _mksquashfs(tree: Path, out: Path) -> None:
    tool = _require_tool("mksquashfs")
    help_text = _help_text(tool)
    argv: list[str | Path] = [tool, tree, out, "-noappend", "-all-root", "-quiet"]
    for opt, *val in (
        ("-no-progress",),
        ("-exit-on-error",),  # never silently skip a file it cannot read
        ("-mkfs-time", "0"),
        ("-all-time", "0"),
        ("-reproducible",),
    ):
        if _has_option(help_text, opt):
            argv += [opt, *val]
    run(argv)


def _mkfs_erofs(tree: Path, out: Path, digest: str) -> None:
    tool = _require_tool("mkfs.erofs")
    help_text = _help_text(tool)
    argv: list[str | Path] = [tool]
    if _has_option(help_text, "--all-root"):
        argv.append("--all-root")
    if _has_option(help_text, "-T"):
        argv.append("-T0")
    if _has_option(help_text, "-U"):
        # A UUID derived from the inputs keeps the image reproducible.
        argv.append(f"-U{uuid.UUID(digest[:32])}")
    if _has_option(help_text, "--quiet"):
        argv.append("--quiet")
    argv += [out, tree]
    run(argv)


# --------------------------------------------------------------------------- tree


def _write_tree(root: Path, entries: list[FileEntry], spec: ExtensionSpec) -> None:
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


def _clean_stale_tmp(ext_dir: Path) -> None:
    """Remove temp dirs of builds that were killed long ago (a live build is never this old)."""
    now = time.time()
    for p in ext_dir.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if now - p.lstat().st_mtime > _STALE_TMP_SECONDS:
                _rmtree(p)


def _rmtree(path: Path) -> None:
    """rmtree that also copes with read-only directories the spec asked for."""

    def fix_and_retry(func: Callable[..., object], p: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(posixpath.dirname(p), 0o755)
        with contextlib.suppress(OSError):
            if not os.path.islink(p):
                os.chmod(p, 0o755)
        func(p)

    if not (path.exists() or path.is_symlink()):
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix_and_retry)
    else:
        shutil.rmtree(path, onerror=fix_and_retry)


# --------------------------------------------------------------------------- public API


def build_extension(
    spec: ExtensionSpec,
    host_os_release: Mapping[str, str],
    *,
    architecture: str = "x86-64",
    cache_dir: Path,
    target_label: str = "target",
    keys: VerityKeys | None = None,
) -> Artifact:
    """Build (or fetch from the cache) the artifact for `spec` on one target.

    Prebuilt images are passed through unchanged (the user's own path); their digest is
    the content hash. A spec with ``ddi:`` becomes a DDI (`harness.extensions.ddi`);
    ``ddi: signed`` and ``ddi: untrusted`` sign with the run's `keys`.
    """
    if spec.image is not None:
        if not spec.image.exists():
            raise HarnessError(f"prebuilt image {spec.image} has disappeared")
        return Artifact(
            name=spec.name,
            path=spec.image,
            format="prebuilt",
            digest=prebuilt_digest(spec.image),
        )

    if spec.tamper is not None:
        from harness.extensions.tamper import tamper_artifact

        clean = build_extension(dataclasses.replace(spec, tamper=None), host_os_release,
                                architecture=architecture, cache_dir=cache_dir,
                                target_label=target_label, keys=keys)
        return tamper_artifact(clean, spec, cache_dir)

    if spec.ddi is not None:
        from harness.extensions.ddi import build_ddi

        key_pair = keys.for_ddi(spec.ddi) if keys is not None else None
        mode = "signed" if spec.ddi in ("signed", "untrusted") else spec.ddi
        if mode == "signed" and key_pair is None:
            raise HarnessError(
                f"extension {spec.name}: ddi: {spec.ddi} needs the run's verity keys "
                "(build_extension(..., keys=harness.extensions.signing.run_keys(run_dir)))"
            )
        return build_ddi(spec, host_os_release, key_pair=key_pair, mode=mode,
                         partition=spec.ddi_partition, architecture=architecture,
                         cache_dir=cache_dir, target_label=target_label)

    release = resolve_release(spec, host_os_release, architecture, target_label=target_label)
    digest = spec_digest(spec, release)
    filename = artifact_filename(spec)
    ext_dir = Path(cache_dir) / "extensions"
    final_dir = ext_dir / digest
    final = final_dir / filename
    if final.exists() or final.is_symlink():
        log.debug("extension %s: cache hit %s", spec.name, final)
        return Artifact(name=spec.name, path=final, format=spec.format, digest=digest)

    # Fail early with a helpful message rather than after writing the tree.
    if spec.format == "squashfs":
        _require_tool("mksquashfs")
    elif spec.format == "erofs":
        _require_tool("mkfs.erofs")

    ext_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(ext_dir)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=ext_dir))
    log.info("extension %s: building %s (%s)", spec.name, spec.format, digest[:12])
    try:
        entries = tree_entries(spec, release)
        if spec.format == "directory":
            _write_tree(tmp / filename, entries, spec)
        else:
            tree = tmp / "tree"
            _write_tree(tree, entries, spec)
            if spec.format == "squashfs":
                _mksquashfs(tree, tmp / filename)
            elif spec.format == "erofs":
                _mkfs_erofs(tree, tmp / filename, digest)
            else:  # pragma: no cover - parse_extension_spec rejects other formats
                raise HarnessError(f"unknown extension format {spec.format!r}")
            _rmtree(tree)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final_dir)
        except OSError:
            # Another process finished the same build first; its result is identical.
            if not final.exists():
                raise
            _rmtree(tmp)
    except BaseException:
        _rmtree(tmp)
        raise
    return Artifact(name=spec.name, path=final, format=spec.format, digest=digest)
