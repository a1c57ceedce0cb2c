"""Extension specs as Discoverable Disk Images (DDIs): GPT, dm-verity and a signature.

A DDI is what image-based distributions ship when they want the guest to *prove* an
extension is theirs: a GPT whose root (or usr) partition holds the erofs/squashfs file
system, a ``*-verity`` partition with its dm-verity hash tree and a ``*-verity-sig``
partition with a JSON object carrying the root hash and a PKCS#7 signature of it.

The host is Debian 12, whose systemd-repart (252) cannot sign verity, so the images are
made by the real systemd-repart of Debian trixie (257) in a cached *toolbox* root built
with mmdebstrap. repart runs there in offline mode (``--offline=yes``: no loop devices, no
mounts of the image) under chroot, in a private mount and PID namespace that only exists
for /proc. Builds are cached like `build_extension`'s, by a digest over the resolved spec,
the DDI layout, the toolbox and the signing certificate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.buildcache import (
    TMP_PREFIX,
    build_lock,
    clean_stale_tmp,
    debian_mirror,
    mmdebstrap,
    remove_stale_versions,
    rename_into_place,
    require_root,
    rmtree,
)
from harness.buildcache import cache_dir as default_cache_dir  # build_ddi's cache_dir= wins
from harness.errors import ConfigError, HarnessError
from harness.extensions.model import DdiArtifact
from harness.extensions.signing import VerityKeyPair, write_pem_copies
from harness.extensions.spec import ExtensionSpec, resolve_release
from harness.extensions.tree import artifact_filename, spec_digest, tree_entries, write_tree
from harness.run import run

log = logging.getLogger(__name__)

#: Bump when the DDI layout or the repart invocation changes, to invalidate cached DDIs.
DDI_BUILDER_VERSION = 1
#: Bump to force a new toolbox even if suite and packages are unchanged.
TOOLBOX_VERSION = "1"
TOOLBOX_SUITE = "trixie"
#: systemd-repart 257 (it dlopen()s libcryptsetup for verity, so that is named explicitly)
#: plus the mkfs tools it runs.
TOOLBOX_PACKAGES = ("systemd-repart", "libcryptsetup12", "erofs-utils", "squashfs-tools")
#: The toolbox has no documentation: it only ever runs repart.
_TOOLBOX_DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*",
                          "/usr/share/info/*")

#: signed: data + verity + verity-sig; unsigned: data + verity; plain: data only.
DDI_MODES = ("signed", "unsigned", "plain")
#: Which DPS partition carries the file system: root (the whole tree, like systemd's own
#: sysext.repart.d) or usr (only the tree's /usr, mounted at /usr).
DDI_PARTITIONS = ("root", "usr")
DDI_FORMATS = ("erofs", "squashfs")
MANIFEST = "ddi.json"

#: GPT partition type GUIDs from the UAPI Group's Discoverable Partitions Specification
#: (https://uapi-group.org/specifications/specs/discoverable_partitions_specification/),
#: the same as ``systemd-id128 show`` prints.
PARTITION_TYPES: Mapping[str, Mapping[str, str]] = {
    "x86-64": {
        "root": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "root-verity": "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
        "root-verity-sig": "41092b05-9fc8-4523-994f-2def0408b176",
        "usr": "8484680c-9521-48c6-9c11-b0720656f69e",
        "usr-verity": "77ff5f63-e7b6-4633-acf4-1565b864c0e6",
        "usr-verity-sig": "e7bb33fb-06cf-4e81-8273-e543b413e2e2",
    },
    "arm64": {
        "root": "b921b045-1df0-41c3-af44-4c6f280d3fae",
        "root-verity": "df3300ce-d69f-4c92-978c-9bfb0f38d820",
        "root-verity-sig": "6db69de6-29f4-4758-a7a5-962190f00ce3",
        "usr": "b0e01050-ee5f-4390-949a-9101b17104e9",
        "usr-verity": "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e",
        "usr-verity-sig": "c23ce4ff-44bd-4b00-b2d4-b41b3419e02a",
    },
}

# Inside the toolbox root: one directory per build, removed afterwards.
_WORK_PARENT = "var/tmp/sysext-harness"
_TOOLBOX_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[ddi] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class GptPartition:
    """One GPT entry, read straight from the image (no host tools)."""

    number: int  # 1-based, as sfdisk counts
    type_guid: str  # lower-case, dashed
    uuid: str
    label: str
    start: int  # bytes
    size: int  # bytes

    def read(self, image: Path) -> bytes:
        """The partition's bytes (verity-sig partitions are small; use `extract` for others)."""
        with image.open("rb") as fh:
            fh.seek(self.start)
            return fh.read(self.size)

    def extract(self, image: Path, dest: Path) -> Path:
        """Copy the partition into `dest`, e.g. for `veritysetup verify` on files."""
        with image.open("rb") as src, dest.open("wb") as out:
            src.seek(self.start)
            left = self.size
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise HarnessError(f"{image}: partition {self.number} is truncated")
                out.write(chunk)
                left -= len(chunk)
        return dest


