"""Scenario YAML -> `Scenario`, with every problem of a file reported in one go.

Validation is exhaustive on purpose: a scenario is checked before any VM boots, so a
typo must surface as a ConfigError (exit 2) naming `file:line`, the key path (e.g.
`steps[3].expect.exit`), the value found and what is accepted -- never as a confusing
failure twenty minutes into a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from harness import versions
from harness.errors import ConfigError, ConfigErrors
from harness.extensions.spec import ExtensionSpec, parse_extension_spec
from harness.scenario.model import (
    ACTIONS,
    BARE_ACTIONS,
    CHANNEL_ACTIONS,
    COMMAND_ACTIONS,
    COMMAND_KEYS,
    DEFAULT_TIMEOUT,
    EXPECT_KEYS,
    KNOWN_PERSONAS,
    OS_UPDATE_SLOTS,
    STATE_KEYS,
    SYSEXT_VERBS,
    AppliesTo,
    BySystemd,
    ChannelStep,
    Condition,
    Expectation,
    ExpectStep,
    InstallStep,
    MkdirStep,
    OsUpdateStep,
    RebootStep,
    RemoveStep,
    RunStep,
    Scenario,
    Step,
    SymlinkStep,
    SysextStep,
    SysupdateStep,
    TrustCertificateStep,
)
from harness.scenario.provisioning import parse_provisioning
from harness.scenario.update_channel import parse_update_channel
from harness.sysupdate.model import ChannelSpec
from harness.targets.registry import persona_names

TOP_KEYS: tuple[str, ...] = (
    "description", "applies_to", "tags", "extensions", "provisioning", "update_channel",
    "steps",
)
APPLIES_TO_KEYS: tuple[str, ...] = ("systemd", "personas", "targets", "reason")
WHEN_KEYS: tuple[str, ...] = ("systemd", "personas", "targets", "reason")
COMMON_STEP_KEYS: tuple[str, ...] = ("name", "when", "timeout")
# Keys a step may carry besides its action and the common ones.
STEP_EXTRA_KEYS: Mapping[str, tuple[str, ...]] = {
    "install": ("dir", "as"),
    "symlink": ("to",),
    "remove": (),
    "mkdir": (),
    "merge": ("expect",),
    "unmerge": ("expect",),
    "refresh": ("expect",),
    "sysext": ("expect",),
    "run": ("expect",),
    "reboot": (),
    "os_update": (),
    "os_rollback": (),
    "sysupdate": ("expect",),
    "publish": (),
    "tamper": (),
    "trust_certificate": (),
    "expect": (),
}
UNIT_STATES: tuple[str, ...] = (
    "active",
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "reloading",
    "refreshing",
    "maintenance",
)
# pytest's own markers: a tag with one of these names would change how pytest runs the test.
RESERVED_TAGS: tuple[str, ...] = (
    "skip",
    "skipif",
    "xfail",
    "parametrize",
    "usefixtures",
    "filterwarnings",
    "timeout",
    "vm",
)
_TAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE_NAME_HELP = "a plain file name such as hello.raw (no '/')"

_INVALID: Any = object()  # returned by validators after they recorded an error


# ---------------------------------------------------------------------------- plumbing



def known_personas() -> tuple[str, ...]:
    """Persona names from images/personas (the registry is the source of truth)."""
    try:
        names = tuple(persona_names())
    except OSError:
        names = ()
    return names or KNOWN_PERSONAS

class _Ctx:
    """Collects the errors of one file and places each at `file:line` when known."""

    def __init__(self, path: Path, lines: Mapping[str, int] | None = None) -> None:
        self.path = path
        self.lines: Mapping[str, int] = lines or {}
        self.errors: list[ConfigError] = []
        # The scenario's update channel, once parsed: `publish`/`tamper` steps name its parts.
        self.channel: ChannelSpec | None = None

    def sorted_errors(self) -> list[ConfigError]:
        """Errors in file order (discovery order breaks ties), as a reader scans the file."""

        def line(err: ConfigError) -> int:
            _, _, tail = (err.file or "").rpartition(":")
            return int(tail) if tail.isdigit() else 0

        return sorted(self.errors, key=line)

    def where(self, key: str | None) -> str:
        line = self._line(key)
        return f"{self.path}:{line}" if line else str(self.path)

    def _line(self, key: str | None) -> int | None:
        while key:
            if key in self.lines:
                return self.lines[key]
            key = _parent_key(key)
        return None

    def error(
        self,
        key: str | None,
        message: str,
        value: object = None,
        allowed: str | tuple[str, ...] | list[str] | None = None,
    ) -> None:
        self.errors.append(
            ConfigError(
                message, file=self.where(key), key=key, value=_shown(value), allowed=allowed
            )
        )

    def adopt(self, exc: ConfigError) -> None:
        """Take over errors raised by another validator, adding line numbers."""
        for err in _flatten(exc):
            if err.file in (None, str(self.path)):
                err = ConfigError(
                    err.message,
                    file=self.where(err.key),
                    key=err.key,
                    value=err.value,
                    allowed=err.allowed,
                )
            self.errors.append(err)


def _flatten(exc: ConfigError) -> list[ConfigError]:
    if isinstance(exc, ConfigErrors):
        out: list[ConfigError] = []
        for e in exc.errors:
            out.extend(_flatten(e))
        return out
    return [exc]


def _parent_key(key: str) -> str:
    """`steps[3].expect.exit` -> `steps[3].expect` -> `steps[3]` -> `steps` -> ``."""
    cut = max(key.rfind("."), key.rfind("["))
    return key[:cut] if cut > 0 else ""


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _shown(value: object) -> object:
    """Keep error lines short: long values are abbreviated, not dumped whole."""
    if value is None:
        return None
    text = repr(value)
    if len(text) <= 80:
        return value
    return text[:77] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------- YAML


def _index_nodes(
    node: yaml.Node, prefix: str, lines: dict[str, int], ctx: _Ctx, active: set[int]
) -> None:
    """Record the line of every key path and report duplicate keys (YAML drops them)."""
    if id(node) in active:  # recursive alias
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            path = _join(prefix, key)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                lines.setdefault(path, line)
                ctx.errors.append(
                    ConfigError(
                        "duplicate key (YAML would silently keep only the last one)",
                        file=f"{ctx.path}:{line}",
                        key=path,
                    )
                )
            seen.add(key)
            lines.setdefault(path, line)
            _index_nodes(value_node, path, lines, ctx, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            lines.setdefault(path, item.start_mark.line + 1)
            _index_nodes(item, path, lines, ctx, active)
    active.discard(id(node))


def _read_yaml(path: Path, ctx: _Ctx) -> tuple[object, dict[str, int]] | None:
    """Parse one document; syntax errors become ConfigErrors with the line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        ctx.error(None, f"cannot read scenario file: {exc}")
        return None
    lines: dict[str, int] = {}
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _index_nodes(node, "", lines, ctx, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.context}, {exc.problem}"
        col = f" (column {mark.column + 1})" if mark else ""
        ctx.errors.append(ConfigError(f"YAML syntax error: {problem}{col}", file=where))
        return None
    except yaml.YAMLError as exc:
        ctx.errors.append(ConfigError(f"YAML error: {exc}", file=path))
        return None
    finally:
        loader.dispose()
    return data, lines


