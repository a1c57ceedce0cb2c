"""Extension specs: what a scenario (or a standalone YAML file) says an extension contains.

Parsing is strict and collects every problem of a spec at once, so a user fixes their
file in one go. Nothing here touches the filesystem except the existence check of a
prebuilt ``image:``; building happens in `harness.extensions.build`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, ConfigErrors

TYPES = ("sysext", "confext")
FORMATS = ("squashfs", "erofs", "directory")
#: ``ddi:`` values: a GPT disk image instead of a bare file system (see harness.extensions.ddi).
DDI_VALUES = ("signed", "untrusted", "unsigned", "plain")
DDI_PARTITIONS = ("root", "usr")
HOST = "host"

#: Keys of an extension spec inside a scenario (``extensions: NAME: {...}``).
SPEC_KEYS = (
    "type",
    "format",
    "release",
    "release_name",
    "relaxed_release_name",
    "files",
    "units",
    "ddi",
    "ddi_partition",
    "tamper",
    "image",
)
#: Keys that cannot be combined with ``image:`` (they describe something to build).
BUILD_KEYS = tuple(k for k in SPEC_KEYS if k not in ("type", "image"))
FILE_KEYS = ("path", "content", "symlink", "directory", "mode", "size")
MAX_FILE_SIZE = 16 << 20  # `size:` is for test payloads, not for real content

RELAXED_XATTR = "user.extension-release.strict"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
_NAME_HELP = "letters, digits, '_', '.', '+', '-'; not starting with '.', '+' or '-'"
_RELEASE_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_MODE_RE = re.compile(r"^(?:0o)?([0-7]{1,4})$")
_UNIT_TYPES = (
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "slice",
    "scope",
    "device",
)
_UNIT_RE = re.compile(
    r"^[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\-]*)?\.(?:" + "|".join(_UNIT_TYPES) + r")"
    r"(?:\.d/[A-Za-z0-9:_.@\\-]+\.conf)?$"
)
_UNIT_HELP = (
    "a unit file name such as hello.service, or a drop-in such as hello.service.d/10-x.conf"
)

# Where host-resolved keys come from: the target's os-release, except ARCHITECTURE.
_ARCHITECTURE_KEY = "ARCHITECTURE"


class FrozenMap(Mapping[str, str]):
    """A read-only, hashable str->str mapping, so `ExtensionSpec` stays a frozen value."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self._data: dict[str, str] = dict(data or {})

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


#: The release used when a spec has no ``release:`` key: "match the target I run on".
DEFAULT_RELEASE: Mapping[str, str] = FrozenMap({"ID": HOST, "VERSION_ID": HOST})


@dataclass(frozen=True)
class FileEntry:
    """One path inside the extension: a regular file, a symlink or a directory."""

    path: str
    content: str | None = None
    symlink: str | None = None
    directory: bool = False
    mode: int | None = None

    @property
    def effective_mode(self) -> int | None:
        """The mode the builder applies (None for symlinks, whose mode means nothing)."""
        if self.symlink is not None:
            return None
        if self.mode is not None:
            return self.mode
        return 0o755 if self.directory else 0o644


@dataclass(frozen=True)
class ExtensionSpec:
    """A validated extension description; `release` still contains unresolved ``host``."""

    name: str
    type: str = "sysext"
    format: str = "squashfs"
    release: Mapping[str, str] | None = DEFAULT_RELEASE
    release_name: str | None = None
    relaxed_release_name: bool = False
    files: tuple[FileEntry, ...] = ()
    units: tuple[tuple[str, str], ...] = ()
    ddi: str | None = None  # None: a bare file system image; else one of DDI_VALUES
    ddi_partition: str = "root"
    # A file of the spec whose content gets one byte flipped in the built image, after
    # verity hashes and signature were made: what a corrupted disk or a hostile mirror serves.
    tamper: str | None = None
    image: Path | None = None
    # Where the spec came from, only for error messages (not part of equality or the digest).
    source: str | None = field(default=None, compare=False, repr=False)
    key_prefix: str = field(default="", compare=False, repr=False)

    @property
    def release_dir(self) -> str:
        """Directory of the extension-release file inside the image, by extension type."""
        if self.type == "confext":
            return "/etc/extension-release.d"
        return "/usr/lib/extension-release.d"

    @property
    def release_path(self) -> str:
        """Absolute path of the extension-release file inside the image."""
        return f"{self.release_dir}/extension-release.{self.release_name or self.name}"

    @property
    def unit_dir(self) -> str:
        """Where `units` are installed: vendor dir for sysext, /etc for confext."""
        if self.type == "confext":
            return "/etc/systemd/system"
        return "/usr/lib/systemd/system"

    @property
    def is_prebuilt(self) -> bool:
        return self.image is not None