# --------------------------------------------------------------------------- toolbox


def toolbox_digest() -> str:
    """Identity of the toolbox root: suite, packages and how they are installed."""
    doc = [TOOLBOX_VERSION, TOOLBOX_SUITE, list(TOOLBOX_PACKAGES), list(_TOOLBOX_DPKG_EXCLUDES)]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def toolbox_path() -> Path:
    """Where the toolbox for the current recipe lives (it may not be built yet)."""
    return default_cache_dir() / "toolbox" / f"{TOOLBOX_SUITE}-{toolbox_digest()[:16]}"


def ensure_toolbox(progress: Progress = _stderr) -> Path:
    """The cached trixie root with systemd-repart 257, bootstrapped on first use.

    Built under the cache's global build lock, like the reference roots. A caller that
    already holds that lock (a target image build placing a DDI) must call this first,
    unless the lock is re-entrant: a second flock() in the same process would wait forever.
    """
    dest = toolbox_path()
    if (dest / ".complete").exists():
        return dest
    require_root("building the DDI toolbox")
    with build_lock():
        if (dest / ".complete").exists():
            return dest
        parent = dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{TOOLBOX_SUITE}-building"
        rmtree(tmp)
        mirror = debian_mirror()
        progress(f"bootstrapping the DDI toolbox (Debian {TOOLBOX_SUITE}: "
                 f"{', '.join(TOOLBOX_PACKAGES)}) from {mirror} ...")
        started = time.monotonic()
        log_path = parent / f"{TOOLBOX_SUITE}.build.log"
        mmdebstrap("the DDI toolbox", tmp, suites=[TOOLBOX_SUITE], packages=TOOLBOX_PACKAGES,
                   variant="essential", mode="root", format="directory",
                   dpkg_excludes=_TOOLBOX_DPKG_EXCLUDES, log_path=log_path, mirror=mirror)
        try:
            if not (tmp / "usr/bin/systemd-repart").exists():
                raise HarnessError(f"the DDI toolbox has no systemd-repart (log: {log_path})")
            (tmp / _WORK_PARENT).mkdir(parents=True, exist_ok=True)
            (tmp / ".complete").write_text(toolbox_digest() + "\n")
        except BaseException:
            rmtree(tmp)
            raise
        remove_stale_versions(parent, TOOLBOX_SUITE)
        rename_into_place(tmp, dest)
        progress(f"DDI toolbox ready in {time.monotonic() - started:.1f} s: {dest}")
    return dest


def toolbox_argv(root: Path, argv: Sequence[str | Path]) -> list[str]:
    """`argv` run under chroot in `root`, with a /proc of its own in a private mount and
    PID namespace: nothing is mounted on the host, and a timeout kills the whole tree."""
    return ["unshare", "--mount", "--propagation=private", "--pid", "--fork",
            "--kill-child", f"--mount-proc={root / 'proc'}",
            "chroot", str(root), *(str(a) for a in argv)]


