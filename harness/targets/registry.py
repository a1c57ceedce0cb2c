"""Loads base recipes and personas from images/ and names the targets they make."""

from __future__ import annotations

import fnmatch
from functools import cache
from pathlib import Path

import yaml

from harness import versions
from harness.errors import ConfigError
from harness.paths import images_dir
from harness.targets.model import BaseRecipe, Persona, Target

_PERSONA_KEYS = {
    "name", "title", "default_user", "provisioning", "ignition_fw_cfg_name",
    "extension_dir", "extension_dirs", "os_release", "notes",
    "builtin_extension_dir", "builtin_extensions", "update", "files",
}
_UPDATE_KEYS = {"os_release", "relink_per_version"}
_BASE_KEYS = {"name", "suite", "systemd_version", "packages", "extra_suites", "default",
              "sysupdate"}


def _load_yaml(path: Path, allowed: set[str]) -> dict:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping", file=path)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError("unknown key", file=path, key=unknown[0], allowed=sorted(allowed))
    return data


def load_base(path: Path) -> BaseRecipe:
    d = _load_yaml(path, _BASE_KEYS)
    return BaseRecipe(
        name=d["name"],
        suite=d["suite"],
        systemd_version=int(d["systemd_version"]),
        packages=tuple(d["packages"]),
        extra_suites=tuple(d.get("extra_suites", ())),
        default=bool(d.get("default", True)),
        sysupdate=bool(d.get("sysupdate", True)),
    )


def _load_update(path: Path, d: dict) -> tuple[dict[str, str], bool]:
    """The persona's `update:` block: what slot B (the OS after an update) changes."""
    update = d.get("update") or {}
    if not isinstance(update, dict):
        raise ConfigError("expected a mapping", file=path, key="update",
                          allowed=sorted(_UPDATE_KEYS))
    unknown = sorted(set(update) - _UPDATE_KEYS)
    if unknown:
        raise ConfigError("unknown key", file=path, key=f"update.{unknown[0]}",
                          allowed=sorted(_UPDATE_KEYS))
    fields = update.get("os_release") or {}
    if not isinstance(fields, dict):
        raise ConfigError("expected a mapping of os-release fields", file=path,
                          key="update.os_release")
    reserved = sorted(k for k in fields if str(k).startswith("SYSEXT_HARNESS_"))
    if reserved:
        raise ConfigError("set by the harness, not the persona", file=path,
                          key=f"update.os_release.{reserved[0]}")
    relink = update.get("relink_per_version", False)
    if not isinstance(relink, bool):
        raise ConfigError("expected true or false", file=path,
                          key="update.relink_per_version", value=relink)
    return {str(k): str(v) for k, v in fields.items()}, relink


def _load_files(path: Path, d: dict) -> tuple[tuple[str, str, str | None], ...]:
    """The persona's `files:` list: {path, content, systemd (optional constraint)}."""
    files = d.get("files") or []
    allowed = "a list of {path: /etc/..., content: TEXT, systemd: \">=254\" (optional)}"
    if not isinstance(files, list):
        raise ConfigError("expected a list", file=path, key="files", allowed=allowed)
    out = []
    for i, entry in enumerate(files):
        key = f"files[{i}]"
        if not isinstance(entry, dict) or not {"path", "content"} <= set(entry) or not set(
                entry) <= {"path", "content", "systemd"}:
            raise ConfigError("expected path, content and optionally systemd", file=path,
                              key=key, allowed=allowed)
        name, content, constraint = entry["path"], entry["content"], entry.get("systemd")
        if (not isinstance(name, str) or not name.startswith("/") or ".." in name.split("/")
                or name == "/usr" or name.startswith("/usr/")):
            raise ConfigError("not an absolute path outside /usr (persona files go to the "
                              "persistent root; /usr is built from packages)", file=path,
                              key=f"{key}.path", value=name,
                              allowed="e.g. /etc/systemd/system/x.service.d/y.conf")
        if not isinstance(content, str):
            raise ConfigError("content must be text", file=path, key=f"{key}.content")
        if constraint is not None and not versions.is_valid_constraint(constraint):
            raise ConfigError("invalid systemd constraint", file=path, key=f"{key}.systemd",
                              value=constraint, allowed=versions.SYNTAX_HELP)
        out.append((name, content, None if constraint is None else str(constraint)))
    return tuple(out)


def load_persona(path: Path) -> Persona:
    d = _load_yaml(path, _PERSONA_KEYS)
    update_os_release, relink = _load_update(path, d)
    return Persona(
        name=d["name"],
        title=d["title"],
        os_release={str(k): str(v) for k, v in d["os_release"].items()},
        default_user=d["default_user"],
        extension_dir=d["extension_dir"],
        extension_dirs=tuple(d.get("extension_dirs", ())),
        provisioning=d.get("provisioning", "ignition"),
        ignition_fw_cfg_name=d.get("ignition_fw_cfg_name"),
        builtin_extension_dir=d.get("builtin_extension_dir"),
        builtin_extensions=tuple((d.get("builtin_extensions") or {}).items()),
        update_os_release=update_os_release,
        relink_per_version=relink,
        files=_load_files(path, d),
        notes=d.get("notes", ""),
    )


@cache
def bases() -> tuple[BaseRecipe, ...]:
    found = [load_base(p) for p in sorted((images_dir() / "bases").glob("*.yaml"))]
    return tuple(sorted(found, key=lambda b: b.systemd_version))


@cache
def personas() -> tuple[Persona, ...]:
    return tuple(load_persona(p) for p in sorted((images_dir() / "personas").glob("*.yaml")))


@cache
def all_targets() -> tuple[Target, ...]:
    """Every reference target: one per (systemd version, persona), newest systemd first."""
    out = []
    for base in sorted(bases(), key=lambda b: -b.systemd_version):
        for persona in personas():
            out.append(Target(name=f"refos-{base.systemd_version}-{persona.name}",
                              base=base, persona=persona))
    return tuple(out)


def persona_names() -> list[str]:
    return [p.name for p in personas()]


def get_target(name: str) -> Target:
    for t in all_targets():
        if t.name == name:
            return t
    raise ConfigError("unknown target", key="target", value=name,
                      allowed=[t.name for t in all_targets()])


def select_targets(patterns: list[str] | None) -> list[Target]:
    """Targets matching any of the comma-separated glob patterns; all defaults when None."""
    if not patterns:
        return [t for t in all_targets() if t.default]
    wanted: list[Target] = []
    for raw in patterns:
        for pattern in filter(None, (p.strip() for p in raw.split(","))):
            hits = [t for t in all_targets() if fnmatch.fnmatchcase(t.name, pattern)]
            if not hits:
                raise ConfigError("no target matches", key="--target", value=pattern,
                                  allowed=[t.name for t in all_targets()])
            wanted.extend(t for t in hits if t not in wanted)
    return wanted