# --------------------------------------------------------------------------- helpers


def _key(prefix: str, sub: str) -> str:
    if not prefix:
        return sub
    if sub.startswith("["):
        return prefix + sub
    return f"{prefix}.{sub}"


class _Collector:
    """Gathers ConfigErrors of one spec so all of them are reported together."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.errors: list[ConfigError] = []

    def add(
        self,
        message: str,
        *,
        key: str | None,
        value: object = None,
        allowed: str | list[str] | tuple[str, ...] | None = None,
    ) -> None:
        self.errors.append(
            ConfigError(message, file=self.source, key=key, value=value, allowed=allowed)
        )

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(list(self.errors))


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def parse_mode(value: object) -> int:
    """Turn a YAML mode into an int; raises ValueError with a user-facing reason.

    Ints are taken as the numeric mode, so unquoted YAML ``0755`` (an octal literal) works.
    An int such as ``755`` (decimal, i.e. 0o1363) is refused because it is almost
    certainly a forgotten leading zero.
    """
    if isinstance(value, bool):
        raise ValueError("a mode is not a boolean")
    if isinstance(value, int):
        if value < 0 or value > 0o7777:
            raise ValueError("mode out of range")
        digits = str(value)
        if value > 0o777 and set(digits) <= set("01234567"):
            raise ValueError(
                f"{value} is read as a decimal number; write the mode as a quoted octal "
                f'string such as "0{digits}"'
            )
        return value
    if isinstance(value, str):
        m = _MODE_RE.match(value.strip())
        if not m:
            raise ValueError("not an octal mode")
        return int(m.group(1), 8)
    raise ValueError(f"a mode is not a {_type_name(value)}")


def _check_name(c: _Collector, name: object, key: str, what: str) -> str | None:
    if not isinstance(name, str) or not name:
        c.add(f"{what} must be a non-empty string", key=key, value=name, allowed=_NAME_HELP)
        return None
    if not _NAME_RE.match(name) or len(name) > 200:
        c.add(f"invalid {what}", key=key, value=name, allowed=_NAME_HELP)
        return None
    return name


def _release_value(c: _Collector, value: object, key: str) -> str | None:
    allowed = "a string, a number, or host (the target's own value)"
    if isinstance(value, bool):
        c.add(
            'a release value must not be a boolean (quote it, e.g. "yes")',
            key=key,
            value=value,
            allowed=allowed,
        )
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        c.add(
            f"a release value must not be a {_type_name(value)}",
            key=key,
            value=value,
            allowed=allowed,
        )
        return None
    if "\n" in value or "\r" in value or "\0" in value:
        c.add("a release value must be a single line", key=key, value=value, allowed=allowed)
        return None
    return value


def _parse_release(c: _Collector, data: object, key: str) -> Mapping[str, str] | None:
    if data is None or data == "none":
        return None
    if not isinstance(data, dict):
        c.add(
            f"release must be a mapping or null, not a {_type_name(data)}",
            key=key,
            value=data,
            allowed="a mapping of KEY: value, null, none",
        )
        return None
    out: dict[str, str] = {}
    for k, v in data.items():
        sub = _key(key, str(k))
        if not isinstance(k, str) or not _RELEASE_KEY_RE.match(k):
            c.add(
                "invalid release key",
                key=sub,
                value=k,
                allowed="upper-case names matching ^[A-Z][A-Z0-9_]*$, e.g. ID, SYSEXT_LEVEL",
            )
            continue
        val = _release_value(c, v, sub)
        if val is not None:
            out[k] = val
    return FrozenMap(out)


def _normalized_abs(path: str) -> bool:
    if not path.startswith("/") or path.startswith("//") or path == "/":
        return False
    return posixpath.normpath(path) == path


def _parse_file(c: _Collector, item: object, key: str) -> FileEntry | None:
    if not isinstance(item, dict):
        c.add(
            f"a files entry must be a mapping, not a {_type_name(item)}",
            key=key,
            value=item,
            allowed="a mapping with keys " + ", ".join(FILE_KEYS),
        )
        return None
    ok = True
    for k in item:
        if k not in FILE_KEYS:
            c.add("unknown key", key=_key(key, str(k)), value=k, allowed=FILE_KEYS)
            ok = False

    path = item.get("path")
    if not isinstance(path, str) or not _normalized_abs(path) or "\0" in path:
        c.add(
            "path must be an absolute, normalized path below /"
            if "path" in item
            else "missing path",
            key=_key(key, "path"),
            value=path,
            allowed="an absolute path without '.', '..', '//' or a trailing '/', "
            "e.g. /usr/bin/hello",
        )
        ok = False

    kinds = [k for k in ("content", "symlink", "directory") if k in item]
    if "directory" in item and item["directory"] is False:
        kinds.remove("directory")
    kind_allowed = "exactly one of content: TEXT, symlink: TARGET, directory: true"
    if len(kinds) != 1:
        c.add(
            "a files entry needs exactly one of content, symlink, directory"
            + (f" (found {', '.join(kinds)})" if kinds else ""),
            key=key,
            allowed=kind_allowed,
        )
        ok = False

    content = item.get("content")
    if "content" in item and not isinstance(content, str):
        c.add(
            f"content must be text, not a {_type_name(content)}",
            key=_key(key, "content"),
            value=content,
            allowed="a string (use a YAML block scalar `|` for several lines)",
        )
        ok = False
    symlink = item.get("symlink")
    if "symlink" in item and (not isinstance(symlink, str) or not symlink or "\0" in symlink):
        c.add(
            "symlink must be a non-empty string",
            key=_key(key, "symlink"),
            value=symlink,
            allowed="a relative or absolute link target, e.g. ../bin/hello",
        )
        ok = False
    directory = item.get("directory", False)
    if not isinstance(directory, bool):
        c.add(
            "directory must be true or false",
            key=_key(key, "directory"),
            value=directory,
            allowed="true, false",
        )
        ok = False

    if "size" in item:
        size = item["size"]
        if "content" not in item or not isinstance(content, str) or not content:
            c.add("size repeats a file's content, so it needs non-empty content",
                  key=_key(key, "size"), value=size, allowed="size together with content")
            ok = False
        elif isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_FILE_SIZE:
            c.add("size must be a number of bytes", key=_key(key, "size"), value=size,
                  allowed=f"1 to {MAX_FILE_SIZE}")
            ok = False
        else:
            content = (content * (size // len(content) + 1))[:size]

    mode: int | None = None
    if "mode" in item:
        if "symlink" in item:
            c.add(
                "a symlink has no mode",
                key=_key(key, "mode"),
                value=item["mode"],
                allowed="no mode key on symlink entries",
            )
            ok = False
        else:
            try:
                mode = parse_mode(item["mode"])
            except ValueError as exc:
                c.add(
                    f"invalid mode: {exc}",
                    key=_key(key, "mode"),
                    value=item["mode"],
                    allowed='an octal string like "0755" or "0644" (0000-7777)',
                )
                ok = False
    if not ok:
        return None
    return FileEntry(
        path=path,  # type: ignore[arg-type]  # checked above
        content=content if "content" in item else None,
        symlink=symlink if "symlink" in item else None,
        directory=bool(directory),
        mode=mode,
    )


def _parse_files(c: _Collector, data: object, key: str) -> tuple[FileEntry, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        c.add(
            f"files must be a list, not a {_type_name(data)}",
            key=key,
            value=data,
            allowed="a list of mappings with path and content/symlink/directory",
        )
        return ()
    out = []
    for i, item in enumerate(data):
        entry = _parse_file(c, item, _key(key, f"[{i}]"))
        if entry is not None:
            out.append(entry)
    return tuple(out)


def _parse_units(c: _Collector, data: object, key: str) -> tuple[tuple[str, str], ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        c.add(
            f"units must be a mapping, not a {_type_name(data)}",
            key=key,
            value=data,
            allowed="a mapping of unit file name: unit text",
        )
        return ()
    out = []
    for name, text in data.items():
        sub = _key(key, str(name))
        if not isinstance(name, str) or not _UNIT_RE.match(name):
            c.add("invalid unit file name", key=sub, value=name, allowed=_UNIT_HELP)
            continue
        if not isinstance(text, str):
            c.add(
                f"unit text must be a string, not a {_type_name(text)}",
                key=sub,
                value=text,
                allowed="the unit file's text (YAML block scalar `|`)",
            )
            continue
        out.append((name, text))
    return tuple(out)


def _check_paths(c: _Collector, spec: ExtensionSpec, key_prefix: str) -> None:
    """Refuse duplicate paths and paths below something that is not a directory."""
    owners: dict[str, tuple[str, bool]] = {}  # path -> (key, is_directory)
    items: list[tuple[str, str, bool]] = []
    for i, f in enumerate(spec.files):
        items.append((f.path, _key(key_prefix, f"files[{i}].path"), f.directory))
    for name, _text in spec.units:
        items.append((f"{spec.unit_dir}/{name}", _key(key_prefix, f"units.{name}"), False))
    if spec.release is not None:
        items.append((spec.release_path, _key(key_prefix, "release"), False))
    for path, key, is_dir in items:
        if path in owners:
            other = owners[path][0]
            hint = (
                "; set release: null to write the extension-release file yourself"
                if key.endswith("release") or other.endswith("release")
                else ""
            )
            c.add(
                f"path {path} is also given by {other}{hint}",
                key=key,
                value=path,
                allowed="each path once",
            )
            continue
        owners[path] = (key, is_dir)
    for path, key, _is_dir in items:
        parent = posixpath.dirname(path)
        while parent != "/":
            if parent in owners and not owners[parent][1]:
                c.add(
                    f"path is below {parent}, which {owners[parent][0]} makes a file or symlink",
                    key=key,
                    value=path,
                    allowed="paths below directories",
                )
                break
            parent = posixpath.dirname(parent)


def _parse_ddi(
    c: _Collector, data: dict[str, object], key_prefix: str, fmt: str, ext_type: str
) -> tuple[str | None, str]:
    """``ddi:`` and ``ddi_partition:``: which disk image to wrap the file system in."""
    key = _key(key_prefix, "ddi")
    ddi = data.get("ddi")
    if ddi in (None, "none"):
        ddi = None
    elif ddi not in DDI_VALUES:
        c.add("unknown ddi value", key=key, value=ddi, allowed=("none", *DDI_VALUES))
        ddi = None
    elif fmt == "directory":
        c.add(
            "a DDI holds a squashfs or erofs file system, not a directory",
            key=key,
            value=ddi,
            allowed="ddi: together with format: squashfs or erofs",
        )
    part_key = _key(key_prefix, "ddi_partition")
    partition = data.get("ddi_partition", "root")
    if partition not in DDI_PARTITIONS:
        c.add("unknown ddi_partition", key=part_key, value=partition, allowed=DDI_PARTITIONS)
        partition = "root"
    elif "ddi_partition" in data and ddi is None:
        c.add(
            "ddi_partition needs ddi:",
            key=part_key,
            value=partition,
            allowed="ddi_partition together with ddi: " + ", ".join(DDI_VALUES),
        )
    elif partition == "usr" and ext_type == "confext":
        c.add(
            "a confext carries /etc, so its DDI needs a root partition",
            key=part_key,
            value=partition,
            allowed="root",
        )
    return ddi, str(partition)  # type: ignore[arg-type]


def _parse_tamper(c: _Collector, data: dict[str, object], key_prefix: str, fmt: str,
                  files: tuple[FileEntry, ...]) -> str | None:
    """``tamper: /usr/share/x``: that file's bytes must be findable in the image, so the
    image must not be compressed (erofs is written uncompressed; squashfs is not)."""
    if "tamper" not in data:
        return None
    key = _key(key_prefix, "tamper")
    value = data["tamper"]
    with_content = [f.path for f in files if f.content is not None and len(f.content) >= 16]
    if not isinstance(value, str) or value not in with_content:
        c.add("tamper names no file of this spec with at least 16 bytes of content", key=key,
              value=value, allowed=", ".join(with_content) or "(no such file)")
        return None
    if fmt != "erofs":
        c.add("tamper needs an uncompressed image", key=key, value=value,
              allowed="format: erofs (squashfs compresses, a directory is no image)")
        return None
    return value


# --------------------------------------------------------------------------- public API


def parse_extension_spec(
    name: str, data: object, *, source: str | Path, key_prefix: str
) -> ExtensionSpec:
    """Validate one extension spec; raise ConfigError(s) naming every bad key.

    `key_prefix` is where the spec sits in its file (``extensions.hello`` in a scenario,
    empty for a standalone file) so messages point at the exact key.
    """
    src = str(source)
    c = _Collector(src)
    name_key = key_prefix or "name"
    checked_name = _check_name(c, name, name_key, "extension name")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        c.add(
            f"an extension spec must be a mapping, not a {_type_name(data)}",
            key=key_prefix or None,
            value=data,
            allowed=SPEC_KEYS,
        )
        c.raise_if_any()
        raise AssertionError("unreachable")  # pragma: no cover

    for k in data:
        if k not in SPEC_KEYS:
            c.add("unknown key", key=_key(key_prefix, str(k)), value=k, allowed=SPEC_KEYS)

    ext_type = data.get("type", "sysext")
    if ext_type not in TYPES:
        c.add("unknown extension type", key=_key(key_prefix, "type"), value=ext_type, allowed=TYPES)
        ext_type = "sysext"

    image: Path | None = None
    if "image" in data:
        clash = [k for k in BUILD_KEYS if k in data]
        if clash:
            c.add(
                f"image: cannot be combined with {', '.join(clash)}",
                key=_key(key_prefix, "image"),
                value=data["image"],
                allowed="either image: alone (plus type:), or a spec to build",
            )
        raw = data["image"]
        if not isinstance(raw, str) or not raw:
            c.add(
                "image must be a path",
                key=_key(key_prefix, "image"),
                value=raw,
                allowed="a path to an image file or directory, relative to this file",
            )
        else:
            p = Path(raw).expanduser()
            if not p.is_absolute():
                p = Path(src).parent / p
            p = p.absolute()
            if not p.exists():
                c.add(
                    f"prebuilt image {p} does not exist",
                    key=_key(key_prefix, "image"),
                    value=raw,
                    allowed="an existing image file or directory",
                )
            image = p
        c.raise_if_any()
        assert checked_name is not None
        return ExtensionSpec(
            name=checked_name,
            type=ext_type,
            format="prebuilt",
            release=None,
            image=image,
            source=src,
            key_prefix=key_prefix,
        )

    fmt = data.get("format", "squashfs")
    if fmt not in FORMATS:
        c.add("unknown format", key=_key(key_prefix, "format"), value=fmt, allowed=FORMATS)
        fmt = "squashfs"

    release: Mapping[str, str] | None = DEFAULT_RELEASE
    if "release" in data:
        release = _parse_release(c, data["release"], _key(key_prefix, "release"))

    release_name = data.get("release_name")
    if release_name is not None:
        release_name = _check_name(
            c, release_name, _key(key_prefix, "release_name"), "release_name"
        )
        if "release" in data and data["release"] in (None, "none"):
            c.add(
                "release_name needs a release file, but release is null",
                key=_key(key_prefix, "release_name"),
                value=data.get("release_name"),
                allowed="release_name together with a release: mapping",
            )

    relaxed = data.get("relaxed_release_name", False)
    if not isinstance(relaxed, bool):
        c.add(
            "relaxed_release_name must be true or false",
            key=_key(key_prefix, "relaxed_release_name"),
            value=relaxed,
            allowed="true, false",
        )
        relaxed = False
    elif relaxed and "release" in data and data["release"] in (None, "none"):
        c.add(
            "relaxed_release_name needs a release file, but release is null",
            key=_key(key_prefix, "relaxed_release_name"),
            value=relaxed,
            allowed="relaxed_release_name together with a release: mapping",
        )

    files = _parse_files(c, data.get("files"), _key(key_prefix, "files"))
    units = _parse_units(c, data.get("units"), _key(key_prefix, "units"))
    ddi, ddi_partition = _parse_ddi(c, data, key_prefix, fmt, ext_type)
    tamper = _parse_tamper(c, data, key_prefix, fmt, files)
    c.raise_if_any()
    assert checked_name is not None

    spec = ExtensionSpec(
        name=checked_name,
        type=ext_type,
        format=fmt,
        release=release,
        release_name=release_name,
        relaxed_release_name=relaxed,
        files=files,
        units=units,
        ddi=ddi,
        ddi_partition=ddi_partition,
        tamper=tamper,
        source=src,
        key_prefix=key_prefix,
    )
    _check_paths(c, spec, key_prefix)
    c.raise_if_any()
    return spec


def load_extension_spec_file(path: Path) -> ExtensionSpec:
    """Load a standalone spec file (top-level ``name:`` plus the usual spec keys)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read extension spec: {exc.strerror}", file=path) from exc
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=path) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"an extension spec file must be a mapping, not a {_type_name(data)}",
            file=path,
            allowed="a mapping with name: and " + ", ".join(SPEC_KEYS),
        )
    if "name" not in data:
        raise ConfigError(
            "missing name", file=path, key="name", allowed="the extension's name, e.g. name: hello"
        )
    rest = {k: v for k, v in data.items() if k != "name"}
    return parse_extension_spec(data["name"], rest, source=path, key_prefix="")