def run_in_toolbox(root: Path, argv: Sequence[str | Path], *, timeout: float = 600,
                   check: bool = True, env: Mapping[str, str] | None = None,
                   ) -> subprocess.CompletedProcess[bytes]:
    """Run a toolbox program (paths in `argv` are inside the toolbox) via `harness.run`."""
    base_env = {"PATH": _TOOLBOX_PATH, "LANG": "C.UTF-8", "TMPDIR": "/var/tmp",
                "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0"}
    return run(toolbox_argv(root, argv), env={**base_env, **(env or {})}, timeout=timeout,
               check=check)


def repart_version(root: Path) -> str:
    """First line of the toolbox's `systemd-repart --version`, e.g. ``systemd 257 (257.9-1)``."""
    out = run_in_toolbox(root, ["systemd-repart", "--version"], timeout=60).stdout or b""
    return out.decode(errors="replace").splitlines()[0].strip()


# --------------------------------------------------------------------------- GPT


def read_gpt(image: Path) -> list[GptPartition]:
    """The partitions of a GPT image (512-byte sectors, as repart writes for files).

    Pure Python so the harness can find the verity-sig partition without host tools; the
    tests check it against `sfdisk --json`.
    """
    with image.open("rb") as fh:
        fh.seek(512)
        header = fh.read(92)
        if header[:8] != b"EFI PART":
            raise HarnessError(f"{image}: no GPT header at LBA 1")
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        fh.seek(entries_lba * 512)
        table = fh.read(count * entry_size)
    (table_crc,) = struct.unpack_from("<I", header, 88)
    if zlib.crc32(table) != table_crc:
        raise HarnessError(f"{image}: GPT partition entry array fails its CRC")
    parts = []
    for i in range(count):
        raw = table[i * entry_size:(i + 1) * entry_size]
        type_guid = uuid.UUID(bytes_le=raw[:16])
        if type_guid.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", raw, 32)
        label = raw[56:128].decode("utf-16-le").rstrip("\0")
        parts.append(GptPartition(number=i + 1, type_guid=str(type_guid),
                                  uuid=str(uuid.UUID(bytes_le=raw[16:32])), label=label,
                                  start=first * 512, size=(last - first + 1) * 512))
    return parts


def partition_role(type_guid: str) -> tuple[str, str] | None:
    """(architecture, role) of a DPS type GUID, e.g. ("x86-64", "root-verity-sig")."""
    for arch, roles in PARTITION_TYPES.items():
        for role, guid in roles.items():
            if guid == type_guid.lower():
                return arch, role
    return None


def signature_object(image: Path) -> dict[str, str] | None:
    """The verity-sig partition's JSON (rootHash, certificateFingerprint, signature), or
    None if the image has no such partition."""
    for part in read_gpt(image):
        role = partition_role(part.type_guid)
        if role and role[1].endswith("-verity-sig"):
            text = part.read(image).rstrip(b"\0").decode()
            return json.loads(text)
    return None


# --------------------------------------------------------------------------- building


def _check_ddi_args(spec: ExtensionSpec, mode: str, partition: str, architecture: str,
                    key_pair: VerityKeyPair | None) -> None:
    if spec.image is not None:
        raise ConfigError("a prebuilt image cannot be made into a DDI",
                          key=f"{spec.key_prefix}.image".lstrip("."), file=spec.source,
                          value=str(spec.image))
    if spec.format not in DDI_FORMATS:
        raise ConfigError("a DDI needs a file system image format",
                          key=f"{spec.key_prefix}.format".lstrip("."), file=spec.source,
                          value=spec.format, allowed=DDI_FORMATS)
    if mode not in DDI_MODES:
        raise ConfigError("unknown DDI mode", key="mode", value=mode, allowed=DDI_MODES,
                          file=spec.source)
    if partition not in DDI_PARTITIONS:
        raise ConfigError("unknown DDI partition", key="partition", value=partition,
                          allowed=DDI_PARTITIONS, file=spec.source)
    if partition == "usr" and spec.type == "confext":
        raise ConfigError("a confext DDI needs a root partition (it carries /etc)",
                          key="partition", value=partition, allowed="root", file=spec.source)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", architecture):
        raise ConfigError("invalid architecture", key="architecture", value=architecture,
                          allowed="systemd's spelling, e.g. x86-64, arm64", file=spec.source)
    if mode == "signed" and key_pair is None:
        raise HarnessError("a signed DDI needs a key pair (harness.extensions.signing)")


