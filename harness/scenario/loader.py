"""Scenario YAML -> `Scenario`, with every problem of a file reported in one go.

Validation is exhaustive on purpose: a scenario is checked before any VM boots, so a
typo must surface as a ConfigError (exit 2) naming `file:line`, the key path (e.g.
`steps[3].expect.exit`), the value found and what is accepted -- never as a confusing
failure twenty minutes into a run.

This module checks the file's layout and the keys every step shares; what a step's own
keys mean is its kind's record in `harness.scenario.steps`, and each `expect:` key is
validated by its record in `harness.scenario.expectations`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from harness.errors import ConfigError, ConfigErrors
from harness.extensions.spec import ExtensionSpec, parse_extension_spec
from harness.scenario.expectations import parse_expect
from harness.scenario.model import (
    DEFAULT_TIMEOUT,
    KNOWN_PERSONAS,
    AppliesTo,
    BySystemd,
    Condition,
    Expectation,
    RememberStep,
    Scenario,
    Step,
    UpstreamCase,
)
from harness.scenario.provisioning import parse_provisioning
from harness.scenario.steps import ACTIONS, BARE_ACTIONS, STEP_KINDS, StepSource
from harness.scenario.update_channel import parse_update_channel
from harness.scenario.upstream import (
    UPSTREAM_CASES,
    UPSTREAM_TEST_FILES,
    UPSTREAM_VERSION,
    normalized,
)
from harness.scenario.values import (
    INVALID,
    Ctx,
    constraint,
    join,
    nonempty_str,
    str_list,
    text_item,
    type_name,
)
from harness.sysupdate.model import ChannelSpec
from harness.targets.registry import persona_names

TOP_KEYS: tuple[str, ...] = (
    "description", "source", "applies_to", "tags", "extensions", "provisioning",
    "update_channel", "allow_console", "allow_failed_units", "steps",
)
SOURCE_KEYS: tuple[str, ...] = ("upstream", "case")
APPLIES_TO_KEYS: tuple[str, ...] = ("systemd", "personas", "targets", "reason")
WHEN_KEYS: tuple[str, ...] = ("systemd", "personas", "targets", "reason")
COMMON_STEP_KEYS: tuple[str, ...] = ("name", "when", "timeout")
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


def _shown(value: object) -> object:
    """Keep error lines short: long values are abbreviated, not dumped whole."""
    if value is None:
        return None
    text = repr(value)
    if len(text) <= 80:
        return value
    return text[:77] + "..."


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
            path = join(prefix, key)
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


# --------------------------------------------------------------------------- sections


def _parse_condition(
    ctx: _Ctx, key: str, value: object, keys: tuple[str, ...], cls: type[Condition]
) -> Condition | None:
    if not isinstance(value, dict):
        ctx.error(key, f"must be a mapping, not a {type_name(value)}", value, allowed=keys)
        return None
    ok = True
    for k in value:
        if k not in keys:
            ctx.error(join(key, k), "unknown key", k, allowed=keys)
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
        systemd = constraint(ctx, join(key, "systemd"), value["systemd"])
        ok = ok and systemd is not None

    def persona_item(c: Ctx, k: str, v: object) -> str | None:
        if v in known_personas():
            return str(v)
        c.error(k, "unknown persona", v, allowed=known_personas())
        return None

    personas: Any = ()
    if "personas" in value:
        personas = str_list(
            ctx, join(key, "personas"), value["personas"], persona_item,
            what="a list of persona names",
        )
        ok = ok and personas is not INVALID
    targets: Any = ()
    if "targets" in value:
        targets = str_list(
            ctx, join(key, "targets"), value["targets"], text_item,
            what="a list of target name patterns (fnmatch, e.g. refos-257-*)",
        )
        ok = ok and targets is not INVALID
    reason: str | None = None
    if "reason" in value:
        reason = nonempty_str(ctx, join(key, "reason"), value["reason"], "reason")
        ok = ok and reason is not None
    if not ok:
        return None
    return cls(systemd=systemd, personas=personas, targets=targets, reason=reason)


def _parse_allow_console(ctx: _Ctx, value: object) -> tuple[re.Pattern[str], ...]:
    """`allow_console:` a regular expression or a list of them (Python `re` syntax)."""
    def pattern(ctx: Ctx, key: str, item: object) -> re.Pattern[str] | None:
        if not isinstance(item, str) or not item.strip():
            ctx.error(key, "must be a non-empty regular expression", item,
                      allowed="e.g. 'Failed to start systemd-sysext.service'")
            return None
        try:
            return re.compile(item)
        except re.error as exc:
            ctx.error(key, f"not a regular expression: {exc}", item,
                      allowed="Python `re` syntax")
            return None

    out = str_list(ctx, "allow_console", value, pattern, what="a list of regular expressions")
    return () if out is INVALID else out


_UNIT_GLOB = re.compile(r"[A-Za-z0-9:_.\\@*?\[\]!-]+")


def _parse_allow_failed_units(ctx: _Ctx, value: object) -> tuple[str, ...]:
    """`allow_failed_units:` a unit name glob or a list of them (fnmatch syntax)."""
    def glob(ctx: Ctx, key: str, item: object) -> str | None:
        if not isinstance(item, str) or not _UNIT_GLOB.fullmatch(item):
            ctx.error(key, "must be a unit name or a glob of unit names", item,
                      allowed="e.g. 'systemd-sysext.service' or 'run-*.service'")
            return None
        return item

    out = str_list(ctx, "allow_failed_units", value, glob, what="a list of unit name globs")
    return () if out is INVALID else out


def _parse_tags(ctx: _Ctx, value: object) -> tuple[str, ...]:
    def tag_item(c: Ctx, k: str, v: object) -> str | None:
        if not isinstance(v, str) or not _TAG_RE.match(v):
            c.error(k, "invalid tag (tags become pytest markers)", v,
                    allowed="letters, digits and _, not starting with a digit")
            return None
        if v in RESERVED_TAGS:
            c.error(k, "tag is reserved by pytest or the harness", v,
                    allowed=f"any other name; reserved: {', '.join(RESERVED_TAGS)}")
            return None
        return v

    tags = str_list(ctx, "tags", value, tag_item, allow_single=False, what="a list of tags")
    if tags is INVALID:
        return ()
    return tuple(dict.fromkeys(tags))


def _parse_source(ctx: _Ctx, value: object) -> tuple[UpstreamCase, ...]:
    """`source:` one `{upstream: FILE, case: TEXT}` or a list of them."""
    items = value if isinstance(value, list) else [value]
    allowed = "{upstream: TEST-50-DISSECT.sysext.sh, case: what the case checks}"
    out: list[UpstreamCase] = []
    for i, item in enumerate(items):
        key = f"source[{i}]" if isinstance(value, list) else "source"
        if not isinstance(item, dict):
            ctx.error(key, f"expected a mapping, not a {type_name(item)}", item,
                      allowed=allowed)
            continue
        unknown = [k for k in item if k not in SOURCE_KEYS]
        for k in unknown:
            ctx.error(join(key, k), "unknown key", k, allowed=", ".join(SOURCE_KEYS))
        file = item.get("upstream")
        if file not in UPSTREAM_TEST_FILES:
            ctx.error(join(key, "upstream"), "not one of systemd's sysext tests", file,
                      allowed=UPSTREAM_TEST_FILES)
            continue
        case = nonempty_str(ctx, join(key, "case"), item.get("case"), "case")
        if case is None:
            continue
        known = UPSTREAM_CASES.get(file)
        if known is not None and normalized(case) not in map(normalized, known):
            close = difflib.get_close_matches(normalized(case), known, n=2, cutoff=0.5)
            ctx.error(join(key, "case"), f"not a case of {file} (systemd {UPSTREAM_VERSION})",
                      case, allowed=close or "a case title as written after `: ` in the file")
            continue
        if not unknown:
            out.append(UpstreamCase(file=file, case=normalized(case)))
    return tuple(out)


def _parse_extensions(ctx: _Ctx, value: object) -> dict[str, ExtensionSpec] | None:
    """Returns the valid specs; None if the section itself is not a mapping."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        ctx.error(
            "extensions",
            f"must be a mapping of extension name to spec, not a {type_name(value)}",
            value,
            allowed="{name: {format: ..., files: [...]}, ...}",
        )
        return None
    specs: dict[str, ExtensionSpec] = {}
    for name, data in value.items():
        if not isinstance(name, str):
            ctx.error(join("extensions", name), "extension names must be strings", name)
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
        ctx.error(key, f"a step must be a mapping or a bare action, not a {type_name(raw)}",
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
    """Check the keys and common fields every step has, then let its kind parse it."""
    allowed = (action, *STEP_KINDS[action].extra_keys, *COMMON_STEP_KEYS)
    ok = True
    for k in raw:
        if k in allowed:
            continue
        sub = join(key, k)
        if k == "expect":
            ctx.error(sub, f"`{action}` steps take no expect block; add a separate "
                      "`- expect: {...}` step after it", None,
                      allowed=", ".join(allowed))
        else:
            ctx.error(sub, f"unknown key for a `{action}` step", k, allowed=allowed)
        ok = False

    common: dict[str, Any] = {"index": index}
    if "name" in raw:
        name = nonempty_str(ctx, join(key, "name"), raw["name"], "name")
        ok = ok and name is not None
        common["name"] = name
    if "when" in raw:
        when = _parse_condition(ctx, join(key, "when"), raw["when"], WHEN_KEYS, Condition)
        ok = ok and when is not None
        common["when"] = when
    timeout = raw.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        ctx.error(join(key, "timeout"), "timeout must be a positive number of seconds",
                  timeout, allowed="e.g. 120 or 0.5")
        ok = False
    else:
        common["timeout"] = float(timeout)

    kind = STEP_KINDS[action]
    expect = None
    if kind.command and "expect" in raw:
        expect = parse_expect(ctx, join(key, "expect"), raw["expect"], command=True)
        ok = ok and expect is not None

    source = StepSource(key=key, action=action, raw=raw, common=common, expect=expect,
                        extension_names=extension_names, channel=ctx.channel)
    step = kind.parse(ctx, source)
    return step if ok else None


def _check_remembered_names(ctx: _Ctx, steps: list[Step]) -> None:
    """`unchanged:`/`changed:` may only name values a `remember` step before them keeps."""
    known: set[str] = set()
    for step in steps:
        expect = getattr(step, "expect", None)
        if isinstance(expect, Expectation):
            for key in ("unchanged", "changed"):
                value = getattr(expect, key)
                choices = ([v for _, v in value.choices]
                           + ([value.default] if value.has_default else [])
                           if isinstance(value, BySystemd) else [value])
                for names in choices:
                    for name in names or ():
                        if name not in known:
                            ctx.error(f"{step.key}.expect.{key}",
                                      "no `remember` step before this one keeps this name",
                                      name, allowed=sorted(known) or "(nothing remembered yet)")
        if isinstance(step, RememberStep):
            known.update(name for name, _ in step.commands)


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
        ctx.error(None, f"a scenario must be a mapping, not a {type_name(data)}",
                  allowed=", ".join(TOP_KEYS))
        return None

    for k in data:
        if k not in TOP_KEYS:
            ctx.error(join("", k), "unknown top-level key", k, allowed=TOP_KEYS)

    description = None
    if "description" not in data:
        ctx.error("description", "missing required key", allowed="a one-line description")
    else:
        description = nonempty_str(ctx, "description", data["description"], "description")

    applies_to: Condition | None = AppliesTo()
    if "applies_to" in data:
        applies_to = _parse_condition(
            ctx, "applies_to", data["applies_to"], APPLIES_TO_KEYS, AppliesTo
        )

    tags = _parse_tags(ctx, data["tags"]) if "tags" in data else ()
    allow_console = (_parse_allow_console(ctx, data["allow_console"])
                     if "allow_console" in data else ())
    allow_failed_units = (_parse_allow_failed_units(ctx, data["allow_failed_units"])
                          if "allow_failed_units" in data else ())
    source = _parse_source(ctx, data["source"]) if "source" in data else ()

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
        _check_remembered_names(ctx, steps)

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
        source=source,
        allow_console=allow_console,
        allow_failed_units=allow_failed_units,
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
