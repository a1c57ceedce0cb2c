"""Ignition 3.x configs: validation as Ignition does it, and the helpers the harness needs.

The guests run Debian's Ignition 2.14 (spec <= 3.3), which only says "no" once a VM is
booting; validating on the host first turns a lost boot into an exit-2 message naming the
JSON path. The rules and messages follow Ignition's own validation (``config/v3_*/types``)
as observed with ``ignition-validate`` 2.14; the integration test
``tests/integration/test_ignition_agreement.py`` keeps the two in agreement.

A few checks go beyond ``ignition-validate`` because Ignition would only fail later, while
applying the config: a ``data:`` URL whose bytes do not match its verification hash or are
not gzip data despite ``compression: gzip``, a hash sum that is not hexadecimal, and a file
that collides with a systemd unit (newer Ignition releases reject that at validation time).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.config.dataurl import DataURLError, decode
from harness.config.goparse import go_clean, parse_unit, parse_url
from harness.config.schema import (
    CONFIG,
    INTEGER,
    STRING,
    Kind,
    ListOf,
    is_kind,
    json_type,
    version_tuple,
)
from harness.errors import ConfigError

#: Spec versions the harness can validate (Butane fcos 1.3..1.6 and flatcar 1.0..1.1).
SPEC_VERSIONS: tuple[str, ...] = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0")
#: Newest spec the guests' Ignition (Debian 2.14) can apply.
GUEST_MAX_SPEC = "3.3.0"

_SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_UNIT_EXTENSIONS = (
    ".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target", ".path",
    ".timer", ".snapshot", ".slice", ".scope",
)  # fmt: skip
_RAID_LEVELS = (
    "linear", "raid0", "0", "stripe", "raid1", "1", "mirror", "raid4", "4", "raid5", "5",
    "raid6", "6", "raid10", "10",
)  # fmt: skip
_LABEL_LIMITS = {"ext4": 16, "btrfs": 256, "xfs": 12, "swap": 15, "vfat": 11}
_HASH_SIZES = {"sha512": 64, "sha256": 32}
_SYSTEMD_DIR = "/etc/systemd/system/"


@dataclass(frozen=True)
class Problem:
    """One finding: where (a JSON path such as ``$.storage.files[2].path``), what, how bad."""

    path: str
    message: str
    severity: str = "error"  # "error" | "warning"
    line: int | None = None  # in the Butane text, when the problem was found there

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{self.severity} at {where}: {self.message}"


def join(path: str, *parts: str | int) -> str:
    """``join("$.storage", "files", 2)`` -> ``$.storage.files[2]``."""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else f"{path}.{part}"
    return path


# --- small readers that tolerate wrong types (the shape check reports those) ---------


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


Entry = tuple[Mapping[str, Any], str]


def _entries(parent: Mapping[str, Any], key: str, path: str) -> list[Entry]:
    """``(entry, its JSON path)`` for each object in the list ``parent[key]``."""
    return [(_map(e), join(path, key, i)) for i, e in enumerate(_seq(parent.get(key)))]


def path_problem(path: object) -> str | None:
    """Ignition's rule for every absolute path it is given."""
    if path is None or path == "":
        return "path not specified"
    if not isinstance(path, str):
        return None  # a type error, reported by the shape check
    if not path.startswith("/"):
        return "path not absolute"
    if go_clean(path) != path:
        return "path is not fully simplified"
    return None


# --- validation -------------------------------------------------------------------------


