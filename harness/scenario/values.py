"""Checks of single YAML values, shared by the loader, the expect keys and the step kinds.

Each check reports through a `Ctx` (the loader's per-file error collector) instead of
raising, so one pass over a file finds every mistake. A check returns the clean value, or
None / `INVALID` after it recorded an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from harness import versions
from harness.scenario.model import BySystemd

INVALID: Any = object()  # returned by validators after they recorded an error
FILE_NAME_HELP = "a plain file name such as hello.raw (no '/')"


class Ctx(Protocol):
    """Where checks report problems (satisfied by the loader's `_Ctx`)."""

    def error(
        self,
        key: str | None,
        message: str,
        value: object = None,
        allowed: str | tuple[str, ...] | list[str] | None = None,
    ) -> None: ...


# (ctx, key path, raw value) -> clean value, or INVALID after reporting.
Validator = Callable[[Ctx, str, object], Any]


def join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def type_name(value: object) -> str:
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


def nonempty_str(ctx: Ctx, key: str, value: object, what: str) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    ctx.error(key, f"{what} must be a non-empty string", value, allowed="a non-empty string")
    return None


def abs_path(ctx: Ctx, key: str, value: object, *, allow_root: bool = True) -> str | None:
    if not isinstance(value, str) or not value.startswith("/"):
        ctx.error(key, "must be an absolute path", value, allowed="a path starting with /")
        return None
    if not allow_root and value.strip("/") == "":
        ctx.error(key, "refusing to operate on /", value, allowed="a path below /")
        return None
    return value


def str_list(
    ctx: Ctx,
    key: str,
    value: object,
    item: Callable[[Ctx, str, object], Any],
    *,
    allow_single: bool = True,
    allow_empty: bool = False,
    what: str = "a list",
) -> tuple[Any, ...] | Any:
    """A list (or, if allowed, one bare item) whose items each pass `item`."""
    if allow_single and isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        ctx.error(key, f"must be {what}, not a {type_name(value)}", value, allowed=what)
        return INVALID
    if not value and not allow_empty:
        ctx.error(key, "must not be empty", value, allowed=what)
        return INVALID
    out = []
    ok = True
    for i, entry in enumerate(value):
        checked = item(ctx, f"{key}[{i}]", entry)
        if checked is None or checked is INVALID:
            ok = False
        else:
            out.append(checked)
    return tuple(out) if ok else INVALID


def text_item(ctx: Ctx, key: str, value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    ctx.error(key, "must be a non-empty string", value, allowed="a non-empty string")
    return None


def regex_item(ctx: Ctx, key: str, value: object) -> str | None:
    if not isinstance(value, str) or not value:
        ctx.error(key, "must be a non-empty regular expression", value, allowed="a regex string")
        return None
    try:
        re.compile(value, re.MULTILINE)
    except re.error as exc:
        ctx.error(key, f"invalid regular expression: {exc}", value, allowed="a Python regex")
        return None
    return value


def name_item(ctx: Ctx, key: str, value: object) -> str | None:
    if isinstance(value, str) and value and "/" not in value:
        return value
    ctx.error(key, "must be an extension name", value, allowed="an image name such as hello")
    return None


def path_item(ctx: Ctx, key: str, value: object) -> str | None:
    return abs_path(ctx, key, value)


# ------------------------------------------------------------------- version-dependence


def constraint(ctx: Ctx, key: str, value: object) -> str | None:
    if versions.is_valid_constraint(value):
        return str(value).strip()
    ctx.error(key, "invalid systemd version constraint", value, allowed=versions.SYNTAX_HELP)
    return None


def by_systemd(ctx: Ctx, key: str, value: object, check: Validator) -> BySystemd | Any:
    """`{by_systemd: {"<=255": x, ">=256": y, default: z}}`: every branch fully checked."""
    allowed = 'a mapping of version constraint (e.g. ">=256") or default to a value'
    key = f"{key}.by_systemd"
    if not isinstance(value, dict) or not value:
        ctx.error(key, "by_systemd must be a non-empty mapping", value, allowed=allowed)
        return INVALID
    choices: list[tuple[str, Any]] = []
    default: Any = None
    has_default = False
    ok = True
    for cons, choice in value.items():
        sub = join(key, cons)
        if cons == "default":
            has_default = True
        elif constraint(ctx, sub, cons) is None:
            ok = False
            continue
        # null means "do not check this key on these versions"
        checked = None if choice is None else check(ctx, sub, choice)
        if checked is INVALID:
            ok = False
        elif cons == "default":
            default = checked
        else:
            choices.append((str(cons).strip(), checked))
    if ok and not choices:
        ctx.error(key, "by_systemd needs at least one version constraint", value, allowed=allowed)
        ok = False
    if not ok:
        return INVALID
    if has_default:
        return BySystemd(tuple(choices), default)
    return BySystemd(tuple(choices))


def maybe_versioned(ctx: Ctx, key: str, value: object, check: Validator) -> Any:
    """`value` checked by `check`, or a `{by_systemd: ...}` whose every branch is."""
    if isinstance(value, dict) and "by_systemd" in value:
        if len(value) != 1:
            extra = sorted(str(k) for k in value if k != "by_systemd")
            ctx.error(
                key,
                "by_systemd cannot be combined with other keys",
                extra,
                allowed="{by_systemd: {...}} alone",
            )
            return INVALID
        return by_systemd(ctx, key, value["by_systemd"], check)
    return check(ctx, key, value)