def ddi_digest(spec: ExtensionSpec, release: Mapping[str, str] | None, *, mode: str,
               partition: str, architecture: str, certificate_fingerprint: str | None) -> str:
    """sha256 over everything that shapes the DDI: the resolved spec (tree and format), the
    layout, the toolbox's recipe and, when signed, the certificate."""
    doc = {
        "ddi_builder": DDI_BUILDER_VERSION,
        "spec": spec_digest(spec, release),
        "mode": mode,
        "partition": partition,
        "architecture": architecture,
        "toolbox": toolbox_digest(),
        "certificate": certificate_fingerprint if mode == "signed" else None,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _seed(spec: ExtensionSpec, release: Mapping[str, str] | None, partition: str,
          architecture: str) -> uuid.UUID:
    """repart's seed for UUIDs, from the tree alone: the same tree gives the same file
    system and root hash whatever the mode or key, so only the signature differs."""
    h = hashlib.sha256(f"{spec_digest(spec, release)} {partition} {architecture}".encode())
    return uuid.UUID(h.hexdigest()[:32])


def repart_definitions(fmt: str, mode: str, partition: str, architecture: str
                       ) -> dict[str, str]:
    """repart.d files (name -> text) for the DDI: like systemd's own sysext.repart.d, but
    with the spec's file system, a choice of root or usr and an explicit architecture."""
    base = f"{partition}-{architecture}"
    copy = "/:/" if partition == "root" else "/usr:/"
    data = [
        "[Partition]",
        f"Type={base}",
        f"Format={fmt}",
        f"CopyFiles={copy}",
        "Minimize=best",
    ]
    if mode == "plain":
        return {"10-data.conf": "\n".join(data) + "\n"}
    data += ["Verity=data", "VerityMatchKey=data"]
    files = {
        "10-data.conf": "\n".join(data) + "\n",
        "20-verity.conf": (f"[Partition]\nType={base}-verity\nVerity=hash\n"
                           "VerityMatchKey=data\nMinimize=best\n"),
    }
    if mode == "signed":
        files["30-verity-sig.conf"] = (f"[Partition]\nType={base}-verity-sig\n"
                                       "Verity=signature\nVerityMatchKey=data\n")
    return files


def _root_hash_from_repart(output: bytes) -> str | None:
    """The data partition's root hash from `systemd-repart --json=short` output."""
    try:
        rows = json.loads(output.decode() or "[]")
    except ValueError:
        return None
    for row in rows if isinstance(rows, list) else []:
        value = row.get("roothash") if isinstance(row, dict) else None
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64,}", value):
            return value
    return None