# ------------------------------------------------------------------------ value checks


def _nonempty_str(ctx: _Ctx, key: str, value: object, what: str) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    ctx.error(key, f"{what} must be a non-empty string", value, allowed="a non-empty string")
    return None


def _abs_path(ctx: _Ctx, key: str, value: object, *, allow_root: bool = True) -> str | None:
    if not isinstance(value, str) or not value.startswith("/"):
        ctx.error(key, "must be an absolute path", value, allowed="a path starting with /")
        return None
    if not allow_root and value.strip("/") == "":
        ctx.error(key, "refusing to operate on /", value, allowed="a path below /")
        return None
    return value


def _str_list(
    ctx: _Ctx,
    key: str,
    value: object,
    item: Callable[[_Ctx, str, object], Any],
    *,
    allow_single: bool = True,
    allow_empty: bool = False,
    what: str = "a list",
) -> tuple[Any, ...] | Any:
    """A list (or, if allowed, one bare item) whose items each pass `item`."""
    if allow_single and isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        ctx.error(key, f"must be {what}, not a {_type_name(value)}", value, allowed=what)
        return _INVALID
    if not value and not allow_empty:
        ctx.error(key, "must not be empty", value, allowed=what)
        return _INVALID
    out = []
    ok = True
    for i, entry in enumerate(value):
        checked = item(ctx, f"{key}[{i}]", entry)
        if checked is None or checked is _INVALID:
            ok = False
        else:
            out.append(checked)
    return tuple(out) if ok else _INVALID