def resolve_release(
    spec: ExtensionSpec,
    host_os_release: Mapping[str, str],
    architecture: str,
    *,
    target_label: str,
) -> dict[str, str] | None:
    """Replace every ``host`` value with the target's own value.

    ``ARCHITECTURE: host`` takes `architecture`; every other key takes the os-release value
    of the same name. The default release (spec without ``release:``) leaves out
    VERSION_ID when the target has none, since a rolling host matches without it.
    """
    if spec.release is None:
        return None
    is_default = spec.release == DEFAULT_RELEASE
    out: dict[str, str] = {}
    errors: list[ConfigError] = []
    for key, value in spec.release.items():
        if value != HOST:
            out[key] = value
            continue
        if key == _ARCHITECTURE_KEY:
            out[key] = architecture
            continue
        host_value = host_os_release.get(key)
        if host_value is None:
            if is_default and key == "VERSION_ID":
                continue
            where = _key(spec.key_prefix, f"release.{key}")
            default_note = " (release: was omitted; the default is ID: host, VERSION_ID: host)"
            errors.append(
                ConfigError(
                    f"{key}: host, but target {target_label}'s os-release has no {key}"
                    + (default_note if is_default else ""),
                    file=spec.source,
                    key=where,
                    value=value,
                    allowed=f"an explicit value, or a target whose os-release sets {key}",
                )
            )
            continue
        out[key] = host_value
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)
    return out


def render_release(fields: Mapping[str, str]) -> str:
    """The extension-release file text: ``KEY=value`` lines in the spec's order.

    Values with whitespace or shell-special characters are double-quoted; anything else is
    written verbatim, so a scenario can write ``ID: "'testos'"`` to test unquoting.
    """
    lines = []
    for key, value in fields.items():
        if any(ch.isspace() for ch in value) or any(ch in value for ch in '"\\$`'):
            escaped = re.sub(r'(["\\$`])', r"\\\1", value)
            value = f'"{escaped}"'
        lines.append(f"{key}={value}\n")
    return "".join(lines)