def build_ddi(
    spec: ExtensionSpec,
    host_os_release: Mapping[str, str],
    *,
    key_pair: VerityKeyPair | None,
    mode: str = "signed",
    partition: str = "root",
    architecture: str = "x86-64",
    cache_dir: Path,
    target_label: str = "target",
    progress: Progress = _stderr,
) -> DdiArtifact:
    """Build (or fetch from the cache) `spec` as a DDI ``<name>.raw`` for one target.

    `mode` is "signed" (needs `key_pair`), "unsigned" (verity, no signature partition) or
    "plain" (no verity). The tree is the same one `build_extension` would pack, so the
    release file is ``extension-release.<name>`` as systemd-dissect expects.
    """
    _check_ddi_args(spec, mode, partition, architecture, key_pair)
    release = resolve_release(spec, host_os_release, architecture, target_label=target_label)
    fingerprint = key_pair.fingerprint if (mode == "signed" and key_pair) else None
    digest = ddi_digest(spec, release, mode=mode, partition=partition,
                        architecture=architecture, certificate_fingerprint=fingerprint)
    filename = artifact_filename(spec)
    ext_dir = Path(cache_dir) / "extensions"
    final_dir = ext_dir / digest
    if (final_dir / MANIFEST).exists():
        log.debug("ddi %s: cache hit %s", spec.name, final_dir)
        return _artifact_from(final_dir, spec.name, filename, digest)

    toolbox = ensure_toolbox(progress)
    ext_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(ext_dir)
    work_parent = toolbox / _WORK_PARENT
    work_parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(work_parent)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=ext_dir))
    work = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=work_parent))
    inside = "/" + work.relative_to(toolbox).as_posix()
    log.info("ddi %s: building %s %s/%s (%s)", spec.name, mode, partition, spec.format,
             digest[:12])
    started = time.monotonic()
    try:
        write_tree(work / "tree", tree_entries(spec, release), spec)
        if partition == "usr" and not (work / "tree/usr").is_dir():
            raise ConfigError("a usr partition needs files below /usr", file=spec.source,
                              key="partition", value=partition, allowed="root")
        defs = work / "repart.d"
        defs.mkdir()
        for name, text in repart_definitions(spec.format, mode, partition,
                                             architecture).items():
            (defs / name).write_text(text)
        argv: list[str] = [
            "systemd-repart", "--offline=yes", "--empty=create", "--size=auto",
            "--dry-run=no", "--no-pager", "--json=short",
            f"--definitions={inside}/repart.d", f"--copy-source={inside}/tree",
            f"--seed={_seed(spec, release, partition, architecture)}",
        ]
        if mode == "signed" and key_pair is not None:
            write_pem_copies(key_pair, work)
            argv += [f"--private-key={inside}/key.pem",
                     f"--certificate={inside}/cert.pem"]
        argv.append(f"{inside}/{filename}")
        proc = run_in_toolbox(toolbox, argv, env={"SOURCE_DATE_EPOCH": "0"})
        image = work / filename
        if not image.is_file():
            raise HarnessError(f"systemd-repart wrote no {filename} for {spec.name}")
        root_hash = _root_hash_from_repart(proc.stdout or b"")
        signature = signature_object(image) if mode == "signed" else None
        if signature is not None:
            root_hash = signature.get("rootHash") or root_hash
        if mode != "plain" and not root_hash:
            raise HarnessError(f"could not find the root hash of {spec.name}'s DDI")
        shutil.move(image, tmp / filename)
        manifest = {
            "name": spec.name, "mode": mode, "partition": partition,
            "format": spec.format, "architecture": architecture,
            "root_hash": root_hash if mode != "plain" else None,
            "certificate_fingerprint": fingerprint,
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        rename_into_place(tmp, final_dir, done=final_dir / MANIFEST)
    except BaseException:
        rmtree(tmp)
        raise
    finally:
        rmtree(work)  # also removes the PEM copy of the private key
    return _artifact_from(final_dir, spec.name, filename, digest)


def _artifact_from(directory: Path, name: str, filename: str, digest: str) -> DdiArtifact:
    meta = json.loads((directory / MANIFEST).read_text())
    return DdiArtifact(name=name, path=directory / filename, format=f"ddi-{meta['format']}",
                       digest=digest, mode=meta["mode"], partition=meta["partition"],
                       architecture=meta["architecture"], root_hash=meta["root_hash"],
                       certificate_fingerprint=meta["certificate_fingerprint"])


def roothash_signature(image: Path) -> tuple[str, bytes] | None:
    """(root hash, DER PKCS#7 signature) from a signed DDI, e.g. to check it on the host."""
    obj = signature_object(image)
    if obj is None:
        return None
    return obj["rootHash"], base64.b64decode(obj["signature"])
