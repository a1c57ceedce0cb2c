"""Systemd version constraints such as ``">=254"``, ``"252"``, ``"<=255"`` or ``">=254,<257"``."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

_OPS: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
    "": operator.eq,
}
_TERM = re.compile(r"^\s*(>=|<=|==|!=|>|<|)\s*(\d+)\s*$")

SYNTAX_HELP = 'a version like "257", or comparisons like ">=254", "<256", ">=254,<257"'


def is_valid_constraint(text: object) -> bool:
    if isinstance(text, int) and not isinstance(text, bool):
        return True
    if not isinstance(text, str) or not text.strip():
        return False
    return all(_TERM.match(part) for part in text.split(","))


def matches(constraint: str | int, version: int) -> bool:
    """True when `version` satisfies every comma-separated term of `constraint`."""
    if isinstance(constraint, int):
        return version == constraint
    for part in constraint.split(","):
        m = _TERM.match(part)
        if not m:
            raise ValueError(f"bad version constraint {constraint!r}; expected {SYNTAX_HELP}")
        if not _OPS[m.group(1)](version, int(m.group(2))):
            return False
    return True
