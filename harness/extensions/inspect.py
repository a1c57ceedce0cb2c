"""Read an extension image's metadata on the host: format, extension-release, unit files.

`sysext-harness check` uses it to install an author's image under the name systemd will
accept, to pick the targets the image is meant for and to say what it found before any
VM boots. It reads images with host tools only (unsquashfs, fsck.erofs and the in-tree
GPT reader): no loop devices, no mounts.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.extensions.ddi import partition_role, read_gpt
from harness.run import run

SQUASHFS_MAGIC = b"hsqs"
EROFS_MAGIC = bytes.fromhex("e2e1f5e0")  # 0xE0F5E1E2, little-endian, at byte 1024
GPT_MAGIC = b"EFI PART"  # at byte 512
#: Where each extension type keeps its release file and its units, relative to the tree.
RELEASE_DIRS = {"sysext": "usr/lib/extension-release.d", "confext": "etc/extension-release.d"}
UNIT_DIRS = {"sysext": "usr/lib/systemd/system", "confext": "etc/systemd/system"}
SYSUSERS_DIRS = {"sysext": "usr/lib/sysusers.d", "confext": "etc/sysusers.d"}
#: The hierarchies each tool merges by default (sysext-behaviour reference §2.1).
MERGED_TOP_LEVEL = {"sysext": ("usr", "opt"), "confext": ("etc",)}
_UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount", ".target")
# systemd's os-release syntax: KEY=value, optionally quoted; comments and blanks ignored.
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class ImageInfo:
    """What an extension image says about itself."""

    path: Path
    format: str  # "directory", "squashfs", "erofs" or "ddi"
    type: str  # "sysext" or "confext"
    release_name: str  # NAME of its extension-release.NAME file
    release: dict[str, str]
    units: tuple[str, ...]  # unit files it ships (top level of the unit directory)
    ddi_partition: str | None = None  # "root" or "usr" for a DDI
    verity: bool = False  # a DDI with a dm-verity hash partition
    signed: bool = False  # a DDI with a verity signature partition
    top_level: tuple[str, ...] = ()  # entries at the image's root (a usr partition: "usr")
    # The unit directory's contents, for the unit findings (harness.extensions.lint):
    unit_texts: tuple[tuple[str, str], ...] = ()  # (unit file name, its text)
    # (directory such as "multi-user.target.wants", entry) for each .wants/.requires/
    # .upholds entry, and whether the unit it names is in the image
    unit_links: tuple[tuple[str, str, bool], ...] = ()
    drop_ins: tuple[tuple[str, str], ...] = ()  # ("multi-user.target.d/10-x.conf", text)
    sysusers: tuple[str, ...] = ()  # users and groups its sysusers.d files declare

    def ignored_entries(self) -> tuple[str, ...]:
        """Top-level entries the merge leaves out (systemd-sysext merges /usr and /opt only,
        systemd-confext /etc only): files an author put there never reach the host."""
        merged = MERGED_TOP_LEVEL[self.type]
        return tuple(e for e in self.top_level if e not in merged)

    @property
    def name(self) -> str:
        """The name its release file gives it (extension-release.NAME): what systemd
        lists as merged. `check` installs the image under the author's file name."""
        return self.release_name

    def summary(self) -> str:
        fields = " ".join(f"{k}={v}" for k, v in sorted(self.release.items()))
        kind = self.format
        if self.format == "ddi":
            kind += f" ({self.ddi_partition} partition, " + (
                "signed verity)" if self.signed else "verity)" if self.verity else "no verity)")
        units = ", ".join(self.units) if self.units else "none"
        return (f"{self.path.name}: {self.type} {kind}, extension-release.{self.release_name}"
                f" [{fields}], units: {units}")


def parse_release(text: str) -> dict[str, str]:
    """Parse os-release/extension-release text (shell-style quoting, no expansion)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ASSIGNMENT.match(line)
        if not m:
            continue
        key, value = m.groups()
        quote = value[:1]
        if len(value) >= 2 and quote in ("\"", "'") and value[-1] == quote:
            value = value[1:-1]
            if quote == '"':
                value = re.sub(r'\\([\\"$`])', r"\1", value)
        out[key] = value
    return out


def stem_of(file_name: str) -> str:
    """The image name systemd 255+ derives from a file name (.raw, .sysext.raw stripped)."""
    for suffix in (".sysext.raw", ".confext.raw", ".raw"):
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def inspect_image(path: Path, *, key: str = "IMAGE") -> ImageInfo:
    """Read `path`'s metadata; a ConfigError (exit 2) names what is wrong with it."""
    if not path.exists():
        raise ConfigError("no such file or directory", key=key, value=str(path))
    if path.is_dir():
        return _from_tree(path, path, "directory")
    fs = _filesystem(path)
    if fs is not None:
        return _READERS[fs](path, path)
    with path.open("rb") as fh:
        if fh.read(520)[512:] == GPT_MAGIC:
            return _from_ddi(path)
    raise ConfigError("not an extension image", key=key, value=str(path),
                      allowed="a directory, a squashfs or erofs file system, or a GPT disk "
                              "image (DDI) with a root or usr partition")