class _Validator:
    """Collects problems for one config of one spec version."""

    def __init__(self, version: str) -> None:
        self.version = version_tuple(version)
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, "error"))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, "warning"))

    def since(self, version: str) -> bool:
        return self.version >= version_tuple(version)

    # shape: types and keys known to this spec version

    def shape(self, value: object, kind: Kind, path: str) -> None:
        if value is None:
            return  # Go leaves the field unset
        if isinstance(kind, str):
            if not is_kind(value, kind):
                self.error(path, f"expected {kind}, got {json_type(value)}")
            return
        if isinstance(kind, ListOf):
            if not isinstance(value, list | tuple):
                self.error(path, f"expected list, got {json_type(value)}")
                return
            for i, item in enumerate(value):
                self.shape(item, kind.item, join(path, i))
            return
        if not isinstance(value, Mapping):
            self.error(path, f"expected object, got {json_type(value)}")
            return
        for key, item in value.items():
            field = kind.fields.get(key)
            if field is None:
                self.warn(join(path, key), f"unused key {key}")
            elif not self.since(field.since):
                self.warn(join(path, key), f"unused key {key} (needs spec {field.since} or newer)")
            else:
                self.shape(item, field.kind, join(path, key))

    def duplicates(self, keyed: Iterable[tuple[object, str]],
                   message: str = "duplicate entry defined") -> None:
        """Report each entry whose key an earlier entry already had, as Ignition does."""
        seen: set[object] = set()
        for key, path in keyed:
            if isinstance(key, Mapping | list | tuple):
                continue  # a type error, reported by the shape check
            if key in seen:
                self.error(path, message)
            seen.add(key)

    def strings(self, values: object, path: str) -> None:
        """Duplicates in a list of strings (keys, groups, devices, ...)."""
        items = enumerate(_seq(values))
        self.duplicates((v, join(path, i)) for i, v in items if is_kind(v, STRING))

    # resources and URLs

    def url_problem(self, url: str) -> str | None:
        try:
            scheme, query = parse_url(url)
        except ValueError:
            return "unable to parse url"
        schemes = {"http", "https", "tftp", "s3", "data"}
        if self.since("3.2.0"):
            schemes.add("gs")
        if self.since("3.4.0"):
            schemes.add("arn")
        if scheme not in schemes:
            return "invalid url scheme"
        if scheme == "s3" and re.search(r"(?:^|&)versionId(?:=(?:&|$)|&|$)", query):
            return "invalid S3 object VersionId"
        if scheme == "arn":
            parts = url.split(":", 5)
            resource = parts[5] if len(parts) == 6 else ""
            need = 3 if resource.startswith("accesspoint/") else 2
            if len(parts) < 6 or parts[2] != "s3" or len(url.split("/")) < need:
                return "invalid S3 ARN format"
        if scheme == "data":
            try:
                decode(url)
            except DataURLError as exc:
                return str(exc)
        return None

    def hash_problem(self, spec: str) -> str | None:
        function, dash, digest = spec.partition("-")
        if not dash:
            return "malformed hash specifier"
        sizes = dict(_HASH_SIZES) if self.since("3.1.0") else {"sha512": 64}
        if function not in sizes:
            return "unrecognized hash function"
        if len(digest) != 2 * sizes[function]:
            return "incorrect size for hash sum"
        if not re.fullmatch(r"[0-9a-fA-F]*", digest):
            return "hash sum is not hexadecimal"
        return None

    def resource(self, res: Mapping[str, Any], path: str, *, required: bool = False) -> None:
        source = _text(res.get("source"))
        if required and not source:
            self.error(path, "source is required")
        compression = res.get("compression")
        if isinstance(compression, str) and compression not in ("", "gzip"):
            self.error(join(path, "compression"), "invalid compression method")
        digest = _text(_map(res.get("verification")).get("hash"))
        hash_path = join(path, "verification", "hash")
        hash_ok = False
        if digest is not None:
            if source is None:
                self.error(hash_path, "source must be specified if verification is specified")
            problem = self.hash_problem(digest)
            if problem:
                self.error(hash_path, problem)
            hash_ok = problem is None
        url_ok = False
        if source:
            problem = self.url_problem(source)
            if problem:
                self.error(join(path, "source"), problem)
            url_ok = problem is None
        headers = _seq(res.get("httpHeaders"))
        if headers:
            self.headers(headers, source, join(path, "httpHeaders"))
        if url_ok and source and source.startswith("data:"):
            self.data_contents(source, compression, digest if hash_ok else None, path)

    def headers(self, headers: list[Any], source: str | None, path: str) -> None:
        for i, header in enumerate(headers):
            if not _text(_map(header).get("name")):
                self.error(join(path, i, "name"), "HTTP header name can't be empty")
        self.duplicates((_map(h).get("name"), join(path, i)) for i, h in enumerate(headers))
        if not source:
            self.error(path, "unable to parse url")
            return
        try:
            scheme, _ = parse_url(source)
        except ValueError:
            return
        if scheme not in ("http", "https"):
            self.error(path, "cannot use HTTP headers with this source scheme")

    def data_contents(self, url: str, compression: object, digest: str | None, path: str) -> None:
        """What Ignition would only find while applying: bad gzip data, a wrong hash."""
        data = decode(url)
        if compression == "gzip":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error):
                self.error(join(path, "source"), "contents are not gzip data (compression: gzip)")
                return
        if digest:
            function, _, expected = digest.partition("-")
            actual = hashlib.new(function, data).hexdigest()
            if actual != expected.lower():
                self.error(
                    join(path, "verification", "hash"),
                    f"hash verification failed (calculated {function}-{actual} but expected "
                    f"{digest})",
                )

    # sections

    def ignition(self, ign: Mapping[str, Any], path: str) -> None:
        config = _map(ign.get("config"))
        merge = _seq(config.get("merge"))
        for i, res in enumerate(merge):
            self.resource(_map(res), join(path, "config", "merge", i), required=True)
        self.duplicates((_map(r).get("source"), join(path, "config", "merge", i))
                        for i, r in enumerate(merge))
        if isinstance(config.get("replace"), Mapping):
            self.resource(config["replace"], join(path, "config", "replace"))
        cas_path = join(path, "security", "tls", "certificateAuthorities")
        cas = _seq(_map(_map(ign.get("security")).get("tls")).get("certificateAuthorities"))
        for i, res in enumerate(cas):
            self.resource(_map(res), join(cas_path, i), required=True)
        self.duplicates((_map(r).get("source"), join(cas_path, i)) for i, r in enumerate(cas))
        proxy = _map(ign.get("proxy"))
        for key in ("httpProxy", "httpsProxy"):
            url = _text(proxy.get(key))
            if not url:
                continue
            try:
                scheme, _ = parse_url(url)
            except ValueError:
                self.error(join(path, "proxy", key), "unable to parse url")
                continue
            if scheme not in ("http", "https"):
                self.error(join(path, "proxy", key), "proxies must be http(s)")
            elif key == "httpsProxy" and scheme == "http":
                self.warn(join(path, "proxy", key),
                          "insecure plaintext HTTP proxy specified for HTTPS resources")
        self.strings(proxy.get("noProxy"), join(path, "proxy", "noProxy"))

    def node(self, node: Mapping[str, Any], path: str) -> None:
        problem = path_problem(node.get("path"))
        if problem:
            self.error(join(path, "path"), problem)
        for owner in ("user", "group"):
            entry = _map(node.get(owner))
            if entry.get("id") is not None and entry.get("name") is not None:
                self.error(join(path, owner), "cannot set both id and name")

    def mode(self, mode: object, path: str) -> None:
        if not is_kind(mode, INTEGER):
            return
        assert isinstance(mode, int)
        if mode < 0 or mode > 0o7777:
            self.error(path, "illegal file mode")
        if mode & 0o7000 and not self.since("3.6.0"):
            self.warn(path, "setuid/setgid/sticky bits are not supported in spec versions "
                            "older than 3.6.0")

    def storage(self, storage: Mapping[str, Any], path: str) -> None:
        files = _entries(storage, "files", path)
        dirs = _entries(storage, "directories", path)
        links = _entries(storage, "links", path)
        for f, p in files:
            self.node(f, p)
            self.mode(f.get("mode"), join(p, "mode"))
            contents = _map(f.get("contents"))
            if f.get("overwrite") is True and contents.get("source") is None:
                self.error(join(p, "overwrite"), "overwrite must be false if source is unspecified")
            self.resource(contents, join(p, "contents"))
            for res, rp in _entries(f, "append", p):
                self.resource(res, rp)
        for d, p in dirs:
            self.node(d, p)
            self.mode(d.get("mode"), join(p, "mode"))
        dir_paths = {d["path"] for d, _ in dirs if _text(d.get("path"))}
        for lk, p in links:
            self.link(lk, p, dir_paths)
        # files, directories and links share one namespace; Ignition walks them in this order
        self.duplicates((n.get("path"), p) for n, p in [*dirs, *files, *links])
        link_paths = [lk["path"] for lk, _ in links if _text(lk.get("path"))]
        for kind, nodes in (("file", files), ("directory", dirs), ("link", links)):
            for n, p in nodes:
                node_path = _text(n.get("path")) or ""
                if any(node_path.startswith(lp + "/") for lp in link_paths):
                    self.error(p, f"{kind} path includes link in config")
        self.disks(storage, path)
        formats = {"ext4", "btrfs", "xfs", "vfat", "swap"}
        if self.since("3.3.0"):
            formats.add("none")
        filesystems = _entries(storage, "filesystems", path)
        for fs, p in filesystems:
            self.filesystem(fs, p, formats)
        self.duplicates((fs.get("device"), p) for fs, p in filesystems)
        self.luks(storage, path)

    def link(self, link: Mapping[str, Any], path: str, dir_paths: set[str]) -> None:
        self.node(link, path)
        target = _text(link.get("target"))
        if not target:
            self.error(join(path, "target"), "link target is required")
        if link.get("hard") is True:
            if target in dir_paths:
                self.error(path, "hard link target is a directory")
            for owner in ("user", "group"):
                if _map(link.get(owner)):
                    self.warn(join(path, owner), "user and group are ignored for hard links")

    def disks(self, storage: Mapping[str, Any], path: str) -> None:
        disks = _entries(storage, "disks", path)
        for disk, p in disks:
            if not _text(disk.get("device")):
                self.error(join(p, "device"), "disk device is required")
            parts = _entries(disk, "partitions", p)
            self.duplicates(((pt.get("number"), pp) for pt, pp in parts if pt.get("number")),
                            "partition numbers collide")
        self.duplicates((disk.get("device"), p) for disk, p in disks)
        raids = _entries(storage, "raid", path)
        for raid, p in raids:
            if raid.get("level") not in _RAID_LEVELS:
                self.error(join(p, "level"), "unrecognized raid level")
            if not _seq(raid.get("devices")):
                self.error(join(p, "devices"), "raid devices required")
            self.strings(raid.get("devices"), join(p, "devices"))
        self.duplicates((raid.get("name"), p) for raid, p in raids)

    def luks(self, storage: Mapping[str, Any], path: str) -> None:
        volumes = _entries(storage, "luks", path)
        for volume, p in volumes:
            problem = path_problem(volume.get("device"))
            if problem:
                self.error(join(p, "device"), problem)
            if isinstance(volume.get("keyFile"), Mapping):
                self.resource(volume["keyFile"], join(p, "keyFile"))
            clevis = _map(volume.get("clevis"))
            if _map(clevis.get("custom")) and (
                clevis.get("tpm2") is True or _seq(clevis.get("tang")) or clevis.get("threshold")
            ):
                self.error(join(p, "clevis"),
                           "cannot use custom clevis config with tpm2, tang, or threshold")
        self.duplicates((volume.get("name"), p) for volume, p in volumes)

    def filesystem(self, fs: Mapping[str, Any], path: str, formats: set[str]) -> None:
        problem = path_problem(fs.get("device"))
        if problem:
            self.error(join(path, "device"), problem)
        fmt = _text(fs.get("format")) or ""
        if fmt and fmt not in formats:
            self.error(join(path, "format"), "invalid filesystem format")
        others = (_text(fs.get("path")) or _text(fs.get("label")) or _text(fs.get("uuid"))
                  or fs.get("wipeFilesystem") is True or _seq(fs.get("options"))
                  or _seq(fs.get("mountOptions")))
        if not fmt and others:
            self.error(join(path, "format"), "format cannot be empty when path, label, uuid, "
                       "wipeFilesystem, options, or mountOptions is specified")
        label = _text(fs.get("label"))
        if label and not fmt:
            self.error(join(path, "label"), "filesystem must specify format if label is specified")
        if label and fmt in _LABEL_LIMITS and len(label) > _LABEL_LIMITS[fmt]:
            self.error(join(path, "label"), f"filesystem labels cannot be longer than "
                       f"{_LABEL_LIMITS[fmt]} characters when using {fmt}")
        if _text(fs.get("path")):
            problem = path_problem(fs.get("path"))
            if problem:
                self.error(join(path, "path"), problem)

    def unit_contents(self, contents: object, path: str) -> list[tuple[str, str]] | None:
        if not isinstance(contents, str):
            return None
        options, problem = parse_unit(contents)
        if problem:
            self.error(path, f"invalid unit content: {problem}")
            return None
        return options

    def systemd(self, systemd: Mapping[str, Any], path: str) -> set[str]:
        """Check units; return the paths unit files with contents will occupy."""
        occupied: set[str] = set()
        units = _seq(systemd.get("units"))
        for i, unit in enumerate(units):
            p, unit = join(path, "units", i), _map(unit)
            name = _text(unit.get("name")) or ""
            if not name.endswith(_UNIT_EXTENSIONS):
                self.error(join(p, "name"), "invalid systemd unit extension")
            options = self.unit_contents(unit.get("contents"), join(p, "contents"))
            if unit.get("contents"):
                occupied.add(_SYSTEMD_DIR + name)
            if (unit.get("enabled") is True and unit.get("contents") and options is not None
                    and not any(section == "Install" for section, _ in options)):
                self.warn(join(p, "contents"), f'unit "{name}" is enabled, but has no install '
                          "section so enable does nothing")
            dropins = _seq(unit.get("dropins"))
            for j, dropin in enumerate(dropins):
                dp, dropin = join(p, "dropins", j), _map(dropin)
                dname = _text(dropin.get("name")) or ""
                if not dname.endswith(".conf"):
                    self.error(join(dp, "name"), "invalid systemd drop-in extension")
                self.unit_contents(dropin.get("contents"), join(dp, "contents"))
                if dropin.get("contents"):
                    occupied.add(f"{_SYSTEMD_DIR}{name}.d/{dname}")
            self.duplicates((_map(d).get("name"), join(p, "dropins", j))
                            for j, d in enumerate(dropins))
        self.duplicates((_map(u).get("name"), join(path, "units", i)) for i, u in enumerate(units))
        return occupied

    def passwd(self, passwd: Mapping[str, Any], path: str) -> None:
        users = _seq(passwd.get("users"))
        for i, user in enumerate(users):
            p = join(path, "users", i)
            self.strings(_map(user).get("sshAuthorizedKeys"), join(p, "sshAuthorizedKeys"))
            self.strings(_map(user).get("groups"), join(p, "groups"))
        self.duplicates((_map(u).get("name") or "", join(path, "users", i))
                        for i, u in enumerate(users))
        groups = _seq(passwd.get("groups"))
        self.duplicates((_map(g).get("name") or "", join(path, "groups", i))
                        for i, g in enumerate(groups))

    def kernel_arguments(self, kargs: Mapping[str, Any], path: str) -> None:
        keyed = [(v, join(path, key, i)) for key in ("shouldExist", "shouldNotExist")
                 for i, v in enumerate(_seq(kargs.get(key))) if is_kind(v, STRING)]
        self.duplicates(keyed)

    def config(self, config: Mapping[str, Any]) -> None:
        self.shape(config, CONFIG, "$")
        self.ignition(_map(config.get("ignition")), "$.ignition")
        storage = _map(config.get("storage"))
        self.storage(storage, "$.storage")
        occupied = self.systemd(_map(config.get("systemd")), "$.systemd")
        for key in ("files", "directories", "links"):
            for i, node in enumerate(_seq(storage.get(key))):
                if _text(_map(node).get("path")) in occupied:
                    self.error(join("$.storage", key, i, "path"),
                               "path conflicts with systemd unit or dropin")
        self.passwd(_map(config.get("passwd")), "$.passwd")
        if self.since("3.3.0"):
            self.kernel_arguments(_map(config.get("kernelArguments")), "$.kernelArguments")


