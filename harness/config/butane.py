"""Butane YAML -> Ignition JSON, the subset of Butane the harness's guests need.

There is no Butane package in Debian or on PyPI, and scenarios must be checked before any
VM boots, so the translation is done here: variants ``flatcar`` 1.0-1.1 and ``fcos``
1.3-1.6, each emitting the Ignition spec upstream Butane emits for it. Everything Butane
adds on top of Ignition is handled as Butane does it (``inline``/``local`` contents as the
shortest ``data:`` URL, ``contents_local``, ``ssh_authorized_keys_local``,
``storage.trees``, octal modes, the decimal-mode warning, unknown keys as warnings). The
result is then validated as Ignition would (`harness.config.ignition.validate_ignition`).

Problems found in the YAML are reported at YAML paths (``storage.files[0].mode``), with a
line number; problems Ignition would find in the result are reported at JSON paths
(``$.storage.files[0].path``). Only ``boot_device``, ``grub`` and ``with_mount_unit``
are refused: they expand into disk layouts and units the harness never needs.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.config import dataurl
from harness.config.ignition import Problem, validate_ignition
from harness.config.schema import (
    BOOLEAN,
    CONFIG,
    INTEGER,
    STRING,
    Field,
    Kind,
    ListOf,
    Obj,
    is_kind,
    json_type,
    version_tuple,
)
from harness.config.yamlv3 import Plain, YamlError, line_of, load, to_bool, to_int
from harness.errors import ConfigError, ConfigErrors

__all__ = ["SUPPORTED_VARIANTS", "Problem", "Rendered", "render_butane", "spec_for"]

#: Butane variant -> versions this module translates.
SUPPORTED_VARIANTS: dict[str, tuple[str, ...]] = {
    "flatcar": ("1.0.0", "1.1.0"),
    "fcos": ("1.3.0", "1.4.0", "1.5.0", "1.6.0"),
}
# Upstream's table (config/config.go): which Ignition spec each variant version emits.
_SPEC = {
    ("flatcar", "1.0.0"): "3.3.0",
    ("flatcar", "1.1.0"): "3.4.0",
    ("fcos", "1.3.0"): "3.2.0",
    ("fcos", "1.4.0"): "3.3.0",
    ("fcos", "1.5.0"): "3.4.0",
    ("fcos", "1.6.0"): "3.5.0",
}
_SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
_JSON_TO_YAML = {"sizeMiB": "size_mib", "startMiB": "start_mib"}
_TREE = Obj("tree", {"local": Field(STRING), "path": Field(STRING)})
# Keys Butane has and Ignition does not, per Ignition object; "since" is the emitted spec.
_BUTANE_ONLY: dict[str, dict[str, Field]] = {
    "resource": {"inline": Field(STRING), "local": Field(STRING)},
    "configResource": {"inline": Field(STRING), "local": Field(STRING)},
    "unit": {"contents_local": Field(STRING, "3.4.0")},
    "dropin": {"contents_local": Field(STRING, "3.4.0")},
    "user": {"ssh_authorized_keys_local": Field(ListOf(STRING), "3.4.0")},
    "storage": {"trees": Field(ListOf(_TREE))},
    "filesystem": {"with_mount_unit": Field(BOOLEAN)},
}
# Valid Butane the harness does not translate (it would need fcos disk layouts).
_UNSUPPORTED_FCOS = {"boot_device": "3.2.0", "grub": "3.4.0"}
_NO_FILES_DIR = ("local file paths are relative to a files directory that must be specified "
                 "with --files-dir")
_TOO_MANY_SOURCES = "only one of the following can be set: inline, local, source"
_NODE_EXISTS = "matching filesystem node has existing contents or different type"
_DECIMAL_MODE = ("unreasonable mode would be reasonable if specified in octal; remember to add "
                 "a leading zero")


@dataclass(frozen=True)
class Rendered:
    """A translated config: the Ignition dict, its spec version and the warnings found."""

    ignition: dict[str, Any]
    spec_version: str
    warnings: tuple[Problem, ...] = ()


def spec_for(variant: str, version: str) -> str:
    """The Ignition spec version Butane *variant* *version* emits; ConfigError if unknown."""
    if variant not in SUPPORTED_VARIANTS:
        raise ConfigError(f"unsupported Butane variant {variant!r}", key="variant",
                          allowed=SUPPORTED_VARIANTS)
    if (variant, version) not in _SPEC:
        raise ConfigError(f"unsupported version {version!r} for variant {variant}",
                          key="version", allowed=SUPPORTED_VARIANTS[variant])
    return _SPEC[(variant, version)]


def _snake(json_key: str) -> str:
    return _JSON_TO_YAML.get(json_key) or re.sub(r"(?<!^)([A-Z])", r"_\1", json_key).lower()


def _describe(value: object) -> str:
    """A value as a YAML author wrote it: ``'maybe'``, ``string '0644'``, ``a list``."""
    if isinstance(value, Plain):
        return repr(str(value))
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str | int | float):
        return f"{json_type(value)} {value!r}"
    return json_type(value)


def _yjoin(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


# --- Butane's decimal-mode heuristic (base/util/file.go) --------------------------------


def _typical_mode(mode: int, directory: bool) -> bool:
    """Whether a mode is unsurprising; e.g. 0644 is, 0204 (420 read as octal digits) not."""
    if mode == 0:
        return True
    had_r = had_w = had_x = False
    for perm in (mode & 0o7, (mode >> 3) & 0o7, (mode >> 6) & 0o7):  # other, group, user
        r, w, x = bool(perm & 4), bool(perm & 2), bool(perm & 1)
        if (had_r and not r) or (had_w and not w) or (had_x and not x):
            return False  # a more specific class lacks what a less specific one has
        if x and had_r and not had_x:
            return False
        if (w or x) and not r:
            return False
        had_r, had_w, had_x = had_r or r, had_w or w, had_x or x
    if not had_r:
        return False
    if directory:
        return had_x and not mode & 0o4000 and not (mode & 0o3000 and not had_w)
    if mode & 0o6000 and (not had_x or mode & 0o2):
        return False
    return not mode & 0o1000


def looks_decimal(mode: int, *, directory: bool) -> bool:
    """True when *mode* was probably written in decimal (``mode: 644`` for 0644)."""
    digits = str(mode)
    if mode < 0 or mode > 7777 or any(d in "89" for d in digits):
        return False
    return not _typical_mode(mode, directory) and _typical_mode(int(digits, 8), directory)


# --- translation -------------------------------------------------------------------------

_MISSING = object()


@dataclass
class _Context:
    variant: str
    version: str
    spec: str
    files_dir: Path | None
    lenient: bool
    problems: list[Problem] = field(default_factory=list)
    trees: list[tuple[Mapping[str, Any], str, int]] = field(default_factory=list)

    def error(self, path: str, message: str, line: int = 0) -> None:
        self.problems.append(Problem(path, message, "error", line or None))

    def warn(self, path: str, message: str, line: int = 0) -> None:
        self.problems.append(Problem(path, message, "warning", line or None))

    def has(self, since: str) -> bool:
        return version_tuple(self.spec) >= version_tuple(since)


def _within_files_dir(ctx: _Context, relative: str, path: str, line: int) -> str | None:
    """*relative* joined to --files-dir like Go's ``filepath.Join``, if it stays inside."""
    if ctx.files_dir is None:
        ctx.error(path, _NO_FILES_DIR, line)
        return None
    base = os.path.abspath(ctx.files_dir)
    target = os.path.normpath(base + "/" + relative)
    if target != base and not target.startswith(base + os.sep):
        ctx.error(path, "local file path traverses outside the files directory", line)
        return None
    return target


