"""YAML with Go yaml.v3's typing rules, the way Butane reads its input.

In yaml.v3 an unquoted scalar takes its type from the field it fills: ``mode: 0644`` and
``mode: 0o644`` are both 420, ``name: yes`` is the string "yes", ``enabled: yes`` is true.
PyYAML decides types up front with YAML 1.1 rules instead (``0o644`` stays the string
"0o644", ``yes`` is always True), which would make the same file mean something else.
So this loader resolves nothing but nulls: unquoted scalars come back as `Plain` strings,
and `to_int` / `to_bool` apply yaml.v3's rules once the schema says what a field wants.
Duplicate keys are an error, as in yaml.v3 (PyYAML silently keeps the last one).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_NULLS = ("", "~", "null", "Null", "NULL")
_TRUE = ("true", "True", "TRUE")
_FALSE = ("false", "False", "FALSE")
# yaml.v3 also takes YAML 1.1 spellings, but only when the target field is a bool.
_TRUE_11 = ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON")
_FALSE_11 = ("n", "N", "no", "No", "NO", "off", "Off", "OFF")
_GO_INT_RE = re.compile(r"([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Plain(str):
    """An unquoted scalar; its type is decided by the field it fills."""

    line: int = 0


class YMap(dict[str, Any]):
    """A mapping that remembers the line of each key (for error messages)."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}


class YSeq(list[Any]):
    """A sequence that remembers where it starts."""

    line: int = 0


class YamlError(ValueError):
    """The text is not YAML yaml.v3 would accept; `line` is 1-based (0 if unknown)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit typing (except merge keys) and with line tracking."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(_MERGE_TAG, re.compile(r"^(?:<<)$"), ["<"])


def _construct_str(loader: _Loader, node: yaml.ScalarNode) -> str | None:
    value = loader.construct_scalar(node)
    if node.style is not None:
        return value  # quoted or block scalar: always a string
    if value in _NULLS:
        return None
    plain = Plain(value)
    plain.line = node.start_mark.line + 1
    return plain


def _construct_map(loader: _Loader, node: yaml.MappingNode):  # type: ignore[no-untyped-def]
    data = YMap()
    data.line = node.start_mark.line + 1
    yield data
    merged = any(key.tag == _MERGE_TAG for key, _ in node.value)
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise YamlError(f"mapping keys must be strings, got {key!r}", line)
        key = str(key)
        if key in data and not merged:
            raise YamlError(f'mapping key "{key}" already defined at line {data.lines[key]}',
                            line)
        data[key] = loader.construct_object(value_node, deep=True)
        data.lines[key] = line


def _construct_seq(loader: _Loader, node: yaml.SequenceNode):  # type: ignore[no-untyped-def]
    data = YSeq()
    data.line = node.start_mark.line + 1
    yield data
    data.extend(loader.construct_sequence(node, deep=True))


_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load(text: str) -> Any:
    """Parse one YAML document; raise `YamlError` with a line number on bad input."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise YamlError(f"{exc.problem or exc.context or 'invalid YAML'}", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(str(exc)) from None


def _go_parse_int(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 0, 64)``: 0x, 0o, 0b and leading-0 octal."""
    m = _GO_INT_RE.fullmatch(text)
    if not m:
        return None
    sign, body = m.groups()
    if body[:2].lower() in ("0x", "0o", "0b"):
        number = int(body, 0)
    elif body.startswith("0") and len(body) > 1:
        number = int(body, 8)
    else:
        number = int(body)
    return -number if sign == "-" else number


def to_int(value: object, *, lenient: bool = False) -> int | None:
    """The integer yaml.v3 would decode into an int field, or None if it would fail.

    Unquoted text follows YAML 1.1/1.2 integer syntax (``0644`` and ``0o644`` are octal);
    an integral float (``1e3``) is accepted. Quoted text is refused unless *lenient*
    (for mappings that came from PyYAML, where ``0o644`` arrives as a string).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if not isinstance(value, str) or not (lenient or isinstance(value, Plain)):
        return None
    text = value.replace("_", "")
    number = _go_parse_int(text)
    if number is None and _FLOAT_RE.fullmatch(text):
        as_float = float(text)
        number = int(as_float) if as_float.is_integer() else None
    return number


def to_bool(value: object, *, lenient: bool = False) -> bool | None:
    """The boolean yaml.v3 would decode into a bool field, or None if it would fail."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    if (lenient or isinstance(value, Plain)) and value in _TRUE + _FALSE:
        return value in _TRUE
    if value in _TRUE_11 + _FALSE_11:
        return value in _TRUE_11
    return None


def line_of(container: object, key: str | int, default: int = 0) -> int:
    """The line of *key* in a mapping (or of item *key* in a sequence), if known."""
    if isinstance(container, YMap) and isinstance(key, str):
        return container.lines.get(key, default)
    if isinstance(container, list) and isinstance(key, int) and key < len(container):
        item = container[key]
        return getattr(item, "line", 0) or default
    return getattr(container, "line", 0) or default