def validate_ignition(config: Mapping[str, Any]) -> list[Problem]:
    """Every problem Ignition would report for *config* (errors and warnings), in order.

    The spec version comes from ``ignition.version``; a version that is missing,
    malformed or not in `SPEC_VERSIONS` is the only problem reported, as with Ignition.
    """
    if not isinstance(config, Mapping):
        return [Problem("$", f"config must be a JSON object, got {json_type(config)}")]
    version = _map(config.get("ignition")).get("version")
    if not isinstance(version, str) or not _SEMVER_RE.match(version):
        return [Problem("$.ignition.version", "invalid config version (couldn't parse)")]
    if version not in SPEC_VERSIONS:
        return [Problem("$.ignition.version",
                        f"unsupported config version {version} (supported: "
                        f"{', '.join(SPEC_VERSIONS)})")]
    validator = _Validator(version)
    validator.config(config)
    return validator.problems


def spec_version(config: Mapping[str, Any]) -> str:
    """The ``ignition.version`` of *config*; ConfigError when it has none."""
    version = _map(_map(config).get("ignition")).get("version")
    if not isinstance(version, str) or not version:
        raise ConfigError("config has no version", key="$.ignition.version",
                          allowed=SPEC_VERSIONS)
    return version


def _plain(value: object) -> Any:
    """A deep copy made of dicts and lists only (JSON-ready, safe to mutate)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def add_ssh_key(config: Mapping[str, Any], user: str, pubkey: str) -> dict[str, Any]:
    """Return a copy of *config* in which *user* also accepts *pubkey*.

    The harness logs in with its own key whatever the scenario provisions, so the key is
    merged in: other users, keys and fields stay, the user entry is created if missing,
    and a key already present is not added twice (Ignition rejects duplicates).
    """
    key = pubkey.strip()
    if not key or "\n" in key:
        raise ValueError("pubkey must be one non-empty line")
    if not user:
        raise ValueError("user must not be empty")
    new = _plain(config)
    passwd = new.setdefault("passwd", {})
    users = passwd.setdefault("users", [])
    for entry in users:
        if isinstance(entry, dict) and entry.get("name") == user:
            keys = entry.get("sshAuthorizedKeys") or []
            if key not in keys:
                keys.append(key)
            entry["sshAuthorizedKeys"] = keys
            return new
    users.append({"name": user, "sshAuthorizedKeys": [key]})
    return new


def to_json(config: Mapping[str, Any]) -> str:
    """Canonical pretty JSON (sorted keys, two-space indent, trailing newline)."""
    return json.dumps(_plain(config), indent=2, sort_keys=True) + "\n"
