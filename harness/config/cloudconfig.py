"""Kairos cloud-config for the reference Kairos persona: check, edit, render, seed ISO.

The guest applies the config with ``/usr/lib/sysext-harness/cloud-config-apply`` (see
docs/kairos.md). Checking it here first means a typo is a `ConfigError` naming the file and
the key path (``stages.boot[0].files[1].permissions``) before any VM boots, instead of a
step Kairos would silently skip. Keys real Kairos knows but the reference persona does not
apply are warnings; so are constructs the persona accepts but real Kairos (yip) would not.
"""

from __future__ import annotations

import base64
import binascii
import copy
import gzip
import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, ConfigErrors, HarnessError

log = logging.getLogger(__name__)

HEADER = "#cloud-config"
DEFAULT_META_DATA = "instance-id: sysext-harness\nlocal-hostname: kairos\n"
SEED_VOLUME_ID = "cidata"

# Stages the reference persona runs, in order (each with .before and .after).
STAGES = ("rootfs", "initramfs", "fs", "boot", "network")
# Kairos stages that exist but never run on the reference persona (no installer, no timer).
KAIROS_ONLY_STAGES = ("reconcile", "after-install", "after-install-chroot", "after-upgrade",
                      "after-upgrade-chroot", "after-reset", "after-reset-chroot")

TOP_LEVEL_KEYS = ("users", "stages", "hostname", "ssh_authorized_keys", "write_files", "runcmd")
# Accepted without effect: a config name, and the installer block (the image is installed).
TOP_LEVEL_ACCEPTED = ("name", "install")
KAIROS_IGNORED_KEYS = (
    "k3s", "k3s-agent", "k0s", "k0s-worker", "kairos", "p2p", "vpn", "kubevip", "debug", "strict",
    "logs", "bundles", "options", "reset", "upgrade", "config_url", "cloud-init-paths",
    "fail_on_bundles_errors", "bind_mounts", "ephemeral_mounts", "growpart", "auroraboot",
)

STEP_KEYS = ("name", "if", "downloads", "files", "directories", "commands", "hostname",
             "users", "authorized_keys", "systemctl", "environment", "environment_file")
IGNORED_STEP_KEYS = ("git", "ensure_entities", "delete_entities", "dns", "sysctl",
                     "modules", "packages", "unpack_images", "after", "datasource", "layout",
                     "systemd_firstboot", "timesyncd")
CONDITION_KEYS = ("node", "only_os", "only_os_version", "only_arch", "only_service_manager")
FILE_KEYS = ("path", "content", "permissions", "owner", "group", "owner_string", "encoding")
WRITE_FILE_KEYS = ("path", "content", "permissions", "owner", "encoding", "append", "defer")
DIRECTORY_KEYS = ("path", "permissions", "owner", "group")
DOWNLOAD_KEYS = ("path", "url", "permissions", "owner", "group", "owner_string", "timeout")
USER_KEYS = ("name", "passwd", "lock_passwd", "ssh_authorized_keys", "groups", "shell",
             "homedir", "uid", "gecos", "primary_group", "no_create_home", "system",
             "no_user_group", "no_log_init")
