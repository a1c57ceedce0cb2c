"""Turn an `ExtensionSpec` into an artifact (squashfs/erofs image or directory), cached.

The cache key is a digest of the *resolved* spec, so the same spec built for two targets
with different os-release values gives two artifacts, and an unchanged spec is never
rebuilt. Builds happen in a temporary directory inside the cache and are renamed into
place, so an interrupted build never leaves a half-written artifact behind.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from harness.buildcache import TMP_PREFIX, clean_stale_tmp, rename_into_place, rmtree
from harness.errors import HarnessError
from harness.extensions.ddi import build_ddi
from harness.extensions.model import Artifact
from harness.extensions.signing import VerityKeys
from harness.extensions.spec import ExtensionSpec, resolve_release
from harness.extensions.tamper import tamper_artifact
from harness.extensions.tree import artifact_filename, spec_digest, tree_entries, write_tree
from harness.run import run

log = logging.getLogger(__name__)


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
                    while chunk := fh.read(1 << 20):
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
        clean = build_extension(dataclasses.replace(spec, tamper=None), host_os_release,
                                architecture=architecture, cache_dir=cache_dir,
                                target_label=target_label, keys=keys)
        return tamper_artifact(clean, spec, cache_dir)

    if spec.ddi is not None:
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
    clean_stale_tmp(ext_dir)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=ext_dir))
    log.info("extension %s: building %s (%s)", spec.name, spec.format, digest[:12])
    try:
        entries = tree_entries(spec, release)
        if spec.format == "directory":
            write_tree(tmp / filename, entries, spec)
        else:
            tree = tmp / "tree"
            write_tree(tree, entries, spec)
            if spec.format == "squashfs":
                _mksquashfs(tree, tmp / filename)
            elif spec.format == "erofs":
                _mkfs_erofs(tree, tmp / filename, digest)
            else:  # pragma: no cover - parse_extension_spec rejects other formats
                raise HarnessError(f"unknown extension format {spec.format!r}")
            rmtree(tree)
        os.chmod(tmp, 0o755)
        rename_into_place(tmp, final_dir, done=final)
    except BaseException:
        rmtree(tmp)
        raise
    return Artifact(name=spec.name, path=final, format=spec.format, digest=digest)