# --------------------------------------------------------------------------- formats


SQUASHFS_COMPRESSIONS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}


def describe_filesystem(path: Path) -> str:
    """The file system of a raw image and, for squashfs, its compression (from the
    superblock), for messages: "squashfs, xz compression"."""
    if path.is_dir():
        return "directory"
    fs = _filesystem(path)
    if fs == "squashfs":
        with path.open("rb") as fh:
            fh.seek(20)
            kind = int.from_bytes(fh.read(2), "little")
        return f"squashfs, {SQUASHFS_COMPRESSIONS.get(kind, f'compression {kind}')} compression"
    return fs or "a GPT disk image (DDI)"


def _filesystem(path: Path) -> str | None:
    """"squashfs" or "erofs" by the file's magic, None for anything else."""
    with path.open("rb") as fh:
        head = fh.read(1028)
    if head[:4] == SQUASHFS_MAGIC:
        return "squashfs"
    if head[1024:1028] == EROFS_MAGIC:
        return "erofs"
    return None


def _from_tree(path: Path, tree: Path, fmt: str, prefix: str = "",
               top_level: tuple[str, ...] | None = None, **ddi: object) -> ImageInfo:
    """`tree` holds the image's files; `prefix` is what a usr partition's tree lacks."""
    if top_level is None:
        top_level = ("usr",) if prefix else tuple(sorted(p.name for p in tree.iterdir()))
    def rel(p: str) -> Path:
        return tree / p.removeprefix(prefix)

    found = [(kind, f) for kind, d in RELEASE_DIRS.items() if rel(d).is_dir()
             for f in sorted(rel(d).glob("extension-release.*")) if f.is_file()]
    ext_type, release_file = _one_release(path, [(k, f.name) for k, f in found])
    text = rel(f"{RELEASE_DIRS[ext_type]}/{release_file}").read_text(errors="replace")
    unit_dir = rel(UNIT_DIRS[ext_type])
    units = tuple(sorted(p.name for p in unit_dir.iterdir()
                         if p.name.endswith(_UNIT_SUFFIXES))) if unit_dir.is_dir() else ()
    return ImageInfo(path=path, format=fmt, type=ext_type,
                     release_name=release_file.removeprefix("extension-release."),
                     release=parse_release(text), units=units, top_level=top_level,
                     sysusers=_sysusers(rel(SYSUSERS_DIRS[ext_type])),
                     **_unit_directory(unit_dir), **ddi)  # type: ignore[arg-type]


def _sysusers(directory: Path) -> tuple[str, ...]:
    """The user and group names sysusers.d files declare (`u NAME`, `g NAME`, `m U G`)."""
    names: set[str] = set()
    if directory.is_dir():
        for conf in directory.glob("*.conf"):
            for line in conf.read_text(errors="replace").splitlines():
                fields = line.split()
                if len(fields) >= 2 and fields[0] in ("u", "u!", "g"):
                    names.add(fields[1])
                elif len(fields) >= 3 and fields[0] == "m":
                    names.update(fields[1:3])
    return tuple(sorted(names))


def _unit_directory(unit_dir: Path) -> dict[str, tuple[tuple[object, ...], ...]]:
    """Unit files with their text, dependency links and drop-ins of one unit directory."""
    if not unit_dir.is_dir():
        return {}
    texts: list[tuple[str, str]] = []
    links: list[tuple[str, str, bool]] = []
    drop_ins: list[tuple[str, str]] = []
    for entry in sorted(unit_dir.iterdir()):
        if entry.is_dir() and entry.name.endswith((".wants", ".requires", ".upholds")):
            for link in sorted(entry.iterdir()):
                # A link names its unit; it is in the image when it resolves inside it, or
                # (a template instance) when the template is.
                template = re.sub(r"@[^.]*\.", "@.", link.name)
                shipped = (unit_dir / link.name).exists() or (unit_dir / template).exists()
                links.append((entry.name, link.name, shipped))
        elif entry.is_dir() and entry.name.endswith(".d"):
            for conf in sorted(entry.glob("*.conf")):
                if conf.is_file():
                    drop_ins.append((f"{entry.name}/{conf.name}",
                                     conf.read_text(errors="replace")))
        elif entry.name.endswith(_UNIT_SUFFIXES) and entry.is_file():
            texts.append((entry.name, entry.read_text(errors="replace")))
    return {"unit_texts": tuple(texts), "unit_links": tuple(links),
            "drop_ins": tuple(drop_ins)}