SYSTEMCTL_KEYS = ("enable", "disable", "mask", "start")
ENCODINGS = ("b64", "base64", "gz+base64", "gzip+base64", "gz+b64", "gzip+b64", "text/plain")

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Checker:
    """Collects every problem in one pass, so the user fixes them all at once."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source = source
        self.prefix = prefix
        self.errors: list[ConfigError] = []
        self.warnings: list[str] = []

    def key(self, path: str) -> str:
        return f"{self.prefix}.{path}" if self.prefix and path else (self.prefix or path)

    def error(self, path: str, message: str, *, value: object = None,
              allowed: str | list[str] | tuple[str, ...] | None = None) -> None:
        self.errors.append(ConfigError(message, file=self.source, key=self.key(path) or None,
                                       value=value, allowed=allowed))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {self.key(path)}: {message}")

    # scalar helpers

    def string(self, value: Any, path: str, *, required: bool = False) -> bool:
        if value is None:
            if required:
                self.error(path, "is required")
            return False
        if not isinstance(value, str):
            self.error(path, "must be a string", value=value)
            return False
        return True

    def abs_path(self, value: Any, path: str, *, required: bool = True) -> None:
        if self.string(value, path, required=required) and not value.startswith("/"):
            self.error(path, "must be an absolute path", value=value)

    def boolean(self, value: Any, path: str) -> None:
        if value is not None and not isinstance(value, bool):
            self.error(path, "must be true or false", value=value)

    def str_list(self, value: Any, path: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, "must be a list of strings", value=value)
            return []
        good = []
        for i, item in enumerate(value):
            if isinstance(item, str) and item.strip():
                good.append(item)
            elif isinstance(item, bool | int | float):
                self.error(f"{path}[{i}]", f"must be a string; YAML read this as "
                                           f"{type(item).__name__}, so quote it", value=item)
            else:
                self.error(f"{path}[{i}]", "must be a non-empty string", value=item)
        return good

    def mapping(self, value: Any, path: str, what: str) -> bool:
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping ({what})", value=value)
            return False
        return True

    def keys(self, spec: dict[str, Any], path: str, allowed: tuple[str, ...]) -> None:
        for key in spec:
            if key not in allowed:
                self.error(f"{path}.{key}", "unknown key", allowed=allowed)

    def mode(self, value: Any, path: str) -> None:
        if value is None:
            return
        if isinstance(value, bool):
            self.error(path, "must be an octal mode such as 0644", value=value)
        elif isinstance(value, int):
            if not 0 <= value <= 0o7777:
                self.error(path, "mode out of range (0 to 07777)", value=value)
            elif value > 0o777 and re.fullmatch(r"[0-7]{3}", str(value)):
                self.error(path, f"{value} is a decimal number (octal {value:04o}); write "
                                 f"0{value} for the octal mode", value=value)
        elif isinstance(value, str):
            if not re.fullmatch(r"(0o|0O)?[0-7]{1,4}", value.strip()):
                self.error(path, "must be an octal mode such as 0644", value=value)
            else:
                self.warn(path, "a quoted mode works on the reference persona, but Kairos "
                                "(yip) needs an unquoted octal number such as 0644")
        else:
            self.error(path, "must be an octal mode such as 0644", value=value)

    def owner(self, value: Any, path: str, *, yip_numeric: bool) -> None:
        if value is None:
            return
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                self.error(path, "must not be negative", value=value)
        elif isinstance(value, str) and value:
            user, _, group = value.partition(":")
            for part in (user, group) if group else (user,):
                if not (part.isdigit() or _NAME_RE.match(part)):
                    self.error(path, "must be a user/group name or number", value=value)
                    return
            if yip_numeric and not value.isdigit():
                self.warn(path, "a name works on the reference persona, but Kairos (yip) "
                                "needs a number here (or owner_string for names)")
        else:
            self.error(path, "must be a name or a number", value=value)

    def content(self, spec: dict[str, Any], path: str) -> None:
        content = spec.get("content")
        if content is not None and not isinstance(content, str):
            self.error(f"{path}.content", "must be a string", value=type(content).__name__)
            return
        encoding = spec.get("encoding")
        if encoding is None or encoding == "":
            return
        if not isinstance(encoding, str) or encoding.lower() not in ENCODINGS:
            self.error(f"{path}.encoding", "unsupported encoding", value=encoding,
                       allowed=ENCODINGS)
            return
        if encoding.lower() == "text/plain" or not content:
            return
        try:
            data = base64.b64decode(content, validate=False)
            if "gz" in encoding.lower():
                gzip.decompress(data)
        except (binascii.Error, OSError, EOFError) as exc:
            self.error(f"{path}.content", f"cannot be decoded as {encoding}: {exc}")

    # structures

    def user(self, spec: Any, path: str, *, name: Any) -> None:
        if not self.mapping(spec, path, "user settings"):
            return
        if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 32:
            self.error(path if "name" not in spec else f"{path}.name",
                       "invalid user name (lower case letters, digits, _ and -)", value=name)
        for key in spec:
            if key not in USER_KEYS:
                self.warn(f"{path}.{key}", "not supported by the reference Kairos persona, "
                                           "ignored")
        if spec.get("passwd"):
            self.warn(f"{path}.passwd", "ignored: password logins are disabled on the reference "
                                        "images; use ssh_authorized_keys")
        for key in ("lock_passwd", "no_create_home", "system", "no_user_group", "no_log_init"):
            self.boolean(spec.get(key), f"{path}.{key}")
        for i, key in enumerate(self.str_list(spec.get("ssh_authorized_keys"),
                                              f"{path}.ssh_authorized_keys")):
            self.ssh_key(key, f"{path}.ssh_authorized_keys[{i}]")
        groups = spec.get("groups")
        if isinstance(groups, str):
            self.error(f"{path}.groups", "must be a list, e.g. [admin, wheel]", value=groups)
        else:
            for i, group in enumerate(self.str_list(groups, f"{path}.groups")):
                if not _NAME_RE.match(group):
                    self.error(f"{path}.groups[{i}]", "invalid group name", value=group)
        for key in ("shell", "homedir"):
            self.abs_path(spec.get(key), f"{path}.{key}", required=False)
        self.string(spec.get("gecos"), f"{path}.gecos")
        primary = spec.get("primary_group")
        if self.string(primary, f"{path}.primary_group") and not _NAME_RE.match(primary):
            self.error(f"{path}.primary_group", "invalid group name", value=primary)
        uid = spec.get("uid")
        if uid is not None and not (
                (isinstance(uid, int) and not isinstance(uid, bool) and uid >= 0)
                or (isinstance(uid, str) and uid.isdigit())):
            self.error(f"{path}.uid", "must be a non-negative number", value=uid)

    def ssh_key(self, key: str, path: str) -> None:
        if "\n" in key.strip():
            self.error(path, "one key per list entry (found a line break)")
        elif re.match(r"^(github|gitlab):", key.strip()):
            self.error(path, "github:/gitlab: key references need the internet and are not "
                             "supported; give the public key itself", value=key)

    def file_entries(self, items: Any, path: str, *, cloud_init: bool) -> None:
        if not isinstance(items, list):
            self.error(path, "must be a list of files", value=items)
            return
        for i, spec in enumerate(items):
            where = f"{path}[{i}]"
            if not self.mapping(spec, where, "a file with at least 'path'"):
                continue
            self.keys(spec, where, WRITE_FILE_KEYS if cloud_init else FILE_KEYS)
            self.abs_path(spec.get("path"), f"{where}.path")
            self.content(spec, where)
            self.mode(spec.get("permissions"), f"{where}.permissions")
            if cloud_init:
                self.owner(spec.get("owner"), f"{where}.owner", yip_numeric=False)
                self.boolean(spec.get("append"), f"{where}.append")
                if spec.get("permissions") is not None:
                    self.warn(f"{where}.permissions", "applied on the reference persona, but "
                                                      "Kairos (yip) drops write_files "
                                                      "permissions; use stages.*.files")
                if spec.get("defer"):
                    self.warn(f"{where}.defer", "ignored: files are written in the boot stage")
            else:
                self.owner(spec.get("owner"), f"{where}.owner", yip_numeric=True)
                self.owner(spec.get("group"), f"{where}.group", yip_numeric=True)
                self.string(spec.get("owner_string"), f"{where}.owner_string")
                if spec.get("owner_string") is not None:
                    self.owner(spec["owner_string"], f"{where}.owner_string", yip_numeric=False)

    def downloads(self, items: Any, path: str) -> None:
        if not isinstance(items, list):
            self.error(path, "must be a list of downloads", value=items)
            return
        for i, spec in enumerate(items):
            where = f"{path}[{i}]"
            if not self.mapping(spec, where, "a download with 'url' and 'path'"):
                continue
            self.keys(spec, where, DOWNLOAD_KEYS)
            url = spec.get("url")
            # A scenario placeholder such as {{ url:NAME }} is filled in before the seed is built.
            if self.string(url, f"{where}.url", required=True) and "{{" not in url and not \
                    re.match(r"^https?://[^/\s]+", url):
                self.error(f"{where}.url", "must be an http:// or https:// URL", value=url)
            self.abs_path(spec.get("path"), f"{where}.path")
            self.mode(spec.get("permissions"), f"{where}.permissions")
            self.owner(spec.get("owner"), f"{where}.owner", yip_numeric=True)
            self.owner(spec.get("group"), f"{where}.group", yip_numeric=True)
            if spec.get("owner_string") is not None and self.string(
                    spec["owner_string"], f"{where}.owner_string"):
                self.owner(spec["owner_string"], f"{where}.owner_string", yip_numeric=False)
            timeout = spec.get("timeout")
            if timeout is not None and (isinstance(timeout, bool)
                                        or not isinstance(timeout, int) or timeout <= 0):
                self.error(f"{where}.timeout", "must be a positive number of seconds",
                           value=timeout)

    def directories(self, items: Any, path: str) -> None:
        if not isinstance(items, list):
            self.error(path, "must be a list of directories", value=items)
            return
        for i, spec in enumerate(items):
            where = f"{path}[{i}]"
            if not self.mapping(spec, where, "a directory with at least 'path'"):
                continue
            self.keys(spec, where, DIRECTORY_KEYS)
            self.abs_path(spec.get("path"), f"{where}.path")
            self.mode(spec.get("permissions"), f"{where}.permissions")
            self.owner(spec.get("owner"), f"{where}.owner", yip_numeric=True)
            self.owner(spec.get("group"), f"{where}.group", yip_numeric=True)

    def hostname(self, value: Any, path: str) -> None:
        if self.string(value, path) and (not _HOSTNAME_RE.match(value) or len(value) > 253):
            self.error(path, "not a valid host name", value=value)

    def step(self, step: Any, path: str) -> None:
        if not self.mapping(step, path, "a step"):
            return
        for key in step:
            if key in CONDITION_KEYS:
                self.error(f"{path}.{key}", "condition not supported by the reference Kairos "
                                            "persona; use 'if:' with a shell test")
            elif key in IGNORED_STEP_KEYS:
                self.warn(f"{path}.{key}", "not supported by the reference Kairos persona, "
                                           "ignored")
            elif key not in STEP_KEYS:
                self.error(f"{path}.{key}", "unknown step key", allowed=STEP_KEYS)
        self.string(step.get("name"), f"{path}.name")
        self.string(step.get("if"), f"{path}.if")
        if step.get("downloads") is not None:
            self.downloads(step["downloads"], f"{path}.downloads")
        if step.get("files") is not None:
            self.file_entries(step["files"], f"{path}.files", cloud_init=False)
        if step.get("directories") is not None:
            self.directories(step["directories"], f"{path}.directories")
        self.str_list(step.get("commands"), f"{path}.commands")
        if step.get("hostname") is not None:
            self.hostname(step["hostname"], f"{path}.hostname")
        users = step.get("users")
        if users is not None and self.mapping(users, f"{path}.users", "user name: settings"):
            for name, spec in users.items():
                self.user(spec if spec is not None else {}, f"{path}.users.{name}", name=name)
        keys = step.get("authorized_keys")
        if keys is not None and self.mapping(keys, f"{path}.authorized_keys",
                                             "user name: list of keys"):
            for name, user_keys in keys.items():
                for i, key in enumerate(self.str_list(user_keys,
                                                      f"{path}.authorized_keys.{name}")):
                    self.ssh_key(key, f"{path}.authorized_keys.{name}[{i}]")
        systemctl = step.get("systemctl")
        if systemctl is not None and self.mapping(systemctl, f"{path}.systemctl",
                                                  "enable/disable/mask/start lists"):
            for key in systemctl:
                if key == "overrides":
                    self.warn(f"{path}.systemctl.overrides", "not supported, ignored; write "
                                                             "drop-ins with files")
                elif key not in SYSTEMCTL_KEYS:
                    self.error(f"{path}.systemctl.{key}", "unknown key", allowed=SYSTEMCTL_KEYS)
                else:
                    self.str_list(systemctl[key], f"{path}.systemctl.{key}")
        env = step.get("environment")
        if env is not None and self.mapping(env, f"{path}.environment", "NAME: value"):
            for name, value in env.items():
                if not isinstance(name, str) or not _ENV_KEY_RE.match(name):
                    self.error(f"{path}.environment", "invalid variable name", value=name)
                elif isinstance(value, dict | list):
                    self.error(f"{path}.environment.{name}", "must be a scalar", value=value)
        self.abs_path(step.get("environment_file"), f"{path}.environment_file", required=False)

    def stages(self, stages: Any, path: str) -> None:
        if not self.mapping(stages, path, "stage name: list of steps"):
            return
        for name, steps in stages.items():
            where = f"{path}.{name}"
            base = str(name).removesuffix(".before").removesuffix(".after")
            if base in KAIROS_ONLY_STAGES or base.startswith("kairos-"):
                self.warn(where, "this Kairos stage never runs on the reference persona")
            elif base not in STAGES:
                allowed = [f"{s}{suffix}" for s in STAGES for suffix in ("", ".before", ".after")]
                self.error(where, "unknown stage", allowed=allowed)
                continue
            if not isinstance(steps, list):
                self.error(where, "must be a list of steps", value=steps)
                continue
            for i, step in enumerate(steps):
                self.step(step, f"{where}[{i}]")

    def config(self, config: dict[str, Any]) -> None:
        for key, value in config.items():
            if key in TOP_LEVEL_ACCEPTED:
                continue
            if key in KAIROS_IGNORED_KEYS:
                self.warn(str(key), "has no effect on the reference Kairos persona")
            elif key not in TOP_LEVEL_KEYS:
                self.warn(str(key), "unknown top-level key, ignored")
            elif key == "users":
                if not isinstance(value, list):
                    self.error("users", "must be a list of users, each with 'name'", value=value)
                    continue
                for i, spec in enumerate(value):
                    if isinstance(spec, dict) and "name" not in spec:
                        self.error(f"users[{i}].name", "is required")
                    elif isinstance(spec, dict):
                        self.user(spec, f"users[{i}]", name=spec.get("name"))
                    else:
                        self.error(f"users[{i}]", "must be a mapping with 'name'", value=spec)
            elif key == "stages":
                self.stages(value, "stages")
            elif key == "hostname":
                self.hostname(value, "hostname")
            elif key == "ssh_authorized_keys":
                for i, item in enumerate(self.str_list(value, "ssh_authorized_keys")):
                    self.ssh_key(item, f"ssh_authorized_keys[{i}]")
            elif key == "write_files":
                self.file_entries(value, "write_files", cloud_init=True)
            elif key == "runcmd":
                self.str_list(value, "runcmd")
        if "name" in config:
            self.string(config["name"], "name")
        if "install" in config and config["install"] is not None:
            self.mapping(config["install"], "install", "Kairos installer options")


def _finish(checker: _Checker) -> list[str]:
    if checker.errors:
        raise ConfigErrors(checker.errors)
    return checker.warnings


def check_cloud_config_data(config: Any, *, source: str, key_prefix: str = "") -> list[str]:
    """Check an already-parsed config (e.g. inline in a scenario); return the warnings.

    Raises `ConfigErrors` listing every structural problem with its key path.
    """
    checker = _Checker(source, key_prefix)
    if not isinstance(config, dict):
        checker.error("", "a cloud-config must be a YAML mapping", value=type(config).__name__)
    else:
        checker.config(config)
    return _finish(checker)


def check_cloud_config(text: str, *, source: str,
                       key_prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """Parse and check cloud-config text: (config, warnings), or `ConfigErrors`."""
    first = text.lstrip("\ufeff").split("\n", 1)[0].rstrip()
    if first != HEADER:
        raise ConfigErrors([ConfigError(
            f"a Kairos cloud-config must start with a '{HEADER}' line", file=source,
            key=key_prefix or None, value=first[:40] if first else None)])
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigErrors([ConfigError(f"not valid YAML: {problem}{where}", file=source,
                                        key=key_prefix or None)]) from exc
    if config is None:
        config = {}
    warnings = check_cloud_config_data(config, source=source, key_prefix=key_prefix)
    return config, warnings


def validate_cloud_config(text: str, *, source: str) -> dict[str, Any]:
    """Parse and check a cloud-config; log the warnings; return the config mapping."""
    config, warnings = check_cloud_config(text, source=source)
    for warning in warnings:
        log.warning("%s", warning)
    return config


def add_ssh_key(config: dict[str, Any], user: str, pubkey: str) -> dict[str, Any]:
    """A copy of `config` in which `user` (top-level `users`) also accepts `pubkey`.

    This is how the harness gets its per-run key into a Kairos guest, the way a Kairos user
    would: a `users` entry with `ssh_authorized_keys`. Other entries are left alone.
    """
    key = pubkey.strip()
    if not key or "\n" in key:
        raise ConfigError("an SSH public key must be a single non-empty line",
                          key="ssh_authorized_keys")
    if not _NAME_RE.match(user):
        raise ConfigError("invalid user name", key="users", value=user)
    result = copy.deepcopy(config)
    users = result.setdefault("users", [])
    if users is None:
        users = result["users"] = []
    if not isinstance(users, list):
        raise ConfigError("must be a list of users, each with 'name'", key="users",
                          value=users)
    entry = next((u for u in users if isinstance(u, dict) and u.get("name") == user), None)
    if entry is None:
        entry = {"name": user}
        users.append(entry)
    keys = entry.get("ssh_authorized_keys")
    if keys is None:
        keys = entry["ssh_authorized_keys"] = []
    if not isinstance(keys, list):
        raise ConfigError("must be a list of keys", key=f"users.{user}.ssh_authorized_keys",
                          value=keys)
    if key not in (k.strip() for k in keys if isinstance(k, str)):
        keys.append(key)
    return result


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so a seed's file contents stay readable."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def render_cloud_config(config: dict[str, Any]) -> str:
    """The config as user-data text, with the '#cloud-config' header Kairos requires."""
    body = yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=4096) if config else ""
    return f"{HEADER}\n{body}"


def make_seed_iso(user_data: str, out: Path, *, meta_data: str | None = None) -> Path:
    """Write a NoCloud seed ISO (volume id ``cidata``, Joliet + Rock Ridge) to `out`.

    Same layout as ``mkisofs -volid cidata -joliet -rock user-data meta-data``, built in
    pure Python (pycdlib), so no host tool is needed.
    """
    try:
        import pycdlib
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise HarnessError("pycdlib is missing: run `make setup` (pip install pycdlib)") from exc
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {
        "user-data": user_data.encode(),
        "meta-data": (DEFAULT_META_DATA if meta_data is None else meta_data).encode(),
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, joliet=3, rock_ridge="1.09", vol_ident=SEED_VOLUME_ID)
    for name, data in files.items():
        iso_name = "/" + name.replace("-", "").upper()[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path="/" + name)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        iso.write(str(tmp))
    finally:
        iso.close()
    os.replace(tmp, out)
    return out