def _text_item(ctx: _Ctx, key: str, value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    ctx.error(key, "must be a non-empty string", value, allowed="a non-empty string")
    return None


def _regex_item(ctx: _Ctx, key: str, value: object) -> str | None:
    if not isinstance(value, str) or not value:
        ctx.error(key, "must be a non-empty regular expression", value, allowed="a regex string")
        return None
    try:
        re.compile(value, re.MULTILINE)
    except re.error as exc:
        ctx.error(key, f"invalid regular expression: {exc}", value, allowed="a Python regex")
        return None
    return value


def _name_item(ctx: _Ctx, key: str, value: object) -> str | None:
    if isinstance(value, str) and value and "/" not in value:
        return value
    ctx.error(key, "must be an extension name", value, allowed="an image name such as hello")
    return None


def _path_item(ctx: _Ctx, key: str, value: object) -> str | None:
    return _abs_path(ctx, key, value)


def _v_exit(ctx: _Ctx, key: str, value: object) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    ctx.error(key, "exit must be an exit code", value, allowed="an integer from 0 to 255")
    return _INVALID


def _v_texts(ctx: _Ctx, key: str, value: object) -> Any:
    return _str_list(ctx, key, value, _text_item, what="a string or a list of strings")


def _v_regexes(ctx: _Ctx, key: str, value: object) -> Any:
    return _str_list(ctx, key, value, _regex_item, what="a regex or a list of regexes")


def _v_paths(ctx: _Ctx, key: str, value: object) -> Any:
    return _str_list(ctx, key, value, _path_item, what="an absolute path or a list of them")


def _v_names(ctx: _Ctx, key: str, value: object) -> Any:
    names = _str_list(
        ctx,
        key,
        value,
        _name_item,
        allow_single=False,
        allow_empty=True,
        what="a list of extension names ([] for none)",
    )
    return _INVALID if names is _INVALID else frozenset(names)


def _v_merged_into(ctx: _Ctx, key: str, value: object) -> Any:
    allowed = "a mapping of hierarchy (e.g. /usr, /opt) to a list of extension names"
    if not isinstance(value, dict) or not value:
        ctx.error(key, "merged_into must be a non-empty mapping", value, allowed=allowed)
        return _INVALID
    out: dict[str, frozenset[str]] = {}
    ok = True
    for hierarchy, names in value.items():
        sub = _join(key, hierarchy)
        h = _abs_path(ctx, sub, hierarchy, allow_root=False)
        n = _v_names(ctx, sub, names)
        if h is None or n is _INVALID:
            ok = False
        else:
            out[h.rstrip("/")] = n
    return MappingProxyType(out) if ok else _INVALID


def _v_file_contains(ctx: _Ctx, key: str, value: object) -> Any:
    allowed = "a mapping of absolute path to a string or a list of strings"
    if not isinstance(value, dict) or not value:
        ctx.error(key, "file_contains must be a non-empty mapping", value, allowed=allowed)
        return _INVALID
    out: dict[str, tuple[str, ...]] = {}
    ok = True
    for path, texts in value.items():
        sub = _join(key, path)
        p = _abs_path(ctx, sub, path)
        t = _v_texts(ctx, sub, texts)
        if p is None or t is _INVALID:
            ok = False
        else:
            out[p] = t
    return MappingProxyType(out) if ok else _INVALID


def _v_unit_state(ctx: _Ctx, key: str, value: object) -> Any:
    allowed = "a mapping of unit name to state, e.g. {hello.service: active}"
    if not isinstance(value, dict) or not value:
        ctx.error(key, "unit_state must be a non-empty mapping", value, allowed=allowed)
        return _INVALID
    out: dict[str, str] = {}
    ok = True
    for unit, state in value.items():
        sub = _join(key, unit)
        if not isinstance(unit, str) or not unit or "/" in unit:
            ctx.error(sub, "must be a unit name", unit, allowed="e.g. hello.service")
            ok = False
        if state not in UNIT_STATES:
            ctx.error(sub, "unknown unit state", state, allowed=UNIT_STATES)
            ok = False
        if ok:
            out[str(unit)] = str(state)
    return MappingProxyType(out) if ok else _INVALID


_EXPECT_VALIDATORS: Mapping[str, Callable[[_Ctx, str, object], Any]] = {
    "exit": _v_exit,
    "stdout_contains": _v_texts,
    "stdout_not_contains": _v_texts,
    "output_contains": _v_texts,
    "output_not_contains": _v_texts,
    "output_matches": _v_regexes,
    "merged": _v_names,
    "merged_into": _v_merged_into,
    "files_present": _v_paths,
    "files_absent": _v_paths,
    "file_contains": _v_file_contains,
    "read_only": _v_paths,
    "writable": _v_paths,
    "unit_state": _v_unit_state,
}
assert set(_EXPECT_VALIDATORS) == set(EXPECT_KEYS)


def _constraint(ctx: _Ctx, key: str, value: object) -> str | None:
    if versions.is_valid_constraint(value):
        return str(value).strip()
    ctx.error(key, "invalid systemd version constraint", value, allowed=versions.SYNTAX_HELP)
    return None


def _by_systemd(
    ctx: _Ctx, key: str, value: object, check: Callable[[_Ctx, str, object], Any]
) -> BySystemd | Any:
    """`{by_systemd: {"<=255": x, ">=256": y, default: z}}`: every branch fully checked."""
    allowed = 'a mapping of version constraint (e.g. ">=256") or default to a value'
    key = f"{key}.by_systemd"
    if not isinstance(value, dict) or not value:
        ctx.error(key, "by_systemd must be a non-empty mapping", value, allowed=allowed)
        return _INVALID
    choices: list[tuple[str, Any]] = []
    default: Any = None
    has_default = False
    ok = True
    for constraint, choice in value.items():
        sub = _join(key, constraint)
        if constraint == "default":
            has_default = True
        elif _constraint(ctx, sub, constraint) is None:
            ok = False
            continue
        # null means "do not check this key on these versions"
        checked = None if choice is None else check(ctx, sub, choice)
        if checked is _INVALID:
            ok = False
        elif constraint == "default":
            default = checked
        else:
            choices.append((str(constraint).strip(), checked))
    if ok and not choices:
        ctx.error(key, "by_systemd needs at least one version constraint", value, allowed=allowed)
        ok = False
    if not ok:
        return _INVALID
    if has_default:
        return BySystemd(tuple(choices), default)
    return BySystemd(tuple(choices))


def _maybe_versioned(
    ctx: _Ctx, key: str, value: object, check: Callable[[_Ctx, str, object], Any]
) -> Any:
    if isinstance(value, dict) and "by_systemd" in value:
        if len(value) != 1:
            extra = sorted(str(k) for k in value if k != "by_systemd")
            ctx.error(
                key,
                "by_systemd cannot be combined with other keys",
                extra,
                allowed="{by_systemd: {...}} alone",
            )
            return _INVALID
        return _by_systemd(ctx, key, value["by_systemd"], check)
    return check(ctx, key, value)


# --------------------------------------------------------------------------- sections


def _parse_expect(ctx: _Ctx, key: str, value: object, *, command: bool) -> Expectation | None:
    allowed = EXPECT_KEYS if command else STATE_KEYS
    if not isinstance(value, dict) or not value:
        ctx.error(
            key,
            "expect must be a non-empty mapping of checks",
            value,
            allowed=allowed,
        )
        return None
    found: dict[str, Any] = {}
    ok = True
    for k, v in value.items():
        sub = _join(key, k)
        if k in COMMAND_KEYS and not command:
            ctx.error(
                sub,
                f"{k} checks a command's result, but an `expect:` step runs no command; "
                "put this expect block on the merge/unmerge/refresh/sysext/run step it checks",
                v,
                allowed=STATE_KEYS,
            )
            ok = False
            continue
        if k not in allowed:
            ctx.error(sub, "unknown expectation", k, allowed=allowed)
            ok = False
            continue
        checked = _maybe_versioned(ctx, sub, v, _EXPECT_VALIDATORS[k])
        if checked is _INVALID:
            ok = False
        else:
            found[k] = checked
    return Expectation(**found) if ok else None


def _parse_condition(
    ctx: _Ctx, key: str, value: object, keys: tuple[str, ...], cls: type[Condition]
) -> Condition | None:
    if not isinstance(value, dict):
        ctx.error(key, f"must be a mapping, not a {_type_name(value)}", value, allowed=keys)
        return None
    ok = True
    for k in value:
        if k not in keys:
            ctx.error(_join(key, k), "unknown key", k, allowed=keys)
            ok = False
    if not any(k in value for k in ("systemd", "personas", "targets")):
        ctx.error(
            key,
            "needs at least one condition (omit the key to mean every target)",
            value,
            allowed="systemd, personas, targets",
        )
        ok = False
    systemd: str | None = None
    if "systemd" in value:
        systemd = _constraint(ctx, _join(key, "systemd"), value["systemd"])
        ok = ok and systemd is not None

    def persona_item(c: _Ctx, k: str, v: object) -> str | None:
        if v in known_personas():
            return str(v)
        c.error(k, "unknown persona", v, allowed=known_personas())
        return None

    personas: Any = ()
    if "personas" in value:
        personas = _str_list(
            ctx, _join(key, "personas"), value["personas"], persona_item,
            what="a list of persona names",
        )
        ok = ok and personas is not _INVALID
    targets: Any = ()
    if "targets" in value:
        targets = _str_list(
            ctx, _join(key, "targets"), value["targets"], _text_item,
            what="a list of target name patterns (fnmatch, e.g. refos-257-*)",
        )
        ok = ok and targets is not _INVALID
    reason: str | None = None
    if "reason" in value:
        reason = _nonempty_str(ctx, _join(key, "reason"), value["reason"], "reason")
        ok = ok and reason is not None
    if not ok:
        return None
    return cls(systemd=systemd, personas=personas, targets=targets, reason=reason)


def _parse_tags(ctx: _Ctx, value: object) -> tuple[str, ...]:
    def tag_item(c: _Ctx, k: str, v: object) -> str | None:
        if not isinstance(v, str) or not _TAG_RE.match(v):
            c.error(k, "invalid tag (tags become pytest markers)", v,
                    allowed="letters, digits and _, not starting with a digit")
            return None
        if v in RESERVED_TAGS:
            c.error(k, "tag is reserved by pytest or the harness", v,
                    allowed=f"any other name; reserved: {', '.join(RESERVED_TAGS)}")
            return None
        return v

    tags = _str_list(ctx, "tags", value, tag_item, allow_single=False, what="a list of tags")
    if tags is _INVALID:
        return ()
    return tuple(dict.fromkeys(tags))


def _parse_extensions(ctx: _Ctx, value: object) -> dict[str, ExtensionSpec] | None:
    """Returns the valid specs; None if the section itself is not a mapping."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        ctx.error(
            "extensions",
            f"must be a mapping of extension name to spec, not a {_type_name(value)}",
            value,
            allowed="{name: {format: ..., files: [...]}, ...}",
        )
        return None
    specs: dict[str, ExtensionSpec] = {}
    for name, data in value.items():
        if not isinstance(name, str):
            ctx.error(_join("extensions", name), "extension names must be strings", name)
            continue
        try:
            specs[name] = parse_extension_spec(
                name, data, source=ctx.path, key_prefix=f"extensions.{name}"
            )
        except ConfigError as exc:
            ctx.adopt(exc)
    return specs


def _parse_step(ctx: _Ctx, index: int, raw: object, extension_names: list[str]) -> Step | None:
    key = f"steps[{index}]"
    action_list = ", ".join(ACTIONS)
    if isinstance(raw, str):
        if raw in BARE_ACTIONS:
            return _build_step(ctx, key, index, raw, {raw: None}, extension_names)
        if raw in ACTIONS:
            ctx.error(key, f"`{raw}` needs an argument, write it as `{raw}: ...`", raw,
                      allowed=f"bare words: {', '.join(BARE_ACTIONS)}")
        else:
            ctx.error(key, "unknown step", raw, allowed=action_list)
        return None
    if not isinstance(raw, dict):
        ctx.error(key, f"a step must be a mapping or a bare action, not a {_type_name(raw)}",
                  raw, allowed=action_list)
        return None
    # `expect` is the action only when nothing else is: on command steps it is a modifier.
    actions = [k for k in raw if k in ACTIONS and k != "expect"]
    if not actions and "expect" in raw:
        actions = ["expect"]
    if not actions:
        ctx.error(key, "step has no action", sorted(str(k) for k in raw),
                  allowed=f"exactly one of {action_list}")
        return None
    if len(actions) > 1:
        ctx.error(key, f"step has {len(actions)} actions ({', '.join(actions)}); "
                  "split it into one step per action", actions,
                  allowed=f"exactly one of {action_list}")
        return None
    return _build_step(ctx, key, index, actions[0], raw, extension_names)


def _build_step(
    ctx: _Ctx,
    key: str,
    index: int,
    action: str,
    raw: dict[Any, Any],
    extension_names: list[str],
) -> Step | None:
    allowed = (action, *STEP_EXTRA_KEYS[action], *COMMON_STEP_KEYS)
    ok = True
    for k in raw:
        if k in allowed:
            continue
        sub = _join(key, k)
        if k == "expect":
            ctx.error(sub, f"`{action}` steps take no expect block; add a separate "
                      "`- expect: {...}` step after it", None,
                      allowed=", ".join(allowed))
        else:
            ctx.error(sub, f"unknown key for a `{action}` step", k, allowed=allowed)
        ok = False

    common: dict[str, Any] = {"index": index}
    if "name" in raw:
        name = _nonempty_str(ctx, _join(key, "name"), raw["name"], "name")
        ok = ok and name is not None
        common["name"] = name
    if "when" in raw:
        when = _parse_condition(ctx, _join(key, "when"), raw["when"], WHEN_KEYS, Condition)
        ok = ok and when is not None
        common["when"] = when
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        ctx.error(_join(key, "timeout"), "timeout must be a positive number of seconds",
                  timeout, allowed="e.g. 120 or 0.5")
        ok = False
    else:
        common["timeout"] = float(timeout)

    value = raw[action]
    akey = _join(key, action)
    expect = None
    if action in COMMAND_ACTIONS and "expect" in raw:
        expect = _parse_expect(ctx, _join(key, "expect"), raw["expect"], command=True)
        ok = ok and expect is not None

    step: Step | None = None
    if action == "install":
        step = _install_step(ctx, key, raw, common, extension_names)
    elif action == "symlink":
        path = _abs_path(ctx, akey, value, allow_root=False)
        if "to" not in raw:
            ctx.error(_join(key, "to"), "a symlink step needs `to:` (the link target)",
                      allowed="an absolute or relative path")
            target = None
        else:
            target = _nonempty_str(ctx, _join(key, "to"), raw["to"], "to")
        if path and target:
            step = SymlinkStep(path=path, to=target, **common)
    elif action in ("remove", "mkdir"):
        path = _abs_path(ctx, akey, value, allow_root=False)
        if path:
            cls = RemoveStep if action == "remove" else MkdirStep
            step = cls(path=path, **common)
    elif action in SYSEXT_VERBS:
        args = _verb_args(ctx, akey, value)
        if args is not None:
            step = SysextStep(verb=action, args=args, expect=expect, **common)
    elif action == "sysext":
        args = _nonempty_str(ctx, akey, value, "sysext")
        if args is not None:
            step = SysextStep(verb="sysext", args=args.strip(), expect=expect, **common)
    elif action == "run":
        shell = _nonempty_str(ctx, akey, value, "run")
        if shell is not None:
            step = RunStep(shell=shell, expect=expect, **common)
    elif action == "reboot":
        if value is not None:
            ctx.error(akey, "reboot takes no argument", value,
                      allowed="`- reboot`, or `reboot:` with no value")
        else:
            step = RebootStep(**common)
    elif action in OS_UPDATE_SLOTS:
        if value is not None:
            ctx.error(akey, f"{action} takes no argument", value,
                      allowed=f"`- {action}`, or `{action}:` with no value")
        else:
            step = OsUpdateStep(slot=OS_UPDATE_SLOTS[action], **common)
    elif action == "sysupdate":
        args = _nonempty_str(ctx, akey, value, "sysupdate")
        if args is not None:
            step = SysupdateStep(args=args.strip(), expect=expect, **common)
    elif action == "trust_certificate":
        step = _trust_step(ctx, akey, value, common)
    elif action in CHANNEL_ACTIONS:
        step = _channel_step(ctx, akey, action, value, common)
    elif action == "expect":
        block = _parse_expect(ctx, akey, value, command=False)
        if block is not None:
            step = ExpectStep(expect=block, **common)
    return step if ok else None


def _install_step(
    ctx: _Ctx,
    key: str,
    raw: dict[Any, Any],
    common: dict[str, Any],
    extension_names: list[str],
) -> InstallStep | None:
    ok = True
    name = raw["install"]
    akey = _join(key, "install")
    if not isinstance(name, str) or name not in extension_names:
        known = ", ".join(extension_names) if extension_names else "(none defined)"
        ctx.error(akey, "install names an extension not defined under `extensions:`", name,
                  allowed=known)
        ok = False
    directory = None
    if "dir" in raw:
        directory = _abs_path(ctx, _join(key, "dir"), raw["dir"], allow_root=False)
        ok = ok and directory is not None
    as_name = None
    if "as" in raw:
        as_name = raw["as"]
        if (
            not isinstance(as_name, str)
            or not as_name
            or "/" in as_name
            or as_name in (".", "..")
        ):
            ctx.error(_join(key, "as"), "invalid file name", as_name, allowed=_FILE_NAME_HELP)
            ok = False
    if not ok:
        return None
    return InstallStep(extension=name, dir=directory, as_name=as_name, **common)


def _trust_step(ctx: _Ctx, key: str, value: object,
                common: dict[str, Any]) -> TrustCertificateStep | None:
    """`- trust_certificate` or `trust_certificate: {dir: /run/verity.d}`."""
    if value is None:
        return TrustCertificateStep(**common)
    if not isinstance(value, dict) or set(value) != {"dir"}:
        ctx.error(key, "expected nothing or a mapping with `dir`", value,
                  allowed="`- trust_certificate` or `trust_certificate: {dir: /run/verity.d}`")
        return None
    directory = _abs_path(ctx, f"{key}.dir", value["dir"], allow_root=False)
    return TrustCertificateStep(dir=directory, **common) if directory else None


def _channel_step(ctx: _Ctx, key: str, action: str, value: object,
                  common: dict[str, Any]) -> ChannelStep | None:
    """`publish: {component: hello, version: 1.3.0}` (same shape for `tamper:`)."""
    allowed = f"`{action}: {{component: NAME, version: VERSION}}`"
    channel = ctx.channel
    if channel is None:
        ctx.error(key, f"`{action}` needs an `update_channel:` block in the scenario", value,
                  allowed=allowed)
        return None
    if not isinstance(value, dict) or set(value) != {"component", "version"}:
        ctx.error(key, "expected a mapping with exactly `component` and `version`", value,
                  allowed=allowed)
        return None
    component, version = value["component"], value["version"]
    if component not in channel.components:
        ctx.error(f"{key}.component", "not a component of update_channel", component,
                  allowed=", ".join(channel.components))
        return None
    if not isinstance(version, str | int | float) or not str(version).strip():
        ctx.error(f"{key}.version", "expected a version string", version, allowed="e.g. 1.3.0")
        return None
    return ChannelStep(verb=action, component=component, version=str(version), **common)


def _verb_args(ctx: _Ctx, key: str, value: object) -> str | None:
    """`merge`, `merge:` (null), `merge: {}` or `merge: {args: "--force"}`."""
    allowed = '`- merge`, or `merge: {args: "--force"}`'
    if value is None:
        return ""
    if not isinstance(value, dict):
        ctx.error(key, f"expected nothing or a mapping with `args`, not a {_type_name(value)}",
                  value, allowed=allowed)
        return None
    ok = True
    for k in value:
        if k != "args":
            ctx.error(_join(key, k), "unknown key", k, allowed="args")
            ok = False
    args = value.get("args", "")
    if args is None:
        args = ""
    if not isinstance(args, str):
        ctx.error(_join(key, "args"), "args must be a string", args,
                  allowed='command-line arguments, e.g. "--force"')
        ok = False
    return args.strip() if ok else None


def _check_channel_extensions(ctx: _Ctx, channel: ChannelSpec | None,
                              specs: Mapping[str, ExtensionSpec]) -> None:
    """Channel images are sysext disk images: sysupdate downloads files, not trees."""
    if channel is None:
        return
    for name, component in channel.components.items():
        spec = specs.get(component.extension)
        if spec is None:
            continue
        key = f"update_channel.components.{name}.extension"
        if spec.type != "sysext" or spec.format == "directory" or spec.is_prebuilt:
            ctx.error(key, "channel images are built from a sysext spec in an image format",
                      component.extension, allowed="an extension with type sysext and "
                      "format squashfs or erofs")


# ------------------------------------------------------------------------------ entry


def _parse(path: Path, ctx: _Ctx) -> Scenario | None:
    read = _read_yaml(path, ctx)
    if read is None:
        return None
    data, lines = read
    ctx.lines = lines
    if data is None:
        ctx.error(None, "scenario file is empty", allowed="a mapping with description and steps")
        return None
    if not isinstance(data, dict):
        ctx.error(None, f"a scenario must be a mapping, not a {_type_name(data)}",
                  allowed=", ".join(TOP_KEYS))
        return None

    for k in data:
        if k not in TOP_KEYS:
            ctx.error(_join("", k), "unknown top-level key", k, allowed=TOP_KEYS)

    description = None
    if "description" not in data:
        ctx.error("description", "missing required key", allowed="a one-line description")
    else:
        description = _nonempty_str(ctx, "description", data["description"], "description")

    applies_to: Condition | None = AppliesTo()
    if "applies_to" in data:
        applies_to = _parse_condition(
            ctx, "applies_to", data["applies_to"], APPLIES_TO_KEYS, AppliesTo
        )

    tags = _parse_tags(ctx, data["tags"]) if "tags" in data else ()

    specs = _parse_extensions(ctx, data.get("extensions"))
    raw_ext = data.get("extensions")
    # Steps are checked against every declared name, even ones whose spec has errors,
    # so one mistake does not cascade into "unknown extension" reports.
    extension_names = (
        [str(n) for n in raw_ext] if isinstance(raw_ext, dict) else list(specs or {})
    )

    provisioning = None
    if "provisioning" in data:
        provisioning = parse_provisioning(ctx, "provisioning", data["provisioning"], path,
                                          extension_names)

    if "update_channel" in data:
        ctx.channel = parse_update_channel(
            ctx, "update_channel", data["update_channel"], extension_names)
        _check_channel_extensions(ctx, ctx.channel, specs or {})
    channel = ctx.channel

    steps: list[Step] = []
    if "steps" not in data and provisioning is not None and provisioning.expect_failure:
        pass  # the scenario ends when provisioning fails as expected
    elif "steps" not in data:
        ctx.error("steps", "missing required key", allowed="a non-empty list of steps")
    elif not isinstance(data["steps"], list) or not data["steps"]:
        ctx.error("steps", "steps must be a non-empty list", data["steps"],
                  allowed="a list of steps such as `- merge`")
    else:
        for i, raw in enumerate(data["steps"]):
            step = _parse_step(ctx, i, raw, extension_names)
            if step is not None:
                steps.append(step)

    if ctx.errors:
        return None
    assert description is not None and isinstance(applies_to, AppliesTo)
    return Scenario(
        name=path.stem,
        path=path,
        description=description.strip(),
        applies_to=applies_to,
        tags=tags,
        extensions=MappingProxyType(dict(specs or {})),
        provisioning=provisioning,
        update_channel=channel,
        steps=tuple(steps),
    )


def load_scenario(path: Path) -> Scenario:
    """Load and fully validate one scenario file; raise ConfigErrors listing every problem."""
    path = Path(path)
    ctx = _Ctx(path)
    scenario = _parse(path, ctx)
    if ctx.errors or scenario is None:
        raise ConfigErrors(ctx.sorted_errors() or [ConfigError("invalid scenario", file=path)])
    return scenario


def scenario_files(root: Path) -> list[Path]:
    """Every `*.yaml` below `root` (hidden directories skipped), sorted by path."""
    root = Path(root)
    return sorted(
        p
        for p in root.rglob("*.yaml")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def load_scenarios(root: Path) -> list[Scenario]:
    """Load every scenario below `root` (or the single file `root`), sorted by path.

    All files are validated before anything is raised, so one run shows every mistake;
    scenario names (file stems) must be unique across the tree.
    """
    root = Path(root)
    if root.is_file():
        return [load_scenario(root)]
    if not root.is_dir():
        raise ConfigError("scenario directory does not exist", file=root)
    errors: list[ConfigError] = []
    for stray in sorted(root.rglob("*.yml")):
        if not any(part.startswith(".") for part in stray.relative_to(root).parts):
            errors.append(ConfigError("scenario files must end in .yaml (this one is ignored)",
                                      file=stray, allowed="rename it to *.yaml"))
    scenarios: list[Scenario] = []
    by_name: dict[str, Path] = {}
    for path in scenario_files(root):
        try:
            scenario = load_scenario(path)
        except ConfigError as exc:
            errors.extend(_flatten(exc))
            continue
        if scenario.name in by_name:
            errors.append(ConfigError(
                f"scenario name {scenario.name!r} is already used by {by_name[scenario.name]}",
                file=path, allowed="unique file names (the name is the file stem)",
            ))
            continue
        by_name[scenario.name] = path
        scenarios.append(scenario)
    if errors:
        raise ConfigErrors(errors)
    return scenarios