class _Translator:
    """Walks Butane YAML along the Ignition schema and builds the Ignition dict."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx

    # generic walk

    def fields(self, kind: Obj) -> dict[str, tuple[str | None, Field]]:
        """Butane key -> (Ignition key or None for Butane-only keys, field)."""
        out: dict[str, tuple[str | None, Field]] = {
            _snake(k): (k, f) for k, f in kind.fields.items()
            if not (kind.name == "ignition" and k == "version")
        }
        out.update({k: (None, f) for k, f in _BUTANE_ONLY.get(kind.name, {}).items()})
        return out

    def value(self, value: object, kind: Kind, path: str, line: int) -> Any:
        if value is None:
            return _MISSING
        if isinstance(kind, Obj):
            return self.obj(value, kind, path, line)
        if isinstance(kind, ListOf):
            if not isinstance(value, list | tuple):
                self.ctx.error(path, f"expected a list, got {_describe(value)}", line)
                return _MISSING
            items = []
            for i, item in enumerate(value):
                item_path, item_line = _yjoin(path, i), line_of(value, i, line)
                if item is None and not isinstance(kind.item, Obj):
                    self.ctx.error(item_path, f"expected {kind.item}, got null", item_line)
                    continue
                got = self.value({} if item is None else item, kind.item, item_path, item_line)
                if got is not _MISSING:
                    items.append(got)
            return items
        return self.scalar(value, kind, path, line)

    def scalar(self, value: object, kind: str, path: str, line: int) -> Any:
        if kind == INTEGER:
            got: Any = to_int(value, lenient=self.ctx.lenient)
        elif kind == BOOLEAN:
            got = to_bool(value, lenient=self.ctx.lenient)
        elif is_kind(value, STRING) or is_kind(value, INTEGER):
            got = str(value)  # yaml.v3 decodes any scalar into a string field
        else:
            got = None
        if got is None:
            self.ctx.error(path, f"expected {kind}, got {_describe(value)}", line)
            return _MISSING
        return got

    def obj(self, value: object, kind: Obj, path: str, line: int,
            skip: tuple[str, ...] = ()) -> Any:
        if not isinstance(value, Mapping):
            self.ctx.error(path, f"expected an object, got {_describe(value)}", line)
            return _MISSING
        fields = self.fields(kind)
        out: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            if key in skip:
                continue
            key_path, key_line = _yjoin(path, key), line_of(value, key, line)
            known = fields.get(key)
            if known is None or not self.ctx.has(known[1].since):
                self.unknown_key(key, key_path, key_line, known[1].since if known else None)
                continue
            json_key, fld = known
            got = self.value(item, fld.kind, key_path, key_line)
            if got is _MISSING:
                continue
            if json_key is None:
                extra[key] = got
            else:
                out[json_key] = got
        hook = getattr(self, f"finish_{kind.name}", None)
        if hook is not None:
            hook(out, extra, value, path, line)
        order = list(kind.fields)
        return {k: out[k] for k in sorted(out, key=lambda k: order.index(k) if k in order else 99)}

    def unknown_key(self, key: str, path: str, line: int, since: str | None) -> None:
        if since is None:
            self.ctx.warn(path, f"unused key {key}", line)
            return
        firsts = []
        for variant, versions in SUPPORTED_VARIANTS.items():
            ok = [v for v in versions if version_tuple(_SPEC[(variant, v)]) >= version_tuple(since)]
            if ok:
                firsts.append(f"{variant} {ok[0]}")
        self.ctx.warn(path, f"unused key {key} ({self.ctx.variant} {self.ctx.version} does not "
                      f"have it; it needs {' or '.join(firsts)} or newer)", line)

    # Butane additions, per Ignition object

    def read_local(self, relative: str, path: str, line: int) -> bytes | None:
        """A file under --files-dir, refusing paths that escape it (as Butane does)."""
        target = _within_files_dir(self.ctx, relative, path, line)
        if target is None:
            return None
        try:
            return Path(target).read_bytes()
        except OSError as exc:
            self.ctx.error(path, f"cannot read {relative!r} in {self.ctx.files_dir}: "
                           f"{exc.strerror}", line)
            return None

    def finish_resource(self, out: dict[str, Any], extra: dict[str, Any],
                        raw: Mapping[str, Any], path: str, line: int) -> None:
        given = [k for k in ("local", "inline", "source") if raw.get(k) is not None]
        if len(given) > 1:
            self.ctx.error(_yjoin(path, given[-1]), _TOO_MANY_SOURCES,
                           line_of(raw, given[-1], line))
            return
        if "local" in extra:
            data = self.read_local(extra["local"], _yjoin(path, "local"),
                                   line_of(raw, "local", line))
        elif "inline" in extra:
            data = extra["inline"].encode("utf-8")
        else:
            return
        if data is not None:
            out["source"], out["compression"] = dataurl.encode(
                data, compression=out.get("compression") or None)

    finish_configResource = finish_resource

    def contents_local(self, out: dict[str, Any], extra: dict[str, Any],
                       raw: Mapping[str, Any], path: str, line: int) -> None:
        if "contents_local" not in extra:
            return
        key_path, key_line = _yjoin(path, "contents_local"), line_of(raw, "contents_local", line)
        if "contents" in out:
            self.ctx.error(key_path, "only one of the following can be set: contents, "
                           "contents_local", key_line)
            return
        if extra["contents_local"]:
            data = self.read_local(extra["contents_local"], key_path, key_line)
            if data is not None:
                out["contents"] = data.decode("utf-8", errors="replace")

    finish_unit = contents_local
    finish_dropin = contents_local

    def finish_user(self, out: dict[str, Any], extra: dict[str, Any],
                    raw: Mapping[str, Any], path: str, line: int) -> None:
        files = extra.get("ssh_authorized_keys_local") or []
        key_path = _yjoin(path, "ssh_authorized_keys_local")
        key_line = line_of(raw, "ssh_authorized_keys_local", line)
        if files and self.ctx.files_dir is None:
            self.ctx.error(key_path, _NO_FILES_DIR, key_line)
            return
        for i, name in enumerate(files):
            data = self.read_local(name, _yjoin(key_path, i), key_line)
            if data is None:
                continue
            keys = [k for k in re.split(r"\r?\n", data.decode("utf-8", "replace")) if k]
            out.setdefault("sshAuthorizedKeys", []).extend(keys)

    def check_mode(self, out: dict[str, Any], raw: Mapping[str, Any], path: str, line: int,
                   *, directory: bool) -> None:
        mode = out.get("mode")
        if isinstance(mode, int) and looks_decimal(mode, directory=directory):
            self.ctx.warn(_yjoin(path, "mode"), f"{_DECIMAL_MODE} (got {mode}, did you mean "
                          f"0{mode}?)", line_of(raw, "mode", line))

    def finish_file(self, out: dict[str, Any], extra: dict[str, Any],
                    raw: Mapping[str, Any], path: str, line: int) -> None:
        self.check_mode(out, raw, path, line, directory=False)

    def finish_directory(self, out: dict[str, Any], extra: dict[str, Any],
                         raw: Mapping[str, Any], path: str, line: int) -> None:
        self.check_mode(out, raw, path, line, directory=True)

    def finish_storage(self, out: dict[str, Any], extra: dict[str, Any],
                       raw: Mapping[str, Any], path: str, line: int) -> None:
        trees = raw.get("trees")
        for i, tree in enumerate(extra.get("trees") or []):
            self.ctx.trees.append((tree, _yjoin(_yjoin(path, "trees"), i),
                                   line_of(trees, i, line_of(raw, "trees", line))))

    def finish_filesystem(self, out: dict[str, Any], extra: dict[str, Any],
                          raw: Mapping[str, Any], path: str, line: int) -> None:
        if extra.get("with_mount_unit"):
            self.ctx.error(_yjoin(path, "with_mount_unit"),
                           "with_mount_unit is not supported by sysext-harness; write the "
                           "mount unit under systemd.units", line_of(raw, "with_mount_unit", line))

    def finish_luks(self, out: dict[str, Any], extra: dict[str, Any],
                    raw: Mapping[str, Any], path: str, line: int) -> None:
        if self.ctx.variant == "flatcar" and "clevis" in out:
            self.ctx.error(_yjoin(path, "clevis"), "clevis is not supported by the flatcar "
                           "variant", line_of(raw, "clevis", line))

    # the whole config

    def config(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        skip = ["variant", "version"]
        for key, since in _UNSUPPORTED_FCOS.items():
            if key in raw and self.ctx.variant == "fcos" and self.ctx.has(since):
                self.ctx.error(key, f"{key} is not supported by sysext-harness (it expands into "
                               "an fcos disk layout); describe storage explicitly",
                               line_of(raw, key))
                skip.append(key)
        config = self.obj(raw, CONFIG, "", 0, tuple(skip))
        config.setdefault("ignition", {})
        config["ignition"] = {"version": self.ctx.spec, **config["ignition"]}
        return config


# --- storage.trees (base/v0_x translate.go, processTrees) ----------------------------------


class _Trees:
    """Embeds local directory trees as files and links, merging with explicit entries."""

    def __init__(self, ctx: _Context, storage: dict[str, Any]) -> None:
        self.ctx = ctx
        self.storage = storage

    def find(self, kind: str, dest: str) -> dict[str, Any] | None:
        return next((n for n in self.storage.get(kind, []) if n.get("path") == dest), None)

    def exists(self, dest: str) -> bool:
        return any(self.find(kind, dest) for kind in ("files", "directories", "links"))

    def add(self, tree: Mapping[str, Any], path: str, line: int) -> None:
        if not tree.get("local"):
            self.ctx.error(path, "local is required", line)
            return
        root = _within_files_dir(self.ctx, tree["local"], path, line)
        if root is None:
            return
        if not os.path.isdir(root):
            self.ctx.error(path, "root of tree must be a directory" if os.path.exists(root)
                           else f"no such directory {tree['local']!r} in {self.ctx.files_dir}",
                           line)
            return
        try:
            self.walk(root, tree.get("path") or "/", path, line)
        except OSError as exc:
            self.ctx.error(path, f"cannot read the tree: {exc}", line)

    def walk(self, directory: str, dest_dir: str, path: str, line: int) -> None:
        for name in sorted(os.listdir(directory)):
            source = os.path.join(directory, name)
            dest = dest_dir.rstrip("/") + "/" + name
            info = os.lstat(source)
            if stat.S_ISDIR(info.st_mode):
                self.walk(source, dest, path, line)
            elif stat.S_ISREG(info.st_mode):
                self.file(source, dest, info.st_mode, path, line)
            elif stat.S_ISLNK(info.st_mode):
                self.link(os.readlink(source), dest, path, line)
            else:
                self.ctx.error(path, f"trees may only contain files, directories, and symlinks "
                               f"({source})", line)

    def file(self, source: str, dest: str, mode: int, path: str, line: int) -> None:
        entry = self.find("files", dest)
        if entry is None:
            if self.exists(dest):
                self.ctx.error(path, f"{_NODE_EXISTS}: {dest}", line)
                return
            entry = {"path": dest}
            self.storage.setdefault("files", []).append(entry)
        elif entry.get("contents", {}).get("source"):
            self.ctx.error(path, f"{_NODE_EXISTS}: {dest}", line)
            return
        contents = entry.setdefault("contents", {})
        contents["source"], contents["compression"] = dataurl.encode(
            Path(source).read_bytes(), compression=contents.get("compression") or None)
        entry.setdefault("mode", 0o755 if mode & 0o111 else 0o644)

    def link(self, target: str, dest: str, path: str, line: int) -> None:
        entry = self.find("links", dest)
        if entry is None:
            if self.exists(dest):
                self.ctx.error(path, f"{_NODE_EXISTS}: {dest}", line)
                return
            entry = {"path": dest}
            self.storage.setdefault("links", []).append(entry)
        elif entry.get("target"):
            self.ctx.error(path, f"{_NODE_EXISTS}: {dest}", line)
            return
        entry["target"] = target


# --- entry point -------------------------------------------------------------------------


def _header(raw: Mapping[str, Any], lenient: bool) -> tuple[str, str]:
    """Variant and version, or ConfigError naming what is accepted."""
    variant, version = raw.get("variant"), raw.get("version")
    if not isinstance(variant, str) or not variant:
        raise ConfigError("error parsing variant; must be specified", key="variant",
                          allowed=SUPPORTED_VARIANTS)
    if isinstance(version, int | float) and lenient and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not _SEMVER_RE.match(version):
        raise ConfigError("error parsing version; must be a valid semver", key="version",
                          value=version, allowed=SUPPORTED_VARIANTS.get(str(variant)))
    return str(variant), str(version)


def _norm(path: str) -> str:
    return path.removeprefix("$.").replace("_", "").lower()


def _knock_on(json_path: str, error_paths: list[str]) -> bool:
    """Whether an Ignition finding only repeats a Butane error (a field dropped as invalid).

    A field with a bad value is left out, so Ignition may then call it missing; a resource
    whose contents could not be made has no ``source``, so Ignition may then complain about
    the resource or the file's ``overwrite``. Anything else is still reported.
    """
    found = _norm(json_path)
    for error_path in error_paths:
        err = _norm(error_path)
        if found == err:
            return True
        resource, _, last = err.rpartition(".")
        if last in ("inline", "local", "source") and (
            found == resource or found.startswith(resource + ".")
            or found == re.sub(r"\.(contents|append\[\d+\])$", "", resource) + ".overwrite"
        ):
            return True
    return False


def _yaml_line(raw: Mapping[str, Any], json_path: str) -> int:
    """The line in the Butane text that a JSON path of the result comes from, if any."""
    node: Any = raw
    line = 0
    for name, index in re.findall(r"\.([A-Za-z_]+)|\[(\d+)\]", json_path):
        if name:
            keys = [_snake(name), *(("inline", "local") if name == "source" else ())]
            key = next((k for k in keys if isinstance(node, Mapping) and k in node), None)
            if key is None:
                break
            line, node = line_of(node, key, line), node[key]
        else:
            if not isinstance(node, list) or int(index) >= len(node):
                break
            line, node = line_of(node, int(index), line), node[int(index)]
    return line


def _to_config_error(problem: Problem, source: str | Path) -> ConfigError:
    where = f"{source}:{problem.line}" if problem.line else str(source)
    prefix = "" if problem.severity == "error" else f"({problem.severity}, --strict) "
    return ConfigError(prefix + problem.message, file=where, key=problem.path or None)


def render_butane(
    text_or_mapping: str | Mapping[str, Any],
    *,
    source: str | Path = "<butane>",
    files_dir: Path | None = None,
    strict: bool = False,
) -> Rendered:
    """Translate Butane (YAML text or an already-loaded mapping) and validate the result.

    Raises ConfigErrors listing every error (and, with *strict*, every warning), each
    with ``file=source[:line]`` and ``key`` = the YAML or JSON path. A mapping loaded by
    PyYAML is accepted too; strings such as ``"0o644"`` are then read as yaml.v3 would
    read them unquoted. ``local`` paths resolve under *files_dir*, as ``--files-dir``.
    """
    lenient = not isinstance(text_or_mapping, str)
    if isinstance(text_or_mapping, str):
        try:
            raw = load(text_or_mapping)
        except YamlError as exc:
            where = f"{source}:{exc.line}" if exc.line else source
            raise ConfigErrors([ConfigError(f"invalid YAML: {exc}", file=where)]) from None
    else:
        raw = text_or_mapping
    if not isinstance(raw, Mapping):
        raise ConfigErrors([ConfigError(f"a Butane config must be a mapping, got "
                                        f"{json_type(raw)}", file=source)])
    try:
        variant, version = _header(raw, lenient)
        spec = spec_for(variant, version)
    except ConfigError as exc:
        key = str(exc.key)
        where = f"{source}:{line_of(raw, key)}" if line_of(raw, key) else source
        raise ConfigErrors([ConfigError(exc.message, file=where, key=key, value=exc.value,
                                        allowed=exc.allowed)]) from None

    ctx = _Context(variant, version, spec, Path(files_dir) if files_dir else None, lenient)
    config = _Translator(ctx).config(raw)
    if ctx.trees:
        storage = config.setdefault("storage", {})
        trees = _Trees(ctx, storage)
        for tree, path, line in ctx.trees:
            trees.add(tree, path, line)
    errors = [p.path for p in ctx.problems if p.severity == "error"]
    for problem in validate_ignition(config):
        if problem.severity == "error" and _knock_on(problem.path, errors):
            continue
        ctx.problems.append(replace(problem, line=_yaml_line(raw, problem.path) or None))

    failing = [p for p in ctx.problems if p.severity == "error" or strict]
    if failing:
        refused = ConfigErrors([_to_config_error(p, source) for p in failing])
        # not failing, but worth showing next to the errors (the CLI prints them)
        refused.warnings = tuple(p for p in ctx.problems if p not in failing)
        raise refused
    return Rendered(config, spec, tuple(ctx.problems))