def _one_release(path: Path, found: list[tuple[str, str]]) -> tuple[str, str]:
    if not found:
        raise ConfigError(
            "the image has no extension-release file, so systemd refuses it", key="IMAGE",
            value=str(path), allowed="usr/lib/extension-release.d/extension-release.NAME "
                                     "(sysext) or etc/extension-release.d/extension-release.NAME"
                                     " (confext) inside the image")
    if len(found) > 1:
        # systemd tries extension-release.<image name> first (reference §1.3), so several
        # files are fine when one is named after the image.
        named = [(k, n) for k, n in found if n == f"extension-release.{stem_of(path.name)}"]
        if len(named) == 1:
            return named[0]
        names = ", ".join(f"{RELEASE_DIRS[k]}/{n}" for k, n in found)
        raise ConfigError(f"the image has {len(found)} extension-release files ({names}) and "
                          "none is named after the image, so systemd refuses it (ENOTUNIQ)",
                          key="IMAGE", value=str(path),
                          allowed="one extension-release file, or one named "
                                  f"extension-release.{stem_of(path.name)}")
    return found[0]


def _from_squashfs(path: Path, fs: Path, prefix: str = "", **ddi: object) -> ImageInfo:
    wanted = [d.removeprefix(prefix) for d in (*RELEASE_DIRS.values(), *UNIT_DIRS.values(),
                                               *SYSUSERS_DIRS.values())]
    with tempfile.TemporaryDirectory(prefix="sysext-harness-inspect-") as tmp:
        tree = Path(tmp) / "tree"
        run(["unsquashfs", "-no-xattrs", "-d", tree, fs, *wanted], timeout=300)
        top = None if prefix else _squashfs_top_level(fs)  # only part of it was extracted
        return _from_tree(path, tree, "ddi" if ddi else "squashfs", prefix, top, **ddi)


def _squashfs_top_level(fs: Path) -> tuple[str, ...]:
    listing = run(["unsquashfs", "-d", "", "-l", "-max-depth", "1", fs], timeout=120)
    names = (line.strip().lstrip("/") for line in
             listing.stdout.decode(errors="replace").splitlines())
    return tuple(sorted(name for name in names if name))


def _from_erofs(path: Path, fs: Path, prefix: str = "", **ddi: object) -> ImageInfo:
    # erofs-utils 1.5 (Debian 12) can only extract everything; extensions are small.
    with tempfile.TemporaryDirectory(prefix="sysext-harness-inspect-") as tmp:
        tree = Path(tmp) / "tree"
        run(["fsck.erofs", f"--extract={tree}", fs], timeout=300)
        return _from_tree(path, tree, "ddi" if ddi else "erofs", prefix, None, **ddi)


def _from_ddi(path: Path) -> ImageInfo:
    try:
        parts = read_gpt(path)
    except HarnessError as exc:
        raise ConfigError(f"unreadable partition table: {exc}", key="IMAGE",
                          value=str(path)) from None
    roles = {p.number: found[1] for p in parts if (found := partition_role(p.type_guid))}
    data = [p for p in parts if roles.get(p.number) in ("root", "usr")]
    if len(data) != 1:
        raise ConfigError(
            f"a DDI needs exactly one root or usr partition, this one has {len(data)}",
            key="IMAGE", value=str(path),
            allowed="a GPT with one root (or usr) partition of the Discoverable Partitions "
                    "Specification, plus its -verity and -verity-sig partitions")
    part = data[0]
    role = roles[part.number]
    present = set(roles.values())
    ddi = {"ddi_partition": role, "verity": f"{role}-verity" in present,
           "signed": f"{role}-verity-sig" in present}
    prefix = "usr/" if role == "usr" else ""
    with tempfile.TemporaryDirectory(prefix="sysext-harness-inspect-") as tmp:
        fs = part.extract(path, Path(tmp) / "fs.img")
        kind = _filesystem(fs)
        if kind is not None:
            return _READERS[kind](path, fs, prefix, **ddi)
    raise ConfigError(f"the DDI's {role} partition holds neither squashfs nor erofs",
                      key="IMAGE", value=str(path), allowed="squashfs or erofs")


_READERS = {"squashfs": _from_squashfs, "erofs": _from_erofs}
